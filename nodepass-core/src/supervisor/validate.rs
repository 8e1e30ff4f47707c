//! Checking what callers send before anything changes: URLs, aliases, metadata; and the masked
//! forms of URLs and errors that callers may see.

use crate::config::{Config, MASK};
use crate::store::{MAX_ALIAS_CHARS, Meta};
use crate::tunnel::TunnelConfig;

use super::{InstanceKind, SupervisorError};

/// Longest metadata string (peer fields, tag keys and values), in characters.
pub const MAX_META_CHARS: usize = 256;
/// Most tags one instance may carry.
pub const MAX_TAGS: usize = 256;

/// A validated instance URL.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) tunnel: TunnelConfig,
    pub(crate) kind: InstanceKind,
    /// The canonical URL, key masked.
    pub(crate) canonical: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SupervisorError {
    SupervisorError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parse an instance URL: a `server://` or `client://` URL the tunnel accepts.
pub(crate) fn parse_url(url: &str) -> Result<Parsed, SupervisorError> {
    let config = Config::parse(url).map_err(|e| invalid("url", e.to_string()))?;
    let canonical = config.to_string();
    let tunnel = TunnelConfig::try_from(config).map_err(|_| {
        invalid(
            "url",
            "a master:// url describes the API, not an instance; use server:// or client://",
        )
    })?;
    let kind = match tunnel {
        TunnelConfig::Server(_) => InstanceKind::Server,
        TunnelConfig::Client(_) => InstanceKind::Client,
    };
    Ok(Parsed {
        tunnel,
        kind,
        canonical,
    })
}

/// Check an alias.
pub(crate) fn alias(alias: &str) -> Result<(), SupervisorError> {
    let chars = alias.chars().count();
    if chars > MAX_ALIAS_CHARS {
        return Err(invalid(
            "alias",
            format!("{chars} characters, at most {MAX_ALIAS_CHARS} allowed"),
        ));
    }
    Ok(())
}

/// Check metadata: every string at most [`MAX_META_CHARS`], at most [`MAX_TAGS`] tags, no empty
/// tag key.
pub(crate) fn meta(meta: &Meta) -> Result<(), SupervisorError> {
    let short = |field: &str, value: &str| {
        let chars = value.chars().count();
        if chars > MAX_META_CHARS {
            return Err(invalid(
                field,
                format!("{chars} characters, at most {MAX_META_CHARS} allowed"),
            ));
        }
        Ok(())
    };
    short("meta.peer.sid", &meta.peer.sid)?;
    short("meta.peer.type", &meta.peer.kind)?;
    short("meta.peer.alias", &meta.peer.alias)?;
    if meta.tags.len() > MAX_TAGS {
        return Err(invalid(
            "meta.tags",
            format!("{} tags, at most {MAX_TAGS} allowed", meta.tags.len()),
        ));
    }
    for (key, value) in &meta.tags {
        if key.is_empty() {
            return Err(invalid("meta.tags", "empty tag key"));
        }
        let chars = key.chars().count();
        if chars > MAX_META_CHARS {
            let start: String = key.chars().take(16).collect();
            return Err(invalid(
                "meta.tags",
                format!(
                    "key {start:?}... has {chars} characters, at most {MAX_META_CHARS} allowed"
                ),
            ));
        }
        short(&format!("meta.tags.{key}"), value)?;
    }
    Ok(())
}

/// The URL with its key (everything before the last `@` ahead of the query) replaced by
/// [`MASK`]. URLs without a key are returned as they are.
pub(crate) fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') {
            MASK.to_owned()
        } else {
            url.to_owned()
        };
    };
    let before_query = rest.split_once('?').map_or(rest, |(b, _)| b);
    match before_query.rfind('@') {
        Some(at) => format!("{scheme}://{MASK}{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// `new` with its masked key (`scheme://****@...`) replaced by the key of `stored`, so that a
/// URL shown by the API and sent back edited keeps its key; any other `new` unchanged.
pub(crate) fn unmask_url(new: &str, stored: &str) -> String {
    let Some((scheme, rest)) = new.split_once("://") else {
        return new.to_owned();
    };
    let Some(after) = rest.strip_prefix(MASK).and_then(|r| r.strip_prefix('@')) else {
        return new.to_owned();
    };
    let stored_rest = stored.split_once("://").map_or("", |(_, r)| r);
    let stored_before_query = stored_rest.split_once('?').map_or(stored_rest, |(b, _)| b);
    match stored_before_query.rfind('@') {
        Some(at) => format!("{scheme}://{}@{after}", &stored_rest[..at]),
        // No stored key: the URL keeps no key at all.
        None => format!("{scheme}://{after}"),
    }
}

/// An error and its sources, `: `-separated (the tunnel's errors never carry the key).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_key_is_replaced_by_the_stored_one() {
        let stored = "server://s3cret@:10101/127.0.0.1:80?log=info";
        assert_eq!(
            unmask_url("server://****@:10102/127.0.0.1:81", stored),
            "server://s3cret@:10102/127.0.0.1:81"
        );
        assert_eq!(
            unmask_url("server://new@:1/a:1", stored),
            "server://new@:1/a:1"
        );
        assert_eq!(unmask_url("server://:1/a:1", stored), "server://:1/a:1");
        assert_eq!(
            unmask_url("client://****@h:1/a:1", "client://h:1/a:1"),
            "client://h:1/a:1"
        );
        let round = mask_url(stored);
        assert_eq!(unmask_url(&round, stored), stored);
    }

    fn field_of(r: Result<impl std::fmt::Debug, SupervisorError>) -> String {
        match r {
            Err(SupervisorError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn urls_are_parsed_and_masked() {
        let p = parse_url("server://hunter2@:10101/127.0.0.1:80?mode=1").unwrap();
        assert_eq!(p.kind, InstanceKind::Server);
        assert!(!p.canonical.contains("hunter2"), "{}", p.canonical);
        assert!(
            p.canonical
                .starts_with("server://****@:10101/127.0.0.1:80?")
        );
        assert_eq!(
            parse_url("client://:1/:2").unwrap().kind,
            InstanceKind::Client
        );
        for bad in [
            "",
            "server://",
            "master://:9090",
            "http://x:1/y:2",
            "server://k@:1/:2?x=1",
        ] {
            assert_eq!(field_of(parse_url(bad)), "url", "{bad}");
        }
        let Err(SupervisorError::Invalid { reason, .. }) = parse_url("server://sec@:1/:2?bogus=1")
        else {
            panic!()
        };
        assert!(
            reason.contains("bogus") && !reason.contains("sec@"),
            "{reason}"
        );
    }

    #[test]
    fn mask_url_hides_only_the_key() {
        let table = [
            ("server://hunter2@:1/:2?tls=1", "server://****@:1/:2?tls=1"),
            ("client://a%40b@host:1/:2", "client://****@host:1/:2"),
            ("client://host:1/:2?crt=/a@b", "client://host:1/:2?crt=/a@b"),
            ("server://:1/:2", "server://:1/:2"),
            ("garbage@x", "****"),
        ];
        for (url, want) in table {
            assert_eq!(mask_url(url), want, "{url}");
        }
    }

    #[test]
    fn aliases_and_meta_are_bounded_and_errors_name_the_field() {
        alias(&"é".repeat(MAX_ALIAS_CHARS)).unwrap();
        assert_eq!(field_of(alias(&"a".repeat(MAX_ALIAS_CHARS + 1))), "alias");

        let mut m = Meta::default();
        m.tags.insert("zone".into(), "x".repeat(MAX_META_CHARS));
        meta(&m).unwrap();
        m.tags.insert("zone".into(), "x".repeat(MAX_META_CHARS + 1));
        assert_eq!(field_of(meta(&m)), "meta.tags.zone");
        m.tags.clear();
        m.tags.insert("k".repeat(MAX_META_CHARS + 1), "v".into());
        assert_eq!(field_of(meta(&m)), "meta.tags");
        m.tags.clear();
        m.tags.insert(String::new(), "v".into());
        assert_eq!(field_of(meta(&m)), "meta.tags");
        m.tags.clear();
        m.peer.kind = "t".repeat(MAX_META_CHARS + 1);
        assert_eq!(field_of(meta(&m)), "meta.peer.type");
        let mut many = Meta::default();
        for i in 0..=MAX_TAGS {
            many.tags.insert(i.to_string(), String::new());
        }
        assert_eq!(field_of(meta(&many)), "meta.tags");
    }

    #[test]
    fn error_chain_joins_sources() {
        let e = crate::Error::Bind {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(error_chain(&e), "cannot bind 127.0.0.1:1: address in use");
    }
}
