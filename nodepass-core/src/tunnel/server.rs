//! The server role: accepts the client's control and pool connections on the tunnel address;
//! in reverse flow it also accepts users on its target address, in forward flow it dials its
//! targets for the sessions the client opens.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::background;
use super::guard::{Guard, Permit};
use super::handshake::{self, Accepted, Carried, HandshakeError, ServerTransport};
use super::users::{Upstream, UserSockets, serve_pool_conn};
use super::{Ctx, Mode, Shared, TunnelState, control};
use crate::config::{Host, Movable, PoolType, ServerConfig, ServerMode, TlsMode};
use crate::error::{ConfigErrorExt, Error, Result};
use crate::pool::Pool;
use crate::protocol::auth::ProofKey;
use crate::protocol::{Flow, Message, SessionId};
use crate::transport::TunnelStream;
use crate::transport::http2::{self, H2Server};
use crate::transport::net::{Accepts, bind_tcp_for, bind_udp, tune_accepted};
use crate::transport::quic::{QuicConn, QuicListener};
use crate::transport::tls::ServerTls;
use crate::transport::ws;

/// What a tunnel connection's handshake gave: a connection or an HTTP/2 carrier, a refusal, or
/// the pre-authentication timeout.
type Handshaken = std::result::Result<
    std::result::Result<Result<Accepted, CarrierConn>, HandshakeError>,
    tokio::time::error::Elapsed,
>;

struct Session {
    id: SessionId,
    key: ProofKey,
    token: CancellationToken,
}

pub(crate) struct Server {
    cfg: ServerConfig,
    tunnel: TcpListener,
    users: UserSockets,
    flow: Flow,
    tls: Option<ServerTls>,
    /// `type=1`: the QUIC endpoint on the tunnel port number (UDP).
    quic: Option<QuicListener>,
    /// The current session; never held across `.await`.
    current: Mutex<Option<Arc<Session>>>,
}

impl Server {
    pub(crate) async fn bind(cfg: ServerConfig, shared: &Shared) -> Result<Self> {
        let tls = match &cfg.tls {
            TlsMode::Off => None,
            TlsMode::SelfSigned => {
                let mut names = vec!["nodepass".to_string()];
                match &cfg.params.tunnel.host {
                    Host::Name(n) => names.push(n.clone()),
                    Host::Ip(ip) => names.push(ip.to_string()),
                    Host::Any => {}
                }
                Some(ServerTls::self_signed(&names)?)
            }
            TlsMode::Files { cert, key } => Some(ServerTls::from_files(cert, key)?),
        };
        let tls = match (tls, cfg.pool_type) {
            // HTTP/2 is chosen by ALPN in the TLS handshake.
            (Some(t), PoolType::Http2) => Some(t.with_alpn(&[http2::ALPN_H2])?),
            (Some(t), _) => Some(t),
            // Refused when the URL is parsed; kept as a guard for typed configs.
            (None, PoolType::Http2 | PoolType::Quic) => {
                let code = pool_type_code(cfg.pool_type);
                return Err(Error::invalid(
                    "type",
                    &code.to_string(),
                    &format!(
                        "type={code} runs inside TLS: add tls=1 (self-signed) or tls=2 (crt and key)"
                    ),
                ));
            }
            (None, _) => None,
        };
        let tunnel = bind_tcp_for(&cfg.params.tunnel, Accepts::Tunnel).await?;
        let quic = match (&tls, cfg.pool_type) {
            (Some(t), PoolType::Quic) => Some(bind_quic(&cfg, &tunnel, t).await?),
            _ => None,
        };
        let single_target = cfg.params.targets.len() == 1;
        let (flow, users) = match cfg.mode {
            ServerMode::Reverse => {
                if !single_target {
                    return Err(Error::invalid(
                        "mode",
                        "1",
                        "reverse flow listens on the target address, so exactly one target is allowed",
                    ));
                }
                let p = &cfg.params;
                let users = UserSockets::bind(&p.targets[0], p.tcp, p.udp).await?;
                (Flow::Reverse, users)
            }
            ServerMode::Forward => (Flow::Forward, UserSockets::default()),
            ServerMode::Auto if single_target => {
                let p = &cfg.params;
                match UserSockets::bind(&p.targets[0], p.tcp, p.udp).await {
                    Ok(users) => (Flow::Reverse, users),
                    Err(e) => {
                        tracing::info!(reason = %e, "target address not bindable, using forward flow");
                        (Flow::Forward, UserSockets::default())
                    }
                }
            }
            ServerMode::Auto => (Flow::Forward, UserSockets::default()),
        };
        users.publish(shared, false);
        let tunnel_addr = tunnel.local_addr().ok();
        shared.update_addrs(|a| a.tunnel = tunnel_addr);
        shared.set_mode(match flow {
            Flow::Reverse => Mode::Reverse,
            Flow::Forward => Mode::Forward,
        });
        Ok(Server {
            cfg,
            tunnel,
            users,
            flow,
            tls,
            quic,
            current: Mutex::new(None),
        })
    }

    pub(crate) async fn run(self, ctx: Ctx) -> Result<()> {
        let this = Arc::new(self);
        if let Some(tls) = &this.tls {
            tls.watch(&ctx.tracker, ctx.stop.clone());
        }
        // One pool for the server's lifetime, cleared whenever the session changes.
        let pool = Pool::new(1, this.cfg.max.get() as usize, ctx.shared.stats.clone());
        ctx.shared.set_pool(Some(pool.clone()));
        this.users
            .serve(Upstream::Pool(pool.clone()), &ctx, &ctx.stop);
        let tunnel = this.tunnel.local_addr().map(|a| a.to_string());
        let (flow, why, users) = match (this.flow, this.cfg.mode) {
            (Flow::Reverse, ServerMode::Auto) => (
                "reverse",
                "mode=0 and the target address could be bound here",
                this.users.describe(),
            ),
            (Flow::Reverse, _) => ("reverse", "mode=1", this.users.describe()),
            (Flow::Forward, ServerMode::Auto) => (
                "forward",
                "mode=0 and the target address cannot be bound here (or there are several)",
                "on the client".to_owned(),
            ),
            (Flow::Forward, _) => ("forward", "mode=2", "on the client".to_owned()),
        };
        tracing::info!(
            tunnel = %tunnel.unwrap_or_else(|e| e.to_string()),
            users = %users,
            %flow,
            reason = %why,
            tls = this.cfg.tls.code(),
            transport = match this.cfg.pool_type {
                PoolType::WebSocket => "websocket",
                PoolType::Http2 => "http2",
                PoolType::Quic => "quic (udp)",
                PoolType::Tcp => "tcp",
            },
            "server listening: clients connect to the tunnel address, users to the users address"
        );
        ctx.shared.set_state(TunnelState::Ready);
        let guard = Guard::default();
        let flusher = {
            let (guard, stop, pool) = (guard.clone(), ctx.stop.clone(), pool.clone());
            tokio::spawn(
                async move {
                    let mut tick = tokio::time::interval(super::guard::LOG_INTERVAL);
                    tick.tick().await;
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tick.tick() => {
                                guard.flush();
                                // Close queued pool connections the client gave up.
                                pool.sweep();
                            }
                        }
                    }
                }
                .in_current_span(),
            )
        };
        if this.quic.is_some() {
            let (this, ctx2, pool, guard) =
                (this.clone(), ctx.clone(), pool.clone(), guard.clone());
            ctx.tracker
                .spawn(async move { this.accept_quic(guard, pool, ctx2).await }.in_current_span());
        }
        loop {
            let (tcp, peer) = tokio::select! {
                _ = ctx.stop.cancelled() => break,
                r = this.tunnel.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "tunnel accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = guard.admit(peer.ip()) else {
                // Counted for the aggregated log; dropping `tcp` closes it at once.
                continue;
            };
            let (this, ctx2, pool, guard) =
                (this.clone(), ctx.clone(), pool.clone(), guard.clone());
            ctx.tracker.spawn(
                async move {
                    this.handle_tunnel_conn(tcp, peer, (permit, guard), pool, ctx2)
                        .await;
                }
                .instrument(tracing::debug_span!("tunnel", %peer)),
            );
        }
        if let Some(s) = crate::sync::lock(&this.current).take() {
            s.token.cancel();
        }
        pool.clear();
        if let Some(q) = &this.quic {
            // Tell the clients at once, and free the UDP port for a restart.
            q.close(QUIC_CLOSE_GRACE).await;
        }
        flusher.abort();
        guard.flush();
        Ok(())
    }

    /// `type=1`: accept QUIC connections until the tunnel stops; each is admitted like a TCP
    /// connection, then served as a carrier of tunnel connections.
    async fn accept_quic(self: Arc<Self>, guard: Guard, pool: Pool, ctx: Ctx) {
        let Some(listener) = &self.quic else {
            return;
        };
        loop {
            let incoming = tokio::select! {
                _ = ctx.stop.cancelled() => return,
                i = listener.accept() => match i {
                    Some(i) => i,
                    None => return,
                },
            };
            let peer = incoming.remote_address();
            let Ok(permit) = guard.admit(peer.ip()) else {
                incoming.refuse();
                continue;
            };
            let (this, ctx2, pool, guard) =
                (self.clone(), ctx.clone(), pool.clone(), guard.clone());
            ctx.tracker.spawn(
                async move {
                    let Some(listener) = &this.quic else {
                        return;
                    };
                    let conn = tokio::time::timeout(
                        ctx2.opts.preauth_timeout,
                        listener.handshake(incoming),
                    )
                    .await;
                    drop(permit);
                    match conn {
                        Err(_) => guard.refused(peer.ip(), "quic handshake timed out", true),
                        Ok(Err(e)) => guard.refused(peer.ip(), &e.to_string(), true),
                        Ok(Ok(conn)) => {
                            let carrier = CarrierConn::Quic(conn);
                            this.clone()
                                .serve_carrier(carrier, peer, guard, pool, ctx2)
                                .await
                        }
                    }
                }
                .instrument(tracing::debug_span!("quic", %peer)),
            );
        }
    }

    fn session_key(&self, id: &SessionId) -> Option<ProofKey> {
        let cur = crate::sync::lock(&self.current);
        cur.as_ref().filter(|s| &s.id == id).map(|s| s.key.clone())
    }

    fn session(&self, id: &SessionId) -> Option<Arc<Session>> {
        let cur = crate::sync::lock(&self.current);
        cur.as_ref().filter(|s| &s.id == id).cloned()
    }

    fn transport<'a>(&'a self, ctx: &'a Ctx) -> ServerTransport<'a> {
        match self.cfg.pool_type {
            PoolType::WebSocket => ServerTransport::Ws(
                &self.cfg.ws,
                ws::Tasks {
                    tracker: &ctx.tracker,
                    stop: &ctx.stop,
                },
            ),
            PoolType::Http2 => ServerTransport::H2 {
                max_streams: max_streams(&self.cfg),
            },
            PoolType::Quic => ServerTransport::Quic,
            PoolType::Tcp => ServerTransport::Tcp,
        }
    }

    async fn handle_tunnel_conn(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        (permit, guard): (Permit, Guard),
        pool: Pool,
        ctx: Ctx,
    ) {
        tune_accepted(&tcp, Accepts::Tunnel);
        // TLS and the keyed handshake at low priority unless the pool runs short (issue 17):
        // refills and strangers' attempts give way to user connections on a busy host. TCP and
        // TLS connections move between runtimes; of a WebSocket only the TLS below it does (its
        // tasks live on this runtime), and HTTP/2 and QUIC carriers stay here.
        let low = ctx.opts.low_priority_refill && !pool.is_short();
        let accepted = match self.cfg.pool_type.movable() {
            Movable::Whole if low => {
                background::offload(self.clone().handshake(tcp, ctx.clone())).await
            }
            Movable::Layer if low => self.clone().ws_handshake(tcp, ctx.clone()).await,
            _ => Ok((
                self.clone().handshake(tcp, ctx.clone()).await,
                background::Ran::Inline,
            )),
        };
        drop(permit);
        let (accepted, ran) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "tunnel connection dropped");
                return;
            }
        };
        let accepted = match accepted {
            Ok(Ok(Ok(a))) if ran == background::Ran::Elsewhere => match a.rebind() {
                Ok(a) => Ok(Ok(Ok(a))),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "tunnel connection lost moving it here");
                    return;
                }
            },
            other => other,
        };
        let accepted = match accepted {
            Err(_) => {
                guard.refused(peer.ip(), "tunnel handshake timed out", true);
                return;
            }
            Ok(Err(e)) => {
                log_refusal(&guard, peer, &e, self.cfg.pool_type);
                return;
            }
            Ok(Ok(Ok(a))) => a,
            Ok(Ok(Err(carrier))) => {
                return self.serve_carrier(carrier, peer, guard, pool, ctx).await;
            }
        };
        self.serve_accepted(accepted, peer, pool, ctx).await
    }

    /// The whole handshake of a new tunnel connection (TLS, transport layer, keyed handshake),
    /// bounded by the pre-authentication timeout.
    fn handshake(self: Arc<Self>, tcp: TcpStream, ctx: Ctx) -> impl Future<Output = Handshaken> {
        let limit = ctx.opts.preauth_timeout;
        let accept = async move {
            let carried = handshake::accept_transport(
                tcp,
                self.tls.as_ref(),
                self.cfg.tls.code(),
                self.transport(&ctx),
            )
            .await?;
            self.carried(carried).await
        };
        // The timer is made where the future runs: on the maintenance thread when offloaded
        // (one made here would fire into this runtime from there, even as it shuts down).
        async move { tokio::time::timeout(limit, accept).await }.in_current_span()
    }

    /// [`Self::handshake`] for a WebSocket server at low priority: the TLS below the
    /// WebSocket on the maintenance thread, the rest here, within one pre-authentication
    /// timeout.
    async fn ws_handshake(
        self: Arc<Self>,
        tcp: TcpStream,
        ctx: Ctx,
    ) -> Result<(Handshaken, background::Ran), background::OffloadError> {
        let deadline = tokio::time::Instant::now() + ctx.opts.preauth_timeout;
        let code = self.cfg.tls.code();
        let this = self.clone();
        // The timer is made where the future runs (see `handshake`).
        let layer = async move {
            let layer = handshake::accept_layer(tcp, this.tls.as_ref(), code, PoolType::WebSocket);
            tokio::time::timeout_at(deadline, layer).await
        };
        let (layer, ran) = match background::offload(layer.in_current_span()).await? {
            (Err(elapsed), _) => return Ok((Err(elapsed), background::Ran::Inline)),
            (Ok(layer), ran) => (layer, ran),
        };
        let rest = tokio::time::timeout_at(deadline, async move {
            let stream = match ran {
                background::Ran::Elsewhere => layer?.rebind()?,
                background::Ran::Inline => layer?,
            };
            let transport = self.transport(&ctx);
            let carried =
                handshake::accept_carrier(stream, self.tls.is_some(), code, transport).await?;
            self.carried(carried).await
        });
        Ok((rest.in_current_span().await, background::Ran::Inline))
    }

    /// The keyed handshake on what the transport layer carried.
    async fn carried(
        &self,
        carried: Carried,
    ) -> Result<Result<Accepted, CarrierConn>, HandshakeError> {
        match carried {
            Carried::One(stream) => self.accept_stream(stream).await.map(Ok),
            Carried::H2(carrier) => Ok(Err(CarrierConn::H2(carrier))),
        }
    }

    async fn accept_stream(&self, stream: TunnelStream) -> Result<Accepted, HandshakeError> {
        handshake::accept_stream(stream, self.cfg.params.key.expose(), |id| {
            self.session_key(id)
        })
        .await
    }

    /// An HTTP/2 (`type=3`) or QUIC (`type=1`) carrier: every stream the client opens is one
    /// tunnel connection, admitted and authenticated like a TCP connection of its own. A
    /// carrier on which no stream authenticated within the pre-authentication timeout is
    /// closed.
    async fn serve_carrier(
        self: Arc<Self>,
        mut carrier: CarrierConn,
        peer: SocketAddr,
        guard: Guard,
        pool: Pool,
        ctx: Ctx,
    ) {
        let authed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deadline = tokio::time::sleep(ctx.opts.preauth_timeout);
        tokio::pin!(deadline);
        loop {
            let stream = tokio::select! {
                _ = ctx.stop.cancelled() => break,
                _ = &mut deadline, if !authed.load(std::sync::atomic::Ordering::Relaxed) => {
                    guard.refused(peer.ip(), carrier.close_unauthenticated(), true);
                    break;
                }
                s = carrier.accept() => match s {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "carrier ended");
                        break;
                    }
                    Some(Ok(s)) => s,
                },
            };
            let Ok(permit) = guard.admit(peer.ip()) else {
                // Dropping the stream resets it.
                continue;
            };
            let (this, ctx2, pool, guard, authed) = (
                self.clone(),
                ctx.clone(),
                pool.clone(),
                guard.clone(),
                authed.clone(),
            );
            ctx.tracker.spawn(
                async move {
                    let accepted =
                        tokio::time::timeout(ctx2.opts.preauth_timeout, this.accept_stream(stream))
                            .await;
                    drop(permit);
                    match accepted {
                        Err(_) => guard.refused(peer.ip(), "tunnel handshake timed out", true),
                        Ok(Err(e)) => log_refusal(&guard, peer, &e, this.cfg.pool_type),
                        Ok(Ok(a)) => {
                            authed.store(true, std::sync::atomic::Ordering::Relaxed);
                            this.serve_accepted(a, peer, pool, ctx2).await
                        }
                    }
                }
                .in_current_span(),
            );
        }
    }

    async fn serve_accepted(&self, accepted: Accepted, peer: SocketAddr, pool: Pool, ctx: Ctx) {
        match accepted {
            Accepted::Control { wire, session_key } => {
                self.run_session(wire, session_key, peer, pool, ctx).await
            }
            Accepted::Pool { wire, session } => {
                let Some(s) = self.session(&session) else {
                    return;
                };
                if pool.idle() >= self.cfg.max.get() as usize {
                    tracing::debug!(%peer, "pool is at max, extra pool connection closed");
                    return;
                }
                match self.flow {
                    Flow::Reverse => pool.put(wire.into_parts().0),
                    Flow::Forward => {
                        let parked = pool.park();
                        serve_pool_conn(wire, parked, ctx, s.token.clone()).await
                    }
                }
            }
        }
    }

    async fn run_session(
        &self,
        mut wire: super::wire::Wire<crate::transport::TunnelStream>,
        key: ProofKey,
        peer: SocketAddr,
        pool: Pool,
        ctx: Ctx,
    ) {
        let mut id = [0u8; 16];
        SystemRandom::new()
            .fill(&mut id)
            .expect("system random source failed");
        let token = ctx.stop.child_token();
        let session = Arc::new(Session {
            id,
            key,
            token: token.clone(),
        });
        let old = crate::sync::lock(&self.current).replace(session);
        if let Some(old) = old {
            tracing::info!(%peer, "a client authenticated, replacing the previous session");
            old.token.cancel();
            pool.clear();
        }
        let welcome = Message::Welcome {
            session: id,
            flow: self.flow,
            max: self.cfg.max.get(),
            heartbeat_ms: ctx.opts.heartbeat_interval.as_millis() as u32,
            tcp: self.cfg.params.tcp,
            udp: self.cfg.params.udp,
            // This build can carry chunked sessions; they start once the client agrees.
            reuse: true,
            reuse_plain: true,
        };
        if let Err(e) = wire.send(&welcome).await {
            tracing::debug!(%peer, error = %e, "client left before the welcome");
        } else {
            tracing::info!(%peer, "client connected");
            let end =
                control::run(&mut wire, &ctx.shared.stats, &token, &ctx.opts, Some(&pool)).await;
            match end {
                control::ControlEnd::Cancelled => {}
                control::ControlEnd::Goodbye => tracing::info!(%peer, "client said goodbye"),
                control::ControlEnd::Lost(why) => {
                    tracing::warn!(%peer, reason = %why, "client lost")
                }
            }
        }
        let mut cur = crate::sync::lock(&self.current);
        if cur.as_ref().is_some_and(|s| s.id == id) {
            *cur = None;
            pool.clear();
        }
        token.cancel();
    }
}

/// How long a stopping `type=1` server waits for its QUIC connections to be closed.
const QUIC_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How often, and how far apart, binding the QUIC endpoint's UDP port is retried while busy.
const QUIC_BIND_TRIES: u32 = 40;
const QUIC_BIND_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// Streams a client may have open at once on one carrier (`type=1`, `type=3`): idle pool
/// connections, sessions in use, and some in handshake or closing.
fn max_streams(cfg: &ServerConfig) -> u32 {
    let slots = cfg.params.slot.map_or(65536, |s| s.get());
    cfg.max.get().saturating_add(slots).saturating_add(64)
}

/// Bind the QUIC endpoint on the UDP port of the same number as the tunnel's TCP listener.
async fn bind_quic(cfg: &ServerConfig, tcp: &TcpListener, tls: &ServerTls) -> Result<QuicListener> {
    let mut ep = cfg.params.tunnel.clone();
    ep.port = tcp
        .local_addr()
        .map_err(|source| Error::Bind {
            addr: cfg.params.tunnel.to_string(),
            source,
        })?
        .port();
    // A server of this tunnel stopped a moment ago may still hold the UDP port while quinn's
    // endpoint task winds down (its connections drain for a few round trips): retry briefly.
    let mut tries = 0;
    let udp = loop {
        match bind_udp(&ep).await {
            Err(Error::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && tries < QUIC_BIND_TRIES =>
            {
                tries += 1;
                tokio::time::sleep(QUIC_BIND_RETRY).await;
            }
            r => break r?,
        }
    };
    if tries > 0 {
        tracing::debug!(tries, "udp port of the quic endpoint was busy for a moment");
    }
    let udp = udp.into_std().map_err(|source| Error::Bind {
        addr: ep.to_string(),
        source,
    })?;
    QuicListener::new(udp, tls, max_streams(cfg))
}

/// A connection that carries many tunnel connections, one stream each.
enum CarrierConn {
    H2(Box<H2Server>),
    Quic(QuicConn),
}

impl CarrierConn {
    /// The next stream, or `None` when the carrier ended. Cancel safe.
    async fn accept(&mut self) -> Option<std::io::Result<TunnelStream>> {
        match self {
            CarrierConn::H2(c) => c.accept().await,
            CarrierConn::Quic(c) => c.accept().await,
        }
    }

    /// Close a carrier on which nothing authenticated in time; what to log.
    fn close_unauthenticated(&self) -> &'static str {
        match self {
            // Dropping the carrier closes the connection.
            CarrierConn::H2(_) => "no authenticated http2 stream in time",
            CarrierConn::Quic(c) => {
                c.close_unauthenticated();
                "no authenticated quic stream in time"
            }
        }
    }
}

fn pool_type_code(t: PoolType) -> u8 {
    match t {
        PoolType::Tcp => 0,
        PoolType::Quic => 1,
        PoolType::WebSocket => 2,
        PoolType::Http2 => 3,
    }
}

/// Ordinary endings are logged at debug; the rest go to the guard (aggregated log, back-off).
/// `pool_type` names the likely cause of a rejected proof on a WebSocket server.
fn log_refusal(guard: &Guard, peer: SocketAddr, e: &HandshakeError, pool_type: PoolType) {
    match e {
        HandshakeError::Closed
        | HandshakeError::TlsRequired(_)
        | HandshakeError::WebSocketRequired(_)
        | HandshakeError::Http2Required(_)
        | HandshakeError::QuicRequired(_)
        | HandshakeError::StaleSession => {
            tracing::debug!(%peer, reason = %e, "tunnel connection closed during handshake")
        }
        // A peer that hangs up mid-TLS (a client shutting down, a port scanner) is ordinary.
        HandshakeError::Tls(io) | HandshakeError::Io(io)
            if crate::relay::is_peer_disconnect(io) =>
        {
            tracing::debug!(%peer, reason = %e, "tunnel connection closed during handshake")
        }
        // The client checked this server's proof and refused it: seen from the server, the
        // client holds a different key.
        HandshakeError::Refused {
            code: crate::protocol::RefuseCode::BadKey,
            ..
        } if pool_type == PoolType::WebSocket => guard.refused(
            peer.ip(),
            "the client rejected this server's proof: a different key, or a proxy terminates \
             the websocket's tls (then add wsbind=0 to each end whose tls ends at the proxy)",
            true,
        ),
        HandshakeError::Refused {
            code: crate::protocol::RefuseCode::BadKey,
            ..
        } => guard.refused(
            peer.ip(),
            "the client has a different key (it rejected this server's proof)",
            true,
        ),
        _ => guard.refused(peer.ip(), &e.to_string(), true),
    }
}
