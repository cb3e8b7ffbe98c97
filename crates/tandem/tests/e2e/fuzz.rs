//! `tandem fuzz` through the binary: a short live run against a real server, the exit code and
//! the summary line of a sabotaged sim run, and replaying the file it wrote.

use std::process::Command;

use crate::server::{Server, binary};

fn seed() -> u64 {
    let s = std::env::var("TANDEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_123);
    println!("TANDEM_TEST_SEED={s}");
    s
}

fn fuzz(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .arg("fuzz")
        .args(args)
        .arg("--no-progress")
        .env("TANDEM_LOG", "warn")
        .output()
        .expect("run tandem fuzz");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

#[test]
fn short_live_run_against_the_real_binary_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let url = format!("ws://{}", server.addr);
    let seed = seed().to_string();
    let (code, out) = fuzz(&[
        "--mode",
        "live",
        "--url",
        &url,
        "--seed",
        &seed,
        "--scenarios",
        "5",
        "--ops",
        "40",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(last_line(&out), "scenarios: 5, failures: 0", "{out}");
    assert!(out.starts_with(&format!("seed: {seed}\n")), "{out}");
    server.kill();
}

#[test]
fn sabotage_exits_1_and_the_replay_file_reproduces_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = seed().to_string();
    let out_dir = dir.path().to_str().expect("utf-8 path");
    let (code, out) = fuzz(&[
        "--seed",
        &seed,
        "--scenarios",
        "2",
        "--ops",
        "30",
        "--sabotage",
        "skip-log-write",
        "--out-dir",
        out_dir,
    ]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(last_line(&out), "scenarios: 2, failures: 2", "{out}");
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("replay file: "))
        .and_then(|l| l.split(" (run:").next())
        .expect("a replay file is named");
    let (code, again) = fuzz(&["--replay", replay]);
    assert_eq!(code, 1, "{again}");
    assert!(again.contains("FAILURE: "), "{again}");
    assert_eq!(last_line(&again), "scenarios: 1, failures: 1", "{again}");
}

/// A replica that takes its process down (as yrs does when it corrupts memory) is one failed
/// scenario with a replay file; the campaign goes on and prints its summary.
#[test]
fn a_crashing_replica_is_a_reported_failure_and_the_campaign_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = seed().to_string();
    let out_dir = dir.path().to_str().expect("utf-8 path");
    let (code, out) = fuzz(&[
        "--seed",
        &seed,
        "--scenarios",
        "3",
        "--ops",
        "20",
        "--sabotage",
        "crash-client",
        "--out-dir",
        out_dir,
    ]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(last_line(&out), "scenarios: 3, failures: 3", "{out}");
    for k in 0..3 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("FAILURE in scenario {k} ")))
            .unwrap_or_else(|| panic!("scenario {k} not reported:\n{out}"));
        assert!(line.contains("killed by signal 6 (SIGABRT)"), "{line}");
    }
    let replays: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("replay file: "))
        .filter_map(|l| l.split(" (run:").next())
        .collect();
    assert_eq!(replays.len(), 3, "{out}");
    let (code, again) = fuzz(&["--replay", replays[2]]);
    assert_eq!(code, 1, "{again}");
    assert!(
        again.contains("FAILURE: the scenario's process died"),
        "{again}"
    );
    assert_eq!(last_line(&again), "scenarios: 1, failures: 1", "{again}");
}
