//! Routing: the route table is the OpenAPI document itself (every operation id maps to one
//! [`Endpoint`]), so the router serves exactly what `openapi.json` describes.
//!
//! Per request: origin check (CORS), prefix, path, API key (unless public), method, handler.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;
use nodepass_core::config::ApiDialect;
use serde::de::DeserializeOwned;

use crate::error::{ErrorCode, HttpError};
use crate::response::{self, Body};
use crate::state::State;
use crate::{
    dashboard, docs, events, info, instances, keys, metrics, session, tcping, traffic, transfer,
};

/// What a handler returns; an `Err` becomes the failure envelope.
pub(crate) type Reply = Result<Response<Body>, HttpError>;

/// Every operation the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    ListInstances,
    CreateInstance,
    GetInstance,
    PutInstance,
    PatchInstance,
    DeleteInstance,
    Events,
    Info,
    UpdateInfo,
    Tcping,
    Metrics,
    RotateKey,
    ExportInstances,
    ImportInstances,
    OpenApi,
    Docs,
    DocsFile,
    Health,
    SignIn,
    GetSession,
    SignOut,
    InstanceTraffic,
    ListNodes,
}

impl Endpoint {
    /// Every endpoint once.
    pub(crate) const ALL: [Endpoint; 23] = [
        Endpoint::ListInstances,
        Endpoint::CreateInstance,
        Endpoint::GetInstance,
        Endpoint::PutInstance,
        Endpoint::PatchInstance,
        Endpoint::DeleteInstance,
        Endpoint::Events,
        Endpoint::Info,
        Endpoint::UpdateInfo,
        Endpoint::Tcping,
        Endpoint::Metrics,
        Endpoint::RotateKey,
        Endpoint::ExportInstances,
        Endpoint::ImportInstances,
        Endpoint::OpenApi,
        Endpoint::Docs,
        Endpoint::DocsFile,
        Endpoint::Health,
        Endpoint::SignIn,
        Endpoint::GetSession,
        Endpoint::SignOut,
        Endpoint::InstanceTraffic,
        Endpoint::ListNodes,
    ];

    /// The `operationId` in the OpenAPI document.
    pub(crate) fn operation_id(self) -> &'static str {
        match self {
            Endpoint::ListInstances => "listInstances",
            Endpoint::CreateInstance => "createInstance",
            Endpoint::GetInstance => "getInstance",
            Endpoint::PutInstance => "putInstance",
            Endpoint::PatchInstance => "patchInstance",
            Endpoint::DeleteInstance => "deleteInstance",
            Endpoint::Events => "events",
            Endpoint::Info => "info",
            Endpoint::UpdateInfo => "updateInfo",
            Endpoint::Tcping => "tcping",
            Endpoint::Metrics => "metrics",
            Endpoint::RotateKey => "rotateKey",
            Endpoint::ExportInstances => "exportInstances",
            Endpoint::ImportInstances => "importInstances",
            Endpoint::OpenApi => "openapi",
            Endpoint::Docs => "docs",
            Endpoint::DocsFile => "docsFile",
            Endpoint::Health => "health",
            Endpoint::SignIn => "signIn",
            Endpoint::GetSession => "getSession",
            Endpoint::SignOut => "signOut",
            Endpoint::InstanceTraffic => "instanceTraffic",
            Endpoint::ListNodes => "listNodes",
        }
    }

    fn from_operation_id(id: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.operation_id() == id)
    }

    /// Served without an API key: the API description, its UI, the health check, and the
    /// session endpoints (which check the key or the cookie themselves).
    pub(crate) fn is_public(self) -> bool {
        matches!(
            self,
            Endpoint::OpenApi
                | Endpoint::Docs
                | Endpoint::DocsFile
                | Endpoint::Health
                | Endpoint::SignIn
                | Endpoint::GetSession
                | Endpoint::SignOut
        )
    }
}

/// One request on its way to a handler.
pub(crate) struct Ctx {
    /// Everything the handlers share.
    pub state: Arc<State>,
    /// Method, URI, headers.
    pub parts: Parts,
    body: Incoming,
    params: Vec<String>,
}

impl Ctx {
    /// The (first) path parameter, e.g. the instance id.
    pub(crate) fn param(&self) -> &str {
        self.params.first().map(String::as_str).unwrap_or("")
    }

    /// The query string decoded into `T` (a struct with `deny_unknown_fields` whose fields are
    /// strings or string enums); errors name the parameter.
    pub(crate) fn query<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        let mut map = serde_json::Map::new();
        for (k, v) in form_urlencoded::parse(self.parts.uri.query().unwrap_or("").as_bytes()) {
            if map
                .insert(k.to_string(), serde_json::Value::String(v.to_string()))
                .is_some()
            {
                return Err(HttpError::invalid(
                    &k,
                    "query parameter given more than once",
                ));
            }
        }
        let value = serde_json::Value::Object(map);
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let field = if path == "." {
                // `unknown field `x`` / `missing field `x``
                inner.split('`').nth(1).unwrap_or("query").to_string()
            } else {
                path
            };
            HttpError::invalid(&field, inner.replace("field", "query parameter"))
        })
    }

    /// The state, the headers and the body, for handlers that read a body.
    pub(crate) fn into_body(self) -> (Arc<State>, HeaderMap, Incoming) {
        (self.state, self.parts.headers, self.body)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

#[derive(Debug)]
struct PathRoute {
    #[cfg_attr(not(test), allow(dead_code))]
    template: String,
    segments: Vec<Segment>,
    methods: Vec<(Method, Endpoint)>,
}

/// Where a path and method lead.
#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    Found(Endpoint, Vec<String>),
    /// The path exists; these are its methods.
    OtherMethods(Vec<Method>, bool),
    NotFound,
}

/// The route table, built from the OpenAPI document.
#[derive(Debug)]
pub(crate) struct Router {
    routes: Vec<PathRoute>,
}

impl Router {
    /// One route per operation of `doc`.
    ///
    /// # Panics
    /// If an operation has no id or one that no [`Endpoint`] has, or an endpoint is missing:
    /// a programming error, caught by the tests.
    pub(crate) fn from_openapi(doc: &serde_json::Value) -> Router {
        let mut routes = Vec::new();
        let mut seen = Vec::new();
        let paths = doc["paths"].as_object().expect("the document has paths");
        for (template, item) in paths {
            let ops = [
                (Method::GET, "get"),
                (Method::POST, "post"),
                (Method::PUT, "put"),
                (Method::PATCH, "patch"),
                (Method::DELETE, "delete"),
                (Method::HEAD, "head"),
                (Method::OPTIONS, "options"),
                (Method::TRACE, "trace"),
            ];
            let mut methods = Vec::new();
            for (method, name) in ops {
                let Some(op) = item.get(name) else { continue };
                let id = op["operationId"].as_str().unwrap_or("");
                let endpoint = Endpoint::from_operation_id(id)
                    .unwrap_or_else(|| panic!("operation {id:?} of {template} has no endpoint"));
                assert!(!seen.contains(&endpoint), "{endpoint:?} routed twice");
                seen.push(endpoint);
                methods.push((method, endpoint));
            }
            let segments = template
                .trim_start_matches('/')
                .split('/')
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') {
                        Segment::Param
                    } else {
                        Segment::Literal(s.to_string())
                    }
                })
                .collect();
            routes.push(PathRoute {
                template: template.clone(),
                segments,
                methods,
            });
        }
        for e in Endpoint::ALL {
            assert!(seen.contains(&e), "{e:?} is not in the OpenAPI document");
        }
        Router { routes }
    }

    /// Every (method, path template, endpoint) served.
    #[cfg(test)]
    pub(crate) fn routes(&self) -> impl Iterator<Item = (&Method, &str, Endpoint)> {
        self.routes.iter().flat_map(|r| {
            r.methods
                .iter()
                .map(move |(m, e)| (m, r.template.as_str(), *e))
        })
    }

    fn resolve(&self, method: &Method, path: &str) -> Resolved {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for route in &self.routes {
            if route.segments.len() != parts.len() {
                continue;
            }
            let mut params = Vec::new();
            let matched = route
                .segments
                .iter()
                .zip(&parts)
                .all(|(seg, part)| match seg {
                    Segment::Literal(l) => l == part,
                    Segment::Param => {
                        params.push((*part).to_string());
                        !part.is_empty()
                    }
                });
            if !matched {
                continue;
            }
            if let Some((_, e)) = route.methods.iter().find(|(m, _)| m == method) {
                return Resolved::Found(*e, params);
            }
            let public = route.methods.iter().all(|(_, e)| e.is_public());
            return Resolved::OtherMethods(
                route.methods.iter().map(|(m, _)| m.clone()).collect(),
                public,
            );
        }
        Resolved::NotFound
    }
}

/// Answer one request. Never fails: errors become failure envelopes.
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let dialect = state.dialect;
    let origin = match state.cors.check(req.headers(), req.uri()) {
        Ok(origin) => origin,
        Err(e) => return response::failure(dialect, &e),
    };
    let mut res = route(state.clone(), req)
        .await
        .unwrap_or_else(|e| response::failure(dialect, &e));
    state.cors.decorate(res.headers_mut(), origin.as_ref());
    tracing::debug!(%method, %path, status = res.status().as_u16(), "request");
    res
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Reply {
    let not_found = || {
        HttpError::new(
            ErrorCode::NotFound,
            format!("no such path: {}", req.uri().path()),
        )
    };
    let resolved = strip_prefix(&state.prefix, req.uri().path())
        .map_or(Resolved::NotFound, |rest| {
            state.router.resolve(req.method(), rest)
        });
    match resolved {
        // Outside the API: the dashboard's page and files, or nothing.
        Resolved::NotFound => {
            dashboard::serve(&state, req.method(), req.uri().path()).ok_or_else(not_found)
        }
        Resolved::OtherMethods(methods, public) => {
            let allow = allow_header(&methods);
            if req.method() == Method::OPTIONS {
                // Answered before the key check, as NodePass does: a browser's preflight
                // carries no key. NodePass answers 200; the envelope dialect keeps 204.
                let mut res = response::no_content();
                if state.dialect == ApiDialect::NodePass {
                    *res.status_mut() = http::StatusCode::OK;
                }
                res.headers_mut().insert(header::ALLOW, allow);
                state.cors.preflight(req.headers(), res.headers_mut());
                return Ok(res);
            }
            if !public {
                session::authorize(&state, req.method(), req.headers())?;
            }
            let mut res = response::failure(
                state.dialect,
                &HttpError::new(
                    ErrorCode::MethodNotAllowed,
                    format!(
                        "method {} is not allowed here; allowed: {}",
                        req.method(),
                        allow.to_str().unwrap_or("")
                    ),
                ),
            );
            res.headers_mut().insert(header::ALLOW, allow);
            Ok(res)
        }
        Resolved::Found(endpoint, params) => {
            if !endpoint.is_public() {
                session::authorize(&state, req.method(), req.headers())?;
            }
            let (parts, body) = req.into_parts();
            let ctx = Ctx {
                state,
                parts,
                body,
                params,
            };
            dispatch(endpoint, ctx).await
        }
    }
}

async fn dispatch(endpoint: Endpoint, ctx: Ctx) -> Reply {
    match endpoint {
        Endpoint::ListInstances => instances::list(ctx).await,
        Endpoint::CreateInstance => instances::create(ctx).await,
        Endpoint::GetInstance => instances::get(ctx).await,
        Endpoint::PutInstance => instances::put(ctx).await,
        Endpoint::PatchInstance => instances::patch(ctx).await,
        Endpoint::DeleteInstance => instances::delete(ctx).await,
        Endpoint::Events => events::stream(ctx).await,
        Endpoint::Info => info::info(ctx).await,
        Endpoint::UpdateInfo => info::update(ctx).await,
        Endpoint::Tcping => tcping::tcping(ctx).await,
        Endpoint::Metrics => metrics::metrics(ctx).await,
        Endpoint::RotateKey => keys::rotate(ctx).await,
        Endpoint::ExportInstances => transfer::export(ctx).await,
        Endpoint::ImportInstances => transfer::import(ctx).await,
        Endpoint::OpenApi => docs::openapi(ctx).await,
        Endpoint::Docs => docs::docs(ctx).await,
        Endpoint::DocsFile => docs::docs_file(ctx).await,
        Endpoint::Health => docs::health(ctx).await,
        Endpoint::SignIn => session::sign_in(ctx).await,
        Endpoint::GetSession => session::get(ctx).await,
        Endpoint::SignOut => session::sign_out(ctx).await,
        Endpoint::InstanceTraffic => traffic::traffic(ctx).await,
        Endpoint::ListNodes => crate::fleet::nodes(ctx).await,
    }
}

/// `/api/v1/x` → `/v1/x` for the prefix `/api`; `None` outside the prefix.
fn strip_prefix<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    rest.starts_with('/').then_some(rest)
}

fn allow_header(methods: &[Method]) -> HeaderValue {
    let mut names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.push("OPTIONS");
    HeaderValue::from_str(&names.join(", ")).expect("method names are valid header text")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::from_openapi(&crate::openapi::document(ApiDialect::Envelope, "/api"))
    }

    #[test]
    fn every_endpoint_is_routed_once() {
        let r = router();
        let mut endpoints: Vec<Endpoint> = r.routes().map(|(_, _, e)| e).collect();
        assert_eq!(endpoints.len(), Endpoint::ALL.len());
        endpoints.dedup();
        assert_eq!(endpoints.len(), Endpoint::ALL.len());
    }

    #[test]
    fn paths_resolve_with_parameters() {
        let r = router();
        assert_eq!(
            r.resolve(&Method::GET, "/v1/instances"),
            Resolved::Found(Endpoint::ListInstances, vec![])
        );
        assert_eq!(
            r.resolve(&Method::PATCH, "/v1/instances/0a1b2c3d"),
            Resolved::Found(Endpoint::PatchInstance, vec!["0a1b2c3d".into()])
        );
        assert_eq!(
            r.resolve(&Method::GET, "/v1/instances/"),
            Resolved::NotFound
        );
        assert_eq!(r.resolve(&Method::GET, "/v1/nothing"), Resolved::NotFound);
        assert_eq!(
            r.resolve(&Method::GET, "/v1/instances/a/b"),
            Resolved::NotFound
        );
        match r.resolve(&Method::DELETE, "/v1/instances") {
            Resolved::OtherMethods(m, public) => {
                assert_eq!(m, [Method::GET, Method::POST]);
                assert!(!public);
            }
            other => panic!("{other:?}"),
        }
        match r.resolve(&Method::POST, "/v1/health") {
            Resolved::OtherMethods(_, public) => assert!(public),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_prefix_must_be_a_whole_segment() {
        assert_eq!(strip_prefix("/api", "/api/v1/health"), Some("/v1/health"));
        assert_eq!(strip_prefix("/api", "/apix/v1/health"), None);
        assert_eq!(strip_prefix("/api", "/v1/health"), None);
        assert_eq!(strip_prefix("", "/v1/health"), Some("/v1/health"));
    }
}
