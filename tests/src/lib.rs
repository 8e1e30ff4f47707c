//! Test support shared by the end-to-end tests in `tests/tests/`: loopback servers for the
//! tunnels to reach, large hashed payloads, certificates, tunnel helpers, captured logs and
//! child processes.
//!
//! # Layout
//! - [`servers`]: echo, "collect then answer", tiny HTTP, recording, greeting servers, and a
//!   recording TCP [`servers::Tap`] placed between a client and its server.
//! - [`payload`]: a seeded generator of pseudo-random bytes, SHA-256, and a helper that streams
//!   a payload through a connection while hashing both directions.
//! - [`certs`]: a test CA and leaf certificates written as PEM files to a temporary directory.
//! - [`tunnel`]: start tunnels from URLs, wait for readiness, bounded [`tunnel::eventually`],
//!   round trips, free ports.
//! - [`logs`]: capture the `tracing` output of the current thread.
//! - [`process`]: run the executables as children (killed on drop) and find `curl`.
//! - [`postgres`]: a throw-away PostgreSQL server (fleet mode tests).
//! - [`transports`]: the scenarios every pool transport passes (WebSocket, HTTP/2).
//!
//! # Rules every helper keeps
//! Loopback only; listeners bind `127.0.0.1:0` and report their address (the only exception is
//! [`tunnel::free_port`], for executables that must be told a port up front). Every loop is
//! bounded in count and time, every wait has a deadline, and every task a helper spawns ends
//! when the helper's value is dropped (or the test's runtime ends).
//!
//! # Example
//! ```no_run
//! # async fn demo() {
//! use nodepass_tests::{servers, tunnel};
//!
//! let echo = servers::echo().await;
//! let client = tunnel::start(&format!("client://127.0.0.1:0/{}?mode=1", echo.addr())).await;
//! tunnel::wait_ready(&client).await;
//! let addr = client.local_addrs().tunnel.unwrap();
//! assert_eq!(tunnel::roundtrip(addr, b"ping").await, b"ping");
//! tunnel::shutdown(&[&client]).await;
//! # }
//! ```

pub mod certs;
pub mod logs;
pub mod payload;
pub mod postgres;
pub mod process;
pub mod servers;
pub mod transports;
pub mod tunnel;

use std::time::Duration;

/// The bound on any single network wait in a test (a read, a connect, a tunnel getting ready).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
