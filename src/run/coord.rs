//! The run loop's view of shared state (SPEC "Across runs: shared
//! state"): admit the run (the circuit), gate each attempt (wait for a
//! `--concurrency` slot, then a `--rate` turn, interruptibly and within
//! `--max-time`), release the slot after it, and record the run's end. A
//! store error becomes 125 (`store_error`) or, with `--store-optional`, a
//! warning and an uncoordinated run.
//!
//! What a "run that gave up" is, for the circuit: one that ended exhausted,
//! stopped (a stop rule, or COMMAND not found) or at `--max-time`, after at
//! least one attempt ran. A run ended by a signal, or one whose stdout was
//! closed, counts neither way: a signal is an operator's or supervisor's
//! decision (Ctrl-C, a shutdown, a deploy), not news about the service, and
//! counting it would let a restart of many cron jobs open the circuit. A
//! trial run that ends so leaves the circuit half-open: the next run is the
//! trial.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::report::Reporter;
use crate::run::decide::ends_after;
use crate::status::{End, Ending};
use crate::store::{self, Admission, RunEnd, SLOT_RECHECK, Shared, Slot, Store, StoreError, Turn};

/// What the gate before an attempt decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Start the attempt now.
    Go,
    /// `--max-time` ends before a turn or a slot comes; which wait.
    Deadline(&'static str),
    /// A signal arrived while waiting.
    Interrupted(i32),
}

/// The run loop's view of shared state: admit, gate each attempt, release,
/// record. Owned by the run; `None` of it exists without `--key` and an
/// option that needs the store.
pub struct Coordination {
    shared: Shared,
    /// `None` once an error under `--store-optional` turned coordination off.
    store: Option<Box<dyn Store>>,
    slot: Option<Slot>,
    admitted: bool,
}

/// Sleeps until the instant (`None`: forever) unless a signal comes first;
/// returns that signal. The run loop's own interruptible sleep.
pub type Sleep<'a> = dyn FnMut(Option<Instant>) -> Option<i32> + 'a;

impl Coordination {
    /// Opens the store when an option needs it. An insecure directory is
    /// always an error; an unreachable store is one unless `--store-optional`.
    pub fn open(shared: Option<&Shared>, report: &Reporter) -> Result<Option<Coordination>, Error> {
        let Some(shared) = shared.filter(|s| s.active()) else {
            return Ok(None);
        };
        report.store_open(shared.key.as_str(), shared.store.masked());
        let store = match store::open(&shared.store, shared.lease) {
            Ok(store) => Some(store),
            Err(e) if shared.optional && !e.insecure => {
                report.warning(format!("{}; running without coordination (--store-optional)", e.message));
                None
            }
            Err(e) => return Err(Error::Store(e.message)),
        };
        Ok(Some(Coordination { shared: shared.clone(), store, slot: None, admitted: false }))
    }

    /// A failed store operation: 125, or under `--store-optional` a warning
    /// and no coordination from now on.
    fn failed(&mut self, e: StoreError, report: &Reporter) -> Result<(), Error> {
        if self.shared.optional && !e.insecure {
            report.warning(format!("{}; going on without coordination (--store-optional)", e.message));
            self.store = None;
            self.slot = None;
            Ok(())
        } else {
            Err(Error::Store(e.message))
        }
    }

    fn warnings(&mut self, report: &Reporter) {
        if let Some(store) = &mut self.store {
            for w in store.take_warnings() {
                report.warning(w);
            }
        }
    }

    /// Before attempt 1: `Some(how long the circuit stays open)` when it
    /// refuses the run (said on stderr as `circuit_open`), `None` to go on.
    pub fn admit(&mut self, report: &Reporter) -> Result<Option<Duration>, Error> {
        let (Some(circuit), Some(store)) = (self.shared.circuit, self.store.as_mut()) else {
            return Ok(None);
        };
        let answer = store.admit(&self.shared.key, &circuit);
        self.warnings(report);
        let key = &self.shared.key;
        match answer {
            Ok(Admission::Admitted { trial }) => {
                if trial {
                    report.circuit_trial(key.as_str());
                } else {
                    report.store_decision(key.as_str(), "the circuit is closed: the run may start".into());
                }
                self.admitted = true;
                Ok(None)
            }
            Ok(Admission::Refused { remaining, failures, trial_running }) => {
                report.circuit_open(key.as_str(), remaining, failures, trial_running);
                Ok(Some(remaining))
            }
            Err(e) => self.failed(e, report).map(|()| None),
        }
    }

    /// Before each attempt: wait for a slot, then for a rate turn (giving
    /// the slot back while waiting for the turn, so a slot is held only
    /// while an attempt runs), within `deadline`, interruptibly.
    pub fn gate(
        &mut self,
        attempt: u32,
        deadline: Option<Instant>,
        sleep: &mut Sleep<'_>,
        report: &Reporter,
    ) -> Result<Gate, Error> {
        let mut said = false;
        loop {
            if let Some(n) = self.shared.concurrency {
                if let Some(gate) = self.wait_for_slot(n, attempt, deadline, sleep, report, &mut said)? {
                    return Ok(gate);
                }
            }
            let (Some(rate), Some(store)) = (self.shared.rate, self.store.as_mut()) else {
                return Ok(Gate::Go);
            };
            let turn = store.rate_turn(&self.shared.key, &rate);
            self.warnings(report);
            let wait = match turn {
                Ok(Turn::Go) => {
                    report.store_decision(
                        self.shared.key.as_str(),
                        format!("attempt {attempt} took a --rate turn"),
                    );
                    return Ok(Gate::Go);
                }
                Ok(Turn::Wait(wait)) => wait,
                Err(e) => {
                    self.failed(e, report)?;
                    return Ok(Gate::Go);
                }
            };
            self.slot = None;
            report.store_wait(attempt, "rate", Some(wait));
            let wake = Instant::now().checked_add(wait);
            if ends_after(wake, deadline) {
                return Ok(Gate::Deadline("the wait for a --rate turn"));
            }
            if let Some(sig) = sleep(wake) {
                return Ok(Gate::Interrupted(sig));
            }
        }
    }

    /// Takes a free slot, looking again every [`SLOT_RECHECK`]; `Some` when
    /// the deadline or a signal ended the wait first.
    fn wait_for_slot(
        &mut self,
        n: u32,
        attempt: u32,
        deadline: Option<Instant>,
        sleep: &mut Sleep<'_>,
        report: &Reporter,
        said: &mut bool,
    ) -> Result<Option<Gate>, Error> {
        while let Some(store) = self.store.as_mut() {
            let got = store.acquire_slot(&self.shared.key, n);
            self.warnings(report);
            match got {
                Ok(Some(slot)) => {
                    self.slot = Some(slot);
                    report.store_decision(
                        self.shared.key.as_str(),
                        format!("attempt {attempt} took a --concurrency slot"),
                    );
                    return Ok(None);
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed(e, report)?;
                    continue;
                }
            }
            if !*said {
                report.store_wait(attempt, "concurrency", None);
                *said = true;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Some(Gate::Deadline("the wait for a free --concurrency slot")));
            }
            let wake = now.checked_add(SLOT_RECHECK).map(|w| deadline.map_or(w, |d| w.min(d)));
            if let Some(sig) = sleep(wake) {
                return Ok(Some(Gate::Interrupted(sig)));
            }
        }
        Ok(None)
    }

    /// After each attempt: its slot is free again.
    pub fn release(&mut self) {
        self.slot = None;
    }

    /// At the end of an admitted run: tell the circuit how it went.
    pub fn finish(&mut self, ending: &Ending, report: &Reporter) -> Result<(), Error> {
        self.slot = None;
        // What the lease renewers said (a slot lost, an attempt killed).
        self.warnings(report);
        let (Some(circuit), Some(store), true) = (self.shared.circuit, self.store.as_mut(), self.admitted)
        else {
            return Ok(());
        };
        self.admitted = false;
        let end = run_end(ending);
        let result = store.record_run(&self.shared.key, &circuit, end);
        self.warnings(report);
        match result {
            Ok(()) => {
                let what = match end {
                    RunEnd::Succeeded => "the run succeeded: the circuit is closed",
                    RunEnd::GaveUp => "the run gave up: one more failure for the circuit",
                    RunEnd::Abandoned => {
                        "the run ended by a signal or a closed stdout: the circuit is as it was"
                    }
                };
                report.store_decision(self.shared.key.as_str(), what.to_string());
                Ok(())
            }
            Err(e) => self.failed(e, report),
        }
    }
}

/// What a run's end means to the circuit (see the module doc).
pub fn run_end(ending: &Ending) -> RunEnd {
    match ending.end {
        End::Success => RunEnd::Succeeded,
        // (The store records a run before `--queue` may turn it into Queued.)
        End::Exhausted | End::Stopped | End::Deadline | End::Queued if ending.attempts > 0 => RunEnd::GaveUp,
        End::Exhausted | End::Stopped | End::Deadline | End::Queued => RunEnd::Abandoned,
        End::Interrupted { .. } | End::ClosedStdout | End::Refused => RunEnd::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_giving_up() {
        let o = |end, attempts| Ending { end, last: None, validation_failed: false, attempts };
        assert_eq!(run_end(&o(End::Success, 1)), RunEnd::Succeeded);
        for end in [End::Exhausted, End::Stopped, End::Deadline] {
            assert_eq!(run_end(&o(end, 2)), RunEnd::GaveUp);
        }
        assert_eq!(run_end(&o(End::Deadline, 0)), RunEnd::Abandoned);
        assert_eq!(run_end(&o(End::Interrupted { signal: 2, during_sleep: true }, 2)), RunEnd::Abandoned);
        assert_eq!(run_end(&o(End::ClosedStdout, 1)), RunEnd::Abandoned);
    }
}
