//! `POST /v1/key/rotate`.

use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::openapi::{Envelope, ErrorEnvelope};
use crate::response;
use crate::router::{Ctx, Reply};

/// A new API key, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NewKey {
    /// The new key: store it now, it is not shown again. The old key no longer works.
    pub key: String,
}

/// Replace the API key with a new random one.
#[utoipa::path(
    post,
    path = "/v1/key/rotate",
    operation_id = "rotateKey",
    tag = "master",
    responses(
        (status = 200, description = "The new key (the old one is invalid from now on)", body = Envelope<NewKey>),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 409, description = "The key is set by NODEPASS_API_KEY", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn rotate(ctx: Ctx) -> Reply {
    let key = ctx.state.keys.rotate().await?;
    tracing::info!("API key rotated");
    if ctx.state.dialect != nodepass_core::config::ApiDialect::Envelope {
        return Ok(response::bare(
            StatusCode::OK,
            &NewKey {
                key: key.expose().to_string(),
            },
        ));
    }
    Ok(response::with_message(
        StatusCode::OK,
        &NewKey {
            key: key.expose().to_string(),
        },
        Some("store the new key now: it is not shown again"),
    ))
}
