//! The API key: generated on first start (or taken from `NODEPASS_API_KEY`), kept in the state
//! store only as a SHA-256 digest, checked on every protected request, rotated on demand.

use std::fmt;
// Lock poisoning: recovered, the policy of nodepass-core (see docs/architecture.md, Locks).
use std::sync::{Arc, PoisonError, RwLock};

use http::{HeaderMap, header};
use nodepass_core::store::Store;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ErrorCode, HttpError};

/// The store setting that holds `sha256:HEX` of the current key.
pub const KEY_SETTING: &str = "api_key_sha256";

/// The header carrying the key (`Authorization: Bearer KEY` works too).
pub const KEY_HEADER: &str = "x-api-key";

const DIGEST_PREFIX: &str = "sha256:";

/// An API key in clear. `Debug` and `Display` mask it: call [`ApiKey::expose`] to see it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key given by the operator: visible ASCII (it travels in an HTTP header), not empty.
    pub fn new(key: &str) -> Result<ApiKey, String> {
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the key must be printable ASCII without spaces".into());
        }
        Ok(ApiKey(key.to_string()))
    }

    /// A fresh key: 256 random bits as 64 lower-case hex characters.
    pub fn generate() -> Result<ApiKey, ApiError> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| ApiError::Config {
                field: "api key".into(),
                reason: "the system random generator failed".into(),
            })?;
        Ok(ApiKey(hex(&raw)))
    }

    /// The key in clear: show it once, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(****)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// A SHA-256 digest.
pub(crate) type Digest = [u8; 32];

/// The current key's digest, and where the key came from.
pub(crate) struct Keys {
    // std lock: held only to copy 32 bytes, never across `.await`.
    digest: RwLock<Digest>,
    from_env: bool,
    store: Arc<dyn Store>,
    /// How many rotations so far: event streams watch it to send the pseudo-instance's
    /// `update`.
    rotations: tokio::sync::watch::Sender<u64>,
}

impl Keys {
    /// Load the key: `explicit` (from `NODEPASS_API_KEY`) replaces the stored one; otherwise
    /// the stored digest is used; with neither, a key is generated, stored and returned so that
    /// the caller can show it once.
    pub(crate) async fn load(
        store: Arc<dyn Store>,
        explicit: Option<&str>,
    ) -> Result<(Keys, Option<ApiKey>), ApiError> {
        let (digest, generated) = match explicit {
            Some(key) => {
                let d = digest_of(key);
                store.set_setting(KEY_SETTING, &encode(&d)).await?;
                (d, None)
            }
            None => match store.setting(KEY_SETTING).await? {
                Some(stored) => (decode(&stored)?, None),
                None => {
                    let key = ApiKey::generate()?;
                    let d = digest_of(key.expose());
                    store.set_setting(KEY_SETTING, &encode(&d)).await?;
                    (d, Some(key))
                }
            },
        };
        let keys = Keys {
            digest: RwLock::new(digest),
            from_env: explicit.is_some(),
            store,
            rotations: tokio::sync::watch::Sender::new(0),
        };
        Ok((keys, generated))
    }

    /// `Ok` when the request carries the current key in `X-API-Key` or `Authorization: Bearer`.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        let Some(presented) = presented_key(headers) else {
            return Err(HttpError::new(
                ErrorCode::Unauthorized,
                "missing API key: send it in the X-API-Key header or as Authorization: Bearer",
            ));
        };
        let expected = *self.digest.read().unwrap_or_else(PoisonError::into_inner);
        if equal_digests(&digest_of(presented), &expected) {
            Ok(())
        } else {
            Err(HttpError::new(ErrorCode::Unauthorized, "wrong API key"))
        }
    }

    /// The digest of the current key.
    pub(crate) fn current(&self) -> Digest {
        *self.digest.read().expect("key lock poisoned")
    }

    /// Make a new key, store its digest, and from then on accept only it.
    pub(crate) async fn rotate(&self) -> Result<ApiKey, HttpError> {
        if self.from_env {
            return Err(HttpError::new(
                ErrorCode::Conflict,
                "the API key is set by NODEPASS_API_KEY: change the variable and restart instead",
            ));
        }
        let key =
            ApiKey::generate().map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?;
        let d = digest_of(key.expose());
        // Durable first: if the write fails, the old key stays valid everywhere.
        self.store.set_setting(KEY_SETTING, &encode(&d)).await?;
        *self.digest.write().unwrap_or_else(PoisonError::into_inner) = d;
        self.rotations.send_modify(|n| *n += 1);
        Ok(key)
    }

    /// Changes once per rotation (the value: how many so far).
    pub(crate) fn rotations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rotations.subscribe()
    }
}

/// Whether the request carries a key in `X-API-Key` or `Authorization: Bearer` (right or not).
pub(crate) fn presents_key(headers: &HeaderMap) -> bool {
    presented_key(headers).is_some()
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(KEY_HEADER) {
        return v.to_str().ok().map(str::trim);
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// SHA-256 of `key`.
pub(crate) fn digest_of(key: &str) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, key.as_bytes()).as_ref());
    out
}

/// Compare in constant time (`subtle`), so timing says nothing about where digests differ.
pub(crate) fn equal_digests(a: &Digest, b: &Digest) -> bool {
    a.ct_eq(b).into()
}

fn encode(d: &Digest) -> String {
    format!("{DIGEST_PREFIX}{}", hex(d))
}

fn decode(stored: &str) -> Result<Digest, ApiError> {
    let bad = || ApiError::Config {
        field: format!("setting {KEY_SETTING} in the state store"),
        reason: "not a sha256 digest; remove the setting or set NODEPASS_API_KEY".into(),
    };
    let hex_text = stored.strip_prefix(DIGEST_PREFIX).ok_or_else(bad)?;
    if hex_text.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex_text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodepass_core::store::MemoryStore;

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

    #[tokio::test]
    async fn first_start_generates_and_stores_only_a_digest() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (keys, key) = Keys::load(store.clone(), None).await.unwrap();
        let key = key.expect("generated on first start");
        assert_eq!(key.expose().len(), 64);
        assert_eq!(format!("{key} {key:?}"), "**** ApiKey(****)");
        let stored = store.setting(KEY_SETTING).await.unwrap().unwrap();
        assert!(stored.starts_with("sha256:"));
        assert!(!stored.contains(key.expose()));
        assert!(keys.check(&headers(&[("x-api-key", key.expose())])).is_ok());

        // Second start: same key, nothing generated.
        let (again, none) = Keys::load(store, None).await.unwrap();
        assert!(none.is_none());
        let bearer = format!("Bearer {}", key.expose());
        assert!(again.check(&headers(&[("authorization", &bearer)])).is_ok());
    }

    #[tokio::test]
    async fn wrong_or_missing_keys_are_refused() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (keys, _) = Keys::load(store, Some("s3cret-key")).await.unwrap();
        for h in [
            headers(&[]),
            headers(&[("x-api-key", "s3cret-kez")]),
            headers(&[("x-api-key", "")]),
            headers(&[("authorization", "Basic s3cret-key")]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("authorization", "s3cret-key")]),
        ] {
            let err = keys.check(&h).unwrap_err();
            assert_eq!(err.code, ErrorCode::Unauthorized, "{h:?}");
        }
        assert!(keys.check(&headers(&[("x-api-key", "s3cret-key")])).is_ok());
        assert!(
            keys.check(&headers(&[("authorization", "bearer s3cret-key")]))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn rotation_replaces_the_key_durably() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (keys, old) = Keys::load(store.clone(), None).await.unwrap();
        let old = old.unwrap();
        let new = keys.rotate().await.unwrap();
        assert_ne!(old, new);
        assert!(
            keys.check(&headers(&[("x-api-key", old.expose())]))
                .is_err()
        );
        assert!(keys.check(&headers(&[("x-api-key", new.expose())])).is_ok());
        let (reloaded, _) = Keys::load(store, None).await.unwrap();
        assert!(
            reloaded
                .check(&headers(&[("x-api-key", new.expose())]))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn an_environment_key_is_stored_and_cannot_be_rotated() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (keys, generated) = Keys::load(store.clone(), Some("from-env")).await.unwrap();
        assert!(generated.is_none());
        assert_eq!(keys.rotate().await.unwrap_err().code, ErrorCode::Conflict);
        let (later, _) = Keys::load(store, None).await.unwrap();
        assert!(later.check(&headers(&[("x-api-key", "from-env")])).is_ok());
    }

    #[tokio::test]
    async fn a_damaged_setting_is_an_error_not_a_new_key() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store.set_setting(KEY_SETTING, "sha256:xyz").await.unwrap();
        assert!(Keys::load(store, None).await.is_err());
    }
}
