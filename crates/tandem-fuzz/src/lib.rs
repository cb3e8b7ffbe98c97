//! The conflict fuzzer behind `tandem fuzz`.
//!
//! * [`ops`] — editing operations on Y.Text / Y.Map / Y.Array (and nested types), serializable.
//! * [`sim`] — the deterministic simulator: clients, network, the real room and sled store,
//!   crashes, sabotage, and the convergence checks.
//! * [`live`] — the same scenarios against a running server over real WebSockets.
//!
//! * [`isolate`] — scenarios in a worker process, so a crash inside yrs is a reported failure.
//!
//! A campaign runs scenarios derived from one seed, shrinks each failure to a minimal step list
//! and writes a replay file.

pub mod isolate;
pub mod live;
pub mod ops;
pub mod sim;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use isolate::{InProcess, Isolated, Runner, WorkerCommand, worker_main};
pub use sim::{Counters, DurabilityMode, Sabotage, Scenario, Step, run_scenario};

#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("replay file {path}: {detail}")]
    Replay { path: PathBuf, detail: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Live(String),
}

/// What a campaign runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub scenarios: u64,
    pub clients: usize,
    pub ops: usize,
    /// Stop starting new scenarios after this long (wall clock; scenarios stay deterministic).
    pub duration: Option<Duration>,
    pub durability: DurabilityMode,
    pub sabotage: Option<Sabotage>,
    /// Where replay files go.
    pub out_dir: PathBuf,
    pub progress: bool,
}

/// The content of a replay file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayFile {
    pub version: u32,
    /// The campaign seed and the scenario's index in it.
    pub campaign_seed: u64,
    pub scenario_index: u64,
    /// The failure the (shrunk) scenario produced when it was written.
    pub failure: String,
    pub scenario: Scenario,
}

/// The outcome of a campaign.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub scenarios: u64,
    pub failures: u64,
    pub counters: Counters,
    pub elapsed: Duration,
    /// Replay files written for failures.
    pub replay_files: Vec<PathBuf>,
}

impl Summary {
    fn add(&mut self, c: Counters) {
        self.counters.ops += c.ops;
        self.counters.messages += c.messages;
        self.counters.restarts += c.restarts;
    }

    /// The end-of-run report; its last line is `scenarios: N, failures: F`.
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "ops: {}, messages: {}, restarts: {}, ops/s: {:.0}, elapsed: {:.1}s\nscenarios: {}, failures: {}",
            self.counters.ops,
            self.counters.messages,
            self.counters.restarts,
            self.counters.ops as f64 / secs,
            secs,
            self.scenarios,
            self.failures
        )
    }
}

/// A fresh random campaign seed (kept below 2^53 so it survives JSON tools unchanged).
pub fn random_seed() -> u64 {
    rand::random::<u64>() >> 11
}

/// The seed of scenario `i` of a campaign seeded with `seed` (splitmix64, so neighbours differ).
pub fn scenario_seed(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Shrinks a failing scenario's steps by delta debugging: removes ever smaller chunks while the
/// scenario still fails, re-running it deterministically each time. At most `budget` runs.
pub fn shrink(scenario: &Scenario, budget: usize) -> (Scenario, String) {
    shrink_with(&mut InProcess, scenario, budget)
}

/// [`shrink`], running each candidate with `runner`.
pub fn shrink_with(
    runner: &mut dyn Runner,
    scenario: &Scenario,
    budget: usize,
) -> (Scenario, String) {
    let mut best = scenario.clone();
    let mut failure = match runner.run(&best).0 {
        Err(e) => e,
        Ok(()) => return (best, "scenario no longer fails".into()),
    };
    let mut runs = 1;
    let mut chunk = best.steps.len().div_ceil(2).max(1);
    while runs < budget && !best.steps.is_empty() {
        let mut removed_any = false;
        let mut start = 0;
        while start < best.steps.len() && runs < budget {
            let mut candidate = best.clone();
            let end = (start + chunk).min(candidate.steps.len());
            candidate.steps.drain(start..end);
            runs += 1;
            if let (Err(e), _) = runner.run(&candidate) {
                best = candidate;
                failure = e;
                removed_any = true;
            } else {
                start += chunk;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        if !removed_any || chunk > 1 {
            chunk = (chunk / 2).max(1);
        }
    }
    (best, failure)
}

fn write_replay(out_dir: &Path, file: &ReplayFile) -> Result<PathBuf, FuzzError> {
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join(format!(
        "tandem-fuzz-{}-{}.json",
        file.campaign_seed, file.scenario_index
    ));
    let json = serde_json::to_string_pretty(file).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// Runs a simulated campaign in this process, printing progress and failures to `out`.
pub fn run_sim(opts: &Options, out: &mut dyn Write) -> Result<Summary, FuzzError> {
    run_sim_with(opts, &mut InProcess, out)
}

/// Runs a simulated campaign with `runner` (e.g. [`Isolated`]: a crash is one failed scenario),
/// printing progress and failures to `out`.
pub fn run_sim_with(
    opts: &Options,
    runner: &mut dyn Runner,
    out: &mut dyn Write,
) -> Result<Summary, FuzzError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let bar = progress_bar(opts);
    for (i, scenario) in campaign(opts, started, opts.sabotage) {
        let (result, counters) = runner.run(&scenario);
        summary.scenarios += 1;
        summary.add(counters);
        bar.inc(1);
        if let Err(failure) = result {
            summary.failures += 1;
            bar.suspend(|| -> Result<(), FuzzError> {
                writeln!(
                    out,
                    "FAILURE in scenario {i} (campaign seed {}, scenario seed {}): {failure}",
                    opts.seed, scenario.seed
                )?;
                writeln!(
                    out,
                    "scenario: {} clients, {} steps, durability {:?}, compaction every {} entries",
                    scenario.clients,
                    scenario.steps.len(),
                    scenario.durability,
                    scenario.compact_after_entries
                )?;
                let (small, small_failure) = shrink_with(runner, &scenario, 400);
                writeln!(
                    out,
                    "shrunk to {} steps: {small_failure}",
                    small.steps.len()
                )?;
                for (k, step) in small.steps.iter().enumerate() {
                    writeln!(
                        out,
                        "  {k}: {}",
                        serde_json::to_string(step).unwrap_or_default()
                    )?;
                }
                let path = write_replay(
                    &opts.out_dir,
                    &ReplayFile {
                        version: 1,
                        campaign_seed: opts.seed,
                        scenario_index: i,
                        failure: small_failure,
                        scenario: small,
                    },
                )?;
                writeln!(
                    out,
                    "replay file: {} (run: tandem fuzz --replay {})",
                    path.display(),
                    path.display()
                )?;
                summary.replay_files.push(path);
                Ok(())
            })?;
        }
    }
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// A campaign's scenarios in order, each with its index: scenario `i` is generated from
/// [`scenario_seed`]`(opts.seed, i)`. Stops after `opts.scenarios`, or before the first
/// scenario that would start once `opts.duration` (counted from `started`) has passed.
pub(crate) fn campaign(
    opts: &Options,
    started: Instant,
    sabotage: Option<Sabotage>,
) -> impl Iterator<Item = (u64, Scenario)> + '_ {
    (0..opts.scenarios)
        .take_while(move |_| opts.duration.is_none_or(|d| started.elapsed() < d))
        .map(move |i| {
            let scenario = Scenario::generate(
                scenario_seed(opts.seed, i),
                opts.clients,
                opts.ops,
                opts.durability,
                sabotage,
            );
            (i, scenario)
        })
}

pub(crate) fn progress_bar(opts: &Options) -> indicatif::ProgressBar {
    if !opts.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(opts.scenarios);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} scenarios ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Reads a replay file and runs its scenario once, in this process.
pub fn replay(path: &Path, out: &mut dyn Write) -> Result<Summary, FuzzError> {
    replay_with(path, &mut InProcess, out)
}

/// Reads a replay file and runs its scenario once with `runner`.
pub fn replay_with(
    path: &Path,
    runner: &mut dyn Runner,
    out: &mut dyn Write,
) -> Result<Summary, FuzzError> {
    let err = |detail: String| FuzzError::Replay {
        path: path.to_owned(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: ReplayFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let started = Instant::now();
    let (result, counters) = runner.run(&file.scenario);
    let mut summary = Summary {
        scenarios: 1,
        counters,
        ..Summary::default()
    };
    writeln!(
        out,
        "replaying scenario {} of campaign seed {} ({} steps)",
        file.scenario_index,
        file.campaign_seed,
        file.scenario.steps.len()
    )?;
    match result {
        Ok(()) => writeln!(out, "scenario passed (recorded failure: {})", file.failure)?,
        Err(e) => {
            summary.failures = 1;
            writeln!(out, "FAILURE: {e}")?;
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn seed() -> u64 {
        std::env::var("TANDEM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(42)
    }

    #[test]
    fn scenarios_are_deterministic_and_pass() {
        let s = seed();
        println!("seed {s}");
        for i in 0..5 {
            let sc = Scenario::generate(scenario_seed(s, i), 3, 60, DurabilityMode::Sync, None);
            let (a, ca) = run_scenario(&sc);
            let (b, cb) = run_scenario(&sc);
            assert_eq!(a, Ok(()), "scenario {i}");
            assert_eq!(b, Ok(()));
            assert_eq!(ca, cb);
        }
    }

    #[test]
    fn every_sabotage_is_caught_and_shrinks() {
        let s = seed();
        println!("seed {s}");
        for kind in Sabotage::ALL {
            for i in 0..3 {
                let sc = Scenario::generate(
                    scenario_seed(s, i),
                    2,
                    30,
                    DurabilityMode::Sync,
                    Some(kind),
                );
                let (r, _) = run_scenario(&sc);
                assert!(r.is_err(), "{kind:?} not caught in scenario {i}");
            }
            let sc = Scenario::generate(s, 2, 30, DurabilityMode::Sync, Some(kind));
            let (small, failure) = shrink(&sc, 200);
            assert!(small.steps.len() < sc.steps.len(), "{kind:?}: {failure}");
            assert!(run_scenario(&small).0.is_err());
        }
    }
}
