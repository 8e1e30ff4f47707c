//! Integration tests of the supervisor: lifecycle, restart policy, persistence, traffic totals,
//! store failures, events, conflicts and logs. Loopback only, port 0 everywhere.
//!
//! The leak test (200 instances, fds and tasks) has its own binary, `supervisor_leaks`, so that
//! no other test's sockets disturb its counts.

#[path = "supervisor/conflicts.rs"]
mod conflicts;
#[path = "supervisor/events.rs"]
mod events;
#[path = "supervisor/lifecycle.rs"]
mod lifecycle;
#[path = "supervisor/persistence.rs"]
mod persistence;
#[path = "supervisor/restart.rs"]
mod restart;
#[path = "supervisor/support.rs"]
mod support;
