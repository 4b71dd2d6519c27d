//! One integration test binary (ripgrep's layout): each module runs the
//! built `retry` against small child scripts in `tests/fixtures/`.

mod core;
mod countdown;
mod fleet;
mod fleet_queue;
mod generated;
mod hardening;
mod output;
mod production;
mod queue;
mod report;
mod server;
mod signals;
mod store;
mod summary;
mod util;
