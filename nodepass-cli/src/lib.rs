//! Shared code of the nodepass executables (`nodepass`, `nodepass-server`, `nodepass-client`,
//! `nodepass-master`): each binary is a few lines that call [`main`] with its [`Program`].
//!
//! # Layout
//! - [`args`]: command-line arguments and subcommands; the URL from the argument, `--url-file`
//!   or `NODEPASS_URL`.
//! - [`commands`]: the subcommands (`keygen`, `completions`, `man`).
//! - [`help`]: the reference text of `--help` and the man page; the one parameter table.
//! - [`usage`]: argument errors with the user's arguments (URLs, keys) hidden.
//! - [`logging`]: the `log=` level and `NODEPASS_LOG_FORMAT` applied to `tracing`.
//! - [`signal`]: SIGINT/SIGTERM cancel the shutdown token.
//! - [`run`]: [`run::run_instance`], the one place a config becomes a running role.
//! - `alloc`: jemalloc as the executables' global allocator (why: in the module).
//! - `app`: the shared `main`: `--check`, exit codes ([`EXIT_USAGE`], [`EXIT_FAILURE`]).
//! - `import`: `nodepass import --from URL`, migration from a Go NodePass master.
//!
//! # Shutdown
//! The first SIGINT or SIGTERM cancels a `CancellationToken` passed to
//! [`run::run_instance`]; it returns after a clean stop and the process exits 0. A second
//! signal exits at once.

mod alloc;
mod app;
pub mod args;
pub mod commands;
pub mod help;
mod import;
pub mod logging;
pub mod run;
pub mod signal;
pub mod usage;

pub use app::{EXIT_FAILURE, EXIT_USAGE, Program, command, main};
