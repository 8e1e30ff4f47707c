//! `GET /v1/metrics`: per-instance traffic counters and gauges in the OpenMetrics text format
//! (which Prometheus scrapes natively), encoded by `prometheus-client` from a fresh snapshot of
//! the supervisor at every scrape. In fleet mode every series of an instance also has a `node`
//! label, and the other nodes' instances are listed too, with what the shared database knows
//! of them (info, status and traffic; their live gauges stay on their own node's metrics).

use std::sync::atomic::AtomicU64;

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::error::{ErrorCode, HttpError};
use crate::openapi::ErrorEnvelope;
use crate::response;
use crate::router::{Ctx, Reply};
use crate::view::{InstanceView, Kind, Status};

/// The content type of the OpenMetrics text format.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    id: String,
    alias: String,
    r#type: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    id: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    id: String,
    protocol: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    id: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CountLabels {
    status: String,
}

const STATUSES: [(Status, &str); 4] = [
    (Status::Stopped, "stopped"),
    (Status::Starting, "starting"),
    (Status::Running, "running"),
    (Status::Error, "error"),
];

/// The `node` label of an instance in fleet mode (empty outside: no label).
type NodeLabel = Vec<(&'static str, String)>;

/// A label set followed by the instance's `node` label, if any.
type Labeled<L> = (L, NodeLabel);

fn node(i: &InstanceView) -> NodeLabel {
    i.node.iter().map(|n| ("node", n.clone())).collect()
}

fn id(i: &InstanceView) -> Labeled<InstanceLabels> {
    (InstanceLabels { id: i.id.clone() }, node(i))
}

/// The exposition text for `instances` and the master's uptime. In fleet mode `local_node` is
/// this master's node: the live gauges (sessions, pool, ping, uptime) are only given for its
/// own instances.
pub(crate) fn render(
    instances: &[InstanceView],
    local_node: Option<&str>,
    uptime_seconds: u64,
) -> Result<String, std::fmt::Error> {
    let info = Family::<Labeled<InfoLabels>, Gauge>::default();
    let status = Family::<Labeled<StatusLabels>, Gauge>::default();
    let traffic = Family::<Labeled<TrafficLabels>, Counter>::default();
    let sessions = Family::<Labeled<ProtocolLabels>, Gauge>::default();
    let pool = Family::<Labeled<InstanceLabels>, Gauge>::default();
    let ping = Family::<Labeled<InstanceLabels>, Gauge<f64, AtomicU64>>::default();
    let uptime = Family::<Labeled<InstanceLabels>, Gauge>::default();
    let counts = Family::<CountLabels, Gauge>::default();
    let master_uptime = Gauge::<i64>::default();

    for (_, name) in STATUSES {
        let _ = counts.get_or_create(&CountLabels {
            status: name.into(),
        });
    }
    for i in instances {
        info.get_or_create(&(
            InfoLabels {
                id: i.id.clone(),
                alias: i.alias.clone().unwrap_or_default(),
                r#type: match i.kind {
                    Kind::Server => "server".into(),
                    Kind::Client => "client".into(),
                },
                mode: i.mode.clone(),
            },
            node(i),
        ))
        .set(1);
        for (s, name) in STATUSES {
            status
                .get_or_create(&(
                    StatusLabels {
                        id: i.id.clone(),
                        status: name.into(),
                    },
                    node(i),
                ))
                .set(i64::from(i.status == s));
            if i.status == s {
                counts
                    .get_or_create(&CountLabels {
                        status: name.into(),
                    })
                    .inc();
            }
        }
        for (protocol, direction, value) in [
            ("tcp", "in", i.tcp_in),
            ("tcp", "out", i.tcp_out),
            ("udp", "in", i.udp_in),
            ("udp", "out", i.udp_out),
        ] {
            traffic
                .get_or_create(&(
                    TrafficLabels {
                        id: i.id.clone(),
                        protocol: protocol.into(),
                        direction: direction.into(),
                    },
                    node(i),
                ))
                .inc_by(value);
        }
        if i.node.is_some() && i.node.as_deref() != local_node {
            // Another node's instance: its live figures are on its own node.
            continue;
        }
        for (protocol, value) in [("tcp", i.tcp_connections), ("udp", i.udp_connections)] {
            sessions
                .get_or_create(&(
                    ProtocolLabels {
                        id: i.id.clone(),
                        protocol: protocol.into(),
                    },
                    node(i),
                ))
                .set(saturating_i64(value));
        }
        pool.get_or_create(&id(i)).set(saturating_i64(i.pool_size));
        ping.get_or_create(&id(i)).set(i.ping_ms / 1000.0);
        uptime.get_or_create(&id(i)).set(saturating_i64(i.uptime));
    }
    master_uptime.set(saturating_i64(uptime_seconds));

    let mut registry = Registry::with_prefix("nodepass");
    registry.register(
        "instance_info",
        "Instance identity (value 1): alias, type and mode",
        info,
    );
    registry.register(
        "instance_status",
        "1 for the instance's current status, 0 for the others",
        status,
    );
    registry.register_with_unit(
        "instance_traffic",
        "Cumulative bytes, kept across restarts (reset by the reset action)",
        Unit::Bytes,
        traffic,
    );
    registry.register("instance_sessions", "Active relayed sessions", sessions);
    registry.register("instance_pool_connections", "Idle pool connections", pool);
    registry.register_with_unit(
        "instance_ping",
        "Control connection round-trip time (0 when unknown)",
        Unit::Seconds,
        ping,
    );
    registry.register_with_unit(
        "instance_uptime",
        "Time since the instance last started (0 when stopped)",
        Unit::Seconds,
        uptime,
    );
    registry.register("instances", "Instances by status", counts);
    crate::targets::register_metrics(&mut registry, instances);
    registry.register_with_unit(
        "master_uptime",
        "Time since the master started",
        Unit::Seconds,
        master_uptime,
    );
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Prometheus metrics of every instance.
#[utoipa::path(
    get,
    path = "/v1/metrics",
    operation_id = "metrics",
    tag = "master",
    responses(
        (status = 200, description = "OpenMetrics text (`nodepass_instance_traffic_bytes_total{id,protocol,direction}`, ...)", content_type = "application/openmetrics-text"),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn metrics(ctx: Ctx) -> Reply {
    let state = &ctx.state;
    let instances: Vec<InstanceView> = crate::fleet::list(state)
        .iter()
        .map(InstanceView::from)
        .collect();
    let local_node = state.fleet.as_ref().map(|f| f.node());
    let text = render(&instances, local_node, state.started.elapsed().as_secs())
        .map_err(|_| HttpError::new(ErrorCode::Internal, "cannot encode the metrics"))?;
    Ok(response::bytes(StatusCode::OK, CONTENT_TYPE, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::MetaView;

    fn instance(id: &str, status: Status) -> InstanceView {
        InstanceView {
            id: id.into(),
            node: None,
            alias: Some("web \"1\"".into()),
            kind: Kind::Server,
            status,
            error: None,
            url: "server://****@:1/:2".into(),
            config: "server://****@:1/:2".into(),
            restart: false,
            meta: MetaView {
                peer: crate::view::PeerView {
                    sid: String::new(),
                    kind: String::new(),
                    alias: String::new(),
                },
                tags: Default::default(),
            },
            mode: "reverse".into(),
            connections: 3,
            tcp_connections: 2,
            udp_connections: 1,
            pool_size: 4,
            ping_ms: 12.5,
            uptime: 60,
            tcp_in: 1000,
            tcp_out: 2000,
            udp_in: 30,
            udp_out: 40,
            created_at: String::new(),
            updated_at: String::new(),
            local_addrs: Default::default(),
            targets: Vec::new(),
        }
    }

    #[test]
    fn the_exposition_has_every_family() {
        let text = render(
            &[
                instance("0000000a", Status::Running),
                instance("0000000b", Status::Stopped),
            ],
            None,
            7,
        )
        .unwrap();
        for line in [
            "# TYPE nodepass_instance_traffic_bytes counter",
            r#"nodepass_instance_traffic_bytes_total{id="0000000a",protocol="tcp",direction="in"} 1000"#,
            r#"nodepass_instance_traffic_bytes_total{id="0000000b",protocol="udp",direction="out"} 40"#,
            r#"nodepass_instance_sessions{id="0000000a",protocol="tcp"} 2"#,
            r#"nodepass_instance_pool_connections{id="0000000a"} 4"#,
            r#"nodepass_instance_ping_seconds{id="0000000a"} 0.0125"#,
            r#"nodepass_instance_status{id="0000000a",status="running"} 1"#,
            r#"nodepass_instance_status{id="0000000a",status="stopped"} 0"#,
            r#"nodepass_instances{status="running"} 1"#,
            r#"nodepass_instances{status="error"} 0"#,
            r#"nodepass_instance_info{id="0000000a",alias="web \"1\"",type="server",mode="reverse"} 1"#,
            "nodepass_master_uptime_seconds 7",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn in_a_fleet_every_series_names_the_node_and_remote_instances_have_no_live_gauges() {
        let mut own = instance("0000000a", Status::Running);
        own.node = Some("A".into());
        let mut other = instance("0000000b", Status::Running);
        other.node = Some("B".into());
        let text = render(&[own, other], Some("A"), 7).unwrap();
        for line in [
            r#"nodepass_instance_traffic_bytes_total{id="0000000b",protocol="tcp",direction="in",node="B"} 1000"#,
            r#"nodepass_instance_status{id="0000000b",status="running",node="B"} 1"#,
            r#"nodepass_instance_info{id="0000000b",alias="web \"1\"",type="server",mode="reverse",node="B"} 1"#,
            r#"nodepass_instance_sessions{id="0000000a",protocol="tcp",node="A"} 2"#,
            r#"nodepass_instances{status="running"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text
                .lines()
                .any(|l| l.contains("sessions") && l.contains(r#"node="B""#)),
            "{text}"
        );
    }
}
