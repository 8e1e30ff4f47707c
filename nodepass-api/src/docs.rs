//! The public endpoints: `openapi.json`, the Swagger UI (served from assets compiled into the
//! binary, nothing fetched from elsewhere) and the health check.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;

use nodepass_core::config::ApiDialect;

use crate::error::{ErrorCode, HttpError};
use crate::openapi::{Envelope, ErrorEnvelope};
use crate::response::{self, Body};
use crate::router::{Ctx, Reply};

/// The Swagger UI page and its `openapi.json`, rendered once at start.
pub(crate) struct Docs {
    openapi_json: Bytes,
    swagger: Arc<utoipa_swagger_ui::Config<'static>>,
    index: String,
}

/// The UI may load only what the master itself serves: no CDN, no online validator.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; \
    object-src 'none'; frame-ancestors 'none'; base-uri 'self'";

impl Docs {
    pub(crate) fn new(dialect: ApiDialect, prefix: &str) -> Docs {
        let doc = crate::openapi::document(dialect, prefix);
        let openapi_json =
            Bytes::from(serde_json::to_vec_pretty(&doc).expect("the document serializes"));
        let swagger = utoipa_swagger_ui::Config::new([format!("{prefix}/v1/openapi.json")])
            .validator_url("none")
            .try_it_out_enabled(true)
            .persist_authorization(false);
        Docs {
            openapi_json,
            swagger: Arc::new(swagger),
            index: format!("{prefix}/v1/docs/index.html"),
        }
    }

    /// One UI file, e.g. `index.html` or `swagger-ui-bundle.js`.
    fn file(&self, name: &str) -> Option<Response<Body>> {
        let file = utoipa_swagger_ui::serve(name, self.swagger.clone()).ok()??;
        let mut res = response::bytes(StatusCode::OK, &file.content_type, file.bytes.into_owned());
        let h = res.headers_mut();
        if file.gzpipped {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Some(res)
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "docs",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")),
    security(())
)]
pub(crate) async fn openapi(ctx: Ctx) -> Reply {
    Ok(response::bytes(
        StatusCode::OK,
        response::JSON,
        ctx.state.docs.openapi_json.clone(),
    ))
}

/// The Swagger UI (redirects to its page).
#[utoipa::path(
    get,
    path = "/v1/docs",
    operation_id = "docs",
    tag = "docs",
    responses((status = 308, description = "Redirect to the Swagger UI page, `/v1/docs/index.html`")),
    security(())
)]
pub(crate) async fn docs(ctx: Ctx) -> Reply {
    let mut res = response::bytes(StatusCode::PERMANENT_REDIRECT, "text/plain", "");
    let location = HeaderValue::from_str(&ctx.state.docs.index)
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?;
    res.headers_mut().insert(header::LOCATION, location);
    Ok(res)
}

/// A file of the Swagger UI, served from the binary (works offline).
#[utoipa::path(
    get,
    path = "/v1/docs/{file}",
    operation_id = "docsFile",
    tag = "docs",
    params(("file" = String, Path, description = "`index.html`, `swagger-ui-bundle.js`, ...")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = ErrorEnvelope),
    ),
    security(())
)]
pub(crate) async fn docs_file(ctx: Ctx) -> Reply {
    ctx.state.docs.file(ctx.param()).ok_or_else(|| {
        HttpError::new(
            ErrorCode::NotFound,
            format!("file: no documentation file {:?}", ctx.param()),
        )
    })
}

/// `data` of the health check.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// 200 while the API is serving.
#[utoipa::path(
    get,
    path = "/v1/health",
    operation_id = "health",
    tag = "docs",
    responses(
        (status = 200, description = "Serving", body = Envelope<Health>),
        (status = 503, description = "Shutting down", body = ErrorEnvelope),
    ),
    security(())
)]
pub(crate) async fn health(ctx: Ctx) -> Reply {
    if ctx.state.shutdown.is_cancelled() {
        return Err(HttpError::new(ErrorCode::Unavailable, "shutting down"));
    }
    Ok(response::data(
        ctx.state.dialect,
        StatusCode::OK,
        &Health { status: "ok" },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_is_served_from_the_binary_and_points_at_our_document() {
        let docs = Docs::new(ApiDialect::Envelope, "/api");
        let index = docs.file("index.html").expect("index.html");
        assert_eq!(index.status(), StatusCode::OK);
        let init = utoipa_swagger_ui::serve("swagger-initializer.js", docs.swagger.clone())
            .unwrap()
            .unwrap();
        let text = String::from_utf8(init.bytes.into_owned()).unwrap();
        assert!(text.contains("/api/v1/openapi.json"), "{text}");
        assert!(text.contains(r#""validatorUrl": "none""#), "{text}");
        assert!(!text.contains("https://"), "{text}");
        for name in [
            "swagger-ui-bundle.js",
            "swagger-ui.css",
            "swagger-ui-standalone-preset.js",
        ] {
            assert!(docs.file(name).is_some(), "{name}");
        }
        assert!(docs.file("nope.js").is_none());
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let docs = Docs::new(ApiDialect::Envelope, "/api");
        let index = utoipa_swagger_ui::serve("index.html", docs.swagger.clone())
            .unwrap()
            .unwrap();
        let html = String::from_utf8(index.bytes.into_owned()).unwrap();
        for attr in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
            assert!(!html.contains(attr), "{attr} in {html}");
        }
    }
}
