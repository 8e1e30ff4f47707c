//! `/v1/instances`: list, create, read, control, update and delete managed instances.

use std::collections::BTreeMap;

use http::StatusCode;
use nodepass_core::store::{MAX_ALIAS_CHARS, Meta, Peer};
use nodepass_core::supervisor::{
    CreateInstance, InstanceInfo, MAX_META_CHARS, MAX_TAGS, UpdateInstance,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::body;
use crate::error::HttpError;
use crate::openapi::{Empty, Envelope, ErrorEnvelope};
use crate::response;
use crate::router::{Ctx, Reply};
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
    /// Auto-restart policy (default false).
    #[serde(default)]
    restart: bool,
    /// Metadata.
    #[serde(default)]
    meta: Option<MetaBody>,
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
    let instances = ctx
        .state
        .supervisor
        .list()
        .iter()
        .map(|i| InstanceView::of(&ctx.state.supervisor, i))
        .filter(|i| query.kind.is_none_or(|k| i.kind == k))
        .filter(|i| query.status.is_none_or(|s| i.status == s))
        .collect();
    Ok(response::ok(StatusCode::OK, &InstanceList { instances }))
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
    let req = CreateInstance {
        url: body.url,
        alias: body.alias,
        restart: body.restart,
        meta: body.meta.map(MetaBody::into_meta).unwrap_or_default(),
    };
    let info = state.supervisor.create(req).await?;
    Ok(response::ok(
        StatusCode::CREATED,
        &InstanceView::of(&state.supervisor, &info),
    ))
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
    let info = state.supervisor.get(ctx.param())?;
    Ok(response::ok(
        StatusCode::OK,
        &InstanceView::of(&state.supervisor, &info),
    ))
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
    let body: PutBody = body::read_json(&headers, incoming, state.limits).await?;
    let info = match (body.action, body.url) {
        (Some(action), None) => apply(&state.supervisor, &id, action).await?,
        (None, Some(url)) => state.supervisor.replace_url(&id, &url).await?,
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
    Ok(response::ok(
        StatusCode::OK,
        &InstanceView::of(&state.supervisor, &info),
    ))
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
    if body.alias.is_none()
        && body.restart.is_none()
        && body.meta.is_none()
        && body.action.is_none()
    {
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
    let supervisor = &state.supervisor;
    let mut info = supervisor.get(&id)?;
    if let Some(action) = body.action {
        check_transition(&info, action)?;
        info = apply(supervisor, &id, action).await?;
    }
    let update = UpdateInstance {
        alias: body.alias,
        restart: body.restart,
        meta: body.meta.map(MetaBody::into_meta),
    };
    if update.alias.is_some() || update.restart.is_some() || update.meta.is_some() {
        info = supervisor.update(&id, update).await?;
    }
    Ok(response::ok(
        StatusCode::OK,
        &InstanceView::of(&state.supervisor, &info),
    ))
}

/// Stop (if running) and delete an instance.
#[utoipa::path(
    delete,
    path = "/v1/instances/{id}",
    operation_id = "deleteInstance",
    tag = "instances",
    params(("id" = String, Path, description = "Instance id (8 hex characters)")),
    responses(
        (status = 204, description = "Deleted", body = Empty),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 404, description = "No such instance", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn delete(ctx: Ctx) -> Reply {
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
