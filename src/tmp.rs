//! What retry puts in TMPDIR, and nothing else (SPEC Edge rules,
//! "Temporary files"): an already-unlinked spill file for captured stdout
//! or recorded stdin, and the private `retry-*` directory of
//! `--temp-state`. A failure names TMPDIR, never a random path that was
//! not created.

use std::fs::File;

use crate::error::Error;

/// Creates an already-unlinked file in TMPDIR (it vanishes even after
/// SIGKILL).
pub fn spill_file() -> Result<File, Error> {
    tempfile::tempfile().map_err(|e| Error::io(tmpdir_what("cannot create a temporary file"), e))
}

/// A fresh `retry-*` directory in TMPDIR, mode 0700: the command may keep
/// secrets there (tempfile's default is 0777 less the umask). `what`
/// begins the error message. It is removed when the returned value is
/// dropped, unless it is `keep`-ed.
pub fn state_dir(what: &str) -> Result<tempfile::TempDir, Error> {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .prefix("retry-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| Error::io(tmpdir_what(what), without_path(e)))
}

fn tmpdir_what(what: &str) -> String {
    let dir = std::env::temp_dir();
    format!("{what} in TMPDIR ({})", dir.display())
}

/// tempfile's errors end in "at path \"…/retry-XXXXXX\"", a random name
/// that was never created; the OS error before it is the clear part.
fn without_path(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((os, _)) => std::io::Error::new(e.kind(), os.to_string()),
        None => e,
    }
}
