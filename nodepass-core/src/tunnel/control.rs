//! The control connection after the handshake: heartbeats both ways, round-trip time, and
//! detection of a dead peer within
//! [`TunnelOptions::heartbeat_dead_after`].

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::TunnelOptions;
use super::wire::{Wire, WireError};
use crate::pool::Pool;
use crate::protocol::{Chunks, Message};
use crate::stats::Stats;
use crate::transport::TunnelStream;

/// How a control session ended.
#[derive(Debug)]
pub(crate) enum ControlEnd {
    /// We were asked to stop (a `Goodbye` was sent).
    Cancelled,
    /// The peer said goodbye.
    Goodbye,
    /// The peer went silent, closed, or broke the protocol.
    Lost(String),
}

/// Run heartbeats on `wire` until `cancel`, a goodbye, or the peer is lost. Pings go out every
/// [`TunnelOptions::heartbeat_interval`]; each pong updates the round-trip time in `stats`.
/// The server passes its `pool`: a client's `Reuse` marks it for chunked sessions.
pub(crate) async fn run(
    wire: &mut Wire<TunnelStream>,
    stats: &Stats,
    cancel: &CancellationToken,
    opts: &TunnelOptions,
    pool: Option<&Pool>,
) -> ControlEnd {
    let (interval, dead_after) = (opts.heartbeat_interval, opts.heartbeat_dead_after);
    let mut seq: u64 = 0;
    let mut sent_at = Instant::now();
    let mut last_rx = Instant::now();
    let mut next_ping = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = tokio::time::timeout(interval, wire.send(&Message::Goodbye)).await;
                return ControlEnd::Cancelled;
            }
            // Checked on its own deadline, not at ping ticks: a dead peer is noticed within
            // `dead_after` of its last message.
            _ = tokio::time::sleep_until(last_rx + dead_after) => {
                return ControlEnd::Lost(format!(
                    "no heartbeat for {} s", dead_after.as_secs()
                ));
            }
            _ = tokio::time::sleep_until(next_ping) => {
                seq += 1;
                sent_at = Instant::now();
                next_ping = sent_at + interval;
                if let Err(e) = wire.send(&Message::Ping { seq }).await {
                    return ControlEnd::Lost(e.to_string());
                }
            }
            msg = wire.recv() => {
                last_rx = Instant::now();
                match msg {
                    Ok(Message::Ping { seq: s }) => {
                        if let Err(e) = wire.send(&Message::Pong { seq: s }).await {
                            return ControlEnd::Lost(e.to_string());
                        }
                    }
                    Ok(Message::Pong { seq: s }) if s == seq => {
                        stats.rtt_us.store(sent_at.elapsed().as_micros() as u64, Relaxed);
                    }
                    Ok(Message::Pong { .. }) => {}
                    Ok(Message::Goodbye) => return ControlEnd::Goodbye,
                    Ok(Message::Reuse) if pool.is_some() => {
                        if let Some(p) = pool {
                            p.set_reuse(Chunks::Narrow);
                        }
                    }
                    Ok(Message::ReusePlain) if pool.is_some() => {
                        if let Some(p) = pool {
                            p.set_reuse(Chunks::Wide);
                        }
                    }
                    Ok(other) => {
                        return ControlEnd::Lost(format!("unexpected {} on the control connection", other.name()));
                    }
                    Err(WireError::Closed) => return ControlEnd::Lost("control connection closed".into()),
                    Err(e) => return ControlEnd::Lost(e.to_string()),
                }
            }
        }
    }
}
