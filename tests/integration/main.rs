//! One integration test binary (ripgrep's layout): each module runs the
//! built `retry` against small child scripts in `tests/fixtures/`.

mod core;
mod hardening;
mod output;
mod signals;
mod util;
