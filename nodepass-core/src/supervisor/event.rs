//! Supervisor events: what subscribers of [`Supervisor::subscribe`](super::Supervisor::subscribe)
//! receive.

use serde::Serialize;
use tokio::sync::broadcast;

use super::InstanceInfo;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An instance was created.
    Create,
    /// Status, config, alias, meta or policy changed, or the traffic was reset.
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

impl Event {
    /// An event of `kind` stamped now.
    pub fn new(kind: EventKind, instance: Option<InstanceInfo>) -> Self {
        Event {
            kind,
            time: super::now_ms(),
            instance,
            logs: None,
        }
    }
}

/// A subscription. `recv` yields events in order; after a lag it yields one `Resync` event
/// and continues with the oldest event still buffered.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Self {
        Events { rx }
    }

    /// The next event; `None` once the supervisor has shut down (after its `Shutdown` event)
    /// or is gone.
    ///
    /// Cancel safety: safe; an event is taken only when the future completes.
    pub async fn recv(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "event subscriber lagged, sending resync");
                Some(Event::new(EventKind::Resync, None))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lagging_subscriber_gets_one_resync_then_the_buffered_events() {
        let (tx, rx) = broadcast::channel(2);
        let mut events = Events::new(rx);
        for kind in [EventKind::Create, EventKind::Update, EventKind::Delete] {
            tx.send(Event::new(kind, None)).unwrap();
        }
        let kinds = [
            events.recv().await.unwrap().kind,
            events.recv().await.unwrap().kind,
            events.recv().await.unwrap().kind,
        ];
        assert_eq!(
            kinds,
            [EventKind::Resync, EventKind::Update, EventKind::Delete]
        );
        drop(tx);
        assert_eq!(events.recv().await, None);
    }

    #[test]
    fn events_serialize_with_a_type_field() {
        let json = serde_json::to_string(&Event::new(EventKind::Shutdown, None)).unwrap();
        assert!(json.starts_with(r#"{"type":"shutdown","time":"#), "{json}");
        assert!(json.ends_with(r#""instance":null}"#), "{json}");
    }
}
