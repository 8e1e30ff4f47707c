//! Supervisor events (API CONTRACT, see `mod.rs`).

use serde::Serialize;

use super::InstanceInfo;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An instance was created.
    Create,
    /// Status, config, alias, meta or policy changed.
    Update,
    /// An instance was deleted.
    Delete,
    /// New log lines of an instance.
    Log,
    /// Periodic figures of an instance.
    Stats,
    /// The subscriber lagged and missed events: re-read the full state.
    Resync,
    /// The supervisor is shutting down.
    Shutdown,
}

/// One log line of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Unix milliseconds.
    pub time: i64,
    /// `debug`, `info`, `warn`, `error`.
    pub level: String,
    /// The message with its fields (never a key).
    pub message: String,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Unix milliseconds.
    pub time: i64,
    /// The instance after the change (the last snapshot for `delete`); none for `resync`
    /// and `shutdown`.
    pub instance: Option<InstanceInfo>,
    /// For `log` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogLine>>,
}

/// A subscription. `recv` yields events in order; after a lag it yields one `Resync` event
/// and continues with the newest.
#[derive(Debug)]
pub struct Events {
    #[allow(dead_code)]
    rx: tokio::sync::broadcast::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the supervisor is gone. Cancel safe.
    pub async fn recv(&mut self) -> Option<Event> {
        todo!()
    }
}
