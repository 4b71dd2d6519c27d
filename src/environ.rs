//! The environment an attempt runs with: retry's own (or a queued job's
//! saved one) without the `RETRY_*` variables retry sets, plus those
//! variables for the attempt (SPEC "Processes and signals").

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt as _;

/// The variables retry sets in each attempt's environment.
pub const RETRY_VARS: [&str; 4] =
    ["RETRY_ATTEMPT", "RETRY_MAX_ATTEMPTS", "RETRY_LAST_STATUS", "RETRY_STATE_DIR"];

/// retry's environment without the RETRY_* variables it sets itself (a
/// nested retry's values win over its parent's). Entries without `=` are
/// skipped, as std's `vars_os` skips them.
pub fn base() -> Vec<CString> {
    let mut out = Vec::with_capacity(64);
    crate::sys::each_env(|entry| {
        let bytes = entry.to_bytes();
        // A name may begin with `=` (std reads it so too).
        let Some(eq) = bytes.iter().skip(1).position(|&b| b == b'=') else { return };
        let name = &bytes[..eq + 1];
        if !RETRY_VARS.iter().any(|v| v.as_bytes() == name) {
            out.push(entry.to_owned());
        }
    });
    out
}

/// `base` plus the `RETRY_*` variables: `RETRY_ATTEMPT` (empty when no
/// attempt ran), `RETRY_MAX_ATTEMPTS` (empty without a limit),
/// `RETRY_LAST_STATUS` (the previous attempt's status; empty before the
/// first), then `extra` (after retry's own variables, so they win over one
/// of the same name), then `RETRY_STATE_DIR` when there is a state dir.
/// Entries with a NUL byte are left out.
pub fn with_retry_vars<'a>(
    base: &[CString],
    attempt: Option<u32>,
    total: Option<u32>,
    last: Option<u8>,
    extra: impl IntoIterator<Item = (&'a str, &'a str)>,
    state_dir: Option<&std::path::Path>,
) -> Vec<CString> {
    use std::os::unix::ffi::OsStrExt as _;
    let text = |n: Option<String>| n.unwrap_or_default();
    let own = [
        ("RETRY_ATTEMPT", text(attempt.map(|n| n.to_string()))),
        ("RETRY_MAX_ATTEMPTS", text(total.map(|n| n.to_string()))),
        ("RETRY_LAST_STATUS", text(last.map(|c| c.to_string()))),
    ];
    let mut env = Vec::with_capacity(base.len() + 4);
    env.extend_from_slice(base);
    env.extend(own.iter().filter_map(|(name, value)| entry(name.as_bytes(), value.as_bytes())));
    env.extend(extra.into_iter().filter_map(|(name, value)| entry(name.as_bytes(), value.as_bytes())));
    if let Some(dir) = state_dir {
        env.extend(entry(b"RETRY_STATE_DIR", dir.as_os_str().as_bytes()));
    }
    env
}

/// `NAME=value` as a C string; `None` when either holds a NUL byte.
pub fn entry(name: &[u8], value: &[u8]) -> Option<CString> {
    // Sized once: no reallocation for `=` and CString's NUL.
    let mut bytes = Vec::with_capacity(name.len() + value.len() + 2);
    bytes.extend_from_slice(name);
    bytes.push(b'=');
    bytes.extend_from_slice(value);
    CString::new(bytes).ok()
}

/// The value of `name` in a `NAME=value` list.
pub fn value(env: &[CString], name: &[u8]) -> Option<OsString> {
    env.iter().find_map(|e| {
        let bytes = e.as_bytes();
        let value = bytes.strip_prefix(name)?.strip_prefix(b"=")?;
        Some(OsString::from_vec(value.to_vec()))
    })
}

/// The name of a `NAME=value` entry.
pub fn name_of(entry: &[u8]) -> &[u8] {
    entry.split(|b| *b == b'=').next().unwrap_or(entry)
}
