//! Scenarios in a child process, so that a replica or room that crashes the process (yrs
//! corrupting memory: SIGSEGV, SIGBUS, abort; a stack overflow) is reported as a failure instead
//! of ending the campaign.
//!
//! The parent re-executes a worker (for `tandem fuzz`, the binary itself with a hidden
//! subcommand that calls [`worker_main`]) and talks to it in lines: one JSON [`Scenario`] per
//! line on the worker's stdin, one JSON [`Outcome`] per line back on its stdout. The worker
//! runs scenarios one after the other; when it dies (or stops answering within the timeout),
//! the scenario it was running fails with the cause, and the next scenario starts a new worker.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sim::{Counters, Scenario, run_scenario};

/// What a worker answers for one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub result: Result<(), String>,
    pub counters: Counters,
}

/// Runs scenarios and reports their outcomes; how is up to the implementation.
pub trait Runner {
    fn run(&mut self, scenario: &Scenario) -> (Result<(), String>, Counters);
}

/// Runs scenarios in this process (the library's own tests; nothing protects the caller from a
/// crash inside yrs).
#[derive(Debug, Default)]
pub struct InProcess;

impl Runner for InProcess {
    fn run(&mut self, scenario: &Scenario) -> (Result<(), String>, Counters) {
        run_scenario(scenario)
    }
}

/// How to start a worker: a program and its arguments; it must call [`worker_main`] on its
/// stdin and stdout.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// A scenario that runs longer than this fails (the worker is killed).
    pub timeout: Duration,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

/// Runs every scenario in a worker process (see the module documentation).
pub struct Isolated {
    command: WorkerCommand,
    worker: Option<Worker>,
}

impl Isolated {
    pub fn new(command: WorkerCommand) -> Self {
        Isolated {
            command,
            worker: None,
        }
    }

    fn spawn(&self) -> Result<Worker, String> {
        let mut child = Command::new(&self.command.program)
            .args(&self.command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start the fuzz worker {}: {e}",
                    self.command.program.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the fuzz worker has no stdin/stdout pipe".into());
        };
        let (tx, lines) = mpsc::channel();
        // A reader thread, so the parent can wait for an answer with a timeout; it ends at the
        // worker's exit (end of its stdout).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            lines,
        })
    }

    /// Sends `scenario` to a worker (starting one if needed) and waits for its outcome.
    fn exchange(&mut self, scenario: &Scenario) -> Result<Outcome, String> {
        let mut worker = match self.worker.take() {
            Some(w) => w,
            None => self.spawn()?,
        };
        let mut line = serde_json::to_string(scenario).map_err(|e| e.to_string())?;
        line.push('\n');
        let sent = worker
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| worker.stdin.flush());
        let answer = match sent {
            Ok(()) => worker.lines.recv_timeout(self.command.timeout),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        };
        match answer {
            Ok(line) => match serde_json::from_str::<Outcome>(&line) {
                Ok(outcome) => {
                    self.worker = Some(worker);
                    Ok(outcome)
                }
                Err(e) => {
                    end(worker);
                    Err(format!("the fuzz worker answered garbage ({e}): {line:?}"))
                }
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                end(worker);
                Err(format!(
                    "the scenario ran longer than {:?} (worker killed)",
                    self.command.timeout
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = worker.child.kill();
                let status = worker.child.wait();
                Err(match status {
                    Ok(status) => format!("the scenario's process died: {}", describe(status)),
                    Err(e) => format!("the scenario's process died (status unknown: {e})"),
                })
            }
        }
    }
}

impl Runner for Isolated {
    fn run(&mut self, scenario: &Scenario) -> (Result<(), String>, Counters) {
        match self.exchange(scenario) {
            Ok(outcome) => (outcome.result, outcome.counters),
            Err(e) => (Err(e), Counters::default()),
        }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        // between scenarios the worker is idle: nothing is lost by ending it
        if let Some(w) = self.worker.take() {
            end(w);
        }
    }
}

fn end(mut worker: Worker) {
    let _ = worker.child.kill();
    let _ = worker.child.wait();
}

/// "killed by signal 11 (SIGSEGV)", "exit status 101", …
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => format!("{status}"),
    }
}

/// The worker's loop: reads one JSON scenario per line from `input`, runs it, writes one JSON
/// [`Outcome`] per line to `output`; returns at the end of `input`.
pub fn worker_main(input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let (result, counters) = match serde_json::from_str::<Scenario>(&line) {
            Ok(scenario) => run_scenario(&scenario),
            Err(e) => (Err(format!("bad scenario line: {e}")), Counters::default()),
        };
        let answer =
            serde_json::to_string(&Outcome { result, counters }).map_err(std::io::Error::other)?;
        writeln!(output, "{answer}")?;
        output.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sim::DurabilityMode;

    #[test]
    fn the_worker_loop_answers_each_scenario_in_order() {
        let a = Scenario::generate(1, 2, 10, DurabilityMode::Sync, None);
        let b = Scenario::generate(
            2,
            2,
            10,
            DurabilityMode::Sync,
            Some(crate::Sabotage::SkipLogWrite),
        );
        let input = format!(
            "{}\n\n{}\nnot json\n",
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let mut out = Vec::new();
        worker_main(input.as_bytes(), &mut out).unwrap();
        let outcomes: Vec<Outcome> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[0].result, Ok(()));
        assert_eq!(outcomes[0].counters, run_scenario(&a).1);
        assert!(outcomes[1].result.is_err());
        assert!(
            outcomes[2]
                .result
                .as_ref()
                .unwrap_err()
                .contains("bad scenario")
        );
    }

    #[test]
    fn a_worker_that_dies_is_a_failure_with_its_cause_and_the_next_scenario_gets_a_new_one() {
        // `sh` stands in for a worker: it answers the first line, then dies by SIGABRT.
        let ok = serde_json::to_string(&Outcome {
            result: Ok(()),
            counters: Counters::default(),
        })
        .unwrap();
        let script = format!("read l; echo '{ok}'; read l; kill -ABRT $$");
        let mut runner = Isolated::new(WorkerCommand {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            timeout: Duration::from_secs(60),
        });
        let sc = Scenario::generate(1, 1, 1, DurabilityMode::Sync, None);
        assert_eq!(runner.run(&sc).0, Ok(()));
        let (r, _) = runner.run(&sc);
        assert!(r.as_ref().unwrap_err().contains("SIGABRT"), "{r:?}");
        // a fresh worker
        assert_eq!(runner.run(&sc).0, Ok(()));
    }

    #[test]
    fn a_worker_that_hangs_is_killed_after_the_timeout() {
        let mut runner = Isolated::new(WorkerCommand {
            program: "sh".into(),
            args: vec!["-c".into(), "read l; exec sleep 600".into()],
            timeout: Duration::from_millis(300),
        });
        let sc = Scenario::generate(1, 1, 1, DurabilityMode::Sync, None);
        let (r, _) = runner.run(&sc);
        assert!(r.as_ref().unwrap_err().contains("longer than"), "{r:?}");
    }
}
