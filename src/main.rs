//! The `retry` binary: everything lives in the library; see `lib.rs`.
//!
//! `main` is the C entry point (`no_main`), so std's runtime start-up is
//! skipped: on Linux it reads `/proc/self/maps` to find the main thread's
//! stack guard (glibc's `pthread_getattr_np`, ~115,000 instructions and
//! eight system calls) and installs stack-overflow handlers — about 50 µs
//! of every run, measured (README "Performance"). `retry::c_main` does the
//! two parts retry relies on: SIGPIPE ignored (EPIPE, not death, on a
//! closed stdout) and stdout flushed at the end. argv is taken from
//! `main`'s arguments (std would fill `std::env::args_os` on glibc only).
#![cfg_attr(not(test), no_main)]

/// SAFETY: the C runtime calls this once as the program's `main`; no other
/// symbol of the program is named `main` (the attribute is off in the unit
/// test build, whose harness provides its own).
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    use std::os::unix::ffi::OsStrExt as _;
    let n = usize::try_from(argc).unwrap_or(0);
    let mut args = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: the C runtime passes `argc` valid pointers in `argv`, each
        // to a NUL-terminated string that lives as long as the process.
        let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
        args.push(std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string());
    }
    std::ffi::c_int::from(retry::c_main(args))
}
