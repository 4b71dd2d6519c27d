//! `retry`: run a command again until it works.

use std::process::ExitCode;

pub mod predicate;

/// Entry point of the binary.
pub fn main_entry() -> ExitCode {
    ExitCode::SUCCESS
}
