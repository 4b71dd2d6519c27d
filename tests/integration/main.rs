//! One integration test binary (ripgrep's layout): each module runs the
//! built `retry` against small child scripts in `tests/fixtures/`.

mod ci;
mod cmdline;
mod completions;
mod core;
mod countdown;
mod fleet;
mod fleet_queue;
mod generated;
mod hardening;
mod hostile;
mod metrics;
mod output;
mod processes;
mod production;
mod queue;
mod report;
mod server;
mod signals;
mod store;
mod summary;
mod upgrade;
mod util;
mod waits;
