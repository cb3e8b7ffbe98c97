//! The tandem-server integration tests: real WebSockets against an in-process server on
//! 127.0.0.1:0 with a real sled store in a temp dir.
//!
//! Where new tests go:
//! - `sync.rs` — convergence, late joiners, awareness, isolation, restarts, compaction, unloading;
//! - `bad_input.rs` — every class of hostile or malformed input;
//! - `flow.rs` — slow peers and keepalive;
//! - `demo.rs` — the embedded web demo over plain HTTP;
//! - `api.rs` — the HTTP API and the SSE change feed (`http.rs` is their raw HTTP/1.1 client);
//! - `auth.rs` — tokens on WebSockets and the API, read-only peers, allowed origins;
//! - `metrics.rs` — `GET /metrics` before and after real traffic, and its auth;
//! - `tls.rs` — HTTPS and WSS with a test-made self-signed certificate, bad TLS clients, bad
//!   certificate and key files;
//! - `common.rs` — the server fixture and a y-websocket-speaking yrs client (no tests).

mod api;
mod auth;
mod bad_input;
mod common;
mod demo;
mod flow;
mod http;
mod metrics;
mod sync;
mod tls;
