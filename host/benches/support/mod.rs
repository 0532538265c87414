//! What the benchmarks share: a description of the machine, resident
//! memory of a process, a scratch directory, and writing a generated
//! section of BENCHMARKS.md.
#![allow(dead_code, reason = "each benchmark uses a subset")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Cores, CPU model, memory, kernel and toolchains, for the reports.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = |tool: &str, arg: &str| {
        Command::new(tool)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| format!("no {tool}"))
    };
    format!(
        "{cores} cores ({model}), {:.1} GiB RAM, Linux {}; {}; {}; wasmtime 48.0.8; release build",
        mem_kib as f64 / (1 << 20) as f64,
        kernel.trim(),
        version("rustc", "--version"),
        version("go", "version"),
    )
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time process `pid` has used so far (user + system, all threads),
/// from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A fresh, empty directory for one benchmark's files.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("host-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces the part of `BENCHMARKS.md` between `<!-- {tag}:start -->` and
/// `<!-- {tag}:end -->` with `report`, keeping the text around it; appends
/// the section if the markers are missing.
pub fn write_section(tag: &str, report: &str) {
    let (start, end) = (
        format!("<!-- {tag}:start -->"),
        format!("<!-- {tag}:end -->"),
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let new = match (old.find(&start), old.find(&end)) {
        (Some(s), Some(e)) if s < e => format!(
            "{}{start}\n{report}{end}{}",
            &old[..s],
            &old[e + end.len()..]
        ),
        _ => format!("{}\n\n{start}\n{report}{end}\n", old.trim_end()),
    };
    std::fs::write(&path, new).unwrap();
}
