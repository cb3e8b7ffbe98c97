//! CPU time and memory of a process, read from `/proc/PID/stat` and `/proc/PID/status`.

use std::fs;

/// Linux reports `utime`/`stime` in clock ticks; `USER_HZ` is 100 on every mainstream kernel.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// A point-in-time reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time consumed so far, in seconds.
    pub cpu_secs: f64,
    /// Current resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size over the process's life, KiB (`VmHWM`).
    pub hwm_kib: u64,
}

/// Which process to read: a pid, or the generator itself.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Pid(u32),
    OwnProcess,
}

impl Target {
    fn dir(self) -> String {
        match self {
            Target::Pid(p) => format!("/proc/{p}"),
            Target::OwnProcess => "/proc/self".to_owned(),
        }
    }
}

/// Reads the process's counters; `None` when the process is gone or `/proc` is unavailable.
pub fn sample(target: Target) -> Option<ProcSample> {
    let dir = target.dir();
    let stat = fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = fs::read_to_string(format!("{dir}/status")).ok()?;
    Some(ProcSample {
        cpu_secs: parse_cpu_secs(&stat)?,
        rss_kib: parse_status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: parse_status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// `utime + stime` (fields 14 and 15) from a `/proc/PID/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_secs(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14 → index 11, stime index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

/// A `Key:   1234 kB` line of `/proc/PID/status`, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_cpu_secs(stat), Some(3.0));
        assert_eq!(parse_cpu_secs("garbage"), None);
    }

    #[test]
    fn parses_status_lines() {
        let status = "Name:\ttandem\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn reads_own_process() {
        let s = sample(Target::OwnProcess).expect("/proc/self");
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
