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
        let targets: Vec<String> = ctx.params.targets.iter().map(|t| t.to_string()).collect();
        tracing::info!(
            users = %self.sockets.describe(),
            targets = %targets.join(", "),
            "single-end forwarding: users connect to the users address"
        );
        self.sockets.serve(Upstream::Direct, &ctx, &ctx.stop);
        ctx.stop.cancelled().await;
        Ok(())
    }
}
