//! The `retry` binary: everything lives in the library; see `lib.rs`.
//!
//! `main` is the C entry point (`no_main`), so std's runtime start-up is
//! skipped: on Linux it reads `/proc/self/maps` to find the main thread's
//! stack guard (glibc's `pthread_getattr_np`, ~115,000 instructions and
//! eight system calls) and installs stack-overflow handlers — about 50 µs
//! of every run, measured (README "Performance"). `retry::c_main` does the
//! two parts retry relies on: SIGPIPE ignored (EPIPE, not death, on a
//! closed stdout) and stdout flushed at the end. std still captures argv
//! on glibc (`.init_array`), so `std::env::args_os` works as usual.
#![cfg_attr(not(test), no_main)]

/// SAFETY: the C runtime calls this once as the program's `main`; no other
/// symbol of the program is named `main` (the attribute is off in the unit
/// test build, whose harness provides its own).
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    std::ffi::c_int::from(retry::c_main())
}
