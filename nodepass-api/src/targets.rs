//! Per-target health and counters, an addition to the NodePass instance object: the `targets`
//! field of the instance view (and so of the events), and the `nodepass_target_*` metrics with a
//! `target` label. Kept in one module so the instance view only needs one field and one call.

use std::sync::atomic::AtomicU64;

use nodepass_core::supervisor::InstanceInfo;
use nodepass_core::tunnel::TargetSnapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use utoipa::ToSchema;

use crate::view::InstanceView;

/// One target of a running instance (counters start again at every start and `reset`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct TargetView {
    /// The target as written in the URL (`host:port`).
    #[schema(example = "10.0.0.2:80")]
    pub address: String,
    /// False while the target is in its back-off after a failed dial or probe.
    pub up: bool,
    /// True for the target new sessions try first (`lbs=1`: the fastest, `lbs=2`: the one in
    /// use; `lbs=0`: every target that is up).
    pub selected: bool,
    /// Duration of the last successful probe (TCP connect) in milliseconds; `null` before one.
    pub probe_latency_ms: Option<f64>,
    /// Sessions open to this target.
    pub active: u64,
    /// Sessions carried to this target.
    pub total: u64,
    /// Dials and probes to this target that failed.
    pub failed_dials: u64,
    /// Bytes received from this target.
    pub bytes_in: u64,
    /// Bytes sent to this target.
    pub bytes_out: u64,
}

impl From<&TargetSnapshot> for TargetView {
    fn from(t: &TargetSnapshot) -> Self {
        TargetView {
            address: t.address.clone(),
            up: t.up,
            selected: t.selected,
            probe_latency_ms: t.probe_latency_us.map(|us| us as f64 / 1000.0),
            active: t.active,
            total: t.total,
            failed_dials: t.failed_dials,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
        }
    }
}

/// The `targets` field of the instance view of `info` (empty while stopped).
pub(crate) fn targets_of(info: &InstanceInfo) -> Vec<TargetView> {
    info.targets.iter().map(TargetView::from).collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    id: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetTrafficLabels {
    id: String,
    target: String,
    direction: String,
}

/// Register the `nodepass_target_*` families for the targets of `instances`.
pub(crate) fn register_metrics(registry: &mut Registry, instances: &[InstanceView]) {
    let up = Family::<TargetLabels, Gauge>::default();
    let selected = Family::<TargetLabels, Gauge>::default();
    let latency = Family::<TargetLabels, Gauge<f64, AtomicU64>>::default();
    let active = Family::<TargetLabels, Gauge>::default();
    let sessions = Family::<TargetLabels, Counter>::default();
    let failed = Family::<TargetLabels, Counter>::default();
    let traffic = Family::<TargetTrafficLabels, Counter>::default();
    for i in instances {
        for t in &i.targets {
            let labels = TargetLabels {
                id: i.id.clone(),
                target: t.address.clone(),
            };
            up.get_or_create(&labels).set(i64::from(t.up));
            selected.get_or_create(&labels).set(i64::from(t.selected));
            if let Some(ms) = t.probe_latency_ms {
                latency.get_or_create(&labels).set(ms / 1000.0);
            }
            active
                .get_or_create(&labels)
                .set(i64::try_from(t.active).unwrap_or(i64::MAX));
            sessions.get_or_create(&labels).inc_by(t.total);
            failed.get_or_create(&labels).inc_by(t.failed_dials);
            for (direction, value) in [("in", t.bytes_in), ("out", t.bytes_out)] {
                traffic
                    .get_or_create(&TargetTrafficLabels {
                        id: i.id.clone(),
                        target: t.address.clone(),
                        direction: direction.into(),
                    })
                    .inc_by(value);
            }
        }
    }
    registry.register(
        "target_up",
        "1 while the target is up, 0 in its back-off",
        up,
    );
    registry.register(
        "target_selected",
        "1 for the target new sessions try first",
        selected,
    );
    registry.register_with_unit(
        "target_probe_latency",
        "Duration of the last successful TCP-connect probe",
        Unit::Seconds,
        latency,
    );
    registry.register(
        "target_active_sessions",
        "Sessions open to the target",
        active,
    );
    registry.register(
        "target_sessions",
        "Sessions carried to the target since the instance started",
        sessions,
    );
    registry.register(
        "target_failed_dials",
        "Failed dials and probes to the target since the instance started",
        failed,
    );
    registry.register_with_unit(
        "target_traffic",
        "Bytes received from (in) and sent to (out) the target since the instance started",
        Unit::Bytes,
        traffic,
    );
}

#[cfg(test)]
mod tests {
    use nodepass_core::supervisor::{InstanceKind, InstanceStatus};

    use super::*;

    fn snapshot(address: &str, up: bool, latency_us: Option<u64>) -> TargetSnapshot {
        TargetSnapshot {
            address: address.into(),
            up,
            selected: up,
            probe_latency_us: latency_us,
            score_us: latency_us,
            active: 2,
            total: 30,
            failed_dials: u64::from(!up),
            bytes_in: 4096,
            bytes_out: 512,
        }
    }

    #[test]
    fn the_instance_view_and_the_metrics_show_every_target() {
        let mut info = InstanceInfo::new("0000000a", InstanceKind::Client, "client://:1/:2,:3");
        info.status = InstanceStatus::Running;
        info.targets = vec![
            snapshot("10.0.0.1:80", true, Some(1500)),
            snapshot("10.0.0.2:80", false, None),
        ];
        let view = InstanceView::from(&info);
        let json = serde_json::to_value(&view).unwrap();
        let targets = json["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0]["address"], "10.0.0.1:80");
        assert_eq!(targets[0]["probe_latency_ms"], 1.5);
        assert_eq!(targets[1]["up"], false);
        assert_eq!(targets[1]["probe_latency_ms"], serde_json::Value::Null);
        assert_eq!(targets[1]["failed_dials"], 1);
        let text = crate::metrics::render(&[view], None, 1).unwrap();
        for line in [
            r#"nodepass_target_up{id="0000000a",target="10.0.0.1:80"} 1"#,
            r#"nodepass_target_up{id="0000000a",target="10.0.0.2:80"} 0"#,
            r#"nodepass_target_selected{id="0000000a",target="10.0.0.1:80"} 1"#,
            r#"nodepass_target_probe_latency_seconds{id="0000000a",target="10.0.0.1:80"} 0.0015"#,
            r#"nodepass_target_active_sessions{id="0000000a",target="10.0.0.2:80"} 2"#,
            r#"nodepass_target_sessions_total{id="0000000a",target="10.0.0.1:80"} 30"#,
            r#"nodepass_target_failed_dials_total{id="0000000a",target="10.0.0.2:80"} 1"#,
            r#"nodepass_target_traffic_bytes_total{id="0000000a",target="10.0.0.1:80",direction="in"} 4096"#,
            r#"nodepass_target_traffic_bytes_total{id="0000000a",target="10.0.0.1:80",direction="out"} 512"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains(r#"probe_latency_seconds{id="0000000a",target="10.0.0.2:80"}"#));
    }

    #[test]
    fn the_openapi_schema_has_the_targets_field() {
        let json = serde_json::to_value(crate::openapi::document(
            nodepass_core::config::ApiDialect::Envelope,
            "/api",
        ))
        .unwrap();
        let schemas = &json["components"]["schemas"];
        let field = &schemas["InstanceView"]["properties"]["targets"];
        assert_eq!(field["type"], "array", "{field}");
        let props = schemas["TargetView"]["properties"].as_object().unwrap();
        for name in [
            "address",
            "up",
            "selected",
            "probe_latency_ms",
            "active",
            "total",
            "failed_dials",
            "bytes_in",
            "bytes_out",
        ] {
            assert!(props.contains_key(name), "{name}");
        }
    }
}
