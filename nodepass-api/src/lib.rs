//! nodepass-api: the master REST API (hyper) over a `nodepass-core` supervisor.
//!
//! Not implemented yet: the master mode has its own issue. This crate exists so the workspace
//! layout is in place.
