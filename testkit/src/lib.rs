//! The one test-support crate below every other crate of the workspace: what the tests of
//! `nodepass-core`, `nodepass-api`, `nodepass-cli` and the end-to-end crate `nodepass-tests`
//! would otherwise each write again.
//!
//! # Layout
//! - [`server`]: a loopback TCP [`Server`](server::Server) that serves every connection with
//!   a handler and stops when dropped, and the [`echo`](server::echo) server.
//! - [`wait`]: the bounded [`eventually`](wait::eventually) for conditions no event announces.
//! - [`port`]: loopback ports chosen ahead of use, all different within one call.
//! - [`temp_dir`]: a named temporary directory (the `tempfile` crate), removed on drop.
//! - `http` (feature `http`): a one-connection-per-request HTTP/1.1 client (hyper) and a
//!   server-sent events reader, for the tests of a master.
//!
//! Servers and helpers with `nodepass` types (tunnels, masters, certificates, processes) stay
//! in `nodepass-tests` (`tests/src`), which re-exports these.
//!
//! # Rules every helper keeps
//! Loopback only (listeners bind `127.0.0.1:0` and report their address); every loop is bounded
//! in count and time; every task a helper spawns ends when the helper's value is dropped (or
//! the test's runtime ends).

#[cfg(feature = "http")]
pub mod http;
pub mod port;
pub mod server;
pub mod wait;

pub use port::{free_port, free_ports};
pub use tempfile::TempDir;
pub use wait::eventually;

/// A fresh directory named `nodepass-NAME-...` under the system temporary directory, removed
/// (with its contents) when the value is dropped. Panics if it cannot be created.
pub fn temp_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("nodepass-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory for {name}: {e}"))
}
