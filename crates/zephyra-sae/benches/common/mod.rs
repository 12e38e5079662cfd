//! What the benchmarks share.

/// Starts the global thread pool with `RAYON_NUM_THREADS` threads (default 2, the laptop) and
/// returns the count.
pub fn init_threads() -> usize {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // An already started pool (none here: this runs first) keeps its size; the count printed is the request.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    threads
}
