//! Handshake proofs: HMAC-SHA256 over a transcript of both nonces (pure, no I/O).
//!
//! The transcript binds the protocol version, the connection kind, both fresh nonces, the session
//! id (zeros for a control connection) and a 32-byte channel binding (the TLS exporter value for
//! the TLS session, or zeros on plain TCP). A man in the middle terminates two different TLS
//! sessions, so the two ends compute different bindings and every proof fails.
//!
//! - control connection: proofs are keyed with the tunnel key itself;
//! - pool connection: proofs are keyed with the session secret, derived from the control
//!   transcript, so a pool connection proves it belongs to the current session.
//!
//! The key never crosses the wire; only HMAC outputs do.

use ring::hmac;

use super::{ConnKind, NONCE_LEN, PROOF_LEN, PROTOCOL_VERSION, SessionId};

/// Length of a channel binding value.
pub const BINDING_LEN: usize = 32;
/// The TLS exporter label used for the channel binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-nodepass-channel-binding";

/// The inputs both sides agree on before the proofs are exchanged.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Control or pool.
    pub kind: ConnKind,
    /// The client's nonce.
    pub client_nonce: [u8; NONCE_LEN],
    /// The server's nonce.
    pub server_nonce: [u8; NONCE_LEN],
    /// The session a pool connection joins (zeros for control).
    pub session: SessionId,
    /// TLS exporter value, or zeros on plain TCP.
    pub binding: [u8; BINDING_LEN],
}

impl Transcript {
    fn bytes(&self, label: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(label.len() + 2 + 2 * NONCE_LEN + 16 + BINDING_LEN);
        v.extend_from_slice(label);
        v.push(PROTOCOL_VERSION);
        v.push(match self.kind {
            ConnKind::Control => 1,
            ConnKind::Pool => 2,
        });
        v.extend_from_slice(&self.client_nonce);
        v.extend_from_slice(&self.server_nonce);
        v.extend_from_slice(&self.session);
        v.extend_from_slice(&self.binding);
        v
    }
}

/// The secret that keys proofs: the tunnel key for control connections, the session secret
/// for pool connections.
#[derive(Clone)]
pub struct ProofKey(hmac::Key);

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey(****)")
    }
}

impl ProofKey {
    /// Key proofs with the tunnel key.
    pub fn from_tunnel_key(key: &str) -> Self {
        ProofKey(hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()))
    }

    /// The proof the server sends in `Challenge`.
    pub fn server_proof(&self, t: &Transcript) -> [u8; PROOF_LEN] {
        self.sign(&t.bytes(b"nodepass server proof"))
    }

    /// The proof the client sends in `Proof`.
    pub fn client_proof(&self, t: &Transcript) -> [u8; PROOF_LEN] {
        self.sign(&t.bytes(b"nodepass client proof"))
    }

    /// Check a server proof in constant time.
    pub fn verify_server(&self, t: &Transcript, proof: &[u8; PROOF_LEN]) -> bool {
        hmac::verify(&self.0, &t.bytes(b"nodepass server proof"), proof).is_ok()
    }

    /// Check a client proof in constant time.
    pub fn verify_client(&self, t: &Transcript, proof: &[u8; PROOF_LEN]) -> bool {
        hmac::verify(&self.0, &t.bytes(b"nodepass client proof"), proof).is_ok()
    }

    /// The session secret both sides derive from a completed control transcript; it keys the
    /// proofs of that session's pool connections.
    pub fn session_key(&self, control: &Transcript) -> ProofKey {
        let secret = self.sign(&control.bytes(b"nodepass session secret"));
        ProofKey(hmac::Key::new(hmac::HMAC_SHA256, &secret))
    }

    fn sign(&self, data: &[u8]) -> [u8; PROOF_LEN] {
        let tag = hmac::sign(&self.0, data);
        let mut out = [0u8; PROOF_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            kind: ConnKind::Control,
            client_nonce: [1; NONCE_LEN],
            server_nonce: [2; NONCE_LEN],
            session: [0; 16],
            binding: [0; BINDING_LEN],
        }
    }

    #[test]
    fn proofs_verify_with_the_same_key_only() {
        let t = transcript();
        let k = ProofKey::from_tunnel_key("secret");
        let wrong = ProofKey::from_tunnel_key("secreT");
        let sp = k.server_proof(&t);
        assert!(k.verify_server(&t, &sp));
        assert!(!wrong.verify_server(&t, &sp));
        let cp = k.client_proof(&t);
        assert!(k.verify_client(&t, &cp));
        assert!(!wrong.verify_client(&t, &cp));
        // A server proof is not a client proof (no reflection).
        assert!(!k.verify_client(&t, &sp));
        assert_ne!(sp, cp);
    }

    #[test]
    fn every_transcript_field_changes_the_proof() {
        let k = ProofKey::from_tunnel_key("secret");
        let base = transcript();
        let p = k.server_proof(&base);
        let mut variants = Vec::new();
        let mut t = base.clone();
        t.kind = ConnKind::Pool;
        variants.push(t);
        let mut t = base.clone();
        t.client_nonce[31] ^= 1;
        variants.push(t);
        let mut t = base.clone();
        t.server_nonce[0] ^= 1;
        variants.push(t);
        let mut t = base.clone();
        t.session[5] = 9;
        variants.push(t);
        let mut t = base.clone();
        t.binding[7] = 3;
        variants.push(t);
        for v in variants {
            assert!(!k.verify_server(&v, &p), "{v:?}");
        }
    }

    #[test]
    fn session_key_differs_per_transcript_and_from_tunnel_key() {
        let k = ProofKey::from_tunnel_key("secret");
        let t1 = transcript();
        let mut t2 = transcript();
        t2.server_nonce[3] = 0xff;
        let pool = Transcript {
            kind: ConnKind::Pool,
            ..transcript()
        };
        let s1 = k.session_key(&t1);
        let s2 = k.session_key(&t2);
        assert_ne!(s1.client_proof(&pool), s2.client_proof(&pool));
        assert_ne!(s1.client_proof(&pool), k.client_proof(&pool));
        assert!(format!("{s1:?}").contains("****"));
    }
}
