//! Evidence for the sled version choice (see ARCHITECTURE.md, "Why sled 0.34.7").
//!
//! Kill -9 durability harness, run against sled 0.34.7 ("old") and 1.0.0-alpha.124 ("new"):
//! a child process inserts key i, calls `flush()`, then prints i (its acknowledgement); the
//! parent SIGKILLs the child after a random number of acknowledgements, reopens the database in
//! a fresh process and counts acknowledged keys that are missing. It also reports the mean
//! insert+flush latency (the cost of Tandem's `sync` durability) and reopen (recovery) time.
//!
//! Run: `cargo run --release -- run old 100` and `cargo run --release -- run new 100`
//! (the database directory is created under the current directory).
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

trait Kv {
    fn put(&self, k: u64, v: &[u8]);
    fn flush(&self);
    fn has(&self, k: u64) -> bool;
}
struct Old(sled034::Db);
impl Kv for Old {
    fn put(&self, k: u64, v: &[u8]) {
        self.0.insert(k.to_be_bytes(), v).expect("insert");
    }
    fn flush(&self) {
        self.0.flush().expect("flush");
    }
    fn has(&self, k: u64) -> bool {
        self.0.get(k.to_be_bytes()).expect("get").is_some()
    }
}
struct New(sled1::Db);
impl Kv for New {
    fn put(&self, k: u64, v: &[u8]) {
        self.0.insert(k.to_be_bytes(), v).expect("insert");
    }
    fn flush(&self) {
        self.0.flush().expect("flush");
    }
    fn has(&self, k: u64) -> bool {
        self.0.get(k.to_be_bytes()).expect("get").is_some()
    }
}
fn open(which: &str, path: &str) -> Box<dyn Kv> {
    match which {
        "old" => Box::new(Old(sled034::open(path).expect("open"))),
        _ => Box::new(New(sled1::open(path).expect("open"))),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args[1].as_str() {
        "child" => {
            let (which, path, start): (&str, &str, u64) =
                (&args[2], &args[3], args[4].parse().unwrap());
            let db = open(which, path);
            let mut out = std::io::stdout().lock();
            let val = vec![7u8; 300];
            for i in start.. {
                db.put(i, &val);
                db.flush();
                writeln!(out, "{i}").unwrap();
                out.flush().unwrap();
            }
        }
        "verify" => {
            let (which, path, upto): (&str, &str, u64) =
                (&args[2], &args[3], args[4].parse().unwrap());
            let t = Instant::now();
            let db = open(which, path);
            let opened = t.elapsed();
            let mut lost = 0;
            for i in 0..upto {
                if !db.has(i) {
                    lost += 1;
                }
            }
            println!("{lost} {}", opened.as_micros());
        }
        "run" => {
            let which = args[2].clone();
            let cycles: u32 = args[3].parse().unwrap();
            let dir = format!("sled-eval-data-{which}");
            let _ = std::fs::remove_dir_all(&dir);
            let exe = std::env::current_exe().unwrap();
            let mut next = 0u64;
            let (mut total_lost, mut writes_time, mut writes) = (0u64, 0f64, 0u64);
            let mut open_us = Vec::new();
            for c in 0..cycles {
                let mut child = Command::new(&exe)
                    .args(["child", &which, &dir, &next.to_string()])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
                let n = rand::random_range(1..400u64);
                let t = Instant::now();
                let mut last = None;
                for _ in 0..n {
                    match lines.next() {
                        Some(Ok(l)) => last = Some(l.parse::<u64>().unwrap()),
                        _ => break,
                    }
                }
                writes_time += t.elapsed().as_secs_f64();
                writes += n;
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                let Some(last) = last else {
                    panic!("child died early in cycle {c}")
                };
                let o = Command::new(&exe)
                    .args(["verify", &which, &dir, &(last + 1).to_string()])
                    .output()
                    .unwrap();
                let s = String::from_utf8_lossy(&o.stdout);
                if !o.status.success() {
                    println!(
                        "cycle {c}: verify FAILED to open: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    total_lost += 1;
                    break;
                }
                let mut it = s.split_whitespace();
                let lost: u64 = it.next().unwrap().parse().unwrap();
                open_us.push(it.next().unwrap().parse::<u64>().unwrap());
                if lost > 0 {
                    println!("cycle {c}: {lost} acknowledged writes lost");
                }
                total_lost += lost;
                next = last + 1;
            }
            open_us.sort();
            println!(
                "{which}: cycles={cycles} acked_writes={next} lost={total_lost} flush+insert mean={:.3}ms reopen p50={}us max={}us dir={}",
                writes_time * 1000.0 / writes as f64,
                open_us[open_us.len() / 2],
                open_us[open_us.len() - 1],
                String::from_utf8_lossy(
                    &Command::new("du")
                        .args(["-sh", &dir])
                        .output()
                        .unwrap()
                        .stdout
                )
                .trim()
            );
        }
        _ => unreachable!(),
    }
}
