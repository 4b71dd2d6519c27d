//! The attempt running now, for the one party that may have to end it
//! from another thread: a Redis lease renewer that cannot keep its lease
//! (SPEC "Redis in production": a drain that cannot renew its lease kills
//! its attempt before the lease ends, so that no two drains run one job at
//! once for longer than a lease).
//!
//! `child::spawn` registers the process it started (and whether it leads
//! its own group) and `Child` withdraws it before the leader is reaped,
//! under one lock: while registered, the pid (and group id) cannot have
//! been recycled, so [`kill`] never signals a stranger. (One process runs
//! at a time: an attempt, or after it a hook or the predicate helper.)

use std::sync::Mutex;

/// The running attempt: its pid, and whether it leads its own group.
static RUNNING: Mutex<Option<(libc::pid_t, bool)>> = Mutex::new(None);

fn slot() -> std::sync::MutexGuard<'static, Option<(libc::pid_t, bool)>> {
    RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An attempt started: `pid` (its group's leader when `own_group`).
pub fn started(pid: libc::pid_t, own_group: bool) {
    *slot() = Some((pid, own_group));
}

/// Process `pid` is about to be reaped.
pub fn ended(pid: libc::pid_t) {
    let mut guard = slot();
    if guard.is_some_and(|(p, _)| p == pid) {
        *guard = None;
    }
}

/// SIGKILLs the running attempt (its whole group, or the child alone with
/// `--foreground`); false when none runs.
pub fn kill() -> bool {
    let guard = slot();
    let Some((pid, own_group)) = *guard else { return false };
    crate::sys::kill(if own_group { -pid } else { pid }, libc::SIGKILL);
    true
}
