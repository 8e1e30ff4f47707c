//! The messages of the tunnel protocol and their payload layouts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, BytesMut};

use super::{MAGIC, MAX_FRAME_LEN, NONCE_LEN, PAKE_MSG_LEN, PROOF_LEN, ProtocolError};

/// A SPAKE2 message (side byte and a compressed Edwards point).
pub type PakeMsg = [u8; PAKE_MSG_LEN];

/// Identifies one authenticated control session; pool connections name it in their `Hello`.
pub type SessionId = [u8; 16];

/// What a new tunnel connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// The one control connection of a session.
    Control,
    /// A pool (data) connection of an established session.
    Pool,
}

/// Which side accepts user traffic, decided by the server and announced in `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The server accepts users on its target address; the client dials its targets.
    Reverse,
    /// The client accepts users on its target address; the server dials its targets.
    Forward,
}

/// The kind of user session opened on a pool connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A TCP byte stream, relayed raw after `Open`.
    Tcp,
    /// A UDP session, relayed as length-prefixed datagrams after `Open`.
    Udp,
}

/// How a TCP session's bytes travel on its pool connection (`Open`'s `chunks`). In chunks, a
/// length then that many bytes, and a zero length ends one direction (a half-close); after
/// both ends the connection carries the next `Open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunks {
    /// Raw bytes: the connection ends with the session (`Open` kind byte 1).
    Off,
    /// 2-byte lengths (kind byte 3), on TLS pool connections: a chunk of at most 64 KiB − 2 is
    /// four full TLS records with its length.
    Narrow,
    /// 4-byte lengths (kind byte 4), on plain TCP pool connections: a chunk is as large as one
    /// `splice` moves (up to 1 MiB), so bulk transfers pay one extra small write per chunk.
    Wide,
}

impl Chunks {
    /// Bytes of a chunk's length (0 for [`Chunks::Off`]).
    pub fn len_bytes(self) -> usize {
        match self {
            Chunks::Off => 0,
            Chunks::Narrow => 2,
            Chunks::Wide => 4,
        }
    }
}

/// Why a peer refused a connection; sent in `Refuse` before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// The peer failed to prove the key.
    BadKey,
    /// Unsupported protocol version.
    Version,
    /// The server requires TLS; `arg` of `Refuse` carries the server's `tls` mode.
    TlsRequired,
    /// A pool connection named a session that is not current.
    StaleSession,
    /// The server is shutting down or over a limit.
    Unavailable,
    /// The server's pool transport is WebSocket (`type=2`): connect with a WebSocket; `arg`
    /// of `Refuse` carries the server's `tls` mode.
    WebSocketRequired,
    /// The server's pool transport is HTTP/2 (`type=3`): connect with TLS and ALPN `h2`;
    /// `arg` of `Refuse` carries the server's `tls` mode.
    Http2Required,
    /// The server's pool transport is QUIC (`type=1`): connect over QUIC on the tunnel port
    /// number (UDP); `arg` of `Refuse` carries the server's `tls` mode.
    QuicRequired,
    /// A code from a newer version.
    Other(u8),
}

impl RefuseCode {
    fn code(self) -> u8 {
        match self {
            RefuseCode::BadKey => 1,
            RefuseCode::Version => 2,
            RefuseCode::TlsRequired => 3,
            RefuseCode::StaleSession => 4,
            RefuseCode::Unavailable => 5,
            RefuseCode::WebSocketRequired => 6,
            RefuseCode::Http2Required => 7,
            RefuseCode::QuicRequired => 8,
            RefuseCode::Other(c) => c,
        }
    }

    fn from_code(c: u8) -> Self {
        match c {
            1 => RefuseCode::BadKey,
            2 => RefuseCode::Version,
            3 => RefuseCode::TlsRequired,
            4 => RefuseCode::StaleSession,
            5 => RefuseCode::Unavailable,
            6 => RefuseCode::WebSocketRequired,
            7 => RefuseCode::Http2Required,
            8 => RefuseCode::QuicRequired,
            other => RefuseCode::Other(other),
        }
    }
}

/// One protocol message. See `docs/protocol.md` for the sequence and byte layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → server, first frame of every tunnel connection.
    Hello {
        /// Protocol version of the client.
        version: u8,
        /// Control or pool.
        kind: ConnKind,
        /// Fresh random client nonce.
        nonce: [u8; NONCE_LEN],
        /// The session a pool connection joins (zeros for control).
        session: SessionId,
        /// The client's SPAKE2 message: present on control connections, absent on pool ones
        /// (and absent in the `Hello` of an older version, so its version can be refused).
        pake: Option<PakeMsg>,
    },
    /// Server → client: the server's nonce and its proof of the key.
    Challenge {
        /// Protocol version of the server.
        version: u8,
        /// Fresh random server nonce.
        nonce: [u8; NONCE_LEN],
        /// The server's SPAKE2 message (control connections only).
        pake: Option<PakeMsg>,
        /// Key confirmation proving the server knows the key (see [`super::auth`]).
        proof: [u8; PROOF_LEN],
    },
    /// Client → server: the client's proof of the key.
    Proof {
        /// HMAC proving the client knows the key.
        proof: [u8; PROOF_LEN],
    },
    /// Server → client on a control connection: the session is established.
    Welcome {
        /// The new session's id.
        session: SessionId,
        /// Who accepts user traffic.
        flow: Flow,
        /// Largest pool the client may keep.
        max: u32,
        /// Heartbeat interval in milliseconds.
        heartbeat_ms: u32,
        /// Whether the server carries TCP.
        tcp: bool,
        /// Whether the server carries UDP.
        udp: bool,
        /// Whether the server can reuse TLS and WebSocket pool connections
        /// ([`Chunks::Narrow`] sessions); the client agrees with [`Message::Reuse`]. Flag bit 2.
        reuse: bool,
        /// Whether the server can reuse plain TCP pool connections ([`Chunks::Wide`]
        /// sessions); the client agrees with [`Message::ReusePlain`]. Flag bit 3.
        reuse_plain: bool,
    },
    /// Server → client on a pool connection: it is authenticated and in the pool.
    PoolReady,
    /// Either side: the connection is refused; the sender closes after it.
    Refuse {
        /// Why.
        code: RefuseCode,
        /// A code-specific argument (the TLS mode for `TlsRequired`).
        arg: u8,
        /// Human-readable detail (never a secret).
        message: String,
    },
    /// Heartbeat on the control connection.
    Ping {
        /// Echoed in the `Pong`.
        seq: u64,
    },
    /// Heartbeat answer.
    Pong {
        /// The `Ping`'s sequence number.
        seq: u64,
    },
    /// On a pool connection: carry one user session; raw data (TCP) or datagrams (UDP) follow.
    Open {
        /// TCP or UDP.
        kind: StreamKind,
        /// The user's address.
        src: SocketAddr,
        /// The address the user connected to.
        dst: SocketAddr,
        /// TCP only: whether the stream travels in chunks, after which the connection
        /// carries the next `Open`. Chunked only when both ends agreed (`Welcome`'s `reuse`
        /// then `Reuse` for [`Chunks::Narrow`], `reuse_plain` then `ReusePlain` for
        /// [`Chunks::Wide`]). Ignored for UDP.
        chunks: Chunks,
    },
    /// Server → client on the control connection: the server is shutting down.
    Goodbye,
    /// Client → server on the control connection, only after a `Welcome` with `reuse`: the
    /// client agrees to [`Chunks::Narrow`] sessions on TLS and WebSocket pool connections.
    Reuse,
    /// Client → server on the control connection, only after a `Welcome` with `reuse_plain`:
    /// the client agrees to [`Chunks::Wide`] sessions on plain TCP pool connections.
    ReusePlain,
}

const T_HELLO: u8 = super::HELLO_TYPE;
const T_CHALLENGE: u8 = 0x02;
const T_PROOF: u8 = 0x03;
const T_WELCOME: u8 = 0x04;
const T_POOL_READY: u8 = 0x05;
const T_REFUSE: u8 = 0x06;
const T_PING: u8 = 0x07;
const T_PONG: u8 = 0x08;
const T_OPEN: u8 = 0x09;
const T_GOODBYE: u8 = 0x0a;
const T_REUSE: u8 = 0x0b;
const T_REUSE_PLAIN: u8 = 0x0c;

impl Message {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Challenge { .. } => "challenge",
            Message::Proof { .. } => "proof",
            Message::Welcome { .. } => "welcome",
            Message::PoolReady => "pool-ready",
            Message::Reuse => "reuse",
            Message::ReusePlain => "reuse-plain",
            Message::Refuse { .. } => "refuse",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Open { .. } => "open",
            Message::Goodbye => "goodbye",
        }
    }

    pub(super) fn type_code(&self) -> u8 {
        match self {
            Message::Hello { .. } => T_HELLO,
            Message::Challenge { .. } => T_CHALLENGE,
            Message::Proof { .. } => T_PROOF,
            Message::Welcome { .. } => T_WELCOME,
            Message::PoolReady => T_POOL_READY,
            Message::Reuse => T_REUSE,
            Message::ReusePlain => T_REUSE_PLAIN,
            Message::Refuse { .. } => T_REFUSE,
            Message::Ping { .. } => T_PING,
            Message::Pong { .. } => T_PONG,
            Message::Open { .. } => T_OPEN,
            Message::Goodbye => T_GOODBYE,
        }
    }

    pub(super) fn encode_payload(&self, dst: &mut BytesMut) {
        match self {
            Message::Hello {
                version,
                kind,
                nonce,
                session,
                pake,
            } => {
                dst.put_slice(&MAGIC);
                dst.put_u8(*version);
                dst.put_u8(match kind {
                    ConnKind::Control => 1,
                    ConnKind::Pool => 2,
                });
                dst.put_slice(nonce);
                dst.put_slice(session);
                if let Some(p) = pake {
                    dst.put_slice(p);
                }
            }
            Message::Challenge {
                version,
                nonce,
                pake,
                proof,
            } => {
                dst.put_u8(*version);
                dst.put_slice(nonce);
                if let Some(p) = pake {
                    dst.put_slice(p);
                }
                dst.put_slice(proof);
            }
            Message::Proof { proof } => dst.put_slice(proof),
            Message::Welcome {
                session,
                flow,
                max,
                heartbeat_ms,
                tcp,
                udp,
                reuse,
                reuse_plain,
            } => {
                dst.put_slice(session);
                dst.put_u8(match flow {
                    Flow::Reverse => 1,
                    Flow::Forward => 2,
                });
                dst.put_u32(*max);
                dst.put_u32(*heartbeat_ms);
                dst.put_u8(
                    u8::from(*tcp)
                        | (u8::from(*udp) << 1)
                        | (u8::from(*reuse) << 2)
                        | (u8::from(*reuse_plain) << 3),
                );
            }
            Message::PoolReady | Message::Goodbye | Message::Reuse | Message::ReusePlain => {}
            Message::Refuse { code, arg, message } => {
                dst.put_u8(code.code());
                dst.put_u8(*arg);
                // Keep the frame within MAX_FRAME_LEN whatever the message length.
                let mut end = message.len().min(MAX_FRAME_LEN - 2);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                dst.put_slice(&message.as_bytes()[..end]);
            }
            Message::Ping { seq } | Message::Pong { seq } => dst.put_u64(*seq),
            Message::Open {
                kind,
                src,
                dst: to,
                chunks,
            } => {
                dst.put_u8(match (kind, chunks) {
                    (StreamKind::Tcp, Chunks::Off) => 1,
                    (StreamKind::Udp, _) => 2,
                    (StreamKind::Tcp, Chunks::Narrow) => 3,
                    (StreamKind::Tcp, Chunks::Wide) => 4,
                });
                put_addr(dst, src);
                put_addr(dst, to);
            }
        }
    }

    pub(super) fn decode_payload(ty: u8, p: &[u8]) -> Result<Message, ProtocolError> {
        let mut r = Reader { buf: p };
        let msg = match ty {
            T_HELLO => {
                let magic = r.take(8, "hello")?;
                if magic != MAGIC {
                    return Err(ProtocolError::BadMagic);
                }
                let version = r.u8("hello")?;
                let kind = match r.u8("hello")? {
                    1 => ConnKind::Control,
                    2 => ConnKind::Pool,
                    _ => return Err(malformed("hello", "unknown connection kind")),
                };
                let nonce = r.array("hello")?;
                let session = r.array("hello")?;
                // The SPAKE2 message is optional on the wire so that a `Hello` of another
                // version still decodes and can be refused with the version code.
                let pake = match r.buf.len() {
                    0 => None,
                    _ => Some(r.array("hello")?),
                };
                Message::Hello {
                    version,
                    kind,
                    nonce,
                    session,
                    pake,
                }
            }
            T_CHALLENGE => {
                let version = r.u8("challenge")?;
                let nonce = r.array("challenge")?;
                let pake = match r.buf.len() {
                    PROOF_LEN => None,
                    _ => Some(r.array("challenge")?),
                };
                Message::Challenge {
                    version,
                    nonce,
                    pake,
                    proof: r.array("challenge")?,
                }
            }
            T_PROOF => Message::Proof {
                proof: r.array("proof")?,
            },
            T_WELCOME => {
                let session = r.array("welcome")?;
                let flow = match r.u8("welcome")? {
                    1 => Flow::Reverse,
                    2 => Flow::Forward,
                    _ => return Err(malformed("welcome", "unknown flow")),
                };
                let max = r.u32("welcome")?;
                let heartbeat_ms = r.u32("welcome")?;
                let bits = r.u8("welcome")?;
                Message::Welcome {
                    session,
                    flow,
                    max,
                    heartbeat_ms,
                    tcp: bits & 1 != 0,
                    udp: bits & 2 != 0,
                    reuse: bits & 4 != 0,
                    reuse_plain: bits & 8 != 0,
                }
            }
            T_POOL_READY => Message::PoolReady,
            T_GOODBYE => Message::Goodbye,
            T_REUSE => Message::Reuse,
            T_REUSE_PLAIN => Message::ReusePlain,
            T_REFUSE => {
                let code = RefuseCode::from_code(r.u8("refuse")?);
                let arg = r.u8("refuse")?;
                let rest = r.rest();
                Message::Refuse {
                    code,
                    arg,
                    message: String::from_utf8_lossy(rest).into_owned(),
                }
            }
            T_PING => Message::Ping {
                seq: r.u64("ping")?,
            },
            T_PONG => Message::Pong {
                seq: r.u64("pong")?,
            },
            T_OPEN => {
                let (kind, chunks) = match r.u8("open")? {
                    1 => (StreamKind::Tcp, Chunks::Off),
                    2 => (StreamKind::Udp, Chunks::Off),
                    3 => (StreamKind::Tcp, Chunks::Narrow),
                    4 => (StreamKind::Tcp, Chunks::Wide),
                    _ => return Err(malformed("open", "unknown stream kind")),
                };
                Message::Open {
                    kind,
                    src: r.addr("open")?,
                    dst: r.addr("open")?,
                    chunks,
                }
            }
            other => return Err(ProtocolError::UnknownType(other)),
        };
        if !r.buf.is_empty() {
            return Err(malformed(msg.name(), "trailing bytes"));
        }
        Ok(msg)
    }
}

fn malformed(kind: &'static str, reason: &'static str) -> ProtocolError {
    ProtocolError::Malformed { kind, reason }
}

fn put_addr(dst: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            dst.put_u8(4);
            dst.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            dst.put_u8(6);
            dst.put_slice(&ip.octets());
        }
    }
    dst.put_u16(addr.port());
}

/// A bounds-checked cursor over a frame payload.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, kind: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(malformed(kind, "too short"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn array<const N: usize>(&mut self, kind: &'static str) -> Result<[u8; N], ProtocolError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, kind)?);
        Ok(out)
    }

    fn u8(&mut self, kind: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, kind)?[0])
    }

    fn u32(&mut self, kind: &'static str) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array(kind)?))
    }

    fn u64(&mut self, kind: &'static str) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.array(kind)?))
    }

    fn addr(&mut self, kind: &'static str) -> Result<SocketAddr, ProtocolError> {
        let ip = match self.u8(kind)? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>(kind)?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>(kind)?)),
            _ => return Err(malformed(kind, "unknown address family")),
        };
        let port = u16::from_be_bytes(self.array(kind)?);
        Ok(SocketAddr::new(ip, port))
    }
}
