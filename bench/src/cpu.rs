//! CPU accounting and pinning of the processes a benchmark runs: a server's CPU time comes
//! from its own process accounting (`/proc/<pid>/stat`, every thread), so the client's work
//! and the machine's noise are not in it.

use std::{process::Command, time::Duration};

/// Clock ticks a second of `/proc/<pid>/stat` (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// The user plus system CPU time `pid` has used, all threads.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| std::io::Error::other("no ')' in /proc/<pid>/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) of the whole line are 12 and 13 after the name.
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no field {i} in /proc/{pid}/stat")))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
}

/// The CPU time of `pids` together.
pub fn cpu_time_of(pids: &[u32]) -> std::io::Result<Duration> {
    pids.iter().map(|p| cpu_time(*p)).sum()
}

/// Pins every thread of `pid` (and those it starts later) to CPU `core`.
pub fn pin(pid: u32, core: usize) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-c", "-p", &core.to_string(), &pid.to_string()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "taskset -a -c -p {core} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The cores this machine has.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu_and_it_only_grows() {
        let pid = std::process::id();
        let before = cpu_time(pid).expect("own stat");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_time(pid).expect("own stat");
        assert!(
            after >= before + Duration::from_millis(50),
            "{before:?} -> {after:?}"
        );
    }
}
