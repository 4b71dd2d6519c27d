//! The decision after an attempt: retry after a sleep, stop, give up for
//! this run, or end on a signal. Pure: the attempt's facts, the run's
//! limits and the backoff schedule in, a [`Decision`] out; no clock, no
//! I/O (the time left before `--max-time` is a fact the caller measured).

use std::time::{Duration, Instant};

use rand::Rng;

use crate::backoff::Schedule;
use crate::record::Verdict;
use crate::status::End;

/// What one finished attempt brings to the decision.
#[derive(Clone, Copy, Debug)]
pub struct After {
    /// What the rules made of it.
    pub verdict: Verdict,
    /// A signal retry received since it started (during the attempt or a
    /// predicate): no new attempt starts.
    pub interrupted: Option<i32>,
    /// Its number, counted from the job's first attempt.
    pub number: u32,
    /// Attempts this run has made, this one included.
    pub this_run: u32,
    /// How long it ran.
    pub ran: Duration,
    /// retry's stdout is a pipe without a reader now.
    pub stdout_closed: bool,
    /// Time from its end to `--max-time`; `None` without a budget.
    pub time_left: Option<Duration>,
}

/// The limits in force.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Total attempts (`-n` + 1); `None` with `--forever`.
    pub attempts: Option<u32>,
    /// Attempts this run may make (a drain makes one); `None`: no limit.
    pub this_run: Option<u32>,
    /// `--reset-after`.
    pub reset_after: Option<Duration>,
}

/// What happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Sleep this long, then make the next attempt.
    Retry { delay: Duration },
    /// No further attempt: it succeeded (`End::Success`), failed for good
    /// (`End::Stopped`), or stdout has no reader (`End::ClosedStdout`).
    Stop(End),
    /// Worth retrying, but not in this run: the attempts ran out
    /// (`End::Exhausted`) or the sleep would end after `--max-time`
    /// (`End::Deadline`). `delay` is the schedule's next delay: a queued
    /// job is due that long after this attempt.
    GiveUp { end: End, delay: Duration },
    /// A signal came: this signal ends the run, no new attempt.
    Interrupted(i32),
}

impl Decision {
    /// Why no attempt follows, when a text line should say it.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Decision::Interrupted(sig) => Some(format!("retry got {}", crate::parse::signal_name(*sig))),
            Decision::Stop(End::ClosedStdout) => Some("stdout is closed".to_string()),
            Decision::GiveUp { end: End::Deadline, .. } => {
                Some("the next attempt would start after --max-time".to_string())
            }
            Decision::Retry { .. } | Decision::Stop(_) | Decision::GiveUp { .. } => None,
        }
    }

    /// The sleep before the next attempt of this run, if one follows.
    pub fn delay(&self) -> Option<Duration> {
        match self {
            Decision::Retry { delay } => Some(*delay),
            Decision::Stop(_) | Decision::GiveUp { .. } | Decision::Interrupted(_) => None,
        }
    }
}

/// Decides what follows an attempt. A success ends the run whatever else
/// happened; a signal ends it next; a permanent failure stops it; a
/// retryable one takes the schedule's next delay (after a reset when the
/// attempt ran at least `--reset-after`) unless the attempts are used up,
/// stdout is closed, or the sleep would end at or after `--max-time`.
pub fn decide<R: Rng>(after: &After, limits: &Limits, schedule: &mut Schedule<R>) -> Decision {
    match after.verdict {
        Verdict::Success => return Decision::Stop(End::Success),
        Verdict::Stop | Verdict::Retry => {}
    }
    if let Some(signal) = after.interrupted {
        return Decision::Interrupted(signal);
    }
    if after.verdict == Verdict::Stop {
        return Decision::Stop(End::Stopped);
    }
    let used_up = limits.attempts.is_some_and(|t| after.number >= t)
        || limits.this_run.is_some_and(|l| after.this_run >= l);
    if !used_up && after.stdout_closed {
        return Decision::Stop(End::ClosedStdout);
    }
    if limits.reset_after.is_some_and(|r| after.ran >= r) {
        schedule.reset();
    }
    let delay = schedule.next().unwrap_or(Duration::MAX);
    if used_up {
        return Decision::GiveUp { end: End::Exhausted, delay };
    }
    if after.time_left.is_some_and(|left| delay >= left) {
        return Decision::GiveUp { end: End::Deadline, delay };
    }
    Decision::Retry { delay }
}

/// Would a sleep until `wake` (`None`: forever) end at or after `deadline`?
pub fn ends_after(wake: Option<Instant>, deadline: Option<Instant>) -> bool {
    match (deadline, wake) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(d), Some(w)) => w >= d,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::backoff::{Algo, Backoff};

    fn schedule() -> Schedule<Xoshiro256PlusPlus> {
        let spec = Backoff {
            algo: Algo::Exponential,
            wait: Duration::from_secs(1),
            multiplier: 2.0,
            cap: Duration::MAX,
            jitter: 0.0,
        };
        Schedule::new(spec, Xoshiro256PlusPlus::seed_from_u64(1))
    }

    fn failed(number: u32) -> After {
        After {
            verdict: Verdict::Retry,
            interrupted: None,
            number,
            this_run: number,
            ran: Duration::from_millis(10),
            stdout_closed: false,
            time_left: None,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_table() {
        let four = Limits { attempts: Some(4), ..Limits::default() };
        let with = |f: &dyn Fn(&mut After)| {
            let mut a = failed(1);
            f(&mut a);
            a
        };
        let rows: Vec<(&str, After, Limits, Decision)> = vec![
            ("success", with(&|a| a.verdict = Verdict::Success), four, Decision::Stop(End::Success)),
            (
                "success wins over a signal",
                with(&|a| {
                    a.verdict = Verdict::Success;
                    a.interrupted = Some(2);
                }),
                four,
                Decision::Stop(End::Success),
            ),
            (
                "a signal ends a retryable failure",
                with(&|a| a.interrupted = Some(15)),
                four,
                Decision::Interrupted(15),
            ),
            (
                "a signal wins over a stop rule",
                with(&|a| {
                    a.verdict = Verdict::Stop;
                    a.interrupted = Some(2);
                }),
                four,
                Decision::Interrupted(2),
            ),
            ("a stop rule", with(&|a| a.verdict = Verdict::Stop), four, Decision::Stop(End::Stopped)),
            ("retry after d_1", failed(1), four, Decision::Retry { delay: S(1) }),
            ("the last attempt", failed(4), four, Decision::GiveUp { end: End::Exhausted, delay: S(1) }),
            (
                "a drain's one attempt",
                failed(9),
                Limits { attempts: None, this_run: Some(1), reset_after: None },
                Decision::GiveUp { end: End::Exhausted, delay: S(1) },
            ),
            ("forever", failed(1000), Limits::default(), Decision::Retry { delay: S(1) }),
            ("closed stdout", with(&|a| a.stdout_closed = true), four, Decision::Stop(End::ClosedStdout)),
            (
                "the sleep would end past --max-time",
                with(&|a| a.time_left = Some(S(1))),
                four,
                Decision::GiveUp { end: End::Deadline, delay: S(1) },
            ),
            (
                "the sleep ends before --max-time",
                with(&|a| a.time_left = Some(S(2))),
                four,
                Decision::Retry { delay: S(1) },
            ),
        ];
        for (name, after, limits, want) in rows {
            assert_eq!(decide(&after, &limits, &mut schedule()), want, "{name}");
        }
    }

    #[test]
    fn the_schedule_advances_once_per_retry_and_resets_after_a_long_attempt() {
        let limits = Limits { attempts: None, this_run: None, reset_after: Some(S(5)) };
        let mut s = schedule();
        let delays: Vec<_> = (1..=3).map(|n| decide(&failed(n), &limits, &mut s)).collect();
        assert_eq!(delays, [1, 2, 4].map(|d| Decision::Retry { delay: S(d) }));
        let long = After { ran: S(5), ..failed(4) };
        assert_eq!(decide(&long, &limits, &mut s), Decision::Retry { delay: S(1) });
        assert_eq!(decide(&failed(5), &limits, &mut s), Decision::Retry { delay: S(2) });
    }

    #[test]
    fn reasons_for_not_retrying() {
        assert_eq!(Decision::Interrupted(2).why_not().as_deref(), Some("retry got SIGINT"));
        let deadline = Decision::GiveUp { end: End::Deadline, delay: S(1) };
        assert!(deadline.why_not().unwrap().contains("--max-time"));
        assert_eq!(Decision::Stop(End::Stopped).why_not(), None);
        assert_eq!(Decision::Retry { delay: S(3) }.delay(), Some(S(3)));
    }

    #[test]
    fn sleeps_end_after_a_deadline_or_not() {
        let now = Instant::now();
        assert!(!ends_after(Some(now), None));
        assert!(ends_after(None, Some(now)));
        assert!(ends_after(Some(now), Some(now)));
        assert!(!ends_after(Some(now), Some(now + S(1))));
    }
}
