//! Secrets that must never reach a log line: their `Debug` and `Display` are masked.

use std::fmt;

/// What a masked secret prints as.
pub const MASK: &str = "****";

/// A tunnel key. `Debug` and `Display` print `****`; read it with [`TunnelKey::expose`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TunnelKey(String);

impl TunnelKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        TunnelKey(key.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_masked_in_debug_and_display() {
        let k = TunnelKey::new("hunter2");
        assert_eq!(format!("{k}"), "****");
        assert!(!format!("{k:?}").contains("hunter2"));
        assert_eq!(k.expose(), "hunter2");
    }
}
