//! What the API shows: the instance object and events, with RFC 3339 timestamps.
//!
//! The supervisor's snapshots carry unix milliseconds; the API converts them here, and only
//! here, with the `time` crate (already in the dependency tree through `rcgen`).

use std::collections::BTreeMap;

use nodepass_core::Supervisor;
use nodepass_core::supervisor::{
    Event, EventKind, InstanceInfo, InstanceKind, InstanceStatus, LogLine,
};
use nodepass_core::tunnel::LocalAddrs;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// `2024-05-01T12:00:00.123Z` for unix milliseconds (the epoch for an out-of-range value).
pub(crate) fn rfc3339(unix_ms: i64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// The current time in RFC 3339, to the millisecond like every other time the API shows.
pub(crate) fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    rfc3339(ms)
}

/// Server or client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// `server://`
    Server,
    /// `client://`
    Client,
}

impl From<InstanceKind> for Kind {
    fn from(k: InstanceKind) -> Self {
        match k {
            InstanceKind::Server => Kind::Server,
            InstanceKind::Client => Kind::Client,
        }
    }
}

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Not running.
    Stopped,
    /// Started, not yet serving.
    Starting,
    /// Serving.
    Running,
    /// Failed; `error` says why.
    Error,
}

impl From<InstanceStatus> for Status {
    fn from(s: InstanceStatus) -> Self {
        match s {
            InstanceStatus::Stopped => Status::Stopped,
            InstanceStatus::Starting => Status::Starting,
            InstanceStatus::Running => Status::Running,
            InstanceStatus::Error => Status::Error,
        }
    }
}

/// The other end of a tunnel, as the operator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct PeerView {
    /// The peer's service id.
    pub sid: String,
    /// The peer's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The peer's alias.
    pub alias: String,
}

/// Free-form metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct MetaView {
    /// The peer.
    pub peer: PeerView,
    /// Operator tags.
    pub tags: BTreeMap<String, String>,
}

/// Where a running instance is bound (useful when its URL asked for port 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct AddrsView {
    /// The server's tunnel listener, or a single-end client's listener.
    #[schema(example = "127.0.0.1:10101")]
    pub tunnel: Option<String>,
    /// The user-facing TCP listener (server in reverse mode, client in forward mode).
    pub users: Option<String>,
    /// The user-facing UDP socket.
    pub users_udp: Option<String>,
}

impl From<LocalAddrs> for AddrsView {
    fn from(a: LocalAddrs) -> Self {
        AddrsView {
            tunnel: a.tunnel.map(|a| a.to_string()),
            users: a.users.map(|a| a.to_string()),
            users_udp: a.users_udp.map(|a| a.to_string()),
        }
    }
}

/// One managed instance. Tunnel keys are always masked as `****`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct InstanceView {
    /// 8 lower-case hex characters; never changes.
    #[schema(example = "0a1b2c3d")]
    pub id: String,
    /// The fleet node that runs it; `null` outside fleet mode.
    pub node: Option<String>,
    /// Optional alias.
    pub alias: Option<String>,
    /// Server or client.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Lifecycle status.
    pub status: Status,
    /// The last error, when `status` is `error`.
    pub error: Option<String>,
    /// The URL as created, key masked.
    #[schema(example = "server://****@:10101/127.0.0.1:8080?tls=1")]
    pub url: String,
    /// The canonical URL with every default, key masked.
    pub config: String,
    /// Auto-restart policy.
    pub restart: bool,
    /// Metadata.
    pub meta: MetaView,
    /// `reverse`, `forward`, `single_end` or `pending`.
    pub mode: String,
    /// Active TCP and UDP sessions.
    pub connections: u64,
    /// Active TCP sessions.
    pub tcp_connections: u64,
    /// Active UDP sessions.
    pub udp_connections: u64,
    /// Idle pool connections.
    pub pool_size: u64,
    /// Control round-trip time in milliseconds (0 when unknown).
    pub ping_ms: f64,
    /// Seconds since the last start (0 when stopped).
    pub uptime: u64,
    /// Bytes read from local TCP sockets, cumulative across restarts.
    pub tcp_in: u64,
    /// Bytes written to local TCP sockets, cumulative across restarts.
    pub tcp_out: u64,
    /// Bytes received over UDP, cumulative across restarts.
    pub udp_in: u64,
    /// Bytes sent over UDP, cumulative across restarts.
    pub udp_out: u64,
    /// Creation time (RFC 3339).
    #[schema(example = "2025-01-31T12:00:00.123Z")]
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Bound addresses while running (an addition to the NodePass object).
    pub local_addrs: AddrsView,
    /// Health and counters of each target while running, in URL order (an addition to the
    /// NodePass object).
    pub targets: Vec<crate::targets::TargetView>,
}

impl InstanceView {
    /// The view of `info`, with the bound addresses the supervisor knows.
    pub(crate) fn of(supervisor: &Supervisor, info: &InstanceInfo) -> Self {
        let mut view = InstanceView::from(info);
        if let Ok(instance) = supervisor.instance(&info.id) {
            view.local_addrs = instance.local_addrs().into();
        }
        view
    }
}

impl From<&InstanceInfo> for InstanceView {
    fn from(i: &InstanceInfo) -> Self {
        InstanceView {
            id: i.id.clone(),
            node: i.node.clone(),
            alias: i.alias.clone(),
            kind: i.kind.into(),
            status: i.status.into(),
            error: i.error.clone(),
            url: i.url.clone(),
            config: i.config.clone(),
            restart: i.restart,
            meta: MetaView {
                peer: PeerView {
                    sid: i.meta.peer.sid.clone(),
                    kind: i.meta.peer.kind.clone(),
                    alias: i.meta.peer.alias.clone(),
                },
                tags: i.meta.tags.clone(),
            },
            mode: i.mode.clone(),
            connections: i.connections,
            tcp_connections: i.tcp_connections,
            udp_connections: i.udp_connections,
            pool_size: i.pool_size,
            ping_ms: i.ping_ms,
            uptime: i.uptime,
            tcp_in: i.traffic.tcp_in,
            tcp_out: i.traffic.tcp_out,
            udp_in: i.traffic.udp_in,
            udp_out: i.traffic.udp_out,
            created_at: rfc3339(i.created_at),
            updated_at: rfc3339(i.updated_at),
            local_addrs: AddrsView::default(),
            targets: crate::targets::targets_of(i),
        }
    }
}

/// `data` of `GET /v1/instances`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InstanceList {
    /// Oldest first.
    pub instances: Vec<InstanceView>,
}

/// One log line of an instance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct LogView {
    /// RFC 3339.
    pub time: String,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The message (never a key).
    pub message: String,
}

impl From<&LogLine> for LogView {
    fn from(l: &LogLine) -> Self {
        LogView {
            time: rfc3339(l.time),
            level: l.level.clone(),
            message: l.message.clone(),
        }
    }
}

/// The `event:` names of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventType {
    /// One per instance when the stream opens (and after a `resync`).
    Initial,
    /// An instance was created.
    Create,
    /// Status, config, alias, meta or policy changed.
    Update,
    /// An instance was deleted (`instance` is its last snapshot).
    Delete,
    /// New log lines (`logs`).
    Log,
    /// Periodic figures.
    Stats,
    /// Events were missed: re-read the state (fresh `initial` events follow).
    Resync,
    /// The master is shutting down; the stream closes.
    Shutdown,
}

impl EventType {
    /// The `event:` line value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Initial => "initial",
            EventType::Create => "create",
            EventType::Update => "update",
            EventType::Delete => "delete",
            EventType::Log => "log",
            EventType::Stats => "stats",
            EventType::Resync => "resync",
            EventType::Shutdown => "shutdown",
        }
    }
}

impl From<EventKind> for EventType {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::Create => EventType::Create,
            EventKind::Update => EventType::Update,
            EventKind::Delete => EventType::Delete,
            EventKind::Log => EventType::Log,
            EventKind::Stats => EventType::Stats,
            EventKind::Resync => EventType::Resync,
            EventKind::Shutdown => EventType::Shutdown,
        }
    }
}

/// The `data:` of one server-sent event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct EventView {
    /// The same as the `event:` line.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// RFC 3339.
    pub time: String,
    /// The instance after the change; absent for `resync` and `shutdown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceView>,
    /// For `log` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogView>>,
}

impl EventView {
    /// An event of the API's own (`initial`, `resync`, `shutdown`), stamped now.
    pub(crate) fn own(kind: EventType, instance: Option<InstanceView>) -> Self {
        EventView {
            kind,
            time: now_rfc3339(),
            instance,
            logs: None,
        }
    }

    /// The view of a supervisor event.
    pub(crate) fn of(supervisor: &Supervisor, e: &Event) -> Self {
        EventView {
            kind: e.kind.into(),
            time: rfc3339(e.time),
            instance: e.instance.as_ref().map(|i| InstanceView::of(supervisor, i)),
            logs: e
                .logs
                .as_ref()
                .map(|l| l.iter().map(LogView::from).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00Z", "out of range");
        let now = now_rfc3339();
        assert!(
            OffsetDateTime::parse(&now, &Rfc3339).is_ok(),
            "{now} parses back"
        );
    }

    #[test]
    fn the_view_shows_every_field_of_the_supervisor_snapshot() {
        let info = InstanceInfo::new("0000000a", InstanceKind::Server, "server://****@:1/:2");
        let core = serde_json::to_value(&info).unwrap();
        let api = serde_json::to_value(InstanceView::from(&info)).unwrap();
        for key in core.as_object().unwrap().keys() {
            assert!(
                api.get(key).is_some(),
                "{key} is not in the API's instance object"
            );
        }
        assert_eq!(api["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(api["type"], "server");
        assert_eq!(api["status"], "stopped");
    }

    #[test]
    fn event_names_match_their_serialization() {
        for t in [
            EventType::Initial,
            EventType::Create,
            EventType::Update,
            EventType::Delete,
            EventType::Log,
            EventType::Stats,
            EventType::Resync,
            EventType::Shutdown,
        ] {
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
    }
}
