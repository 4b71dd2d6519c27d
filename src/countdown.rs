//! The live countdown on a terminal: during a sleep over a second, one
//! line `retry: attempt 3/5 in 4s…`, rewritten in place each second and
//! erased when the sleep ends (also when a signal ends it), so the next
//! attempt's output starts on a clean line. Text format only, never in a
//! pipe or a file (the [`crate::report::Reporter`] decides). The sleeper
//! keeps its own wake-up time: [`Countdown::tick`] only says when the line
//! next changes, never moves the end of the sleep.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::parse::human;

/// Carriage return, then erase to the end of the line (ANSI EL).
const ERASE: &str = "\r\x1b[K";

pub struct Countdown {
    /// `3/5`: the attempt that runs after the sleep.
    label: String,
    /// The whole seconds on the line now, if anything is shown.
    shown: Option<u64>,
}

impl Countdown {
    pub fn new(label: String) -> Countdown {
        Countdown { label, shown: None }
    }

    /// Shows the time left until `wake` (redrawing only when the whole
    /// seconds change) and returns when the line changes next: never later
    /// than `wake`.
    pub fn tick(&mut self, now: Instant, wake: Instant) -> Instant {
        let left = wake.saturating_duration_since(now);
        let secs = whole_seconds(left);
        if self.shown != Some(secs) && secs > 0 {
            write_stderr(&format!("{ERASE}{}", line(&self.label, secs)));
            self.shown = Some(secs);
        }
        next_change(now, wake)
    }
}

impl Drop for Countdown {
    fn drop(&mut self) {
        if self.shown.is_some() {
            write_stderr(ERASE);
        }
    }
}

/// The time left in whole seconds, rounded up: `in 1s…` until the end.
fn whole_seconds(left: Duration) -> u64 {
    left.as_secs().saturating_add(u64::from(left.subsec_nanos() > 0))
}

/// `retry: attempt 3/5 in 4s…`
fn line(label: &str, secs: u64) -> String {
    format!("retry: attempt {label} in {}…", human(Duration::from_secs(secs)))
}

/// When the rounded-up seconds left drop by one: `wake - (secs-1)s`.
fn next_change(now: Instant, wake: Instant) -> Instant {
    let secs = whole_seconds(wake.saturating_duration_since(now));
    let at = wake.checked_sub(Duration::from_secs(secs.saturating_sub(1))).unwrap_or(wake);
    // `at` is after `now` unless the sleep is over; never past `wake`.
    at.max(now).min(wake)
}

fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    // A countdown that cannot be drawn is no reason to stop the run.
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(4300)), 5);
        assert_eq!(whole_seconds(Duration::from_secs(4)), 4);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::MAX), u64::MAX);
    }

    #[test]
    fn lines_read_like_the_spec() {
        assert_eq!(line("3/5", 4), "retry: attempt 3/5 in 4s…");
        assert_eq!(line("7", 125), "retry: attempt 7 in 2m5s…");
    }

    #[test]
    fn the_line_changes_on_whole_seconds_before_wake_and_never_after_it() {
        let now = Instant::now();
        let wake = now + Duration::from_millis(4300);
        // 4.3s left shows 5s until 4s are left.
        assert_eq!(next_change(now, wake), now + Duration::from_millis(300));
        let later = now + Duration::from_millis(300);
        assert_eq!(next_change(later, wake), later + Duration::from_secs(1));
        // Under a second left: the next change is the end of the sleep.
        let last = wake - Duration::from_millis(400);
        assert_eq!(next_change(last, wake), wake);
        assert_eq!(next_change(wake, wake), wake);
        assert_eq!(next_change(wake + Duration::from_secs(1), wake), wake);
    }
}
