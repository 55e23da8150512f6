//! The machine, kernel and source a run measured.

use std::process::Command;

pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub memory: String,
    pub kernel: String,
    pub date: String,
    pub source: String,
    pub rustc: String,
    /// 1-minute load average when the run started.
    pub load: String,
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, m)| m.trim().to_string());
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or("unknown".into(), |kb| {
                format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
            });
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let head = output("git", &["-C", root, "rev-parse", "--short", "HEAD"])
            .unwrap_or_else(|| "unknown".into());
        let dirty =
            output("git", &["-C", root, "status", "--porcelain"]).is_some_and(|s| !s.is_empty());
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model,
            memory,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            source: if dirty {
                format!("{head} + uncommitted changes")
            } else {
                head
            },
            rustc: output("rustc", &["-V"]).unwrap_or_else(|| "unknown".into()),
            load: load_average(),
        }
    }
}

/// The 1-minute load average: other work on the machine skews every figure.
pub fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}
