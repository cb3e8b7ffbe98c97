//! Smoke runs of every `tandem bench` workload against the real binary, at tiny sizes. They check
//! that each run is correct (every delivery attributed, the text verified after SIGKILL), never
//! how fast it was.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use yrs::{ReadTxn, StateVector, Text, Transact};

use crate::server::binary;

/// A port that was free a moment ago (the bench's managed server binds it by number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs `tandem bench <args>` with a managed Tandem server and returns the final JSON line.
fn bench(data: &Path, traces: &Path, args: &[&str]) -> Value {
    bench_against(
        |port| {
            format!(
                "{} serve --listen 127.0.0.1:{port} --data {} --log-level warn",
                binary(),
                data.display()
            )
        },
        traces,
        args,
    )
}

/// Runs `tandem bench <args>` against the server `serve(port)` starts; returns the JSON line.
fn bench_against(serve: impl FnOnce(u16) -> String, traces: &Path, args: &[&str]) -> Value {
    let port = free_port();
    let serve = serve(port);
    let out = Command::new(binary())
        .args(["bench", "--url", &format!("ws://127.0.0.1:{port}")])
        .args(["--server-cmd", &serve, "--timeout-secs", "30", "--traces"])
        .arg(traces)
        .args(args)
        .output()
        .expect("run tandem bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tandem bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a JSON line");
    let json: Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(json["errors"], Value::Array(vec![]), "{stdout}");
    json
}

fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    (
        tempfile::tempdir().expect("data"),
        tempfile::tempdir().expect("traces"),
    )
}

const SMALL_FANOUT: &[&str] = &[
    "fanout",
    "--rooms",
    "2",
    "--clients",
    "3",
    "--hz",
    "20",
    "--secs",
    "1",
    "--drain-secs",
    "20",
];

#[test]
fn fanout_attributes_every_delivery() {
    let (data, traces) = dirs();
    let j = bench(data.path(), traces.path(), SMALL_FANOUT);
    assert_fanout_complete(&j);
}

/// The floor relay (`bench/compare.sh` runs it beside the servers) passes the same run: every
/// character reaches every other client of its room.
#[test]
fn fanout_through_the_floor_relay() {
    let traces = tempfile::tempdir().expect("traces");
    let j = bench_against(
        |port| format!("{} bench-relay --listen 127.0.0.1:{port}", binary()),
        traces.path(),
        SMALL_FANOUT,
    );
    assert_fanout_complete(&j);
}

fn assert_fanout_complete(j: &Value) {
    assert_eq!(j["workload"], "fanout");
    assert_eq!(j["connected"], 6);
    assert_eq!(j["connect_failures"], 0);
    let sent = j["sent"].as_u64().expect("sent");
    assert!(sent > 0);
    // Each character is expected by the 2 other clients of its room, and every one arrived.
    assert_eq!(j["expected"].as_u64(), Some(sent * 2));
    assert_eq!(j["delivered"], j["expected"]);
    assert_eq!(j["missing"], 0);
    assert_eq!(j["latency"]["count"], j["delivered"]);
    assert!(j["server_cpu_secs"].as_f64().is_some());
}

#[test]
fn saturate_runs_its_steps() {
    let (data, traces) = dirs();
    let j = bench(
        data.path(),
        traces.path(),
        &[
            "saturate",
            "--rooms",
            "1",
            "--clients",
            "2",
            "--start-hz",
            "5",
            "--factor",
            "2",
            "--step-secs",
            "0.5",
            "--max-steps",
            "2",
            "--max-p99-ms",
            "100000",
        ],
    );
    let steps = j["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{j}");
    for s in steps {
        assert_eq!(s["missing"], 0);
    }
    assert!(
        j["max_sustained_deliveries_per_sec"]
            .as_f64()
            .expect("rate")
            > 0.0
    );
}

#[test]
fn ingest_survives_sigkill() {
    let (data, traces) = dirs();
    // A synthetic trace with inserts, deletes and a multi-patch transaction.
    let mut text = String::new();
    let mut txns = Vec::new();
    for i in 0..400usize {
        let patch = if i % 5 == 4 && !text.is_empty() {
            let pos = (i * 7) % text.len();
            text.remove(pos);
            serde_json::json!([[pos, 1, ""]])
        } else {
            let pos = (i * 13) % (text.len() + 1);
            let c = char::from(b'a' + (i % 26) as u8);
            text.insert(pos, c);
            serde_json::json!([[pos, 0, c.to_string()]])
        };
        txns.push(serde_json::json!({ "time": "", "patches": patch }));
    }
    let trace = serde_json::json!({ "startContent": "", "endContent": text, "txns": txns });
    let path = traces.path().join("small.json");
    std::fs::write(&path, trace.to_string()).expect("write trace");
    let j = bench(
        data.path(),
        traces.path(),
        &[
            "ingest",
            "--trace",
            path.to_str().expect("utf-8"),
            "--window",
            "16",
        ],
    );
    assert_eq!(j["updates"], 400);
    assert_eq!(j["readers_complete"], 3);
    assert_eq!(j["restart"], "kill");
    assert_eq!(j["verified"], true, "{j}");
    assert_eq!(j["lost_clocks"], 0);
    assert_eq!(j["got_chars"].as_u64(), Some(text.len() as u64));
}

#[test]
fn coldload_verifies_after_restart() {
    let (data, traces) = dirs();
    let doc = yrs::Doc::with_client_id(5);
    let text = doc.get_or_insert_text("text");
    for i in 0..200u32 {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, i / 2, "z");
    }
    let v2 = doc
        .transact()
        .encode_state_as_update_v2(&StateVector::default());
    std::fs::write(traces.path().join("tiny.yjs"), v2).expect("write doc");
    let j = bench(
        data.path(),
        traces.path(),
        &["coldload", "--files", "tiny.yjs", "--repeat", "2"],
    );
    assert_eq!(j["cold"], true);
    let d = &j["docs"][0];
    assert_eq!(d["file"], "tiny.yjs");
    assert_eq!(d["text_chars"], 200);
    assert_eq!(d["verified"], true);
    assert_eq!(d["load_ms"].as_array().map(Vec::len), Some(2));
}

#[test]
fn connections_opens_every_client() {
    let (data, traces) = dirs();
    let j = bench(
        data.path(),
        traces.path(),
        &["connections", "--clients", "30", "--settle-secs", "0"],
    );
    assert_eq!(j["rooms"], 3);
    assert_eq!(j["connected"], 30);
    assert_eq!(j["connect_failures"], 0);
    assert!(j["rss_all_kib"].as_u64().expect("rss") > 0);
}
