//! End-to-end tests of the `tandem` binary: it is started as a child process on 127.0.0.1:0
//! with a temp data dir, driven over real sockets, signalled and killed.
//!
//! Where new tests go:
//! - `crash.rs` — SIGKILL durability (every echoed update survives);
//! - `cli.rs` — command line, startup line, signals, HTTP-level refusals;
//! - `bench.rs` — smoke runs of every `tandem bench` workload against the real server;
//! - `fuzz.rs` — `tandem fuzz`: a live run, sabotage exit code, replay;
//! - `tls.rs` — `--tls-cert`/`--tls-key`: the https startup line, HTTPS, startup errors;
//! - `server.rs` — the child-process fixture and a minimal protocol client (no tests).

mod bench;
mod cli;
mod crash;
mod fuzz;
mod server;
mod tls;
