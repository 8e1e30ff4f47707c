//! Single-end forwarding: a client whose tunnel address is local listens there and dials its
//! targets directly, with no server, under the same limits and stats.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::users::{Upstream, accept_loop};
use super::{Ctx, Mode, Shared, TunnelState};
use crate::config::ClientConfig;
use crate::error::Result;

pub(crate) struct Single {
    listener: Option<Arc<TcpListener>>,
}

impl Single {
    pub(crate) fn new(
        _cfg: ClientConfig,
        listener: Option<TcpListener>,
        shared: &Shared,
    ) -> Result<Self> {
        let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        shared.update_addrs(|a| a.tunnel = addr);
        shared.set_mode(Mode::SingleEnd);
        Ok(Single {
            listener: listener.map(Arc::new),
        })
    }

    pub(crate) async fn run(self, ctx: Ctx) -> Result<()> {
        ctx.shared.set_state(TunnelState::Ready);
        tracing::info!(listen = ?self.listener.as_ref().and_then(|l| l.local_addr().ok()), "single-end forwarding");
        if let Some(l) = self.listener {
            accept_loop(l, Upstream::Direct, ctx.clone(), ctx.stop.clone()).await;
        } else {
            ctx.stop.cancelled().await;
        }
        Ok(())
    }
}
