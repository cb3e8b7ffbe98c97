//! Campaign-level tests of the fuzzer: a seeded sweep with restarts that must pass, every
//! sabotage caught, and replay files that reproduce.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod regressions;

use tandem_fuzz::{DurabilityMode, Options, Sabotage, replay, run_sim};

fn seed() -> u64 {
    let s = std::env::var("TANDEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4_2026);
    println!("TANDEM_TEST_SEED={s}");
    s
}

fn options(seed: u64, scenarios: u64, out_dir: &std::path::Path) -> Options {
    Options {
        seed,
        scenarios,
        clients: 3,
        ops: 60,
        duration: None,
        durability: DurabilityMode::Sync,
        sabotage: None,
        out_dir: out_dir.to_owned(),
        progress: false,
    }
}

#[test]
fn sweep_of_200_scenarios_with_restarts_passes() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed();
    let mut out = Vec::new();
    let mut opts = options(seed, 200, dir.path());
    let sync = run_sim(&opts, &mut out).unwrap();
    opts.durability = DurabilityMode::Async;
    opts.scenarios = 50;
    opts.seed = seed.wrapping_add(1);
    let async_ = run_sim(&opts, &mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(sync.failures + async_.failures, 0, "{text}");
    assert_eq!(sync.scenarios, 200);
    assert!(sync.counters.restarts >= 200, "{:?}", sync.counters);
    assert!(sync.counters.ops > 200 * 50, "{:?}", sync.counters);
    assert!(sync.render().ends_with("scenarios: 200, failures: 0"));
}

#[test]
fn every_sabotage_is_reported_and_its_replay_reproduces() {
    let seed = seed();
    for kind in Sabotage::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(seed, 4, dir.path());
        opts.sabotage = Some(kind);
        let mut out = Vec::new();
        let summary = run_sim(&opts, &mut out).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(
            summary.failures, 4,
            "{kind:?} not caught every time:\n{text}"
        );
        assert!(summary.render().ends_with("scenarios: 4, failures: 4"));
        assert_eq!(summary.replay_files.len(), 4);
        for file in &summary.replay_files {
            let mut again = Vec::new();
            let r = replay(file, &mut again).unwrap();
            assert_eq!(r.failures, 1, "{}", String::from_utf8_lossy(&again));
        }
    }
}
