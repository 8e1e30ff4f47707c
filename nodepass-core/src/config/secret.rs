//! Secrets that must never reach a log line: their `Debug` and `Display` are masked.

use std::fmt;

use super::types::TunnelParams;

/// What a masked secret prints as.
pub const MASK: &str = "****";

/// Keys shorter than this many characters are reported as weak.
pub const WEAK_KEY_MIN_LEN: usize = 12;
/// Keys with fewer distinct characters than this are reported as weak.
pub const WEAK_KEY_MIN_DISTINCT: usize = 6;

/// A tunnel key. `Debug` and `Display` print `****`; read it with [`TunnelKey::expose`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TunnelKey(String);

impl TunnelKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        TunnelKey(key.into())
    }

    /// The key used when a URL gives none: derived from the tunnel port, so both ends of a
    /// tunnel that share the port agree without configuration.
    ///
    /// It is the lowercase hex of the first 16 bytes of SHA-256 over the ASCII string
    /// `nodepass-derived-key:<port in decimal>`. Anyone who knows the port knows this key, so it
    /// only keeps honest mistakes apart; see [`TunnelParams::is_derived_key_exposed`].
    pub fn derive(port: u16) -> Self {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("nodepass-derived-key:{port}").as_bytes(),
        );
        let hex = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        TunnelKey(hex)
    }

    /// Why this key is easy to guess, if it is: shorter than [`WEAK_KEY_MIN_LEN`] characters or
    /// made of fewer than [`WEAK_KEY_MIN_DISTINCT`] distinct characters. The handshake lets an
    /// attacker test one guess per connection (and slows repeated failures), so a weak key
    /// falls to a patient online dictionary attack; callers warn at start.
    pub fn weakness(&self) -> Option<&'static str> {
        let chars: Vec<char> = self.0.chars().collect();
        let mut distinct = chars.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if chars.len() < WEAK_KEY_MIN_LEN {
            Some("shorter than 12 characters")
        } else if distinct.len() < WEAK_KEY_MIN_DISTINCT {
            Some("fewer than 6 distinct characters")
        } else {
            None
        }
    }

    /// The key itself. Only the handshake (and the unmasked canonical URL) may call this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TunnelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelKey({MASK})")
    }
}

impl fmt::Display for TunnelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl TunnelParams {
    /// True when the key was derived from the port (anyone who knows the port knows the key)
    /// and the tunnel address is reachable from other machines: the empty host, a non-loopback
    /// IP, or any name other than `localhost`. Callers warn about it.
    pub fn is_derived_key_exposed(&self) -> bool {
        self.key_derived && !self.tunnel.host.is_loopback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DERIVED_10101: &str = "04c5dc61d50a4679ac0cf50c489aae39";

    #[test]
    fn key_is_masked_in_debug_and_display() {
        let k = TunnelKey::new("hunter2");
        assert_eq!(format!("{k}"), "****");
        assert!(!format!("{k:?}").contains("hunter2"));
        assert_eq!(k.expose(), "hunter2");
    }

    #[test]
    fn weak_keys_are_recognised() {
        for weak in [
            "s3cret",
            "secret",
            "aaaaaaaaaaaaaaaa",
            "abababababababab",
            "12345",
        ] {
            assert!(TunnelKey::new(weak).weakness().is_some(), "{weak}");
        }
        for strong in [
            "4f9c2e7a1b8d3f60a5e2c9d7b1f08e3a",
            "correct-horse-battery-staple",
            TunnelKey::derive(10101).expose(),
        ] {
            assert_eq!(TunnelKey::new(strong).weakness(), None, "{strong}");
        }
    }

    #[test]
    fn derived_key_is_stable_hex() {
        let k = TunnelKey::derive(10101);
        assert_eq!(k.expose().len(), 32);
        assert!(
            k.expose()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(k, TunnelKey::derive(10101));
        assert_ne!(k, TunnelKey::derive(10102));
        // Pinned so that an accidental change of the rule (which would break mixed-version
        // tunnels) fails here: sha256("nodepass-derived-key:10101")[..16].
        assert_eq!(k.expose(), DERIVED_10101);
    }
}
