//! Moving instances in and out: `GET /v1/export` (a backup of every instance, full URLs
//! included), `POST /v1/import` (recreate instances from such a backup, or from a running Go
//! NodePass master read over HTTP with its key), and [`import_from_go`] for the CLI.
//!
//! Imported instances get new ids; they keep their URL, alias, restart policy, metadata and
//! traffic totals. Each instance is imported or skipped on its own, and the report says why.

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use nodepass_core::Supervisor;
use nodepass_core::config::ApiDialect;
use nodepass_core::store::{Meta, Peer, TrafficTotals};
use nodepass_core::supervisor::CreateInstance;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ErrorCode, HttpError};
use crate::goclient;
use crate::openapi::{Envelope, ErrorEnvelope};
use crate::response;
use crate::router::{Ctx, Reply};

/// The `format` of a backup document.
pub const BACKUP_FORMAT: &str = "nodepass-backup";

/// The peer of a backed-up instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BackupPeer {
    /// Service id.
    pub sid: String,
    /// Service type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Service alias.
    pub alias: String,
}

/// The metadata of a backed-up instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BackupMeta {
    /// The peer.
    pub peer: BackupPeer,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Traffic totals in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BackupTraffic {
    /// TCP bytes in.
    #[serde(deserialize_with = "counter")]
    pub tcp_in: u64,
    /// TCP bytes out.
    #[serde(deserialize_with = "counter")]
    pub tcp_out: u64,
    /// UDP bytes in.
    #[serde(deserialize_with = "counter")]
    pub udp_in: u64,
    /// UDP bytes out.
    #[serde(deserialize_with = "counter")]
    pub udp_out: u64,
}

/// A byte counter as JSON Schema's `integer` (format `int64`) allows it: a whole number from 0
/// to `i64::MAX` (what the store keeps), written with or without a fraction of zero (`5.0`).
fn counter<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let max = i64::MAX as u64;
    let value = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => Some(v),
        // Exactly representable whole numbers only: below 2^53 every whole f64 is.
        (None, Some(f)) if f.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&f) => {
            Some(f as u64)
        }
        _ => None,
    };
    match value {
        Some(v) if v <= max => Ok(v),
        _ => Err(D::Error::custom(format!(
            "expected a whole number from 0 to {max}, got {n}"
        ))),
    }
}

/// One instance of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupInstance {
    /// The id it had (imports get new ids; reports name this one).
    #[serde(default)]
    pub id: String,
    /// The full URL, key included.
    pub url: String,
    /// Alias (`""` for none).
    #[serde(default)]
    pub alias: String,
    /// Auto-restart policy.
    #[serde(default = "yes")]
    pub restart: bool,
    /// Whether it was running (it is started when imported).
    #[serde(default)]
    pub running: bool,
    /// Metadata.
    #[serde(default)]
    pub meta: BackupMeta,
    /// Traffic totals.
    #[serde(default)]
    pub traffic: BackupTraffic,
    /// Fleet mode: the node that runs it. An import on a fleet master recreates it on that
    /// node (skipped if the fleet has no such node); elsewhere it is imported locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn yes() -> bool {
    true
}

/// `GET /v1/export`: every instance, full URLs (with keys) included.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Always `nodepass-backup`.
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// The instances, oldest first.
    pub instances: Vec<BackupInstance>,
}

/// `POST /v1/import`: a backup (`instances`), or a Go NodePass master to read (`from`, `key`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportBody {
    /// `nodepass-backup` when given.
    #[serde(default)]
    format: Option<String>,
    /// 1 when given (`1.0` is the same number).
    #[serde(default)]
    #[schema(value_type = Option<u32>)]
    version: Option<serde_json::Number>,
    /// The instances of a backup.
    #[serde(default)]
    instances: Option<Vec<BackupInstance>>,
    /// The Go master's API base URL, e.g. `http://127.0.0.1:9090/api`.
    #[serde(default)]
    from: Option<String>,
    /// The Go master's API key.
    #[serde(default)]
    key: Option<String>,
}

/// One imported instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Imported {
    /// Its id in the source.
    pub source: String,
    /// Its id here.
    pub id: String,
    /// Its alias.
    pub alias: String,
}

/// One instance not imported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Skipped {
    /// Its id in the source.
    pub source: String,
    /// Why (never contains a key).
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Created here.
    pub imported: Vec<Imported>,
    /// Not created, with the reason.
    pub skipped: Vec<Skipped>,
}

/// Every instance with its full URL, for backups (the API key protects it like everything
/// else; the document holds tunnel keys: keep it as secret as the state store).
#[utoipa::path(
    get,
    path = "/v1/export",
    operation_id = "exportInstances",
    tag = "instances",
    responses(
        (status = 200, description = "The backup (tunnel keys included)", body = Envelope<Backup>),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn export(ctx: Ctx) -> Reply {
    let mut backup = backup(&ctx.state.supervisor).await?;
    // Fleet mode: the other nodes' instances too, as the database has them.
    for (node, record, running) in crate::fleet::remote_records(&ctx.state) {
        let t = record.traffic;
        backup.instances.push(BackupInstance {
            id: record.id,
            url: record.url,
            alias: record.alias.unwrap_or_default(),
            restart: record.restart,
            running,
            meta: BackupMeta {
                peer: BackupPeer {
                    sid: record.meta.peer.sid,
                    kind: record.meta.peer.kind,
                    alias: record.meta.peer.alias,
                },
                tags: record.meta.tags,
            },
            traffic: BackupTraffic {
                tcp_in: t.tcp_in,
                tcp_out: t.tcp_out,
                udp_in: t.udp_in,
                udp_out: t.udp_out,
            },
            node: Some(node),
        });
    }
    Ok(response::data(ctx.state.dialect, StatusCode::OK, &backup))
}

/// The backup of every instance of `supervisor`.
pub async fn backup(supervisor: &Supervisor) -> Result<Backup, HttpError> {
    let records = supervisor.store().load().await?;
    let mut instances = Vec::new();
    for info in supervisor.list() {
        // The live snapshot for figures and status, the stored record for the full URL.
        let Some(record) = records.iter().find(|r| r.id == info.id) else {
            continue;
        };
        instances.push(BackupInstance {
            id: info.id.clone(),
            url: record.url.clone(),
            alias: info.alias.clone().unwrap_or_default(),
            restart: info.restart,
            running: matches!(
                info.status,
                nodepass_core::supervisor::InstanceStatus::Running
                    | nodepass_core::supervisor::InstanceStatus::Starting
            ),
            meta: BackupMeta {
                peer: BackupPeer {
                    sid: info.meta.peer.sid.clone(),
                    kind: info.meta.peer.kind.clone(),
                    alias: info.meta.peer.alias.clone(),
                },
                tags: info.meta.tags.clone(),
            },
            traffic: BackupTraffic {
                tcp_in: info.traffic.tcp_in,
                tcp_out: info.traffic.tcp_out,
                udp_in: info.traffic.udp_in,
                udp_out: info.traffic.udp_out,
            },
            node: info.node.clone(),
        });
    }
    Ok(Backup {
        format: BACKUP_FORMAT.into(),
        version: 1,
        instances,
    })
}

/// Recreate instances from a backup, or from a running Go NodePass master.
#[utoipa::path(
    post,
    path = "/v1/import",
    operation_id = "importInstances",
    tag = "instances",
    request_body(content = ImportBody, content_type = "application/json"),
    responses(
        (status = 200, description = "What was imported and skipped, and why", body = Envelope<ImportReport>),
        (status = 400, description = "Invalid body", body = ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
        (status = 502, description = "The Go master could not be read", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn import(ctx: Ctx) -> Reply {
    let (state, headers, incoming) = ctx.into_body();
    let body: ImportBody = crate::body::read_json(&headers, incoming, state.limits).await?;
    if let Some(format) = &body.format
        && format != BACKUP_FORMAT
    {
        return Err(HttpError::invalid(
            "format",
            format!("expected {BACKUP_FORMAT:?}"),
        ));
    }
    if body.version.is_some_and(|v| v.as_f64() != Some(1.0)) {
        return Err(HttpError::invalid("version", "only version 1 is known"));
    }
    let instances = match (body.instances, body.from) {
        (Some(list), None) => list,
        (None, Some(from)) => {
            let key = body
                .key
                .ok_or_else(|| HttpError::invalid("key", "required with from"))?;
            read_go_master(&from, &key).await?
        }
        _ => {
            return Err(HttpError::invalid(
                "body",
                "give either instances (a backup) or from and key (a Go NodePass master)",
            ));
        }
    };
    let report = create_all(&state.supervisor, Some(&state), instances).await;
    let status = StatusCode::OK;
    Ok(match state.dialect {
        ApiDialect::Envelope => response::ok(status, &report),
        _ => response::bare(status, &report),
    })
}

/// Read every instance of a Go NodePass master (`from` is its API base, e.g.
/// `http://127.0.0.1:9090/api`) and recreate them in `supervisor`.
pub async fn import_from_go(
    supervisor: &Supervisor,
    from: &str,
    key: &str,
) -> Result<ImportReport, HttpError> {
    let instances = read_go_master(from, key).await?;
    Ok(create_all(supervisor, None, instances).await)
}

/// Ask our master at `to` (API base, e.g. `http://127.0.0.1:9090/api`, key `to_key`) to import
/// every instance of the Go NodePass master at `from` (key `from_key`): what `nodepass import`
/// does. Errors are sentences without keys.
pub async fn import_remote(
    to: &str,
    to_key: &str,
    from: &str,
    from_key: &str,
) -> Result<ImportReport, String> {
    let url = format!("{}/v1/import", to.trim_end_matches('/'));
    let body = serde_json::to_vec(&serde_json::json!({ "from": from, "key": from_key }))
        .map_err(|e| e.to_string())?;
    let answer = goclient::post_json(&url, to_key, body.into(), Duration::from_secs(120)).await?;
    let value: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|e| format!("{url} did not answer with JSON: {e}"))?;
    // Either dialect: the report bare, or inside `data`.
    let report = if value.get("success").is_some() {
        value["data"].clone()
    } else {
        value
    };
    serde_json::from_value(report).map_err(|e| format!("{url} did not answer with a report: {e}"))
}

/// A Go master's instances as backup entries (its API key's pseudo-instance left out).
pub(crate) async fn read_go_master(
    from: &str,
    key: &str,
) -> Result<Vec<BackupInstance>, HttpError> {
    let base: http::Uri = from
        .parse()
        .map_err(|_| HttpError::invalid("from", "not a URL; expected http://HOST:PORT/PREFIX"))?;
    if base.scheme_str() != Some("http") || base.host().is_none() {
        return Err(HttpError::invalid(
            "from",
            "expected http://HOST:PORT/PREFIX (https:// is not supported yet)",
        ));
    }
    let url = format!("{}/v1/instances", from.trim_end_matches('/'));
    let body = goclient::get_json(&url, key, Duration::from_secs(10))
        .await
        .map_err(|e| HttpError::new(ErrorCode::BadGateway, format!("from: {e}")))?;
    let list: Vec<GoInstance> = serde_json::from_slice(&body).map_err(|e| {
        HttpError::new(
            ErrorCode::BadGateway,
            format!("from: the answer is not a NodePass instance list: {e}"),
        )
    })?;
    Ok(list
        .into_iter()
        .filter(|i| i.id != crate::np::KEY_ID)
        .map(GoInstance::into_backup)
        .collect())
}

/// An instance as the Go master lists it (fields we do not use are ignored).
#[derive(Debug, Deserialize)]
struct GoInstance {
    id: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    status: String,
    url: String,
    #[serde(default)]
    restart: bool,
    #[serde(default)]
    meta: Option<GoMeta>,
    #[serde(default)]
    tcprx: u64,
    #[serde(default)]
    tcptx: u64,
    #[serde(default)]
    udprx: u64,
    #[serde(default)]
    udptx: u64,
}

#[derive(Debug, Default, Deserialize)]
struct GoMeta {
    #[serde(default)]
    peer: Option<GoPeer>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct GoPeer {
    #[serde(default)]
    sid: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    alias: String,
}

impl GoInstance {
    fn into_backup(self) -> BackupInstance {
        let meta = self.meta.unwrap_or_default();
        let peer = meta.peer.unwrap_or_default();
        BackupInstance {
            id: self.id,
            url: self.url,
            alias: self.alias,
            restart: self.restart,
            running: self.status == "running" || self.status == "error",
            meta: BackupMeta {
                peer: BackupPeer {
                    sid: peer.sid,
                    kind: peer.kind,
                    alias: peer.alias,
                },
                tags: meta.tags.unwrap_or_default(),
            },
            traffic: BackupTraffic {
                tcp_in: self.tcprx,
                tcp_out: self.tcptx,
                udp_in: self.udprx,
                udp_out: self.udptx,
            },
            node: None,
        }
    }
}

/// Create each instance; a failure skips that one only. On a fleet master (`state`), an
/// instance with another node's `node` is created for that node.
async fn create_all(
    supervisor: &Supervisor,
    state: Option<&crate::state::State>,
    instances: Vec<BackupInstance>,
) -> ImportReport {
    let mut report = ImportReport::default();
    for (n, i) in instances.into_iter().enumerate() {
        let source = if i.id.is_empty() {
            format!("#{n}")
        } else {
            i.id.clone()
        };
        if i.url
            .split_once("://")
            .is_some_and(|(_, rest)| rest.starts_with(&format!("{}@", nodepass_core::config::MASK)))
        {
            report.skipped.push(Skipped {
                source,
                reason: "url: the tunnel key is masked (the source did not give it)".into(),
            });
            continue;
        }
        let alias = (!i.alias.is_empty()).then(|| i.alias.clone());
        let req = CreateInstance {
            url: i.url,
            alias,
            restart: i.restart,
            meta: Meta {
                peer: Peer {
                    sid: i.meta.peer.sid,
                    kind: i.meta.peer.kind,
                    alias: i.meta.peer.alias,
                },
                tags: i.meta.tags,
            },
            start: i.running,
            no_wait: true,
            traffic: TrafficTotals {
                tcp_in: i.traffic.tcp_in,
                tcp_out: i.traffic.tcp_out,
                udp_in: i.traffic.udp_in,
                udp_out: i.traffic.udp_out,
            },
        };
        let remote = state.and_then(|state| {
            let fleet = state.fleet.as_ref()?;
            let node = i.node.as_deref().filter(|n| *n != fleet.node())?;
            Some((state, node))
        });
        let created = match remote {
            Some((state, node)) => crate::fleet::create_remote(state, node, req).await,
            None => supervisor.create(req).await.map_err(HttpError::from),
        };
        match created {
            Ok(info) => report.imported.push(Imported {
                source,
                id: info.id,
                alias: i.alias,
            }),
            Err(e) => report.skipped.push(Skipped {
                source,
                reason: e.message,
            }),
        }
    }
    report
}

/// The form of `from`: `http://HOST[:PORT][/PATH]`, the host and port as tcping's target
/// states them, the path of RFC 3986 path characters.
fn from_pattern() -> String {
    // TARGET_PATTERN is `^(HOST):(PORT)$`.
    let target = crate::tcping::TARGET_PATTERN;
    let inner = &target[1..target.len() - 1];
    let (host, port) = inner
        .rsplit_once("):(")
        .expect("the target pattern is (HOST):(PORT)");
    format!("^http://{host})(:({port})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$")
}

/// The body of `POST /v1/import` exactly: a backup, or a Go master to read.
pub(crate) fn import_body_schema() -> serde_json::Value {
    serde_json::json!({ "oneOf": [
        { "type": "object", "required": ["instances"], "additionalProperties": false,
          "properties": {
              "format": { "enum": [BACKUP_FORMAT, null] },
              "version": { "enum": [1, null] },
              "instances": { "type": "array",
                             "items": { "$ref": "#/components/schemas/BackupInstance" } } } },
        { "type": "object", "required": ["from", "key"], "additionalProperties": false,
          "properties": {
              "from": { "type": "string", "pattern": from_pattern(),
                        "description": "The Go master's API base URL, e.g. http://127.0.0.1:9090/api" },
              "key": { "type": "string", "minLength": 1, "description": "The Go master's API key" } } },
    ] })
}

/// JSON schemas of the transfer bodies, for the NodePass dialect's document.
pub(crate) fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn of<T: utoipa::PartialSchema>() -> serde_json::Value {
        serde_json::to_value(T::schema()).expect("schemas serialize")
    }
    vec![
        ("Backup", of::<Backup>()),
        ("BackupInstance", of::<BackupInstance>()),
        ("BackupMeta", of::<BackupMeta>()),
        ("BackupPeer", of::<BackupPeer>()),
        ("BackupTraffic", of::<BackupTraffic>()),
        ("ImportBody", import_body_schema()),
        ("ImportReport", of::<ImportReport>()),
        ("Imported", of::<Imported>()),
        ("Skipped", of::<Skipped>()),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_from_pattern_takes_http_urls_with_a_valid_host_and_port() {
        let pattern = super::from_pattern();
        assert!(pattern.starts_with("^http://("), "{pattern}");
        assert!(pattern.ends_with(")?$"), "{pattern}");
        // The host and port parts as tcping's pattern has them, the port optional.
        assert!(pattern.contains("6553[0-5])"), "{pattern}");
        assert!(pattern.contains("[A-Za-z0-9-]+"), "{pattern}");
    }
}
