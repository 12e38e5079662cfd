//! The process's peak memory, for the figures `harvest`, `train` and `bench` print.

/// The process's peak resident set size in MB (`VmHWM` in `/proc/self/status`; Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets `VmHWM` to the current RSS (Linux: writing 5 to `/proc/self/clear_refs`), so each workload
/// reports its own peak. Best effort: elsewhere the peak is the process's.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
