//! Is a failure retried? Pure: the facts of one finished attempt and the
//! rules in force give a [`Verdict`] with the reason a rule matched
//! (SPEC "Is a failure retried" and its Edge rules).

use crate::parse::{CodeSet, SignalSet, signal_name};
use crate::status::Status;

/// The rules from the command line.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// `--success-exit`: statuses besides 0 that count as a success.
    pub success: Option<CodeSet>,
    pub retry_on_exit: Option<CodeSet>,
    pub stop_on_exit: Option<CodeSet>,
    /// `--retry-on-signal`, `--stop-on-signal`: deaths by signal only.
    pub retry_on_signal: Option<SignalSet>,
    pub stop_on_signal: Option<SignalSet>,
    pub retry_on_stdout: bool,
    pub retry_on_stderr: bool,
    pub retry_if: bool,
}

impl Rules {
    /// Is `status` a success status: 0, or one `--success-exit` lists?
    pub fn is_success(&self, status: Status) -> bool {
        match status {
            Status::Exited(0) => true,
            Status::Exited(code) => self.success.is_some_and(|s| s.contains(code)),
            Status::Signaled(_)
            | Status::TimedOut
            | Status::Stopped(_)
            | Status::NotFound
            | Status::CannotExecute => false,
        }
    }
}

/// What one attempt did, as far as the rules care.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub status: Option<Status>,
    /// Why `--until`/`--until-match` failed; empty when they held (or none given).
    pub validation: Vec<String>,
    /// The first `--retry-on-stdout`/`--retry-on-stderr` regex that matched a line.
    pub stdout_retry: Option<String>,
    pub stderr_retry: Option<String>,
    /// The first `--stop-on-stdout`/`--stop-on-stderr` regex that matched a line.
    pub stdout_stop: Option<String>,
    pub stderr_stop: Option<String>,
    /// `--retry-if`: `Ok(())` when one held, `Err(why not)` otherwise; `None` when not given.
    pub retry_if: Option<Result<(), String>>,
}

/// The decision about one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Retryable; the rule that said so, if one had to.
    Retry(Option<String>),
    /// Permanent; why.
    Stop(String),
}

impl Verdict {
    /// The verdict as records keep it.
    pub fn verdict(&self) -> crate::record::Verdict {
        match self {
            Verdict::Success => crate::record::Verdict::Success,
            Verdict::Retry(_) => crate::record::Verdict::Retry,
            Verdict::Stop(_) => crate::record::Verdict::Stop,
        }
    }

    /// The rule that decided, or why the failure is permanent.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Verdict::Success => None,
            Verdict::Retry(rule) => rule.as_deref(),
            Verdict::Stop(why) => Some(why),
        }
    }
}

/// Applies the rules: stop rules win, retry rules combine with OR, and a
/// failure that matches no given retry rule is permanent.
pub fn classify(facts: &Facts, rules: &Rules) -> Verdict {
    let Some(status) = facts.status else {
        return Verdict::Stop("no attempt ran".to_string());
    };
    let exited_zero = rules.is_success(status);
    if exited_zero && facts.validation.is_empty() {
        return Verdict::Success;
    }
    if status.is_spawn_failure() {
        return Verdict::Stop("retry could not start the command; that is never retried".to_string());
    }
    if let Status::Stopped(sig) = status {
        // It would stop again: never retried.
        return Verdict::Stop(format!("stopped by {}, which is never retried", signal_name(sig)));
    }
    // Stop rules. Output rules judge every failure; exit-code lists judge
    // non-zero statuses only (SPEC Edge rules, "Validation failures").
    if let Some(re) = &facts.stdout_stop {
        return Verdict::Stop(format!("stdout matched --stop-on-stdout '{re}'"));
    }
    if let Some(re) = &facts.stderr_stop {
        return Verdict::Stop(format!("stderr matched --stop-on-stderr '{re}'"));
    }
    let code = status.code();
    if !exited_zero {
        if let Some(set) = &rules.stop_on_exit {
            if set.contains(code) {
                return Verdict::Stop(format!("status {code} is in --stop-on-exit"));
            }
        }
    }
    if let (Status::Signaled(sig), Some(set)) = (status, &rules.stop_on_signal) {
        if set.contains(sig) {
            return Verdict::Stop(format!("{} is in --stop-on-signal", signal_name(sig)));
        }
    }
    let retry_if_said = |facts: &Facts| match &facts.retry_if {
        Some(Ok(())) => Some(Ok("--retry-if held".to_string())),
        Some(Err(why)) => Some(Err(format!("--retry-if did not hold: {why}"))),
        None => None,
    };
    if exited_zero {
        // A validation failure: only --retry-if among the retry rules judges it.
        return match retry_if_said(facts) {
            Some(Ok(rule)) => Verdict::Retry(Some(rule)),
            Some(Err(why)) => Verdict::Stop(why),
            None => Verdict::Retry(None),
        };
    }
    let any_rule = rules.retry_on_exit.is_some()
        || rules.retry_on_signal.is_some()
        || rules.retry_on_stdout
        || rules.retry_on_stderr
        || rules.retry_if;
    if !any_rule {
        return Verdict::Retry(None);
    }
    if let Some(set) = &rules.retry_on_exit {
        if set.contains(code) {
            return Verdict::Retry(Some(format!("status {code} is in --retry-on-exit")));
        }
    }
    if let (Status::Signaled(sig), Some(set)) = (status, &rules.retry_on_signal) {
        if set.contains(sig) {
            return Verdict::Retry(Some(format!("{} is in --retry-on-signal", signal_name(sig))));
        }
    }
    if let Some(re) = &facts.stdout_retry {
        return Verdict::Retry(Some(format!("stdout matched '{re}'")));
    }
    if let Some(re) = &facts.stderr_retry {
        return Verdict::Retry(Some(format!("stderr matched '{re}'")));
    }
    match retry_if_said(facts) {
        Some(Ok(rule)) => Verdict::Retry(Some(rule)),
        Some(Err(why)) => Verdict::Stop(format!("no retry rule matched; {why}")),
        None => Verdict::Stop("no retry rule matched".to_string()),
    }
}

/// Must `--retry-if` be evaluated to decide? Not for a success, a spawn
/// failure or a stop for the terminal (never retried, see [`classify`]), a
/// failure a stop rule made permanent, or one another retry rule already
/// made retryable (ORed rules need only one "yes").
pub fn retry_if_needed(facts: &Facts, rules: &Rules) -> bool {
    let Some(status) = facts.status else {
        return false;
    };
    if !rules.retry_if || status.is_spawn_failure() || matches!(status, Status::Stopped(_)) {
        return false;
    }
    let exited_zero = rules.is_success(status);
    if exited_zero {
        return !facts.validation.is_empty() && facts.stdout_stop.is_none() && facts.stderr_stop.is_none();
    }
    let code = status.code();
    let signal = |set: Option<SignalSet>| matches!(status, Status::Signaled(sig) if set.is_some_and(|s| s.contains(sig)));
    let stopped = facts.stdout_stop.is_some()
        || facts.stderr_stop.is_some()
        || rules.stop_on_exit.is_some_and(|s| s.contains(code))
        || signal(rules.stop_on_signal);
    let retried = rules.retry_on_exit.is_some_and(|s| s.contains(code))
        || signal(rules.retry_on_signal)
        || facts.stdout_retry.is_some()
        || facts.stderr_retry.is_some();
    !stopped && !retried
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::codes;

    fn facts(status: Status) -> Facts {
        Facts { status: Some(status), ..Facts::default() }
    }

    fn rules_exit(retry: Option<&str>, stop: Option<&str>) -> Rules {
        Rules {
            retry_on_exit: retry.map(|c| codes(c).unwrap()),
            stop_on_exit: stop.map(|c| codes(c).unwrap()),
            ..Rules::default()
        }
    }

    fn word(f: &Facts, r: &Rules) -> &'static str {
        classify(f, r).verdict().word()
    }

    #[test]
    fn exit_status_rules() {
        let none = Rules::default();
        assert_eq!(word(&facts(Status::Exited(0)), &none), "success");
        assert_eq!(word(&facts(Status::Exited(1)), &none), "retry");
        assert_eq!(word(&facts(Status::TimedOut), &none), "retry");
        assert_eq!(word(&facts(Status::Signaled(9)), &none), "retry");
        // A child that itself exits 126/127 is an ordinary failure.
        assert_eq!(word(&facts(Status::Exited(127)), &none), "retry");
        assert_eq!(word(&facts(Status::NotFound), &none), "stop");
        assert_eq!(word(&facts(Status::CannotExecute), &none), "stop");

        let only = rules_exit(Some("1,75-78"), None);
        assert_eq!(word(&facts(Status::Exited(1)), &only), "retry");
        assert_eq!(word(&facts(Status::Exited(76)), &only), "retry");
        assert_eq!(word(&facts(Status::Exited(2)), &only), "stop");
        assert_eq!(word(&facts(Status::TimedOut), &only), "stop");

        let stop = rules_exit(None, Some("2,124"));
        assert_eq!(word(&facts(Status::Exited(1)), &stop), "retry");
        assert_eq!(word(&facts(Status::Exited(2)), &stop), "stop");
        assert_eq!(word(&facts(Status::TimedOut), &stop), "stop");

        // Stop rules win over retry rules.
        let both = rules_exit(Some("1-10"), Some("5"));
        assert_eq!(word(&facts(Status::Exited(4)), &both), "retry");
        assert_eq!(word(&facts(Status::Exited(5)), &both), "stop");
    }

    #[test]
    fn output_rules_or_together_and_stop_rules_win() {
        let rules = Rules { retry_on_stderr: true, retry_on_stdout: true, ..rules_exit(Some("3"), None) };
        let mut f = facts(Status::Exited(7));
        assert_eq!(word(&f, &rules), "stop");
        f.stderr_retry = Some("timeout".into());
        assert_eq!(classify(&f, &rules), Verdict::Retry(Some("stderr matched 'timeout'".into())));
        f.stdout_stop = Some("fatal".into());
        assert_eq!(word(&f, &rules), "stop");
        let mut g = facts(Status::Exited(3));
        assert_eq!(word(&g, &rules), "retry");
        g.stderr_stop = Some("denied".into());
        assert_eq!(word(&g, &rules), "stop");
    }

    #[test]
    fn validation_failures_are_judged_by_stop_output_rules_and_retry_if_only() {
        let mut f = facts(Status::Exited(0));
        f.validation = vec!["--until '.ok': last output was false".into()];
        // Exit-code lists do not apply to a status of 0.
        assert_eq!(word(&f, &rules_exit(Some("1"), Some("0"))), "retry");
        let mut stop = f.clone();
        stop.stdout_stop = Some("gone".into());
        assert_eq!(word(&stop, &Rules::default()), "stop");
        let rules = Rules { retry_if: true, ..Rules::default() };
        let mut yes = f.clone();
        yes.retry_if = Some(Ok(()));
        assert_eq!(word(&yes, &rules), "retry");
        let mut no = f;
        no.retry_if = Some(Err("last output was false".into()));
        assert_eq!(word(&no, &rules), "stop");
    }

    #[test]
    fn retry_if_ors_with_other_retry_rules_and_loses_to_stop_rules() {
        let rules = Rules { retry_if: true, ..rules_exit(Some("7"), Some("9")) };
        let mut f = facts(Status::Exited(7));
        f.retry_if = Some(Err("error: boom".into()));
        assert_eq!(word(&f, &rules), "retry");
        let mut g = facts(Status::Exited(8));
        g.retry_if = Some(Ok(()));
        assert_eq!(word(&g, &rules), "retry");
        g.retry_if = Some(Err("no output".into()));
        assert_eq!(word(&g, &rules), "stop");
        let mut h = facts(Status::Exited(9));
        h.retry_if = Some(Ok(()));
        assert_eq!(word(&h, &rules), "stop");
    }

    #[test]
    fn retry_if_is_evaluated_only_when_it_can_change_the_verdict() {
        let rules = Rules { retry_if: true, ..rules_exit(Some("7"), Some("9")) };
        assert!(!retry_if_needed(&facts(Status::Exited(0)), &rules));
        assert!(!retry_if_needed(&facts(Status::Exited(7)), &rules));
        assert!(!retry_if_needed(&facts(Status::Exited(9)), &rules));
        assert!(!retry_if_needed(&facts(Status::NotFound), &rules));
        assert!(retry_if_needed(&facts(Status::Exited(8)), &rules));
        let mut v = facts(Status::Exited(0));
        v.validation = vec!["x".into()];
        assert!(retry_if_needed(&v, &rules));
        assert!(!retry_if_needed(&facts(Status::Exited(8)), &Rules::default()));
    }

    #[test]
    fn signal_rules_judge_deaths_by_signal_only() {
        let sigs = |t: &str| Some(crate::parse::signals(t).unwrap());
        let retry_kill = Rules { retry_on_signal: sigs("KILL"), ..Rules::default() };
        assert_eq!(word(&facts(Status::Signaled(9)), &retry_kill), "retry");
        // An exit status of 137 is not a death by SIGKILL; nor is a timeout.
        assert_eq!(word(&facts(Status::Exited(137)), &retry_kill), "stop");
        assert_eq!(word(&facts(Status::TimedOut), &retry_kill), "stop");
        assert_eq!(word(&facts(Status::Signaled(15)), &retry_kill), "stop");
        let v = classify(&facts(Status::Signaled(9)), &retry_kill);
        assert_eq!(v.rule(), Some("SIGKILL is in --retry-on-signal"));
        // A stop rule wins, also over an exit-code list that holds 128+N.
        let both = Rules {
            retry_on_exit: Some(codes("137").unwrap()),
            stop_on_signal: sigs("KILL"),
            ..Rules::default()
        };
        assert_eq!(word(&facts(Status::Signaled(9)), &both), "stop");
        assert_eq!(word(&facts(Status::Exited(137)), &both), "retry");
        // Without retry rules a signal death is retried; --stop-on-signal stops it.
        let stop_segv = Rules { stop_on_signal: sigs("SEGV"), ..Rules::default() };
        assert_eq!(word(&facts(Status::Signaled(11)), &stop_segv), "stop");
        assert_eq!(word(&facts(Status::Signaled(9)), &stop_segv), "retry");
        // --retry-if is not needed when a signal rule decided.
        let with_if = Rules { retry_if: true, ..retry_kill };
        assert!(!retry_if_needed(&facts(Status::Signaled(9)), &with_if));
        assert!(retry_if_needed(&facts(Status::Signaled(15)), &with_if));
    }

    #[test]
    fn success_exit_statuses_are_successes_everywhere() {
        let rules = Rules {
            success: Some(codes("24").unwrap()),
            stop_on_exit: Some(codes("24").unwrap()),
            ..Rules::default()
        };
        assert_eq!(word(&facts(Status::Exited(24)), &rules), "success");
        assert_eq!(word(&facts(Status::Exited(23)), &rules), "retry");
        // --until still applies to it; a failed validation is judged as for 0.
        let invalid = Facts { validation: vec!["no".into()], ..facts(Status::Exited(24)) };
        assert_eq!(word(&invalid, &rules), "retry");
    }
}
