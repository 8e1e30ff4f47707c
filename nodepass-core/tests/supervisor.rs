//! Integration tests of the supervisor: lifecycle, restart policy, persistence, traffic totals,
//! store failures, events, conflicts and logs. Loopback only, port 0 everywhere.
//!
//! Everything sits in a `supervisor` module so that `cargo test -p nodepass-core supervisor`
//! selects these tests too. The leak test (200 instances, fds and tasks) has its own binary,
//! `supervisor_leaks`, so that no other test's sockets disturb its counts.

mod supervisor {
    mod conflicts;
    mod events;
    mod lifecycle;
    mod persistence;
    mod restart;
    pub(crate) mod support;
}
