//! The dual-end client: keeps one authenticated control session with the server (reconnecting
//! with exponential backoff and jitter), and a warm [`Pool`] of authenticated pool connections
//! refilled on demand. In reverse flow it parks a task on each pool connection to dial its
//! targets when the server opens a session; in forward flow it accepts users on its target
//! address and carries them over the pool.
//!
//! Also decides, for `mode=0`, between single-end and dual-end (`decide`).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::background;
use super::handshake::{self, ClientKey, HandshakeError};
use super::users::{Upstream, UserSockets, serve_pool_conn};
use super::wire::Wire;
use super::{Ctx, Mode, Shared, TunnelState, control};
use crate::config::{ClientConfig, ClientMode, Host, Movable, PoolType, WsBinding};
use crate::error::{Error, ErrorKind, Result, TunnelError};
use crate::pool::Pool;
use crate::protocol::auth::ProofKey;
use crate::protocol::{Chunks, Flow, Message, SessionId};
use crate::transport::TunnelStream;
use crate::transport::http2::{ALPN_H2, H2Client};
use crate::transport::net::tune_tunnel_stream;
use crate::transport::quic::{ClientEndpoint, QuicClient};
use crate::transport::tls::{ClientTls, ClientVerify};
use crate::transport::ws;

/// What a client configuration turns into.
pub(crate) enum Decision {
    /// Forward alone: the tunnel address was bindable (or `mode=1`).
    Single(UserSockets),
    /// Connect to a server.
    Dual,
}

/// `mode=0`: single-end if the tunnel address can be bound here, else dual-end.
pub(crate) async fn decide(cfg: &ClientConfig) -> Result<Decision> {
    let p = &cfg.params;
    match cfg.mode {
        ClientMode::SingleEnd => Ok(Decision::Single(
            UserSockets::bind(&p.tunnel, p.tcp, p.udp).await?,
        )),
        ClientMode::DualEnd => Ok(Decision::Dual),
        ClientMode::Auto => match UserSockets::bind(&p.tunnel, p.tcp, p.udp).await {
            Ok(s) => {
                tracing::warn!(
                    listen = %s.describe(),
                    "mode=0: the tunnel address {} could be bound on this host, so this client \
                     runs single-end (a local forwarder to its targets, no server). If a server \
                     is meant to listen there, this client has taken its port: set mode=2 to \
                     connect to a server, or mode=1 to run single-end without this warning",
                    p.tunnel
                );
                Ok(Decision::Single(s))
            }
            Err(e) => {
                tracing::debug!(reason = %e, "tunnel address not bindable here, connecting to a server");
                Ok(Decision::Dual)
            }
        },
    }
}

pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    /// The TLS setup learned from the server; never held across `.await`.
    tls: Mutex<Option<ClientTls>>,
    /// How tunnel connections are carried (a [`Carry`]): QUIC or WebSocket when this client's
    /// URL has `type=1` or `type=2`, otherwise TCP until the server's refusal names its
    /// transport.
    carry: AtomicU8,
    /// The HTTP/2 carrier of the current session: every control connection opens a new one,
    /// pool connections open streams on it (a new one if it ended).
    carrier: tokio::sync::Mutex<Option<H2Client>>,
    /// The QUIC endpoint (one UDP socket, kept across sessions) and the carrier of the
    /// current session, as for HTTP/2.
    quic_carrier: tokio::sync::Mutex<QuicSlot>,
    /// The forward-flow user sockets, kept across sessions; never held across `.await`.
    users: Mutex<Option<Arc<UserSockets>>>,
}

/// How the client carries tunnel connections, as the server's `type` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Carry {
    /// A TCP connection each, with or without TLS (`type=0`).
    Tcp = 0,
    /// A stream each on one QUIC connection (`type=1`).
    Quic = 1,
    /// A WebSocket each (`type=2`).
    Ws = 2,
    /// A stream each on one HTTP/2 connection (`type=3`).
    H2 = 3,
}

impl Carry {
    /// The server's `type` this carriage speaks.
    fn pool_type(self) -> PoolType {
        match self {
            Carry::Tcp => PoolType::Tcp,
            Carry::Quic => PoolType::Quic,
            Carry::Ws => PoolType::WebSocket,
            Carry::H2 => PoolType::Http2,
        }
    }

    fn from_u8(v: u8) -> Carry {
        match v {
            1 => Carry::Quic,
            2 => Carry::Ws,
            3 => Carry::H2,
            _ => Carry::Tcp,
        }
    }
}

/// The client's QUIC endpoint and current carrier (`type=1`).
#[derive(Default)]
struct QuicSlot {
    endpoint: Option<ClientEndpoint>,
    carrier: Option<QuicClient>,
}

/// An established control session.
struct Established {
    wire: Wire<TunnelStream>,
    session: SessionId,
    session_key: ProofKey,
    flow: Flow,
    max: u32,
    tls: Option<ClientTls>,
    /// The server can carry chunked sessions on TLS pool connections (`Welcome`'s `reuse`).
    reuse: bool,
    /// The server can carry chunked sessions on plain TCP pool connections (`reuse_plain`).
    reuse_plain: bool,
}

impl Client {
    pub(crate) fn new(cfg: ClientConfig, shared: &Shared) -> Result<Self> {
        shared.set_mode(Mode::Pending);
        let carry = AtomicU8::new(Inner::own_carry(&cfg) as u8);
        Ok(Client {
            inner: Arc::new(Inner {
                cfg,
                carry,
                carrier: tokio::sync::Mutex::new(None),
                quic_carrier: tokio::sync::Mutex::new(QuicSlot::default()),
                tls: Mutex::new(None),
                users: Mutex::new(None),
            }),
        })
    }

    pub(crate) async fn run(self, ctx: Ctx) -> Result<()> {
        let inner = self.inner;
        let mut backoff = ctx.opts.reconnect_min;
        loop {
            if ctx.stop.is_cancelled() {
                return Ok(());
            }
            let attempt = tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(()),
                r = inner.connect_control(&ctx) => r,
            };
            match attempt {
                Ok(est) => {
                    backoff = ctx.opts.reconnect_min;
                    let reason = inner.clone().run_session(est, &ctx).await?;
                    if ctx.stop.is_cancelled() {
                        return Ok(());
                    }
                    ctx.shared.set_state(TunnelState::Reconnecting {
                        error: TunnelError::new(ErrorKind::Disconnected, reason),
                    });
                }
                Err(e) => {
                    if e.is_fatal() {
                        tracing::error!(server = %inner.cfg.params.tunnel, error = %e, "cannot connect to the server");
                    } else {
                        tracing::warn!(server = %inner.cfg.params.tunnel, error = %e, "cannot connect to the server");
                    }
                    ctx.shared.set_state(TunnelState::Reconnecting {
                        error: TunnelError::new(e.kind(), e.to_string()),
                    });
                }
            }
            let delay = jitter(backoff);
            tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            backoff = (backoff * 2).min(ctx.opts.reconnect_max);
        }
    }
}

/// `d` scaled by a random factor in [0.5, 1.0).
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = SystemRandom::new().fill(&mut b);
    let r = u16::from_le_bytes(b) as f64 / 65536.0;
    d.mul_f64(0.5 + r / 2.0)
}

impl Inner {
    fn server_name(&self) -> String {
        if let Some(sni) = &self.cfg.sni {
            return sni.clone();
        }
        match &self.cfg.params.tunnel.host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
            Host::Any => "localhost".into(),
        }
    }

    fn tls_for_mode(&self, mode: u8) -> std::result::Result<ClientTls, HandshakeError> {
        let verify = match mode {
            1 => ClientVerify::SelfSigned,
            _ => ClientVerify::WebPki {
                ca: self.cfg.ca.clone(),
            },
        };
        ClientTls::new(&verify, &self.server_name())
            .map_err(|e| HandshakeError::Tls(std::io::Error::other(e.to_string())))
    }

    /// Connect a TCP socket to the server (each resolved address in turn).
    async fn dial_tcp(&self, ctx: &Ctx) -> std::result::Result<TcpStream, HandshakeError> {
        let addrs = ctx
            .targets
            .resolver
            .resolve(&self.cfg.params.tunnel)
            .await
            .map_err(|e| HandshakeError::Io(std::io::Error::other(e.to_string())))?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(ctx.opts.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    tune_tunnel_stream(&tcp);
                    return Ok(tcp);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    ))
                }
            }
        }
        Err(HandshakeError::Io(last.unwrap_or_else(|| {
            std::io::Error::other("server name resolved to no address")
        })))
    }

    /// Open one tunnel connection: a TCP connection (with TLS if `tls` is set, and a
    /// WebSocket when the transport is WebSocket), or a stream on the HTTP/2 carrier (a new
    /// carrier for a `control` connection).
    async fn dial(
        &self,
        ctx: &Ctx,
        tls: Option<&ClientTls>,
        control: bool,
    ) -> std::result::Result<TunnelStream, HandshakeError> {
        match self.carry() {
            Carry::H2 => return self.dial_h2(ctx, tls, control).await,
            Carry::Quic => return self.dial_quic(ctx, tls, control).await,
            Carry::Tcp | Carry::Ws => {}
        }
        let stream = self.dial_layer(ctx, tls).await?;
        if self.carry() != Carry::Ws {
            return Ok(stream);
        }
        self.upgrade_ws(ctx, stream).await
    }

    /// TCP and, with `tls`, TLS: a whole tunnel connection for `type=0`, the layer under the
    /// WebSocket for `type=2`.
    async fn dial_layer(
        &self,
        ctx: &Ctx,
        tls: Option<&ClientTls>,
    ) -> std::result::Result<TunnelStream, HandshakeError> {
        let tcp = self.dial_tcp(ctx).await?;
        Ok(match tls {
            None => TunnelStream::Plain(tcp),
            Some(t) => TunnelStream::ClientTls(Box::new(
                t.connect(tcp).await.map_err(HandshakeError::Tls)?,
            )),
        })
    }

    /// The WebSocket (`type=2`) over a dialed layer; its tasks run on this runtime.
    async fn upgrade_ws(
        &self,
        ctx: &Ctx,
        stream: TunnelStream,
    ) -> std::result::Result<TunnelStream, HandshakeError> {
        let authority = self.cfg.params.tunnel.to_string();
        let tasks = ws::Tasks {
            tracker: &ctx.tracker,
            stop: &ctx.stop,
        };
        ws::connect(stream, &authority, &self.cfg.ws, tasks)
            .await
            .map_err(HandshakeError::WebSocket)
    }

    /// A stream on the HTTP/2 carrier (`type=3`), dialing a new carrier when `fresh` or when
    /// the current one ended.
    async fn dial_h2(
        &self,
        ctx: &Ctx,
        tls: Option<&ClientTls>,
        fresh: bool,
    ) -> std::result::Result<TunnelStream, HandshakeError> {
        let Some(tls) = tls else {
            return Err(HandshakeError::Http2(std::io::Error::other(
                "http2 runs inside tls, but the server announced tls=0",
            )));
        };
        let mut slot = self.carrier.lock().await;
        let current = slot.as_ref().filter(|c| !fresh && c.is_open()).cloned();
        let carrier = match current {
            Some(c) => c,
            None => {
                *slot = None;
                let tcp = self.dial_tcp(ctx).await?;
                let stream = TunnelStream::ClientTls(Box::new(
                    tls.connect_alpn(tcp, ALPN_H2)
                        .await
                        .map_err(HandshakeError::Tls)?,
                ));
                let authority = self.cfg.params.tunnel.to_string();
                let c = H2Client::handshake(stream, &authority, &ctx.tracker, ctx.stop.clone())
                    .await
                    .map_err(HandshakeError::Http2)?;
                tracing::debug!("http2 connection to the server established");
                *slot = Some(c.clone());
                c
            }
        };
        drop(slot);
        carrier.open().await.map_err(HandshakeError::Http2)
    }

    /// A stream on the QUIC carrier (`type=1`), dialing a new carrier when `fresh` or when the
    /// current one ended; the endpoint (one UDP socket) is kept across carriers.
    async fn dial_quic(
        &self,
        ctx: &Ctx,
        tls: Option<&ClientTls>,
        fresh: bool,
    ) -> std::result::Result<TunnelStream, HandshakeError> {
        let Some(tls) = tls else {
            return Err(HandshakeError::Quic(std::io::Error::other(
                "quic runs inside tls, but the server announced tls=0",
            )));
        };
        let mut slot = self.quic_carrier.lock().await;
        let current = slot
            .carrier
            .as_ref()
            .filter(|c| !fresh && c.is_open())
            .cloned();
        let carrier = match current {
            Some(c) => c,
            None => {
                slot.carrier = None;
                let addrs = ctx
                    .targets
                    .resolver
                    .resolve(&self.cfg.params.tunnel)
                    .await
                    .map_err(|e| HandshakeError::Io(std::io::Error::other(e.to_string())))?;
                let mut last = None;
                for addr in addrs {
                    if !slot.endpoint.as_ref().is_some_and(|e| e.fits(addr)) {
                        slot.endpoint =
                            Some(ClientEndpoint::bind(addr).map_err(HandshakeError::Quic)?);
                    }
                    let Some(endpoint) = slot.endpoint.as_ref() else {
                        continue;
                    };
                    let attempt = endpoint.connect(addr, tls, &ctx.tracker, ctx.stop.clone());
                    match tokio::time::timeout(ctx.opts.connect_timeout, attempt).await {
                        Ok(Ok(c)) => {
                            last = None;
                            slot.carrier = Some(c);
                            break;
                        }
                        Ok(Err(e)) => last = Some(e),
                        Err(_) => {
                            last = Some(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "quic connect timed out",
                            ))
                        }
                    }
                }
                if let Some(e) = last {
                    return Err(HandshakeError::Quic(e));
                }
                let Some(c) = slot.carrier.clone() else {
                    return Err(HandshakeError::Quic(std::io::Error::other(
                        "server name resolved to no address",
                    )));
                };
                tracing::debug!("quic connection to the server established");
                c
            }
        };
        drop(slot);
        carrier.open().await.map_err(HandshakeError::Quic)
    }

    async fn attempt_control(
        &self,
        ctx: &Ctx,
        tls: Option<&ClientTls>,
    ) -> std::result::Result<Established, HandshakeError> {
        let fut = async {
            let stream = self.dial(ctx, tls, true).await?;
            handshake::connect(
                stream,
                [0; 16],
                ClientKey::Tunnel(self.cfg.params.key.expose()),
            )
            .await
        };
        let c = tokio::time::timeout(ctx.opts.handshake_timeout, fut)
            .await
            .map_err(|_| HandshakeError::Timeout)?
            .map_err(|e| match e {
                // Over a WebSocket, name the likely cause besides a wrong key: a proxy that
                // terminates TLS between the ends.
                HandshakeError::BadServerProof if self.carry() == Carry::Ws => {
                    HandshakeError::BadServerProofWs
                }
                e => e,
            })?;
        let Some((
            Message::Welcome {
                session,
                flow,
                max,
                reuse,
                reuse_plain,
                ..
            },
            session_key,
        )) = c.welcome
        else {
            return Err(HandshakeError::Closed);
        };
        Ok(Established {
            wire: c.wire,
            session,
            session_key,
            flow,
            max,
            tls: tls.cloned(),
            reuse,
            reuse_plain,
        })
    }

    /// The transport this client's own URL asks for: QUIC for `type=1`, WebSocket for `type=2`
    /// (needed behind a proxy that passes only HTTP), otherwise TCP until the server says
    /// otherwise.
    fn own_carry(cfg: &ClientConfig) -> Carry {
        match cfg.pool_type {
            PoolType::Quic => Carry::Quic,
            PoolType::WebSocket => Carry::Ws,
            PoolType::Tcp | PoolType::Http2 => Carry::Tcp,
        }
    }

    /// The TLS mode this client's own URL implies before the server said anything:
    /// `type=2&wsbind=0` (see [`Inner::tls_ends_at_proxy`]) verifies as for `tls=2`; `type=1`
    /// (QUIC runs inside TLS, and there is no plain attempt to learn the mode from) verifies as
    /// for `tls=2` when `ca=` or `sni=` is set, otherwise accepts any certificate as for `tls=1`
    /// (the handshake, bound to the TLS session, keeps a relay out).
    fn own_tls_mode(&self) -> Option<u8> {
        if self.tls_ends_at_proxy() {
            return Some(2);
        }
        if self.cfg.pool_type == PoolType::Quic {
            let verify = self.cfg.ca.is_some() || self.cfg.sni.is_some();
            return Some(if verify { 2 } else { 1 });
        }
        None
    }

    /// `type=2&wsbind=0`: this client's TLS ends at a proxy, so it speaks TLS from the first
    /// connection, verifies the proxy's certificate as for `tls=2` (web roots plus `ca=`, name
    /// `sni=` or the tunnel host) and keeps doing so whatever the server announces.
    fn tls_ends_at_proxy(&self) -> bool {
        self.cfg.pool_type == PoolType::WebSocket && self.cfg.ws.binding == WsBinding::Off
    }

    fn carry(&self) -> Carry {
        Carry::from_u8(self.carry.load(Relaxed))
    }

    /// Take the transport (and TLS mode) a server's refusal named, for the next attempt.
    /// HTTP/2 and QUIC always run inside TLS: a server naming either without TLS is an error.
    fn learn(
        &self,
        carry: Carry,
        mode: u8,
        tls: &mut Option<ClientTls>,
    ) -> std::result::Result<(), HandshakeError> {
        let name = match carry {
            Carry::Tcp => "tcp",
            Carry::Ws => "websocket",
            Carry::H2 => "http2 over tls",
            Carry::Quic => "quic (udp)",
        };
        tracing::debug!(
            tls = mode,
            "the server's transport is {name}, reconnecting with it"
        );
        if mode == 0 {
            match carry {
                Carry::H2 => {
                    return Err(HandshakeError::Http2(std::io::Error::other(
                        "the server asks for http2 without tls, which type=3 never does",
                    )));
                }
                Carry::Quic => {
                    return Err(HandshakeError::Quic(std::io::Error::other(
                        "the server asks for quic without tls, which type=1 never does",
                    )));
                }
                Carry::Tcp | Carry::Ws => {}
            }
        }
        self.carry.store(carry as u8, Relaxed);
        if mode > 0 {
            let t = self.tls_for_mode(mode)?;
            *crate::sync::lock(&self.tls) = Some(t.clone());
            *tls = Some(t);
        }
        Ok(())
    }

    /// Connect the control session, learning from the server whether it needs TLS.
    async fn connect_control(&self, ctx: &Ctx) -> std::result::Result<Established, HandshakeError> {
        let mut cached = crate::sync::lock(&self.tls).clone();
        if let (None, Some(mode)) = (&cached, self.own_tls_mode()) {
            let t = self.tls_for_mode(mode)?;
            *crate::sync::lock(&self.tls) = Some(t.clone());
            cached = Some(t);
        }
        let mut tls = cached.clone();
        // At most: a plain hello refused (websocket or http2, and tls, learned at once), then
        // a plain websocket or a tls connection without ALPN h2 refused, then the real attempt.
        let mut tries = 3;
        loop {
            tries -= 1;
            let res = self.attempt_control(ctx, tls.as_ref()).await;
            match res {
                // The proxy's TLS is ours; the server wanting its own means the proxy's leg
                // to it is plain.
                Err(HandshakeError::TlsRequired(mode)) if self.tls_ends_at_proxy() => {
                    return Err(HandshakeError::ProxyNotTls(mode));
                }
                Err(HandshakeError::TlsRequired(mode)) if tries > 0 => {
                    tracing::debug!(mode, "server requires tls, reconnecting with tls");
                    let t = self.tls_for_mode(mode)?;
                    *crate::sync::lock(&self.tls) = Some(t.clone());
                    tls = Some(t);
                }
                Err(HandshakeError::WebSocketRequired(mode)) if tries > 0 => {
                    self.learn(Carry::Ws, mode, &mut tls)?;
                }
                Err(HandshakeError::Http2Required(mode)) if tries > 0 => {
                    self.learn(Carry::H2, mode, &mut tls)?;
                }
                Err(HandshakeError::QuicRequired(mode)) if tries > 0 => {
                    self.learn(Carry::Quic, mode, &mut tls)?;
                }
                Err(
                    e @ (HandshakeError::Tls(_)
                    | HandshakeError::Closed
                    | HandshakeError::WebSocket(_)
                    | HandshakeError::Http2(_)
                    | HandshakeError::Quic(_)),
                ) => {
                    // The server may have dropped tls or websocket: try without next time
                    // (the transport and tls of this client's own `type=1`/`type=2` stay).
                    if cached.is_some() {
                        *crate::sync::lock(&self.tls) = None;
                    }
                    self.carry.store(Inner::own_carry(&self.cfg) as u8, Relaxed);
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// Run one session until the control connection is lost; returns why.
    async fn run_session(self: Arc<Self>, est: Established, ctx: &Ctx) -> Result<String> {
        let Established {
            mut wire,
            session,
            session_key,
            flow,
            max,
            tls,
            reuse,
            reuse_plain,
        } = est;
        let token = ctx.stop.child_token();
        let pool = Pool::new(
            self.cfg.min.get() as usize,
            (max as usize).max(1),
            ctx.shared.stats.clone(),
        );
        ctx.shared.set_pool(Some(pool.clone()));
        ctx.shared.set_mode(match flow {
            Flow::Reverse => Mode::Reverse,
            Flow::Forward => Mode::Forward,
        });
        if flow == Flow::Forward {
            let sockets = self.user_sockets(ctx).await?;
            sockets.serve(Upstream::Pool(pool.clone()), ctx, &token);
        }
        let filler = Filler {
            client: self.clone(),
            pool: pool.clone(),
            session,
            session_key,
            flow,
            tls,
            ctx: ctx.clone(),
            token: token.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            urgent_in_flight: Arc::new(AtomicUsize::new(0)),
        };
        ctx.tracker.spawn(filler.run().in_current_span());
        ctx.shared.set_state(TunnelState::Ready);
        let flow_name = match flow {
            Flow::Reverse => "reverse: the server accepts the users",
            Flow::Forward => "forward: this client accepts the users",
        };
        tracing::info!(server = %self.cfg.params.tunnel, flow = %flow_name, "connected to the server");
        // Agree to chunked sessions, so pool connections carry one session after another
        // (`docs/protocol.md`, reusable sessions); a server that did not offer them never
        // hears of it.
        let offers = [
            (reuse, Message::Reuse, Chunks::Narrow),
            (reuse_plain, Message::ReusePlain, Chunks::Wide),
        ];
        let mut lost = None;
        for (offered, agree, chunks) in offers {
            if !offered {
                continue;
            }
            if let Err(e) = wire.send(&agree).await {
                lost = Some(control::ControlEnd::Lost(e.to_string()));
                break;
            }
            pool.set_reuse(chunks);
        }
        let end = match lost {
            Some(end) => end,
            None => control::run(&mut wire, &ctx.shared.stats, &token, &ctx.opts, None).await,
        };
        token.cancel();
        pool.clear();
        let end_kind = match &end {
            control::ControlEnd::Goodbye => EndKind::Goodbye,
            _ => EndKind::Other,
        };
        let reason = match end {
            control::ControlEnd::Cancelled => "stopped".to_string(),
            control::ControlEnd::Goodbye => "server said goodbye".to_string(),
            control::ControlEnd::Lost(why) => why,
        };
        if !ctx.stop.is_cancelled() {
            if matches!(end_kind, EndKind::Goodbye) {
                tracing::info!("the server is shutting down, reconnecting");
            } else {
                tracing::warn!(reason = %reason, "lost the server, reconnecting");
            }
        }
        Ok(reason)
    }

    async fn user_sockets(&self, ctx: &Ctx) -> Result<Arc<UserSockets>> {
        if let Some(s) = crate::sync::lock(&self.users).clone() {
            return Ok(s);
        }
        let Some(ep) = self.cfg.params.targets.first() else {
            return Err(Error::Unsupported(
                "forward flow needs a target address".into(),
            ));
        };
        if self.cfg.params.targets.len() > 1 {
            tracing::warn!("forward flow listens on the first target address only");
        }
        let p = &ctx.params;
        let s = Arc::new(UserSockets::bind(ep, p.tcp, p.udp).await?);
        s.publish(&ctx.shared, false);
        tracing::info!(users = %s.describe(), "forward flow: users connect here");
        *crate::sync::lock(&self.users) = Some(s.clone());
        Ok(s)
    }
}

/// How a session ended, for the log level.
enum EndKind {
    Goodbye,
    Other,
}

/// Keeps the pool of one session at its capacity, dialing replacements as soon as
/// connections are used.
struct Filler {
    client: Arc<Inner>,
    pool: Pool,
    session: SessionId,
    session_key: ProofKey,
    flow: Flow,
    tls: Option<ClientTls>,
    ctx: Ctx,
    token: CancellationToken,
    in_flight: Arc<AtomicUsize>,
    /// Of those, the dials at normal priority (made while the pool was short).
    urgent_in_flight: Arc<AtomicUsize>,
}

impl Filler {
    async fn run(self) {
        let this = Arc::new(self);
        let mut adapt = tokio::time::interval(this.ctx.opts.pool_adapt_interval);
        adapt.tick().await;
        loop {
            // Register interest before checking, so no demand signal is missed.
            let demand = this.pool.demand();
            tokio::pin!(demand);
            loop {
                // A short pool dials at normal priority, and those dials do not wait for
                // low-priority ones in flight (a busy host may starve them for a while).
                let urgent = this.is_urgent();
                let in_flight = if urgent {
                    this.urgent_in_flight.load(Relaxed)
                } else {
                    this.in_flight.load(Relaxed)
                };
                if in_flight >= this.ctx.opts.max_pool_dials || this.pool.deficit() <= in_flight {
                    break;
                }
                this.in_flight.fetch_add(1, Relaxed);
                if urgent {
                    this.urgent_in_flight.fetch_add(1, Relaxed);
                }
                let t = this.clone();
                this.ctx.tracker.spawn(
                    async move {
                        let ok = t.add_one(urgent).await;
                        if !ok {
                            tokio::select! {
                                _ = t.token.cancelled() => {}
                                _ = tokio::time::sleep(t.ctx.opts.pool_dial_retry) => {}
                            }
                        }
                        if urgent {
                            t.urgent_in_flight.fetch_sub(1, Relaxed);
                        }
                        t.in_flight.fetch_sub(1, Relaxed);
                        t.pool.nudge();
                    }
                    .in_current_span(),
                );
            }
            tokio::select! {
                _ = this.token.cancelled() => return,
                _ = &mut demand => {}
                _ = adapt.tick() => this.pool.adapt(),
            }
        }
    }

    /// Refill at normal priority: the pool is short, low-priority refills are off, or the
    /// transport cannot move connections between runtimes (HTTP/2, QUIC: one carrier for
    /// all; a WebSocket moves its TCP and TLS only, see `add_one`).
    fn is_urgent(&self) -> bool {
        let movable = self.client.carry().pool_type().movable() != Movable::Nothing;
        !self.ctx.opts.low_priority_refill || !movable || self.pool.is_short()
    }

    async fn add_one(&self, urgent: bool) -> bool {
        let (client, ctx, tls, session, key) = (
            self.client.clone(),
            self.ctx.clone(),
            self.tls.clone(),
            self.session,
            self.session_key.clone(),
        );
        // A WebSocket's tasks live on this runtime, so only its TCP and TLS move (issue 15).
        let ws_layer_low = !urgent && self.client.carry().pool_type().movable() == Movable::Layer;
        let fut = async move {
            let stream = if ws_layer_low {
                let (c, cx, t) = (client.clone(), ctx.clone(), tls.clone());
                let layer = async move { c.dial_layer(&cx, t.as_ref()).await };
                let (layer, ran) = background::offload(layer.in_current_span())
                    .await
                    .map_err(std::io::Error::other)?;
                let layer = match ran {
                    background::Ran::Elsewhere => layer?.rebind()?,
                    background::Ran::Inline => layer?,
                };
                client.upgrade_ws(&ctx, layer).await?
            } else {
                client.dial(&ctx, tls.as_ref(), false).await?
            };
            handshake::connect(stream, session, ClientKey::Session(&key)).await
        };
        // The timer is made where the future runs (inside `async`): one made here would belong
        // to this runtime and be polled from the maintenance thread, even as this one shuts
        // down (a panic there).
        let limit = self.ctx.opts.handshake_timeout;
        let fut = async move { tokio::time::timeout(limit, fut).await }.in_current_span();
        // The dial and both handshakes run at low priority unless urgent (issue 17): on a busy
        // host they then give way to the sessions they replenish.
        let conn = tokio::select! {
            _ = self.token.cancelled() => return true,
            r = async {
                if urgent || ws_layer_low {
                    Ok((fut.await, background::Ran::Inline))
                } else {
                    background::offload(fut).await
                }
            } => r,
        };
        let (conn, ran) = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "pool connection not made");
                return false;
            }
        };
        match conn {
            Ok(Ok(mut c)) => {
                if ran == background::Ran::Elsewhere {
                    c.wire.stream = match c.wire.stream.rebind() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "pool connection lost moving it here");
                            return false;
                        }
                    };
                }
                if let TunnelStream::ClientTls(tls) = &c.wire.stream {
                    // Pool refills resume the TLS session of an earlier connection (rustls's
                    // in-memory ticket cache, shared by every connection of this client), so
                    // they cost no certificate signature or verification.
                    tracing::trace!(tls = ?tls.get_ref().1.handshake_kind(), "pool connection ready");
                }
                match self.flow {
                    Flow::Forward => self.pool.put(c.wire.into_parts().0),
                    Flow::Reverse => {
                        let parked = self.pool.park();
                        self.ctx.tracker.spawn(
                            serve_pool_conn(c.wire, parked, self.ctx.clone(), self.token.clone())
                                .in_current_span(),
                        );
                    }
                }
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "pool connection failed");
                false
            }
            Err(_) => {
                tracing::debug!("pool connection handshake timed out");
                false
            }
        }
    }
}
