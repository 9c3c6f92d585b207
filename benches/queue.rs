//! Work-queue benchmarks (filled in by the queue work).
fn main() {}
