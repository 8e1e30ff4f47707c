//! Handshake authentication (pure, no I/O): SPAKE2 for control connections, HMAC proofs under
//! the session secret for pool connections.
//!
//! **Control connections** run SPAKE2 (RustCrypto `spake2`, Ed25519 group, asymmetric roles:
//! the client is side A, the server side B) with the tunnel key as the password. Each side
//! sends one message; both derive the same 32-byte SPAKE2 key only when both used the same
//! password. A key schedule then binds that key to the whole transcript ([`Transcript`]: version,
//! kind, both nonces, both SPAKE2 messages, the session id and the TLS channel binding) and gives
//! the two key-confirmation proofs and the session secret ([`Confirmed`]).
//!
//! Why this resists guessing: a SPAKE2 message is a uniformly random group element whatever the
//! password, and the SPAKE2 key needs one side's ephemeral secret, so a recorded transcript holds
//! nothing a guessed key can be checked against; an active attacker commits to one guess per
//! handshake (its own message), and the proof it receives only tells whether that one guess was
//! right. See `docs/protocol.md` for the full argument.
//!
//! **Pool connections** prove the session secret with HMAC-SHA256 over the transcript
//! ([`ProofKey`]). The session secret is a 256-bit output of the key schedule, never sent, so a
//! recorded pool handshake gives no practical offline test either.

use ring::hmac;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use super::{ConnKind, NONCE_LEN, PAKE_MSG_LEN, PROOF_LEN, PROTOCOL_VERSION, PakeMsg, SessionId};

/// Length of a channel binding value.
pub const BINDING_LEN: usize = 32;
/// The TLS exporter label used for the channel binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-nodepass-channel-binding";
/// SPAKE2 identity of the client (side A).
const ID_CLIENT: &[u8] = b"nodepass v2 client";
/// SPAKE2 identity of the server (side B).
const ID_SERVER: &[u8] = b"nodepass v2 server";

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
    /// Client and server SPAKE2 messages (control connections), `None` on pool connections.
    pub pake: Option<(PakeMsg, PakeMsg)>,
}

impl Transcript {
    fn bytes(&self, label: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(label.len() + 2 + 2 * NONCE_LEN + 16 + BINDING_LEN + 2 * 33);
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
        if let Some((c, s)) = &self.pake {
            v.extend_from_slice(c);
            v.extend_from_slice(s);
        }
        v
    }
}

/// Why a SPAKE2 exchange could not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPAKE2 message from the peer")]
pub struct PakeError;

/// One side of a SPAKE2 exchange in progress (the ephemeral secret lives here).
pub struct Pake {
    state: Spake2<Ed25519Group>,
}

impl std::fmt::Debug for Pake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pake(****)")
    }
}

impl Pake {
    /// Start as the client (side A) with the tunnel key; returns the message for `Hello`.
    pub fn client(key: &str) -> (Pake, PakeMsg) {
        let (state, msg) = Spake2::<Ed25519Group>::start_a(
            &Password::new(key.as_bytes()),
            &Identity::new(ID_CLIENT),
            &Identity::new(ID_SERVER),
        );
        (Pake { state }, to_msg(&msg))
    }

    /// Start as the server (side B) with the tunnel key; returns the message for `Challenge`.
    pub fn server(key: &str) -> (Pake, PakeMsg) {
        let (state, msg) = Spake2::<Ed25519Group>::start_b(
            &Password::new(key.as_bytes()),
            &Identity::new(ID_CLIENT),
            &Identity::new(ID_SERVER),
        );
        (Pake { state }, to_msg(&msg))
    }

    /// Finish with the peer's message and derive the proofs and session secret bound to `t`
    /// (which must carry both SPAKE2 messages). A wrong password is *not* detected here: it
    /// yields a different key, so the proofs simply fail to verify.
    pub fn finish(self, peer: &PakeMsg, t: &Transcript) -> Result<Confirmed, PakeError> {
        let key = self.state.finish(peer).map_err(|_| PakeError)?;
        let prk = hmac::Key::new(hmac::HMAC_SHA256, &key);
        let schedule = hmac::sign(&prk, &t.bytes(b"nodepass v2 key schedule"));
        Ok(Confirmed(ProofKey(hmac::Key::new(
            hmac::HMAC_SHA256,
            schedule.as_ref(),
        ))))
    }
}

fn to_msg(v: &[u8]) -> PakeMsg {
    let mut m = [0u8; PAKE_MSG_LEN];
    m.copy_from_slice(v);
    m
}

/// The outcome of a finished SPAKE2 exchange: proofs and the session secret, all keyed by the
/// transcript-bound SPAKE2 key.
#[derive(Debug, Clone)]
pub struct Confirmed(ProofKey);

impl Confirmed {
    /// The proof the server sends in `Challenge`.
    pub fn server_proof(&self) -> [u8; PROOF_LEN] {
        self.0.sign(b"nodepass server proof")
    }

    /// The proof the client sends in `Proof`.
    pub fn client_proof(&self) -> [u8; PROOF_LEN] {
        self.0.sign(b"nodepass client proof")
    }

    /// Check a server proof in constant time.
    pub fn verify_server(&self, proof: &[u8; PROOF_LEN]) -> bool {
        hmac::verify(&self.0.0, b"nodepass server proof", proof).is_ok()
    }

    /// Check a client proof in constant time.
    pub fn verify_client(&self, proof: &[u8; PROOF_LEN]) -> bool {
        hmac::verify(&self.0.0, b"nodepass client proof", proof).is_ok()
    }

    /// The session secret that keys this session's pool proofs.
    pub fn session_key(&self) -> ProofKey {
        let secret = self.0.sign(b"nodepass session secret");
        ProofKey(hmac::Key::new(hmac::HMAC_SHA256, &secret))
    }
}

/// A high-entropy secret that keys HMAC proofs: the session secret of pool connections.
#[derive(Clone)]
pub struct ProofKey(hmac::Key);

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey(****)")
    }
}

impl ProofKey {
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

    fn transcript(kind: ConnKind) -> Transcript {
        Transcript {
            kind,
            client_nonce: [1; NONCE_LEN],
            server_nonce: [2; NONCE_LEN],
            session: [0; 16],
            binding: [0; BINDING_LEN],
            pake: None,
        }
    }

    /// Run SPAKE2 between a client with `kc` and a server with `ks`; the client-side and
    /// server-side results, with the transcript they agree on.
    fn exchange(kc: &str, ks: &str, binding_s: [u8; 32]) -> (Confirmed, Confirmed) {
        let (c, mc) = Pake::client(kc);
        let (s, ms) = Pake::server(ks);
        let mut t = transcript(ConnKind::Control);
        t.pake = Some((mc, ms));
        let mut ts = t.clone();
        ts.binding = binding_s;
        (c.finish(&ms, &t).unwrap(), s.finish(&mc, &ts).unwrap())
    }

    #[test]
    fn same_key_confirms_both_ways_and_agrees_on_the_session_secret() {
        let (c, s) = exchange("correct horse", "correct horse", [0; 32]);
        assert!(c.verify_server(&s.server_proof()));
        assert!(s.verify_client(&c.client_proof()));
        // No reflection: a server proof is not a client proof.
        assert!(!s.verify_client(&s.server_proof()));
        let pool = transcript(ConnKind::Pool);
        assert_eq!(
            c.session_key().client_proof(&pool),
            s.session_key().client_proof(&pool)
        );
        assert!(format!("{c:?}").contains("****"));
    }

    #[test]
    fn different_keys_or_channels_fail_confirmation() {
        let (c, s) = exchange("correct horse", "correct horsf", [0; 32]);
        assert!(!c.verify_server(&s.server_proof()));
        assert!(!s.verify_client(&c.client_proof()));
        // Same key, but the two ends saw different TLS sessions (a relaying man in the middle).
        let (c, s) = exchange("k", "k", [9; 32]);
        assert!(!c.verify_server(&s.server_proof()));
    }

    #[test]
    fn malformed_peer_messages_are_errors() {
        let (c, _) = Pake::client("k");
        let mut t = transcript(ConnKind::Control);
        let (_, ms) = Pake::server("k");
        t.pake = Some(([0; 33], ms));
        let mut wrong_side = ms;
        wrong_side[0] = b'A';
        assert_eq!(c.finish(&wrong_side, &t).unwrap_err(), PakeError);
    }

    /// The offline test of issue 11 against a recorded control handshake: whatever candidate
    /// key the attacker tries, recomputing the proofs from public data and the candidate gives
    /// the same answer for the true key as for a wrong one, so the transcript ranks no key.
    #[test]
    fn a_recorded_transcript_ranks_no_candidate_key() {
        for binding in [[0u8; 32], [7u8; 32]] {
            let (c, mc) = Pake::client("hunter2");
            let (s, ms) = Pake::server("hunter2");
            let mut t = transcript(ConnKind::Control);
            t.binding = binding;
            t.pake = Some((mc, ms));
            let (cc, sc) = (c.finish(&ms, &t).unwrap(), s.finish(&mc, &t).unwrap());
            let (proof_s, proof_c) = (sc.server_proof(), cc.client_proof());
            assert!(cc.verify_server(&proof_s), "the honest run succeeds");
            // The attacker has t, proof_s, proof_c, not the ephemeral secrets. Its best check
            // for a candidate is a fresh SPAKE2 state finished against each recorded message.
            let consistent = |candidate: &str| {
                let (a, _) = Pake::client(candidate);
                let (b, _) = Pake::server(candidate);
                let as_client = a.finish(&ms, &t).unwrap().verify_server(&proof_s);
                let as_server = b.finish(&mc, &t).unwrap().verify_client(&proof_c);
                as_client || as_server
            };
            assert_eq!(consistent("hunter2"), consistent("hunter3"));
            assert!(
                !consistent("hunter2"),
                "not even the true key verifies offline"
            );
        }
    }

    #[test]
    fn pool_proofs_bind_every_transcript_field() {
        let (c, _) = exchange("k", "k", [0; 32]);
        let k = c.session_key();
        let base = transcript(ConnKind::Pool);
        let p = k.server_proof(&base);
        assert!(k.verify_server(&base, &p));
        assert!(!k.verify_client(&base, &p));
        let mut variants = Vec::new();
        let mut t = base.clone();
        t.kind = ConnKind::Control;
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
        // Each session has its own secret.
        let (c2, _) = exchange("k", "k", [0; 32]);
        assert_ne!(c2.session_key().server_proof(&base), p);
    }
}
