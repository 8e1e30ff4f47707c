//! Benchmarks: not written yet (the benchmark issue).
