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
