//! The run loop of one instance: bind the tunnel, spawn it, follow its state into the instance
//! status, fold its counters when it ends, and (with `restart: true`) start it again after a
//! failure with exponential backoff.
//!
//! The loop runs inside the instance's span (so the tunnel's tasks inherit it) and ends when its
//! token is cancelled (stop, delete, URL change, shutdown) or after a failure without the restart
//! policy. A loop being stopped never sets the status: whoever stopped it does.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::core::Core;
use super::state::Managed;
use super::validate::error_chain;
use super::{InstanceStatus, SupervisorError};
use crate::tunnel::{Tunnel, TunnelState};

/// Restart delays: `min`, doubling up to `max`; back to `min` after a run that was stable.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next restart; `stable`: the run that just failed had been running
    /// uninterrupted for the stable period.
    pub(crate) fn next(&mut self, stable: bool) -> Duration {
        if stable {
            self.next = self.min;
        }
        let delay = self.next.min(self.max);
        self.next = delay.saturating_mul(2).min(self.max);
        delay
    }
}

/// How one attempt ended.
enum Outcome {
    /// The token was cancelled.
    Cancelled,
    /// The tunnel could not start or ended on its own.
    Failed { error: String, stable: bool },
}

/// Run instance `m` until `token` is cancelled or it fails without the restart policy. The
/// caller ([`Core::launch`]) has already marked it starting.
pub(crate) async fn run(core: Arc<Core>, m: Arc<Managed>, token: CancellationToken) {
    let mut backoff = Backoff::new(core.options.restart_min, core.options.restart_max);
    let mut first = true;
    loop {
        let outcome = if first {
            attempt(&core, &m, &token).await
        } else {
            match relaunch(&core, &m, &token).await {
                Ok(()) => attempt(&core, &m, &token).await,
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                    stable: false,
                },
            }
        };
        first = false;
        let Outcome::Failed { error, stable } = outcome else {
            return;
        };
        if token.is_cancelled() {
            return;
        }
        m.set_status(
            &core,
            InstanceStatus::Error,
            Some(error.clone()),
            Some(&token),
        );
        if !m.lock().record.restart {
            tracing::error!(%error, "instance failed");
            return;
        }
        let delay = backoff.next(stable);
        tracing::warn!(%error, retry_in = ?delay, "instance failed, restarting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = token.cancelled() => return,
        }
    }
}

/// Before an automatic restart: the listen addresses must still be free of other instances.
async fn relaunch(
    core: &Core,
    m: &Managed,
    token: &CancellationToken,
) -> Result<(), SupervisorError> {
    let _writes = core.writes().await;
    let config = match &m.lock().parsed {
        Ok(p) => p.tunnel.clone(),
        Err(e) => return Err(SupervisorError::Conflict(e.clone())),
    };
    core.check_conflict(&m.id, &config)?;
    m.set_status(core, InstanceStatus::Starting, None, Some(token));
    Ok(())
}

fn ran_stably(since: Option<Instant>, stable_after: Duration) -> bool {
    since.is_some_and(|t| t.elapsed() >= stable_after)
}

/// Bind, spawn and follow one tunnel until it ends.
async fn attempt(core: &Arc<Core>, m: &Arc<Managed>, token: &CancellationToken) -> Outcome {
    let config = {
        let mut st = m.lock();
        st.started = Some(Instant::now());
        match &st.parsed {
            Ok(p) => p.tunnel.clone(),
            Err(e) => {
                return Outcome::Failed {
                    error: e.clone(),
                    stable: false,
                };
            }
        }
    };
    let bound = tokio::select! {
        r = Tunnel::bind_with(config, core.options.tunnel.clone()) => r,
        _ = token.cancelled() => return Outcome::Cancelled,
    };
    let tunnel = match bound {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Failed {
                error: error_chain(&e),
                stable: false,
            };
        }
    };
    let attempt = core.next_attempt();
    // Spawned inside the instance span (this future is instrumented with it): the tunnel's
    // tasks inherit it, which is how their log lines reach the instance.
    let handle = tunnel.spawn(token.child_token());
    m.lock().live.push((attempt, handle.clone()));

    let stable_after = core.options.stable_after;
    let mut state = handle.state();
    let mut ready_since = None;
    let mut was_ready = false;
    let mut stable = false;
    loop {
        let now = state.borrow_and_update().clone();
        match now {
            TunnelState::Starting => {
                m.set_status(core, InstanceStatus::Starting, None, Some(token));
            }
            TunnelState::Ready => {
                ready_since.get_or_insert_with(Instant::now);
                was_ready = true;
                m.set_status(core, InstanceStatus::Running, None, Some(token));
            }
            TunnelState::Reconnecting { error } => {
                stable |= ran_stably(ready_since.take(), stable_after);
                // Degraded but running once it has served since this start.
                let status = if was_ready {
                    InstanceStatus::Running
                } else {
                    InstanceStatus::Starting
                };
                m.set_status(core, status, Some(error.to_string()), Some(token));
            }
            TunnelState::Stopped | TunnelState::Failed { .. } => break,
        }
        if state.changed().await.is_err() {
            break;
        }
    }
    stable |= ran_stably(ready_since, stable_after);
    let ended = handle.wait().await;
    m.fold(core, attempt).await;
    if token.is_cancelled() {
        return Outcome::Cancelled;
    }
    let last = handle.state().borrow().clone();
    let error = match (ended, last) {
        (Err(e), _) => error_chain(&e),
        (Ok(()), TunnelState::Failed { error }) => error.to_string(),
        (Ok(()), _) => "the tunnel stopped on its own".to_owned(),
    };
    Outcome::Failed { error, stable }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_stable_run() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(60));
        let delays: Vec<_> = (0..8).map(|_| b.next(false).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.next(true), s(1));
        assert_eq!(b.next(false), s(2));
        let mut odd = Backoff::new(s(5), s(3));
        assert_eq!(odd.next(false), s(3), "max wins over min");
    }
}
