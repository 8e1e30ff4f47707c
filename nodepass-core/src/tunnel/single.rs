//! Single-end forwarding: a client whose tunnel address is local listens there (TCP and UDP)
//! and dials its targets directly, with no server, under the same limits and stats.

use super::users::{Upstream, UserSockets};
use super::{Ctx, Mode, Shared, TunnelState};
use crate::error::Result;

pub(crate) struct Single {
    sockets: UserSockets,
}

impl Single {
    pub(crate) fn new(sockets: UserSockets, shared: &Shared) -> Self {
        sockets.publish(shared, true);
        shared.set_mode(Mode::SingleEnd);
        Single { sockets }
    }

    pub(crate) async fn run(self, ctx: Ctx) -> Result<()> {
        ctx.shared.set_state(TunnelState::Ready);
        tracing::info!(
            tcp = ?self.sockets.tcp.as_ref().and_then(|l| l.local_addr().ok()),
            udp = ?self.sockets.udp.as_ref().and_then(|s| s.local_addr().ok()),
            "single-end forwarding"
        );
        self.sockets.serve(Upstream::Direct, &ctx, &ctx.stop);
        ctx.stop.cancelled().await;
        Ok(())
    }
}
