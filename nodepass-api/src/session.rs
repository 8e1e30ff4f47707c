//! Browser sessions for the dashboard: sign in once with the API key, then a cookie.
//!
//! `POST /v1/session {"key"}` checks the key and sets `np_session`, a random 256-bit token in a
//! `HttpOnly; SameSite=Strict; Path=/` cookie (`Secure` when the master serves HTTPS), so that
//! the page's `EventSource` (which cannot send headers) is authenticated too. The answer carries
//! a CSRF token that every state-changing request made with the cookie must repeat in
//! `X-CSRF-Token`; `SameSite=Strict` already keeps the cookie off cross-site requests, the
//! token is the second line. `DELETE /v1/session` signs out.
//!
//! Sessions live in memory only (a master restart signs everyone out), expire after
//! [`SESSION_LIFETIME`], and remember the digest of the key they were opened with: once the key
//! is rotated, every session opened with the old key is refused. Requests with the key in a
//! header (`X-API-Key`, `Authorization: Bearer`) work as before and need no CSRF token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self, Digest};
use crate::body;
use crate::error::{ErrorCode, HttpError};
use crate::openapi::ErrorEnvelope;
use crate::response::{self, Body};
use crate::router::{Ctx, Reply};
use crate::state::State;

/// The cookie's name.
pub const SESSION_COOKIE: &str = "np_session";

/// The header that repeats the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A session ends this long after sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// At most this many sessions at once; signing in beyond it drops the oldest.
const MAX_SESSIONS: usize = 256;

struct Session {
    csrf: String,
    key: Digest,
    expires: Instant,
}

/// The open sessions, by token.
pub(crate) struct Sessions {
    // std lock: held for map operations only, never across `.await`.
    map: Mutex<HashMap<String, Session>>,
    secure: bool,
}

impl Sessions {
    /// No sessions yet; `secure` marks cookies `Secure` (the master serves HTTPS).
    pub(crate) fn new(secure: bool) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            secure,
        }
    }

    /// Open a session for a caller who presented the key with digest `key`; returns the token
    /// and the CSRF token.
    fn open(&self, key: Digest) -> Result<(String, String), HttpError> {
        let token = random_hex()?;
        let csrf = random_hex()?;
        let now = Instant::now();
        let mut map = crate::sync::lock(&self.map);
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(t, _)| t.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            token.clone(),
            Session {
                csrf: csrf.clone(),
                key,
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok((token, csrf))
    }

    /// The CSRF token of a live session opened with the current key `current`.
    fn csrf_of(&self, token: &str, current: &Digest) -> Option<String> {
        let mut map = crate::sync::lock(&self.map);
        let live = map
            .get(token)
            .is_some_and(|s| s.expires > Instant::now() && auth::equal_digests(&s.key, current));
        if !live {
            map.remove(token);
            return None;
        }
        map.get(token).map(|s| s.csrf.clone())
    }

    fn close(&self, token: &str) {
        crate::sync::lock(&self.map).remove(token);
    }

    /// `Set-Cookie` for `token` (or one that deletes the cookie).
    fn cookie(&self, token: Option<&str>) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = match token {
            Some(t) => format!(
                "{SESSION_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                SESSION_LIFETIME.as_secs()
            ),
            None => {
                format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
            }
        };
        HeaderValue::from_str(&text).expect("cookie text is header-safe")
    }
}

/// Let a request through when it carries the key in a header, or a live session cookie (plus
/// the matching `X-CSRF-Token` unless the method is `GET`, `HEAD` or `OPTIONS`).
pub(crate) fn authorize(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), HttpError> {
    if auth::presents_key(headers) {
        return state.keys.check(headers);
    }
    let Some(token) = cookie_token(headers) else {
        // No cookie either: the key check's message says how to authenticate.
        return state.keys.check(headers);
    };
    let Some(csrf) = state.sessions.csrf_of(token, &state.keys.current()) else {
        return Err(HttpError::new(
            ErrorCode::Unauthorized,
            "session expired or signed out: sign in again",
        ));
    };
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth::equal_digests(&auth::digest_of(sent), &auth::digest_of(&csrf)) {
        Ok(())
    } else {
        Err(HttpError::new(
            ErrorCode::Forbidden,
            "x-csrf-token: missing or wrong for this session",
        ))
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

fn random_hex() -> Result<String, HttpError> {
    let mut raw = [0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| HttpError::new(ErrorCode::Internal, "the system random generator failed"))?;
    Ok(auth::hex(&raw))
}

/// `POST /v1/session` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    /// The master's API key.
    key: String,
}

/// A browser session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionInfo {
    /// Repeat this in `X-CSRF-Token` on every POST, PUT, PATCH and DELETE sent with the cookie.
    pub csrf: String,
    /// Seconds until the session ends.
    pub expires_in: u64,
}

/// Sign in with the API key: sets the session cookie.
#[utoipa::path(
    post,
    path = "/v1/session",
    operation_id = "signIn",
    tag = "session",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; `Set-Cookie` carries the session", body = SessionInfo),
        (status = 400, description = "Invalid body", body = ErrorEnvelope),
        (status = 401, description = "Wrong API key", body = ErrorEnvelope),
        (status = 408, description = "The body did not arrive in time", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
    ),
    security(())
)]
pub(crate) async fn sign_in(ctx: Ctx) -> Reply {
    let (state, headers, incoming) = ctx.into_body();
    let body: SignIn = body::read_json(&headers, incoming, state.limits).await?;
    let digest = auth::digest_of(body.key.trim());
    if !auth::equal_digests(&digest, &state.keys.current()) {
        tracing::info!("dashboard sign-in refused: wrong API key");
        return Err(HttpError::new(
            ErrorCode::Unauthorized,
            "key: wrong API key",
        ));
    }
    let (token, csrf) = state.sessions.open(digest)?;
    let mut res = response::data(
        state.dialect,
        StatusCode::OK,
        &SessionInfo {
            csrf,
            expires_in: SESSION_LIFETIME.as_secs(),
        },
    );
    no_store(&mut res);
    res.headers_mut()
        .insert(header::SET_COOKIE, state.sessions.cookie(Some(&token)));
    Ok(res)
}

/// The current session (from its cookie) and its CSRF token.
#[utoipa::path(
    get,
    path = "/v1/session",
    operation_id = "getSession",
    tag = "session",
    responses(
        (status = 200, description = "Signed in", body = SessionInfo),
        (status = 401, description = "No live session", body = ErrorEnvelope),
    ),
    security(())
)]
pub(crate) async fn get(ctx: Ctx) -> Reply {
    let state = &ctx.state;
    let csrf = cookie_token(&ctx.parts.headers)
        .and_then(|t| state.sessions.csrf_of(t, &state.keys.current()))
        .ok_or_else(|| HttpError::new(ErrorCode::Unauthorized, "not signed in"))?;
    let mut res = response::data(
        state.dialect,
        StatusCode::OK,
        &SessionInfo {
            csrf,
            expires_in: SESSION_LIFETIME.as_secs(),
        },
    );
    no_store(&mut res);
    Ok(res)
}

/// Sign out: ends the session and deletes the cookie. Answers 204 even without a session.
#[utoipa::path(
    delete,
    path = "/v1/session",
    operation_id = "signOut",
    tag = "session",
    responses((status = 204, description = "Signed out (no body)")),
    security(())
)]
pub(crate) async fn sign_out(ctx: Ctx) -> Reply {
    if let Some(token) = cookie_token(&ctx.parts.headers) {
        ctx.state.sessions.close(token);
    }
    let mut res: Response<Body> = response::no_content();
    res.headers_mut()
        .insert(header::SET_COOKIE, ctx.state.sessions.cookie(None));
    Ok(res)
}

/// The session endpoints in the NodePass dialect's OpenAPI document (bare JSON bodies).
pub(crate) fn np_paths() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let info = json!({ "description": "Signed in", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SessionInfo" } } } });
    vec![(
        "/v1/session",
        json!({
            "post": {
                "operationId": "signIn", "tags": ["session"], "security": [],
                "summary": "Sign in with the API key: sets the dashboard's session cookie (an addition)",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["key"], "additionalProperties": false,
                    "properties": { "key": { "type": "string" } } } } } },
                "responses": { "200": info.clone(), "400": err("Invalid body"), "401": err("Wrong API key"),
                               "403": err("The request's origin is not allowed"),
                               "413": err("Body over 64 KiB"), "415": err("Not application/json") },
            },
            "get": {
                "operationId": "getSession", "tags": ["session"], "security": [],
                "summary": "The session of the cookie and its CSRF token (an addition)",
                "responses": { "200": info, "401": err("No live session"),
                               "403": err("The request's origin is not allowed") },
            },
            "delete": {
                "operationId": "signOut", "tags": ["session"], "security": [],
                "summary": "Sign out: ends the session, deletes the cookie (an addition)",
                "responses": { "204": { "description": "Signed out (no body)" },
                               "403": err("The request's origin is not allowed") },
            },
        }),
    )]
}

/// Schemas of [`np_paths`].
pub(crate) fn np_schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![(
        "SessionInfo",
        serde_json::json!({ "type": "object", "required": ["csrf", "expires_in"], "properties": {
            "csrf": { "type": "string", "description": "Repeat in X-CSRF-Token on POST, PUT, PATCH and DELETE sent with the cookie" },
            "expires_in": { "type": "integer", "minimum": 0, "description": "Seconds" } } }),
    )]
}

fn no_store(res: &mut Response<Body>) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_cookie_token_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; np_session=abc; b=2")]);
        assert_eq!(cookie_token(&h), Some("abc"));
        assert_eq!(cookie_token(&headers(&[("cookie", "np_session=")])), None);
        assert_eq!(
            cookie_token(&headers(&[("cookie", "x_np_session=z")])),
            None
        );
    }

    #[test]
    fn sessions_end_with_the_key_they_were_opened_with() {
        let s = Sessions::new(false);
        let k1 = auth::digest_of("one");
        let k2 = auth::digest_of("two");
        let (token, csrf) = s.open(k1).unwrap();
        assert_eq!(s.csrf_of(&token, &k1).as_deref(), Some(csrf.as_str()));
        assert_eq!(s.csrf_of(&token, &k2), None, "rotated key: session refused");
        assert_eq!(s.csrf_of(&token, &k1), None, "and forgotten");
        let (t2, _) = s.open(k1).unwrap();
        s.close(&t2);
        assert_eq!(s.csrf_of(&t2, &k1), None);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_with_tls() {
        let plain = Sessions::new(false).cookie(Some("t"));
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let tls = Sessions::new(true).cookie(None);
        assert!(tls.to_str().unwrap().contains("; Secure"));
        assert!(tls.to_str().unwrap().contains("Max-Age=0"));
    }
}
