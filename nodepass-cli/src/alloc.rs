//! The executables' memory allocator: jemalloc (`tikv-jemallocator`) instead of the C
//! library's malloc.
//!
//! Why: a tunnel moving data allocates and frees blocks of 16 KiB to a few hundred KiB at a
//! high rate (TLS records in rustls, HTTP/2 read buffers, WebSocket messages, relay chunks),
//! often on one worker thread and freed on another. glibc's malloc gives such memory back to
//! the kernel at once (heap trimming, `madvise`, `munmap`) and faults it in again moments later:
//! in the HTTP/2 bulk profile about a tenth of the tunnel processes' CPU went to page faults
//! (`clear_page_erms`, `do_anonymous_page`, memory-cgroup accounting) and `madvise`. jemalloc
//! returns unused pages only after they stayed unused for a while (its decay, 10 s by
//! default), so a busy tunnel reuses them. Measured A/B in one run (docs/benchmarks.md,
//! "Allocator"): 20-26 % less CPU per GB carried with TLS, memory per connection within 5 %.
//! mimalloc was measured too and rejected: no CPU gain and 10-20x the memory per WebSocket or
//! HTTP/2 connection.
//!
//! Only the executables choose an allocator; `nodepass-core` leaves the choice to the program
//! that embeds it.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
