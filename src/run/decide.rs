//! The decision after an attempt: retry after a sleep, stop, give up for
//! this run, or end on a signal. Pure: the attempt's facts, the run's
//! limits and the [`Plan`] of sleeps in, a [`Decision`] out; no clock, no
//! I/O (the time left before `--max-time` and a `--wait-from` hint are
//! facts the caller measured).

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
    /// Attempts of this run that count against `-n`, this one included
    /// unless it made progress (`--reset-on-progress`).
    pub counted: u32,
    /// It changed its state dir (`--reset-on-progress` only).
    pub progress: bool,
    /// A `--wait-from` hint: the time from its end until the moment the
    /// server named.
    pub hint: Option<Duration>,
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
    /// `--reset-on-progress`.
    pub reset_on_progress: bool,
}

/// The sleeps of a run: the backoff schedule, stepped once per `--rotate`
/// cycle (every attempt without `--rotate`), and a reset that waits for
/// the end of the cycle it was asked for in. `--dry-run` walks the same
/// plan, so it shows the sleeps a real run takes.
pub struct Plan<R> {
    schedule: Schedule<R>,
    /// Attempts per cycle: the number of `--rotate` values, else 1.
    cycle: u32,
    reset_pending: bool,
    /// The last step started the schedule over.
    was_reset: bool,
}

impl<R: Rng> Plan<R> {
    pub fn new(schedule: Schedule<R>, cycle: u32) -> Plan<R> {
        Plan { schedule, cycle: cycle.max(1), reset_pending: false, was_reset: false }
    }

    /// The schedule's position (delays taken, the last one).
    pub fn position(&self) -> (u32, Duration) {
        self.schedule.position()
    }

    /// The sleep the schedule sets after attempt `number` (counted from
    /// the job's first): none inside a rotation cycle; at the end of one,
    /// the schedule's next delay — after a restart when `reset` was asked
    /// for by this attempt or an earlier one of the cycle.
    pub fn sleep_after(&mut self, number: u32, reset: bool) -> Duration {
        self.reset_pending |= reset;
        self.was_reset = false;
        if self.inside_cycle(number) {
            return Duration::ZERO;
        }
        if std::mem::take(&mut self.reset_pending) {
            self.schedule.reset();
            self.was_reset = true;
        }
        self.schedule.next().unwrap_or(Duration::MAX)
    }

    /// Does a `--rotate` value follow attempt `number` in its cycle?
    pub fn inside_cycle(&self, number: u32) -> bool {
        number % self.cycle != 0
    }

    /// Why the plan's last sleep is what it is, for `-vv`.
    pub fn explain(&self, number: u32) -> String {
        if self.inside_cycle(number) {
            return "the next --rotate value, without a wait inside a cycle".to_string();
        }
        let (k, prev) = self.schedule.position();
        let reset = if self.was_reset { "; the schedule started over" } else { "" };
        format!("backoff step {k} ({} before jitter){reset}", crate::parse::human(prev))
    }
}

/// What happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Sleep this long, then make the next attempt. `hinted`: a
    /// `--wait-from` hint set the sleep.
    Retry { delay: Duration, hinted: bool },
    /// No further attempt: it succeeded (`End::Success`), failed for good
    /// (`End::Stopped`), or stdout has no reader (`End::ClosedStdout`).
    Stop(End),
    /// Worth retrying, but not in this run: the attempts ran out
    /// (`End::Exhausted`) or the sleep would end after `--max-time`
    /// (`End::Deadline`). `delay` is the sleep that would have followed
    /// (the schedule's, or a hint's): a queued job is due that long after
    /// this attempt.
    GiveUp { end: End, delay: Duration, hinted: bool },
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
            Decision::Retry { delay, .. } => Some(*delay),
            Decision::Stop(_) | Decision::GiveUp { .. } | Decision::Interrupted(_) => None,
        }
    }

    /// That sleep, when a `--wait-from` hint set it.
    pub fn hinted_delay(&self) -> Option<Duration> {
        match self {
            Decision::Retry { delay, hinted: true } => Some(*delay),
            Decision::Retry { hinted: false, .. }
            | Decision::Stop(_)
            | Decision::GiveUp { .. }
            | Decision::Interrupted(_) => None,
        }
    }
}

/// Decides what follows an attempt. A success ends the run whatever else
/// happened; a signal ends it next; a permanent failure stops it; a
/// retryable one sleeps as the plan says (after a reset when the attempt
/// ran at least `--reset-after` or made progress), or exactly until a
/// `--wait-from` hint's moment, unless the attempts that count are used
/// up, stdout is closed, or the sleep would end at or after `--max-time`.
/// A hint replaces the sleep but not the schedule's step: the random draws
/// and the position are the same as without it.
pub fn decide<R: Rng>(after: &After, limits: &Limits, plan: &mut Plan<R>) -> Decision {
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
    let used_up = limits.attempts.is_some_and(|t| after.counted >= t)
        || limits.this_run.is_some_and(|l| after.this_run >= l);
    if !used_up && after.stdout_closed {
        return Decision::Stop(End::ClosedStdout);
    }
    let reset =
        limits.reset_after.is_some_and(|r| after.ran >= r) || (limits.reset_on_progress && after.progress);
    let scheduled = plan.sleep_after(after.number, reset);
    let (delay, hinted) = match after.hint {
        Some(hint) => (hint, true),
        None => (scheduled, false),
    };
    if used_up {
        return Decision::GiveUp { end: End::Exhausted, delay, hinted };
    }
    if after.time_left.is_some_and(|left| delay >= left) {
        return Decision::GiveUp { end: End::Deadline, delay, hinted };
    }
    Decision::Retry { delay, hinted }
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
            delays: Vec::new(),
        };
        Schedule::new(spec, Xoshiro256PlusPlus::seed_from_u64(1))
    }

    fn plan() -> Plan<Xoshiro256PlusPlus> {
        Plan::new(schedule(), 1)
    }

    fn retry(secs: u64) -> Decision {
        Decision::Retry { delay: S(secs), hinted: false }
    }

    fn give_up(end: End, secs: u64) -> Decision {
        Decision::GiveUp { end, delay: S(secs), hinted: false }
    }

    fn failed(number: u32) -> After {
        After {
            verdict: Verdict::Retry,
            interrupted: None,
            number,
            this_run: number,
            counted: number,
            progress: false,
            hint: None,
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
            ("retry after d_1", failed(1), four, retry(1)),
            ("the last attempt", failed(4), four, give_up(End::Exhausted, 1)),
            (
                "a drain's one attempt",
                failed(9),
                Limits { this_run: Some(1), ..Limits::default() },
                give_up(End::Exhausted, 1),
            ),
            ("forever", failed(1000), Limits::default(), retry(1)),
            ("closed stdout", with(&|a| a.stdout_closed = true), four, Decision::Stop(End::ClosedStdout)),
            (
                "the sleep would end past --max-time",
                with(&|a| a.time_left = Some(S(1))),
                four,
                give_up(End::Deadline, 1),
            ),
            ("the sleep ends before --max-time", with(&|a| a.time_left = Some(S(2))), four, retry(1)),
        ];
        for (name, after, limits, want) in rows {
            assert_eq!(decide(&after, &limits, &mut plan()), want, "{name}");
        }
    }

    #[test]
    fn the_schedule_advances_once_per_retry_and_resets_after_a_long_attempt() {
        let limits = Limits { reset_after: Some(S(5)), ..Limits::default() };
        let mut s = plan();
        let delays: Vec<_> = (1..=3).map(|n| decide(&failed(n), &limits, &mut s)).collect();
        assert_eq!(delays, [1, 2, 4].map(retry));
        let long = After { ran: S(5), ..failed(4) };
        assert_eq!(decide(&long, &limits, &mut s), retry(1));
        assert_eq!(decide(&failed(5), &limits, &mut s), retry(2));
    }

    #[test]
    fn reasons_for_not_retrying() {
        assert_eq!(Decision::Interrupted(2).why_not().as_deref(), Some("retry got SIGINT"));
        let deadline = give_up(End::Deadline, 1);
        assert!(deadline.why_not().unwrap().contains("--max-time"));
        assert_eq!(Decision::Stop(End::Stopped).why_not(), None);
        assert_eq!(retry(3).delay(), Some(S(3)));
        assert_eq!(retry(3).hinted_delay(), None);
        assert_eq!(Decision::Retry { delay: S(3), hinted: true }.hinted_delay(), Some(S(3)));
    }

    #[test]
    fn sleeps_end_after_a_deadline_or_not() {
        let now = Instant::now();
        assert!(!ends_after(Some(now), None));
        assert!(ends_after(None, Some(now)));
        assert!(ends_after(Some(now), Some(now)));
        assert!(!ends_after(Some(now), Some(now + S(1))));
    }

    #[test]
    fn a_hint_sets_the_sleep_exactly_and_the_schedule_still_steps() {
        let limits = Limits { attempts: Some(5), ..Limits::default() };
        let mut p = plan();
        let hinted = After { hint: Some(S(120)), ..failed(1) };
        assert_eq!(decide(&hinted, &limits, &mut p), Decision::Retry { delay: S(120), hinted: true });
        // The schedule took its step: the next plain failure sleeps d_2.
        assert_eq!(decide(&failed(2), &limits, &mut p), retry(2));
        // A hint past --max-time ends the run at once; with no attempt left,
        // it is the queued job's due time.
        let late = After { hint: Some(S(60)), time_left: Some(S(30)), ..failed(3) };
        assert_eq!(
            decide(&late, &limits, &mut p),
            Decision::GiveUp { end: End::Deadline, delay: S(60), hinted: true }
        );
        let last = After { hint: Some(S(9)), ..failed(5) };
        assert_eq!(
            decide(&last, &limits, &mut p),
            Decision::GiveUp { end: End::Exhausted, delay: S(9), hinted: true }
        );
        // A hint does not make a stop retryable.
        let stop = After { verdict: Verdict::Stop, hint: Some(S(1)), ..failed(1) };
        assert_eq!(decide(&stop, &limits, &mut p), Decision::Stop(End::Stopped));
    }

    #[test]
    fn a_rotation_cycle_runs_back_to_back_and_steps_once() {
        let limits = Limits { attempts: Some(9), ..Limits::default() };
        let mut p = Plan::new(schedule(), 3);
        let got: Vec<_> = (1..=7).map(|n| decide(&failed(n), &limits, &mut p)).collect();
        assert_eq!(got, [0, 0, 1, 0, 0, 2, 0].map(retry));
        // A hint inside a cycle sets the sleep and adds no step.
        let mut p = Plan::new(schedule(), 2);
        let hinted = After { hint: Some(S(7)), ..failed(1) };
        assert_eq!(decide(&hinted, &limits, &mut p), Decision::Retry { delay: S(7), hinted: true });
        assert_eq!(decide(&failed(2), &limits, &mut p), retry(1));
        assert_eq!(decide(&failed(4), &limits, &mut p), retry(2));
        // A drain's one attempt inside a cycle: due at once.
        let drain = Limits { this_run: Some(1), ..Limits::default() };
        let mut p = Plan::new(schedule(), 2);
        assert_eq!(decide(&After { this_run: 1, ..failed(5) }, &drain, &mut p), give_up(End::Exhausted, 0));
    }

    #[test]
    fn progress_restarts_the_schedule_and_does_not_count() {
        let limits = Limits { attempts: Some(2), reset_on_progress: true, ..Limits::default() };
        let mut p = plan();
        assert_eq!(decide(&failed(1), &limits, &mut p), retry(1));
        // Attempt 2 made progress: it does not use up -n 1, and sleeps d_1.
        let progressed = After { progress: true, counted: 1, ..failed(2) };
        assert_eq!(decide(&progressed, &limits, &mut p), retry(1));
        assert_eq!(decide(&After { counted: 2, ..failed(3) }, &limits, &mut p), give_up(End::Exhausted, 2));
        // Without --reset-on-progress, progress changes nothing.
        let mut q = plan();
        let plain = Limits { attempts: Some(5), ..Limits::default() };
        decide(&failed(1), &plain, &mut q);
        assert_eq!(decide(&After { progress: true, ..failed(2) }, &plain, &mut q), retry(2));
        // Inside a rotation cycle the reset waits for the cycle's end.
        let mut r = Plan::new(schedule(), 2);
        let forever = Limits { reset_on_progress: true, ..Limits::default() };
        for n in 1..=4 {
            decide(&failed(n), &forever, &mut r);
        }
        assert_eq!(decide(&After { progress: true, ..failed(5) }, &forever, &mut r), retry(0));
        assert_eq!(decide(&failed(6), &forever, &mut r), retry(1));
    }
}
