//! The `retry` binary: everything lives in the library; see `lib.rs`.

fn main() -> std::process::ExitCode {
    retry::main_entry()
}
