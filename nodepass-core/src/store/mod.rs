//! Durable state of the supervisor (being written).
