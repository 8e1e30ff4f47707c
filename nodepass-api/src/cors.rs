//! Cross-origin requests from browser frontends.
//!
//! Default: any origin may call the API (`Access-Control-Allow-Origin: *`). That is safe here
//! because the API authenticates with a key the frontend sends explicitly, never with cookies,
//! so a foreign page cannot borrow a user's credentials. `NODEPASS_CORS_ORIGINS` restricts it:
//! a comma-separated list of origins (`https://panel.example.com,http://localhost:5173`), or
//! `none` to refuse every cross-origin request. A request from a refused origin is answered
//! 403 `FORBIDDEN` before anything else happens. Same-origin requests (the bundled Swagger UI)
//! are always allowed.

use http::{HeaderMap, HeaderValue, Uri, header};

use crate::auth::KEY_HEADER;
use crate::error::{ErrorCode, HttpError};

/// The environment variable that restricts origins.
pub const CORS_ENV: &str = "NODEPASS_CORS_ORIGINS";

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CorsOrigins {
    /// Every origin (`*`), the default.
    #[default]
    Any,
    /// Only these origins (`scheme://host[:port]`, compared exactly, without a trailing `/`).
    List(Vec<String>),
    /// No cross-origin request at all.
    None,
}

impl CorsOrigins {
    /// Parse the value of [`CORS_ENV`]: `*`, `none`, or a comma-separated list of origins.
    pub fn parse(text: &str) -> Result<CorsOrigins, String> {
        let text = text.trim();
        match text {
            "*" => return Ok(CorsOrigins::Any),
            "" | "none" => return Ok(CorsOrigins::None),
            _ => {}
        }
        let mut list = Vec::new();
        for origin in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let origin = origin.trim_end_matches('/');
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin["https://".len().min(origin.len())..].contains('/')
                && origin.parse::<HeaderValue>().is_ok();
            if !ok {
                return Err(format!(
                    "{origin:?} is not an origin; expected scheme://host[:port], e.g. https://panel.example.com"
                ));
            }
            list.push(origin.to_string());
        }
        Ok(CorsOrigins::List(list))
    }
}

/// The CORS policy of a running master.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    origins: CorsOrigins,
}

/// As NodePass: NodePanel's event stream sends `Cache-Control`.
const ALLOW_HEADERS: &str = "Content-Type, Authorization, X-API-Key, Cache-Control";
/// As NodePass.
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const MAX_AGE_SECONDS: &str = "600";

impl Cors {
    pub(crate) fn new(origins: CorsOrigins) -> Self {
        Cors { origins }
    }

    /// `Ok(None)` for a request without `Origin` or from the same origin, `Ok(Some(value))`
    /// with the `Access-Control-Allow-Origin` to send, `Err` (403) for a refused origin.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Option<HeaderValue>, HttpError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let text = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        let origin_host = text.split_once("://").map(|(_, h)| h);
        if host.is_some() && origin_host == host {
            return Ok(None);
        }
        match &self.origins {
            CorsOrigins::Any => Ok(Some(HeaderValue::from_static("*"))),
            CorsOrigins::List(list) if list.iter().any(|o| o == text) => Ok(Some(origin.clone())),
            _ => Err(HttpError::new(
                ErrorCode::Forbidden,
                format!("origin {text:?} is not allowed (see {CORS_ENV})"),
            )),
        }
    }

    /// Add the CORS headers to a response for an allowed cross-origin request.
    pub(crate) fn decorate(&self, headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
        if let Some(origin) = origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if origin != "*" {
                headers.append(header::VARY, HeaderValue::from_static("origin"));
            }
        }
    }

    /// Add the preflight answer (methods, headers, max age) for an `OPTIONS` request that asks
    /// for one; the origin itself was checked before and is added by [`Cors::decorate`].
    pub(crate) fn preflight(&self, request: &HeaderMap, headers: &mut HeaderMap) {
        if !request.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            || !request.contains_key(header::ORIGIN)
        {
            return;
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECONDS),
        );
        debug_assert!(ALLOW_HEADERS.to_ascii_lowercase().contains(KEY_HEADER));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_environment_value_parses() {
        assert_eq!(CorsOrigins::parse("*"), Ok(CorsOrigins::Any));
        assert_eq!(CorsOrigins::parse("none"), Ok(CorsOrigins::None));
        assert_eq!(CorsOrigins::parse(" "), Ok(CorsOrigins::None));
        assert_eq!(
            CorsOrigins::parse("https://a.example, http://localhost:5173/"),
            Ok(CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://localhost:5173".into()
            ]))
        );
        for bad in ["a.example", "ftp://a.example", "https://a.example/path"] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_checked() {
        let uri: Uri = "/api/v1/health".parse().unwrap();
        let any = Cors::new(CorsOrigins::Any);
        assert_eq!(any.check(&headers(&[]), &uri), Ok(None));
        assert_eq!(
            any.check(&headers(&[("origin", "https://x.example")]), &uri),
            Ok(Some(HeaderValue::from_static("*")))
        );
        let list = Cors::new(CorsOrigins::List(vec!["https://ok.example".into()]));
        assert_eq!(
            list.check(&headers(&[("origin", "https://ok.example")]), &uri),
            Ok(Some(HeaderValue::from_static("https://ok.example")))
        );
        let refused = list
            .check(&headers(&[("origin", "https://evil.example")]), &uri)
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        let none = Cors::new(CorsOrigins::None);
        assert!(
            none.check(&headers(&[("origin", "https://x.example")]), &uri)
                .is_err()
        );
        // Same origin is always fine.
        assert_eq!(
            none.check(
                &headers(&[
                    ("origin", "http://127.0.0.1:9090"),
                    ("host", "127.0.0.1:9090")
                ]),
                &uri
            ),
            Ok(None)
        );
    }
}
