//! `/v1/instances`: list, create, read, control, update and delete managed instances.

use std::collections::BTreeMap;

use http::StatusCode;
use nodepass_core::store::postgres::Spec;
use nodepass_core::store::{Desired, MAX_ALIAS_CHARS, Meta, Peer};
use nodepass_core::supervisor::{
    CreateInstance, InstanceInfo, MAX_META_CHARS, MAX_TAGS, UpdateInstance,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use http::Response;
use nodepass_core::config::{ApiDialect, TlsMode};

use crate::body;
use crate::error::{ErrorCode, HttpError};
use crate::np::{KEY_ID, NpInstance};
use crate::openapi::{Envelope, ErrorEnvelope};
use crate::response;
use crate::response::Body;
use crate::router::{Ctx, Reply};
use crate::state::{MasterFacts, State};
use crate::view::{InstanceList, InstanceView, Kind, Status};

/// The peer in a request body.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PeerBody {
    /// The peer's service id.
    sid: String,
    /// The peer's type.
    #[serde(rename = "type")]
    kind: String,
    /// The peer's alias.
    alias: String,
}

/// Metadata in a request body; replaces the instance's metadata as a whole.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MetaBody {
    /// The other end of the tunnel.
    peer: PeerBody,
    /// Operator tags (keys and values at most 256 characters).
    tags: BTreeMap<String, String>,
}

impl MetaBody {
    /// The supervisor's limits, checked before a PATCH applies anything: every string at most
    /// [`MAX_META_CHARS`] characters, at most [`MAX_TAGS`] tags, no empty tag key.
    fn validate(&self) -> Result<(), HttpError> {
        let short = |field: &str, value: &str| {
            let chars = value.chars().count();
            if chars > MAX_META_CHARS {
                return Err(HttpError::invalid(
                    field,
                    format!("{chars} characters, at most {MAX_META_CHARS} allowed"),
                ));
            }
            Ok(())
        };
        short("meta.peer.sid", &self.peer.sid)?;
        short("meta.peer.type", &self.peer.kind)?;
        short("meta.peer.alias", &self.peer.alias)?;
        if self.tags.len() > MAX_TAGS {
            return Err(HttpError::invalid(
                "meta.tags",
                format!("{} tags, at most {MAX_TAGS} allowed", self.tags.len()),
            ));
        }
        for (k, v) in &self.tags {
            if k.is_empty() {
                return Err(HttpError::invalid("meta.tags", "empty tag key"));
            }
            short("meta.tags", k)?;
            short(&format!("meta.tags.{k}"), v)?;
        }
        Ok(())
    }

    fn into_meta(self) -> Meta {
        Meta {
            peer: Peer {
                sid: self.peer.sid,
                kind: self.peer.kind,
                alias: self.peer.alias,
            },
            tags: self.tags,
        }
    }
}

fn validate_alias(alias: Option<&str>) -> Result<(), HttpError> {
    match alias {
        Some(a) if a.chars().count() > MAX_ALIAS_CHARS => Err(HttpError::invalid(
            "alias",
            format!(
                "{} characters, at most {MAX_ALIAS_CHARS} allowed",
                a.chars().count()
            ),
        )),
        _ => Ok(()),
    }
}

/// What the documents say of an instance URL: `server://` or `client://`, no fragment, no
/// spaces or control characters (the rest of its grammar is docs/url.md; the server names what
/// is wrong).
pub(crate) const URL_PATTERN: &str = "^(server|client)://[^#\\x00-\\x20\\x7f]+$";

/// `POST /v1/instances`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    /// `server://...` or `client://...`, key included.
    #[schema(example = "server://secret@:10101/127.0.0.1:8080?tls=1")]
    url: String,
    /// Optional alias (at most 256 characters).
    #[serde(default)]
    alias: Option<String>,
    /// Auto-restart policy (default true, as in NodePass).
    #[serde(default)]
    restart: Option<bool>,
    /// Metadata.
    #[serde(default)]
    meta: Option<MetaBody>,
    /// Fleet mode: the node that runs it (default this master's node).
    #[serde(default)]
    node: Option<String>,
}

/// A control action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    /// Start a stopped or failed instance; answers once it runs or failed (or, after a bounded
    /// wait, while still `starting`).
    Start,
    /// Stop; answers once stopped.
    Stop,
    /// Stop, then start.
    Restart,
    /// Zero the traffic counters.
    Reset,
}

/// `PUT /v1/instances/{id}`: exactly one of `action` and `url`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutBody {
    /// A control action.
    #[serde(default)]
    action: Option<Action>,
    /// A new URL: replaces the configuration and restarts the instance if it was running.
    #[serde(default)]
    url: Option<String>,
}

/// `PATCH /v1/instances/{id}`: any of the fields, at least one. Every field is validated before
/// any is applied.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchBody {
    /// New alias; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    alias: Option<Option<String>>,
    /// New auto-restart policy.
    #[serde(default)]
    restart: Option<bool>,
    /// New metadata (replaces the old).
    #[serde(default)]
    meta: Option<MetaBody>,
    /// A control action, applied after the other fields.
    #[serde(default)]
    action: Option<Action>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Filters of `GET /v1/instances`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(rename = "type")]
    kind: Option<Kind>,
    status: Option<Status>,
}

/// List instances, oldest first.
#[utoipa::path(
    get,
    path = "/v1/instances",
    operation_id = "listInstances",
    tag = "instances",
    params(
        ("type" = Option<Kind>, Query, description = "Only servers or only clients"),
        ("status" = Option<Status>, Query, description = "Only instances with this status"),
    ),
    responses(
        (status = 200, description = "The instances", body = Envelope<InstanceList>),
        (status = 400, description = "Unknown filter or value", body = ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn list(ctx: Ctx) -> Reply {
    let query: ListQuery = ctx.query()?;
    let state = &ctx.state;
    let infos = crate::fleet::list(state);
    let selected = infos
        .iter()
        .filter(|i| query.kind.is_none_or(|k| Kind::from(i.kind) == k))
        .filter(|i| query.status.is_none_or(|s| Status::from(i.status) == s));
    if state.dialect == ApiDialect::Envelope {
        let instances = selected
            .map(|i| InstanceView::of(&state.supervisor, i))
            .collect();
        return Ok(response::ok(StatusCode::OK, &InstanceList { instances }));
    }
    // NodePass lists the API key first, as a pseudo-instance (not when filtering).
    let key = (query.kind.is_none() && query.status.is_none()).then(|| key_view(state, None));
    let list: Vec<NpInstance> = key
        .into_iter()
        .chain(selected.map(|i| NpInstance::of(&state.supervisor, i)))
        .collect();
    Ok(response::bare(StatusCode::OK, &list))
}

/// The desired-state change an action asks of another node's instance.
fn action_spec(action: Action) -> Spec {
    let mut spec = Spec::default();
    match action {
        Action::Start => spec.desired = Some(Desired::Running),
        Action::Stop => spec.desired = Some(Desired::Stopped),
        Action::Restart => {
            spec.desired = Some(Desired::Running);
            spec.restart_now = true;
        }
        Action::Reset => spec.reset = true,
    }
    spec
}

/// This master's node name in fleet mode.
fn local_node(state: &State) -> Option<&str> {
    state.fleet.as_ref().map(|f| f.node())
}

/// The instance in the dialect's form.
pub(crate) fn reply(state: &State, status: StatusCode, info: &InstanceInfo) -> Response<Body> {
    match state.dialect {
        ApiDialect::Envelope => response::ok(status, &InstanceView::of(&state.supervisor, info)),
        _ => response::bare(status, &NpInstance::of(&state.supervisor, info)),
    }
}

/// The API key's pseudo-instance: `url` masked, or the new key right after a rotation.
pub(crate) fn key_view(state: &State, new_key: Option<&str>) -> NpInstance {
    let alias = crate::sync::lock(&state.alias).clone();
    NpInstance::key(&alias, new_key.unwrap_or(KEY_ID))
}

/// A URL with the master's `log` and (servers only) `tls` added where it sets none, as a
/// NodePass master does for the instances it creates.
pub(crate) fn inherit(url: &str, facts: &MasterFacts) -> String {
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let names: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let has = |n: &str| names.iter().any(|k| k == n);
    let mut added: Vec<String> = Vec::new();
    if !has("log") {
        added.push(format!("log={}", facts.log));
    }
    let is_server = head.to_ascii_lowercase().starts_with("server://");
    if is_server && !has("tls") {
        match &facts.tls {
            TlsMode::Off => {}
            TlsMode::SelfSigned => added.push("tls=1".into()),
            TlsMode::Files { cert, key } => {
                let enc = |p: &std::path::Path| {
                    form_urlencoded::byte_serialize(p.to_string_lossy().as_bytes())
                        .collect::<String>()
                };
                added.push(format!("tls=2&crt={}&key={}", enc(cert), enc(key)));
            }
        }
    }
    if added.is_empty() {
        return url.to_string();
    }
    let sep = if query.is_empty() {
        if url.ends_with('?') { "" } else { "?" }
    } else {
        "&"
    };
    format!("{url}{sep}{}", added.join("&"))
}

/// Create an instance (stopped unless `restart` is true, then started at once).
#[utoipa::path(
    post,
    path = "/v1/instances",
    operation_id = "createInstance",
    tag = "instances",
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Envelope<InstanceView>),
        (status = 400, description = "Invalid body or URL", body = ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 409, description = "A running instance already listens there", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn create(ctx: Ctx) -> Reply {
    let (state, headers, incoming) = ctx.into_body();
    let body: CreateBody = body::read_json(&headers, incoming, state.limits).await?;
    validate_alias(body.alias.as_deref())?;
    if let Some(meta) = &body.meta {
        meta.validate()?;
    }
    // As NodePass: created and started at once, answered without waiting for a peer.
    let req = CreateInstance {
        url: inherit(&body.url, &state.facts),
        alias: body.alias.filter(|a| !a.is_empty()),
        restart: body.restart.unwrap_or(true),
        meta: body.meta.map(MetaBody::into_meta).unwrap_or_default(),
        start: true,
        no_wait: true,
        ..Default::default()
    };
    let info = match body.node.filter(|n| Some(n.as_str()) != local_node(&state)) {
        Some(node) => crate::fleet::create_remote(&state, &node, req).await?,
        None => state.supervisor.create(req).await?,
    };
    Ok(reply(&state, StatusCode::CREATED, &info))
}

/// One instance.
#[utoipa::path(
    get,
    path = "/v1/instances/{id}",
    operation_id = "getInstance",
    tag = "instances",
    params(("id" = String, Path, description = "Instance id (8 hex characters)")),
    responses(
        (status = 200, description = "The instance", body = Envelope<InstanceView>),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 404, description = "No such instance", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn get(ctx: Ctx) -> Reply {
    let state = &ctx.state;
    if state.dialect != ApiDialect::Envelope && ctx.param() == KEY_ID {
        return Ok(response::bare(StatusCode::OK, &key_view(state, None)));
    }
    let info = crate::fleet::get(state, ctx.param())?;
    Ok(reply(state, StatusCode::OK, &info))
}

/// Control an instance (`{"action": ...}`) or replace its URL (`{"url": ...}`).
#[utoipa::path(
    put,
    path = "/v1/instances/{id}",
    operation_id = "putInstance",
    tag = "instances",
    params(("id" = String, Path, description = "Instance id (8 hex characters)")),
    request_body(content = PutBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The instance after the change", body = Envelope<InstanceView>),
        (status = 400, description = "Invalid body, action or URL", body = ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 404, description = "No such instance", body = ErrorEnvelope),
        (status = 409, description = "Not possible in the current status", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn put(ctx: Ctx) -> Reply {
    let id = ctx.param().to_string();
    let (state, headers, incoming) = ctx.into_body();
    if state.dialect != ApiDialect::Envelope && id == KEY_ID {
        return Err(key_forbidden());
    }
    let body: PutBody = body::read_json(&headers, incoming, state.limits).await?;
    if crate::fleet::is_remote(&state, &id) && body.action.is_some() != body.url.is_some() {
        let mut spec = body.action.map(action_spec).unwrap_or_default();
        spec.url = body.url.map(|url| inherit(&url, &state.facts));
        let info = crate::fleet::change_remote(&state, &id, spec).await?;
        return Ok(reply(&state, StatusCode::OK, &info));
    }
    let info = match (body.action, body.url) {
        (Some(action), None) => act(&state, &id, action).await?,
        (None, Some(url)) => {
            state
                .supervisor
                .replace_url(&id, &inherit(&url, &state.facts))
                .await?
        }
        (Some(_), Some(_)) => {
            return Err(HttpError::invalid(
                "body",
                "give either action or url, not both",
            ));
        }
        (None, None) => {
            return Err(HttpError::invalid(
                "body",
                "missing field: give action or url",
            ));
        }
    };
    Ok(reply(&state, StatusCode::OK, &info))
}

fn key_forbidden() -> HttpError {
    HttpError::new(
        ErrorCode::Forbidden,
        "the API key's pseudo-instance can only be patched: {\"action\": \"restart\"} rotates the key, {\"alias\"} names the master",
    )
}

/// Update alias, policy or metadata, and optionally run an action.
#[utoipa::path(
    patch,
    path = "/v1/instances/{id}",
    operation_id = "patchInstance",
    tag = "instances",
    params(("id" = String, Path, description = "Instance id (8 hex characters)")),
    request_body(content = PatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The instance after the change", body = Envelope<InstanceView>),
        (status = 400, description = "Invalid body or field", body = ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 404, description = "No such instance", body = ErrorEnvelope),
        (status = 409, description = "The action is not possible in the current status", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn patch(ctx: Ctx) -> Reply {
    let id = ctx.param().to_string();
    let (state, headers, incoming) = ctx.into_body();
    let body: PatchBody = body::read_json(&headers, incoming, state.limits).await?;
    let nodepass = state.dialect != ApiDialect::Envelope;
    if nodepass && id == KEY_ID {
        return patch_key(&state, body).await;
    }
    let empty = body.alias.is_none()
        && body.restart.is_none()
        && body.meta.is_none()
        && body.action.is_none();
    if empty && !nodepass {
        return Err(HttpError::invalid(
            "body",
            "nothing to change: give alias, restart, meta or action",
        ));
    }
    // Validate everything first (fields, and whether the action fits the current status), then
    // run the action (which may still be refused, e.g. a listen address taken meanwhile: then
    // nothing was changed), then apply the fields (which can then only fail in the store).
    validate_alias(body.alias.as_ref().and_then(|a| a.as_deref()))?;
    if let Some(meta) = &body.meta {
        meta.validate()?;
    }
    if crate::fleet::is_remote(&state, &id) {
        let mut spec = body.action.map(action_spec).unwrap_or_default();
        if let Some(alias) = body.alias {
            spec.set_alias = true;
            spec.alias = alias.filter(|a| !a.is_empty());
        }
        spec.restart = body.restart;
        spec.meta = body.meta.map(MetaBody::into_meta);
        let info = crate::fleet::change_remote(&state, &id, spec).await?;
        return Ok(reply(&state, StatusCode::OK, &info));
    }
    let supervisor = &state.supervisor;
    let mut info = supervisor.get(&id)?;
    if let Some(action) = body.action {
        if nodepass && is_no_op(&info, action) {
            // NodePass answers 200 for starting a running instance or stopping a stopped one.
        } else {
            check_transition(&info, action)?;
            info = apply(supervisor, &id, action).await?;
        }
    }
    let update = UpdateInstance {
        // `""` clears the alias, as `null` does (NodePass has no null alias).
        alias: body.alias.map(|a| a.filter(|a| !a.is_empty())),
        restart: body.restart,
        meta: body.meta.map(MetaBody::into_meta),
    };
    if update.alias.is_some() || update.restart.is_some() || update.meta.is_some() {
        info = supervisor.update(&id, update).await?;
    }
    Ok(reply(&state, StatusCode::OK, &info))
}

/// `PATCH /v1/instances/********`: `{"action": "restart"}` rotates the API key and shows the
/// new one once in `url`; `{"alias"}` names the master. Nothing else applies to it.
async fn patch_key(state: &State, body: PatchBody) -> Reply {
    if body.restart.is_some() || body.meta.is_some() {
        return Err(HttpError::invalid(
            "body",
            "the API key's pseudo-instance takes only alias and action restart",
        ));
    }
    let new_key = match body.action {
        None => None,
        Some(Action::Restart) => Some(state.keys.rotate().await?),
        Some(other) => {
            return Err(HttpError::invalid(
                "action",
                format!("{other:?} does not apply to the API key; restart rotates it")
                    .to_lowercase(),
            ));
        }
    };
    if let Some(alias) = body.alias {
        crate::info::set_alias(state, alias.unwrap_or_default()).await?;
    }
    if new_key.is_some() {
        tracing::info!("API key rotated");
    }
    let view = key_view(state, new_key.as_ref().map(|k| k.expose()));
    Ok(response::bare(StatusCode::OK, &view))
}

/// Starting a running instance or stopping a stopped one.
fn is_no_op(info: &InstanceInfo, action: Action) -> bool {
    let status = Status::from(info.status);
    match action {
        Action::Start => matches!(status, Status::Running | Status::Starting),
        Action::Stop => status == Status::Stopped,
        Action::Restart | Action::Reset => false,
    }
}

/// Run an action as PUT does: in the NodePass dialect starting a running instance or stopping
/// a stopped one is answered with the instance as it is.
async fn act(state: &State, id: &str, action: Action) -> Result<InstanceInfo, HttpError> {
    if state.dialect != ApiDialect::Envelope {
        let info = state.supervisor.get(id)?;
        if is_no_op(&info, action) {
            return Ok(info);
        }
    }
    apply(&state.supervisor, id, action).await
}

/// Stop (if running) and delete an instance.
#[utoipa::path(
    delete,
    path = "/v1/instances/{id}",
    operation_id = "deleteInstance",
    tag = "instances",
    params(("id" = String, Path, description = "Instance id (8 hex characters)")),
    responses(
        (status = 204, description = "Deleted (no body)"),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 404, description = "No such instance", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn delete(ctx: Ctx) -> Reply {
    if ctx.state.dialect != ApiDialect::Envelope && ctx.param() == KEY_ID {
        return Err(key_forbidden());
    }
    if crate::fleet::is_remote(&ctx.state, ctx.param()) {
        let spec = Spec {
            delete: true,
            ..Spec::default()
        };
        crate::fleet::change_remote(&ctx.state, ctx.param(), spec).await?;
        return Ok(response::no_content());
    }
    ctx.state.supervisor.delete(ctx.param()).await?;
    Ok(response::no_content())
}

/// The supervisor's transition rules, checked ahead so that a PATCH whose action would be
/// refused changes nothing: `start` needs a stopped or failed instance, `stop` one that is not
/// already stopped.
fn check_transition(info: &InstanceInfo, action: Action) -> Result<(), HttpError> {
    let status = Status::from(info.status);
    let refused = match action {
        Action::Start => matches!(status, Status::Running | Status::Starting),
        Action::Stop => status == Status::Stopped,
        Action::Restart | Action::Reset => false,
    };
    if refused {
        return Err(HttpError::new(
            crate::error::ErrorCode::Conflict,
            format!("instance {} is already {}", info.id, info.status),
        ));
    }
    Ok(())
}

async fn apply(
    supervisor: &nodepass_core::Supervisor,
    id: &str,
    action: Action,
) -> Result<InstanceInfo, HttpError> {
    let info = match action {
        Action::Start => supervisor.start(id).await?,
        Action::Stop => supervisor.stop(id).await?,
        Action::Restart => supervisor.restart(id).await?,
        Action::Reset => supervisor.reset(id).await?,
    };
    Ok(info)
}
