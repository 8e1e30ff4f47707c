//! The NodePass dialect's views (`api=nodepass`, the default): the instance object with the
//! names and types of the Go NodePass v1.14 master, the API key's pseudo-instance, its event
//! data and its log lines. Our additions come after NodePass's fields.

use std::collections::BTreeMap;

use nodepass_core::Supervisor;
use nodepass_core::supervisor::{InstanceInfo, InstanceKind, InstanceStatus, LogLine};
use serde::Serialize;
use time::OffsetDateTime;

use crate::view::{AddrsView, rfc3339};

/// The id of the API key's pseudo-instance.
pub(crate) const KEY_ID: &str = "********";

/// The peer in `meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NpPeer {
    pub sid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub alias: String,
}

/// `meta`: the peer and the tags (`{}` when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NpMeta {
    pub peer: NpPeer,
    pub tags: BTreeMap<String, String>,
}

/// One instance as NodePass shows it, plus our extras.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct NpInstance {
    pub id: String,
    /// `""` when none.
    pub alias: String,
    /// `server`, `client` (`""` for the key's pseudo-instance).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `running`, `stopped` or `error` (`""` for the key's pseudo-instance).
    pub status: &'static str,
    /// Key masked as `****` (the pseudo-instance: `********`, or the new key once).
    pub url: String,
    pub config: String,
    pub restart: bool,
    pub meta: NpMeta,
    /// NodePass's mode number: 0 not yet known, 1 reverse (server) or single-end (client),
    /// 2 forward (server) or dual-end (client).
    pub mode: u8,
    /// Control round-trip time, whole milliseconds.
    pub ping: u64,
    pub pool: u64,
    pub tcps: u64,
    pub udps: u64,
    pub tcprx: u64,
    pub tcptx: u64,
    pub udprx: u64,
    pub udptx: u64,
    /// Our detailed status: `stopped`, `starting`, `running` or `error` (an addition).
    pub state: &'static str,
    /// The last error, or `null` (an addition).
    pub error: Option<String>,
    /// Seconds since the last start (an addition).
    pub uptime: u64,
    /// RFC 3339 (additions).
    pub created_at: String,
    pub updated_at: String,
    /// Where the running instance is bound (an addition).
    pub local_addrs: AddrsView,
    /// Health and counters of each target, in URL order; empty while stopped (an addition).
    pub targets: Vec<crate::targets::TargetView>,
    /// The fleet node that runs it; `null` outside fleet mode (an addition).
    pub node: Option<String>,
}

/// NodePass's three statuses: an instance that failed, or that keeps retrying after an error
/// (a client that cannot reach its server), is `error`; starting counts as running.
pub(crate) fn status_name(status: InstanceStatus, error: Option<&str>) -> &'static str {
    match status {
        InstanceStatus::Stopped => "stopped",
        InstanceStatus::Error => "error",
        InstanceStatus::Running | InstanceStatus::Starting if error.is_some() => "error",
        _ => "running",
    }
}

fn state_name(status: InstanceStatus) -> &'static str {
    match status {
        InstanceStatus::Stopped => "stopped",
        InstanceStatus::Starting => "starting",
        InstanceStatus::Running => "running",
        InstanceStatus::Error => "error",
    }
}

/// Our mode names as NodePass's numbers.
pub(crate) fn mode_number(kind: InstanceKind, mode: &str) -> u8 {
    match (kind, mode) {
        (_, "pending") => 0,
        (InstanceKind::Server, "reverse") => 1,
        (InstanceKind::Server, _) => 2,
        (InstanceKind::Client, "single_end") => 1,
        (InstanceKind::Client, _) => 2,
    }
}

/// The mode number NodePass reports for `i`. A Go master learns an instance's mode from the
/// periodic reports of its tunnel, which a server sends only once a client has connected: until
/// then it reports 0 (whatever `mode=` says), and so do we, although we know the mode at start.
/// A client has connected since the last start when a ping was measured or the pool filled.
pub(crate) fn reported_mode(i: &InstanceInfo) -> u8 {
    let connected = i.ping_ms > 0.0 || i.pool_size > 0;
    if i.kind == InstanceKind::Server && !connected {
        return 0;
    }
    mode_number(i.kind, &i.mode)
}

impl NpInstance {
    /// The view of `info`, with the bound addresses the supervisor knows.
    pub(crate) fn of(supervisor: &Supervisor, info: &InstanceInfo) -> Self {
        let mut view = NpInstance::from(info);
        if let Ok(instance) = supervisor.instance(&info.id) {
            view.local_addrs = instance.local_addrs().into();
        }
        view
    }

    /// The API key as NodePass lists it: id `********`, the master's alias, `url` masked
    /// (we keep only a hash of the key) or, once after a rotation, the new key.
    pub(crate) fn key(alias: &str, url: &str) -> Self {
        NpInstance {
            id: KEY_ID.to_string(),
            alias: alias.to_string(),
            kind: "",
            status: "",
            url: url.to_string(),
            config: String::new(),
            restart: false,
            meta: NpMeta {
                peer: NpPeer {
                    sid: String::new(),
                    kind: String::new(),
                    alias: String::new(),
                },
                tags: BTreeMap::new(),
            },
            mode: 0,
            ping: 0,
            pool: 0,
            tcps: 0,
            udps: 0,
            tcprx: 0,
            tcptx: 0,
            udprx: 0,
            udptx: 0,
            state: "",
            error: None,
            uptime: 0,
            created_at: String::new(),
            updated_at: String::new(),
            local_addrs: AddrsView::default(),
            targets: Vec::new(),
            node: None,
        }
    }
}

impl From<&InstanceInfo> for NpInstance {
    fn from(i: &InstanceInfo) -> Self {
        NpInstance {
            id: i.id.clone(),
            alias: i.alias.clone().unwrap_or_default(),
            kind: match i.kind {
                InstanceKind::Server => "server",
                InstanceKind::Client => "client",
            },
            status: status_name(i.status, i.error.as_deref()),
            url: i.url.clone(),
            config: i.config.clone(),
            restart: i.restart,
            meta: NpMeta {
                peer: NpPeer {
                    sid: i.meta.peer.sid.clone(),
                    kind: i.meta.peer.kind.clone(),
                    alias: i.meta.peer.alias.clone(),
                },
                tags: i.meta.tags.clone(),
            },
            mode: reported_mode(i),
            ping: i.ping_ms.round().max(0.0) as u64,
            pool: i.pool_size,
            tcps: i.tcp_connections,
            udps: i.udp_connections,
            tcprx: i.traffic.tcp_in,
            tcptx: i.traffic.tcp_out,
            udprx: i.traffic.udp_in,
            udptx: i.traffic.udp_out,
            state: state_name(i.status),
            error: i.error.clone(),
            uptime: i.uptime,
            created_at: rfc3339(i.created_at),
            updated_at: rfc3339(i.updated_at),
            local_addrs: AddrsView::default(),
            targets: crate::targets::targets_of(i),
            node: i.node.clone(),
        }
    }
}

/// The `data:` of a NodePass event (`event: instance`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NpEvent {
    /// `initial`, `create`, `update`, `delete`, `log` or `shutdown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// RFC 3339.
    pub time: String,
    /// Absent for `shutdown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<NpInstance>,
    /// One log line for `log`, else `""`.
    pub logs: String,
}

/// A log line as NodePass prints it: `2026-12-01 16:08:52.687 INFO message` (UTC).
pub(crate) fn log_text(line: &LogLine) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(line.time) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} {} {}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond(),
        line.level.to_ascii_uppercase(),
        line.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_look_like_nodepass() {
        let line = LogLine {
            time: 1_796_141_332_687,
            level: "info".into(),
            message: "server started".into(),
        };
        assert_eq!(
            log_text(&line),
            "2026-12-01 16:08:52.687 INFO server started"
        );
    }

    #[test]
    fn statuses_and_modes_map_to_nodepass() {
        assert_eq!(status_name(InstanceStatus::Starting, None), "running");
        assert_eq!(
            status_name(InstanceStatus::Running, Some("no server")),
            "error"
        );
        assert_eq!(status_name(InstanceStatus::Stopped, None), "stopped");
        assert_eq!(status_name(InstanceStatus::Error, None), "error");
        assert_eq!(mode_number(InstanceKind::Server, "pending"), 0);
        assert_eq!(mode_number(InstanceKind::Server, "reverse"), 1);
        assert_eq!(mode_number(InstanceKind::Server, "forward"), 2);
        assert_eq!(mode_number(InstanceKind::Client, "single_end"), 1);
        assert_eq!(mode_number(InstanceKind::Client, "reverse"), 2);
    }

    #[test]
    fn a_server_reports_mode_0_until_a_client_connected_as_the_go_master_does() {
        let mut server = InstanceInfo::new("0a0b0c0d", InstanceKind::Server, "server://x");
        server.status = InstanceStatus::Running;
        server.mode = "reverse".into();
        assert_eq!(reported_mode(&server), 0, "no client yet");
        server.pool_size = 3;
        assert_eq!(reported_mode(&server), 1, "the pool filled");
        server.pool_size = 0;
        server.ping_ms = 0.4;
        assert_eq!(reported_mode(&server), 1, "a ping was measured");
        server.mode = "forward".into();
        assert_eq!(reported_mode(&server), 2);
        let mut client = InstanceInfo::new("0a0b0c0e", InstanceKind::Client, "client://x");
        client.mode = "single_end".into();
        assert_eq!(reported_mode(&client), 1, "a client knows its mode at once");
    }

    #[test]
    fn the_instance_has_nodepass_names_and_types() {
        let info = InstanceInfo::new("0000000a", InstanceKind::Client, "client://****@h:1/:2");
        let v = serde_json::to_value(NpInstance::from(&info)).unwrap();
        assert_eq!(v["alias"], "");
        assert_eq!(v["type"], "client");
        assert_eq!(v["status"], "stopped");
        assert_eq!(v["meta"]["tags"], serde_json::json!({}));
        for int in [
            "mode", "ping", "pool", "tcps", "udps", "tcprx", "tcptx", "udprx", "udptx",
        ] {
            assert!(v[int].is_u64(), "{int}: {}", v[int]);
        }
        let key = serde_json::to_value(NpInstance::key("m", "********")).unwrap();
        assert_eq!(key["id"], KEY_ID);
        assert_eq!(key["alias"], "m");
    }
}
