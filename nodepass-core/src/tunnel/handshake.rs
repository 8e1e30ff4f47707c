//! The authenticated handshake of every tunnel connection, both sides.
//!
//! ```text
//! client                                   server
//! [TLS handshake, when the server has tls>=1]
//! Hello{version, kind, nonce_c, session, pake_c?} ->
//!                                       <- Challenge{version, nonce_s, pake_s?, server_proof}
//! (verify server_proof)
//! Proof{client_proof}                    ->
//!                                          (verify client_proof)
//!                                       <- Welcome{...} (control) | PoolReady (pool)
//! ```
//! A plain `Hello` to a TLS server gets `Refuse{TlsRequired, tls mode}` and the client retries
//! inside TLS; the same way a server whose transport is WebSocket, HTTP/2 or QUIC tells the
//! client (`WebSocketRequired`, `Http2Required`, `QuicRequired`). [`accept_transport`] sets up the transport of a
//! new TCP connection (one tunnel connection, or an HTTP/2 carrier of many), [`accept_stream`]
//! runs the handshake on each tunnel connection, whatever carries it. Control connections run SPAKE2 with the tunnel key (`pake_*`); pool connections
//! prove the session secret it yielded. Every proof is bound to both nonces and the TLS session
//! (see [`crate::protocol::auth`]). The caller bounds the whole exchange with a timeout.

use std::io;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpStream;

use super::wire::{Wire, WireError};
use crate::config::{PoolType, WebSocketOptions};
use crate::protocol::auth::{Pake, ProofKey, Transcript};
use crate::protocol::{
    ConnKind, HELLO_TYPE, Message, NONCE_LEN, PROTOCOL_VERSION, ProtocolError, RefuseCode,
    SessionId,
};
use crate::transport::http2::{self, H2Server};
use crate::transport::tls::ServerTls;
use crate::transport::ws;
use crate::transport::{BufferedTcp, TunnelStream};

/// First byte of a TLS handshake record.
const TLS_RECORD_HANDSHAKE: u8 = 0x16;
/// What a `type=1` server tells a client that came over TCP.
const QUIC_REQUIRED: &str = "this server's pool transport is quic (type=1): connect over udp";

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("handshake timed out")]
    Timeout,
    #[error("wrong key: the peer could not prove it knows the tunnel key")]
    BadProof,
    #[error(
        "the server could not prove it knows the tunnel key (wrong key, or a man in the middle)"
    )]
    BadServerProof,
    #[error(
        "the server could not prove it knows the tunnel key over websocket: a wrong key, or the \
         two ends bind different tls sessions because a proxy terminates tls between them; then \
         add wsbind=0 to each end whose tls ends at the proxy (docs/protocol.md, proxies that \
         terminate tls)"
    )]
    BadServerProofWs,
    #[error(
        "the server requires tls (mode {0}) but the proxy in front of it speaks plain http to \
         it: let the proxy speak https to the server (nginx: proxy_pass https://...)"
    )]
    ProxyNotTls(u8),
    #[error("refused by the server: wrong key")]
    WrongKey,
    #[error("protocol version mismatch: peer speaks {peer}, we speak {PROTOCOL_VERSION}")]
    Version { peer: u8 },
    #[error("the server requires tls (mode {0})")]
    TlsRequired(u8),
    #[error("the server's pool transport is websocket (type=2; tls mode {0})")]
    WebSocketRequired(u8),
    #[error("websocket: {0}")]
    WebSocket(io::Error),
    #[error("the server's pool transport is http2 (type=3; tls mode {0})")]
    Http2Required(u8),
    #[error("http2: {0}")]
    Http2(io::Error),
    #[error("the server's pool transport is quic (type=1, udp; tls mode {0})")]
    QuicRequired(u8),
    #[error("quic: {0}")]
    Quic(io::Error),
    #[error("invalid key-exchange message from the peer")]
    BadPake,
    #[error("a tls client connected but this server has tls=0")]
    UnexpectedTls,
    #[error("pool connection for a session that is not current")]
    StaleSession,
    #[error("refused by the peer ({code:?}): {message}")]
    Refused { code: RefuseCode, message: String },
    #[error("tls: {}", crate::transport::Explained(.0))]
    Tls(io::Error),
    #[error(transparent)]
    Protocol(ProtocolError),
    #[error(transparent)]
    Io(io::Error),
}

impl From<WireError> for HandshakeError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Closed => HandshakeError::Closed,
            WireError::Protocol(p) => HandshakeError::Protocol(p),
            WireError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => HandshakeError::Closed,
            WireError::Io(e) => HandshakeError::Io(e),
        }
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

impl HandshakeError {
    /// Failures that retrying cannot fix without an operator (logged loudly).
    /// What kind of failure this is, for [`TunnelState`](super::TunnelState).
    pub(crate) fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            HandshakeError::BadProof
            | HandshakeError::BadServerProof
            | HandshakeError::BadServerProofWs
            | HandshakeError::WrongKey
            | HandshakeError::Refused {
                code: RefuseCode::BadKey,
                ..
            } => ErrorKind::AuthRefused,
            // A WebSocket upgrade that fails (a proxy down, a wrong path answered 404) leaves
            // the server out of reach, like a refused TCP connection.
            HandshakeError::Closed
            | HandshakeError::Timeout
            | HandshakeError::Io(_)
            | HandshakeError::WebSocket(_)
            | HandshakeError::Http2(_)
            | HandshakeError::Quic(_)
            | HandshakeError::Refused {
                code: RefuseCode::Unavailable,
                ..
            } => ErrorKind::Unreachable,
            HandshakeError::Tls(_)
            | HandshakeError::TlsRequired(_)
            | HandshakeError::ProxyNotTls(_)
            | HandshakeError::UnexpectedTls
            | HandshakeError::Refused {
                code: RefuseCode::TlsRequired,
                ..
            } => ErrorKind::Tls,
            // The transport is negotiated: the client retries over WebSocket, HTTP/2 or QUIC.
            HandshakeError::Version { .. }
            | HandshakeError::WebSocketRequired(_)
            | HandshakeError::Http2Required(_)
            | HandshakeError::QuicRequired(_)
            | HandshakeError::BadPake
            | HandshakeError::StaleSession
            | HandshakeError::Protocol(_)
            | HandshakeError::Refused { .. } => ErrorKind::Protocol,
        }
    }

    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            HandshakeError::BadServerProof
                | HandshakeError::BadServerProofWs
                | HandshakeError::ProxyNotTls(_)
                | HandshakeError::WrongKey
                | HandshakeError::Version { .. }
        )
    }
}

pub(crate) fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut n)
        .expect("system random source failed");
    n
}

/// What an accepted tunnel connection turned out to be.
pub(crate) enum Accepted {
    /// A new control connection; the caller sends `Welcome`.
    Control {
        wire: Wire<TunnelStream>,
        /// Keys this session's pool proofs.
        session_key: ProofKey,
    },
    /// An authenticated pool connection of `session` (PoolReady already sent).
    Pool {
        wire: Wire<TunnelStream>,
        session: SessionId,
    },
}

/// The pool transport a server speaks on its tunnel port (`type`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerTransport<'a> {
    /// `type=0`: every TCP (or TLS) connection is one tunnel connection.
    Tcp,
    /// `type=2`: every TCP (or TLS) connection is one WebSocket, one tunnel connection; its
    /// tasks run on the tunnel's tracker.
    Ws(&'a WebSocketOptions, ws::Tasks<'a>),
    /// `type=3`: a TLS connection with ALPN `h2` carries many tunnel connections, one stream
    /// each, at most `max_streams` at once.
    H2 { max_streams: u32 },
    /// `type=1`: tunnel connections come over QUIC (UDP, same port number); a TCP client is
    /// told so.
    Quic,
}

impl ServerTransport<'_> {
    /// The `type` this transport serves.
    pub(crate) fn pool_type(&self) -> PoolType {
        match self {
            ServerTransport::Tcp => PoolType::Tcp,
            ServerTransport::Ws(..) => PoolType::WebSocket,
            ServerTransport::H2 { .. } => PoolType::Http2,
            ServerTransport::Quic => PoolType::Quic,
        }
    }
}

impl Accepted {
    /// Move the connection's socket to the current runtime (see `TunnelStream::rebind`).
    pub(crate) fn rebind(self) -> io::Result<Self> {
        Ok(match self {
            Accepted::Control {
                mut wire,
                session_key,
            } => {
                wire.stream = wire.stream.rebind()?;
                Accepted::Control { wire, session_key }
            }
            Accepted::Pool { mut wire, session } => {
                wire.stream = wire.stream.rebind()?;
                Accepted::Pool { wire, session }
            }
        })
    }
}

/// What a new TCP connection turned out to carry.
pub(crate) enum Carried {
    /// One tunnel connection, ready for [`accept_stream`].
    One(TunnelStream),
    /// An HTTP/2 carrier: each stream it yields is one tunnel connection.
    H2(Box<H2Server>),
}

/// Refuse a client that does not speak the server's transport (or tls) yet: read its `Hello`
/// and answer `code` with the tls mode, so it learns both at once.
async fn refuse_hello<T>(
    stream: TunnelStream,
    code: RefuseCode,
    tls_code: u8,
    message: &str,
    err: HandshakeError,
) -> Result<T, HandshakeError> {
    let mut wire = Wire::new(stream);
    let _hello = wire.recv().await?;
    refuse(&mut wire, code, tls_code, message).await;
    Err(err)
}

/// Server side, first step on a freshly accepted TCP connection: TLS (or plain TCP), the layer
/// under the server's transport `pool`. A client that does not know the transport or the tls
/// mode yet is refused here. The caller bounds it with a timeout. Needs nothing of the caller's
/// runtime, so it may run on the pool maintenance thread (`background`).
pub(crate) async fn accept_layer(
    tcp: TcpStream,
    tls: Option<&ServerTls>,
    tls_code: u8,
    pool: PoolType,
) -> Result<TunnelStream, HandshakeError> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(HandshakeError::Closed);
    }
    Ok(match (first[0], tls) {
        (TLS_RECORD_HANDSHAKE, Some(tls)) => TunnelStream::ServerTls(Box::new(
            tls.acceptor()
                .accept(BufferedTcp::new(tcp))
                .await
                .map_err(HandshakeError::Tls)?,
        )),
        (TLS_RECORD_HANDSHAKE, None) => return Err(HandshakeError::UnexpectedTls),
        (HELLO_TYPE, _) if pool == PoolType::WebSocket => {
            // A client that does not know yet: tell it the transport and the tls mode at once.
            return refuse_hello(
                TunnelStream::Plain(tcp),
                RefuseCode::WebSocketRequired,
                tls_code,
                "this server's pool transport is websocket (type=2)",
                HandshakeError::WebSocketRequired(tls_code),
            )
            .await;
        }
        (HELLO_TYPE, _) if pool == PoolType::Quic => {
            return refuse_hello(
                TunnelStream::Plain(tcp),
                RefuseCode::QuicRequired,
                tls_code,
                QUIC_REQUIRED,
                HandshakeError::QuicRequired(tls_code),
            )
            .await;
        }
        (HELLO_TYPE, _) if pool == PoolType::Http2 => {
            return refuse_hello(
                TunnelStream::Plain(tcp),
                RefuseCode::Http2Required,
                tls_code,
                "this server's pool transport is http2 (type=3)",
                HandshakeError::Http2Required(tls_code),
            )
            .await;
        }
        (HELLO_TYPE, Some(_)) => {
            return refuse_hello(
                TunnelStream::Plain(tcp),
                RefuseCode::TlsRequired,
                tls_code,
                "this server requires tls",
                HandshakeError::TlsRequired(tls_code),
            )
            .await;
        }
        (_, _) => TunnelStream::Plain(tcp),
    })
}

/// Server side, on a freshly accepted TCP connection: TLS ([`accept_layer`]), then the
/// WebSocket or HTTP/2 layer of the server's transport ([`accept_carrier`]). The caller bounds
/// it with a timeout.
pub(crate) async fn accept_transport(
    tcp: TcpStream,
    tls: Option<&ServerTls>,
    tls_code: u8,
    transport: ServerTransport<'_>,
) -> Result<Carried, HandshakeError> {
    let stream = accept_layer(tcp, tls, tls_code, transport.pool_type()).await?;
    accept_carrier(stream, tls.is_some(), tls_code, transport).await
}

/// Server side, second step: the WebSocket or HTTP/2 layer of `transport` over the stream
/// [`accept_layer`] made (`tls`: whether the server requires TLS).
pub(crate) async fn accept_carrier(
    stream: TunnelStream,
    tls: bool,
    tls_code: u8,
    transport: ServerTransport<'_>,
) -> Result<Carried, HandshakeError> {
    match transport {
        ServerTransport::Tcp => Ok(Carried::One(stream)),
        // A tls client over TCP that does not know yet: tell it inside its tls.
        ServerTransport::Quic => {
            refuse_hello(
                stream,
                RefuseCode::QuicRequired,
                tls_code,
                QUIC_REQUIRED,
                HandshakeError::QuicRequired(tls_code),
            )
            .await
        }
        ServerTransport::Ws(opts, tasks) => {
            let stream = ws::accept(stream, opts, tasks)
                .await
                .map_err(HandshakeError::WebSocket)?;
            if tls && !stream.is_tls() {
                // A websocket client that does not know yet that this server wants tls.
                return refuse_hello(
                    stream,
                    RefuseCode::TlsRequired,
                    tls_code,
                    "this server requires tls",
                    HandshakeError::TlsRequired(tls_code),
                )
                .await;
            }
            Ok(Carried::One(stream))
        }
        ServerTransport::H2 { max_streams } => {
            if !http2::is_h2(&stream) {
                // A tls client that does not know yet (no ALPN h2): tell it inside its tls.
                return refuse_hello(
                    stream,
                    RefuseCode::Http2Required,
                    tls_code,
                    "this server's pool transport is http2 (type=3)",
                    HandshakeError::Http2Required(tls_code),
                )
                .await;
            }
            let carrier = H2Server::handshake(stream, max_streams)
                .await
                .map_err(HandshakeError::Http2)?;
            Ok(Carried::H2(Box::new(carrier)))
        }
    }
}

/// Server side of the handshake on one tunnel connection (after [`accept_transport`]). The
/// caller bounds it with a timeout.
pub(crate) async fn accept_stream(
    stream: TunnelStream,
    key: &str,
    session_key: impl Fn(&SessionId) -> Option<ProofKey>,
) -> Result<Accepted, HandshakeError> {
    let mut wire = Wire::new(stream);
    let (kind, client_nonce, session, client_pake) = match wire.recv().await? {
        Message::Hello {
            version,
            kind,
            nonce,
            session,
            pake,
        } => {
            if version != PROTOCOL_VERSION {
                let msg = format!("server speaks protocol version {PROTOCOL_VERSION}");
                refuse(&mut wire, RefuseCode::Version, PROTOCOL_VERSION, &msg).await;
                return Err(HandshakeError::Version { peer: version });
            }
            (kind, nonce, session, pake)
        }
        other => return Err(unexpected(&other, "hello")),
    };
    let mut transcript = Transcript {
        kind,
        client_nonce,
        server_nonce: nonce(),
        session,
        binding: wire.stream.channel_binding()?,
        pake: None,
    };
    match (kind, client_pake) {
        (ConnKind::Control, Some(client_msg)) => {
            let (pake, server_msg) = Pake::server(key);
            transcript.pake = Some((client_msg, server_msg));
            let Ok(confirmed) = pake.finish(&client_msg, &transcript) else {
                refuse(&mut wire, RefuseCode::BadKey, 0, "invalid key exchange").await;
                return Err(HandshakeError::BadPake);
            };
            wire.send(&Message::Challenge {
                version: PROTOCOL_VERSION,
                nonce: transcript.server_nonce,
                pake: Some(server_msg),
                proof: confirmed.server_proof(),
            })
            .await?;
            match wire.recv().await? {
                Message::Proof { proof } if confirmed.verify_client(&proof) => {}
                other => return Err(bad_proof(&mut wire, other).await),
            }
            Ok(Accepted::Control {
                session_key: confirmed.session_key(),
                wire,
            })
        }
        (ConnKind::Pool, None) => {
            let Some(proof_key) = session_key(&session) else {
                refuse(&mut wire, RefuseCode::StaleSession, 0, "unknown session").await;
                return Err(HandshakeError::StaleSession);
            };
            wire.send(&Message::Challenge {
                version: PROTOCOL_VERSION,
                nonce: transcript.server_nonce,
                pake: None,
                proof: proof_key.server_proof(&transcript),
            })
            .await?;
            match wire.recv().await? {
                Message::Proof { proof } if proof_key.verify_client(&transcript, &proof) => {}
                other => return Err(bad_proof(&mut wire, other).await),
            }
            wire.send(&Message::PoolReady).await?;
            Ok(Accepted::Pool { wire, session })
        }
        (ConnKind::Control, None) | (ConnKind::Pool, Some(_)) => {
            Err(HandshakeError::Protocol(ProtocolError::Malformed {
                kind: "hello",
                reason: "key-exchange message present on a pool connection or missing on a control one",
            }))
        }
    }
}

/// The answer to what should have been a valid `Proof`.
async fn bad_proof(wire: &mut Wire<TunnelStream>, got: Message) -> HandshakeError {
    match got {
        Message::Proof { .. } => {
            refuse(wire, RefuseCode::BadKey, 0, "wrong key").await;
            HandshakeError::BadProof
        }
        Message::Refuse { code, message, .. } => HandshakeError::Refused { code, message },
        other => unexpected(&other, "proof"),
    }
}

/// What the client learns from a successful handshake.
pub(crate) struct Connected {
    pub(crate) wire: Wire<TunnelStream>,
    /// For control connections: `Welcome` and the session secret.
    pub(crate) welcome: Option<(Message, ProofKey)>,
}

/// The key a client proves on a new connection.
pub(crate) enum ClientKey<'a> {
    /// A control connection: run SPAKE2 with the tunnel key.
    Tunnel(&'a str),
    /// A pool connection: prove the session secret.
    Session(&'a ProofKey),
}

/// Client side of the handshake over an established stream (TLS already done if any).
pub(crate) async fn connect(
    stream: TunnelStream,
    session: SessionId,
    key: ClientKey<'_>,
) -> Result<Connected, HandshakeError> {
    let mut wire = Wire::new(stream);
    let client_nonce = nonce();
    let (kind, pake) = match key {
        ClientKey::Tunnel(k) => {
            let (state, msg) = Pake::client(k);
            (ConnKind::Control, Some((state, msg)))
        }
        ClientKey::Session(_) => (ConnKind::Pool, None),
    };
    wire.send(&Message::Hello {
        version: PROTOCOL_VERSION,
        kind,
        nonce: client_nonce,
        session,
        pake: pake.as_ref().map(|(_, m)| *m),
    })
    .await?;
    let (server_nonce, server_pake, server_proof) = match wire.recv().await? {
        Message::Challenge {
            version,
            nonce,
            pake,
            proof,
        } => {
            if version != PROTOCOL_VERSION {
                return Err(HandshakeError::Version { peer: version });
            }
            (nonce, pake, proof)
        }
        Message::Refuse { code, arg, message } => return Err(refused(code, arg, message)),
        other => return Err(unexpected(&other, "challenge")),
    };
    let mut transcript = Transcript {
        kind,
        client_nonce,
        server_nonce,
        session,
        binding: wire.stream.channel_binding()?,
        pake: None,
    };
    // Verify the server before sending anything keyed: a fake server learns only our SPAKE2
    // message, which is independent of the key.
    let (client_proof, session_key) = match (pake, server_pake, key) {
        (Some((state, client_msg)), Some(server_msg), ClientKey::Tunnel(_)) => {
            transcript.pake = Some((client_msg, server_msg));
            let confirmed = match state.finish(&server_msg, &transcript) {
                Ok(c) if c.verify_server(&server_proof) => c,
                _ => {
                    refuse(&mut wire, RefuseCode::BadKey, 0, "server proof invalid").await;
                    return Err(HandshakeError::BadServerProof);
                }
            };
            (confirmed.client_proof(), Some(confirmed.session_key()))
        }
        (None, None, ClientKey::Session(k)) => {
            if !k.verify_server(&transcript, &server_proof) {
                refuse(&mut wire, RefuseCode::BadKey, 0, "server proof invalid").await;
                return Err(HandshakeError::BadServerProof);
            }
            (k.client_proof(&transcript), None)
        }
        _ => {
            return Err(HandshakeError::Protocol(ProtocolError::Malformed {
                kind: "challenge",
                reason: "key-exchange message does not match the connection kind",
            }));
        }
    };
    wire.send(&Message::Proof {
        proof: client_proof,
    })
    .await?;
    match (kind, wire.recv().await?) {
        (ConnKind::Control, w @ Message::Welcome { .. }) => Ok(Connected {
            welcome: session_key.map(|k| (w, k)),
            wire,
        }),
        (ConnKind::Pool, Message::PoolReady) => Ok(Connected {
            wire,
            welcome: None,
        }),
        (_, Message::Refuse { code, arg, message }) => Err(refused(code, arg, message)),
        (ConnKind::Control, other) => Err(unexpected(&other, "welcome")),
        (ConnKind::Pool, other) => Err(unexpected(&other, "pool-ready")),
    }
}

fn refused(code: RefuseCode, arg: u8, message: String) -> HandshakeError {
    match code {
        RefuseCode::TlsRequired => HandshakeError::TlsRequired(arg),
        RefuseCode::WebSocketRequired => HandshakeError::WebSocketRequired(arg),
        RefuseCode::Http2Required => HandshakeError::Http2Required(arg),
        RefuseCode::QuicRequired => HandshakeError::QuicRequired(arg),
        RefuseCode::BadKey => HandshakeError::WrongKey,
        RefuseCode::Version => HandshakeError::Version { peer: arg },
        RefuseCode::StaleSession => HandshakeError::StaleSession,
        code => HandshakeError::Refused { code, message },
    }
}

fn unexpected(got: &Message, expected: &'static str) -> HandshakeError {
    HandshakeError::Protocol(ProtocolError::Unexpected {
        got: got.name(),
        expected,
    })
}

/// Best effort: tell the peer why before closing.
async fn refuse(wire: &mut Wire<TunnelStream>, code: RefuseCode, arg: u8, message: &str) {
    let _ = wire
        .send(&Message::Refuse {
            code,
            arg,
            message: message.to_string(),
        })
        .await;
}
