//! Tests of the `strand` binary: real broker processes on loopback, each
//! with its own data directory, driven by the CLI and the Rust client. One
//! binary (see STYLE.md, "Tests"), sharing `support`.
//!
//! The quick tests run with `cargo test`. The slow suites are `#[ignore]`d
//! and run by `.ci/run` with `cargo test -p strand-cli --test tests --
//! --ignored`: the fault suite (`faults`, see `tests/FAULTS.md`) and the
//! deployment artifacts (`deploy`: local-cluster script, container image).

mod cli;
mod cluster;
mod deploy;
mod faults;
mod support;
