//! The web dashboard: a few static files compiled into the binary and served at `/` (the page)
//! and `/ui/FILE` (its script, styles and the vendored uPlot chart library), outside the API
//! prefix. No file is fetched from anywhere else; the page talks only to this master's API,
//! signed in with a session cookie (see `session`).
//!
//! The page is plain HTML, CSS and JavaScript written for this project (no build step);
//! `dashboard/vendor/` holds uPlot's minified release with its MIT licence.

use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::response::{self, Body};
use crate::state::State;

/// The page may load and call only this master.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; \
    object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

const INDEX: &str = include_str!("../dashboard/index.html");

/// `(name, content type, bytes)` of every file under `/ui/`.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../dashboard/app.css"),
    ),
    (
        "uplot.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/vendor/uplot.min.js"),
    ),
    (
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../dashboard/vendor/uplot.min.css"),
    ),
    (
        "uplot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../dashboard/vendor/uplot.LICENSE"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../dashboard/icon.svg"),
    ),
];

/// The page or a file, for `GET`/`HEAD` of `/`, `/index.html` or `/ui/FILE`; `None` otherwise.
pub(crate) fn serve(state: &State, method: &Method, path: &str) -> Option<Response<Body>> {
    if *method != Method::GET && *method != Method::HEAD {
        return None;
    }
    let mut res = if path == "/" || path == "/index.html" {
        let page = INDEX
            .replace("{{API}}", &html_attr(&state.prefix))
            .replace("{{VERSION}}", env!("CARGO_PKG_VERSION"));
        let mut res = response::bytes(StatusCode::OK, "text/html; charset=utf-8", page);
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    } else {
        let name = path.strip_prefix("/ui/")?;
        let (_, content_type, bytes) = FILES.iter().find(|(n, _, _)| *n == name)?;
        let mut res = response::bytes(StatusCode::OK, content_type, *bytes);
        // The page asks for `?v=VERSION`, so a new binary is fetched afresh.
        res.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        res
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if *method == Method::HEAD {
        *res.body_mut() = response::empty();
    }
    Some(res)
}

/// `text` safe inside a double-quoted HTML attribute.
fn html_attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gzip-free size check: the files as served stay well under the 300 KB budget even
    /// uncompressed.
    #[test]
    fn the_dashboard_is_small() {
        let total: usize = INDEX.len() + FILES.iter().map(|(_, _, b)| b.len()).sum::<usize>();
        assert!(total < 300 * 1024, "{total} bytes");
    }

    #[test]
    fn the_page_loads_only_files_that_are_served() {
        for part in INDEX.split("/ui/").skip(1) {
            let name = part.split(['?', '"']).next().unwrap();
            assert!(
                FILES.iter().any(|(n, _, _)| *n == name),
                "index.html refers to /ui/{name}, which is not served"
            );
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
    }
}
