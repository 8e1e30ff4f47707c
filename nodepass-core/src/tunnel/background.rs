//! Pool maintenance at low CPU priority (issue 17): the TCP dials, TLS handshakes and keyed
//! handshakes that refill a pool run on one process-wide thread (`nodepass-pool`, nice
//! [`MAINTENANCE_NICE`]), so on a busy host they give way to the user connections they prepare
//! for instead of competing with them for the cores.
//!
//! [`offload`] runs a future there, on the thread's own runtime (its own I/O and timer
//! drivers: nothing it does takes a lock the caller's runtime needs, so a preempted
//! low-priority thread cannot hold up the workers that serve users). The sockets it yields are
//! registered with that runtime; the caller moves them to its own with
//! [`TunnelStream::rebind`](crate::transport::TunnelStream::rebind) before using them. So only
//! plain TCP and TLS-over-TCP connections are made there: a whole `type=0` connection, and the
//! TCP and TLS under a WebSocket (`type=2`), whose upgrade and tasks then run on the caller's
//! runtime; HTTP/2 and QUIC carriers stay where they are ([`crate::config::PoolType`]'s
//! `movable`).
//!
//! Only under a multi-thread runtime (the `nodepass` executables): a current-thread runtime
//! (most tests) would see no work of its own while a handshake runs on the other thread, and
//! with a paused clock would advance it past the handshake's timeout. There, and when the
//! thread could not be started, the future runs inline, as before.
//!
//! The thread lowers its own priority with `setpriority(2)` on its thread id (on Linux the nice
//! value is per thread); `SCHED_IDLE` would be stricter but has no safe binding here, and the
//! workspace forbids `unsafe`. A pool that runs short does not wait for this thread: callers
//! refill at normal priority then (see [`crate::pool::Pool::is_short`]).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::task::AbortOnDropHandle;

/// Nice value of the maintenance thread: the lowest priority.
pub(crate) const MAINTENANCE_NICE: i32 = 19;

/// Name of the maintenance thread (visible in `top -H`, `/proc/PID/task/*/comm`).
pub(crate) const THREAD_NAME: &str = "nodepass-pool";

/// Why an offloaded future gave no output.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OffloadError {
    /// The maintenance thread dropped the future without finishing it (its runtime stopped).
    #[error("the pool maintenance thread stopped before the task finished")]
    Stopped,
}

static EXECUTOR: OnceLock<Option<Handle>> = OnceLock::new();

/// The maintenance thread's runtime, started on first use; `None` if it could not be started.
fn executor() -> Option<&'static Handle> {
    EXECUTOR.get_or_init(start).as_ref()
}

fn start() -> Option<Handle> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the pool maintenance runtime; refills run at normal priority");
            return None;
        }
    };
    let handle = rt.handle().clone();
    let spawned = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            lower_priority();
            rt.block_on(std::future::pending::<()>());
        });
    match spawned {
        Ok(_) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the pool maintenance thread; refills run at normal priority");
            None
        }
    }
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), MAINTENANCE_NICE) {
            tracing::debug!(error = %e, "cannot lower the pool maintenance thread's priority");
        }
    }
}

/// Where an offloaded future ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    /// On the caller's runtime: its sockets are ready to use.
    Inline,
    /// On the maintenance thread: rebind its sockets before use.
    Elsewhere,
}

/// Run `fut` on the maintenance thread at low priority (see the module doc); inline when the
/// caller's runtime is not multi-threaded or the thread is not available. Says where it ran.
/// Cancel safe: dropping the returned future drops `fut` too (on the maintenance thread).
pub(crate) async fn offload<F>(fut: F) -> Result<(F::Output, Ran), OffloadError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // Only where sockets can be moved between runtimes (`TunnelStream::rebind`).
    let multi = cfg!(unix)
        && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    let exec = if multi { executor() } else { None };
    let Some(exec) = exec else {
        return Ok((fut.await, Ran::Inline));
    };
    let task = AbortOnDropHandle::new(exec.spawn(fut));
    match task.await {
        Ok(out) => Ok((out, Ran::Elsewhere)),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(OffloadError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{BufferedTcp, TunnelStream};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections made on the low-priority thread work on the caller's runtime once rebound,
    /// plain and under the TLS read buffer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_made_on_the_maintenance_thread_work_here_once_rebound() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (made, ran) = offload(async move {
            let name = std::thread::current().name().map(str::to_owned);
            let nice = nice_of_this_thread();
            let a = tokio::net::TcpStream::connect(addr).await.unwrap();
            let b = tokio::net::TcpStream::connect(addr).await.unwrap();
            // A timer of that runtime.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            (name, nice, a, b)
        })
        .await
        .unwrap();
        assert_eq!(ran, Ran::Elsewhere);
        let (name, nice, a, b) = made;
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        #[cfg(target_os = "linux")]
        assert_eq!(nice, Some(MAINTENANCE_NICE));
        let a_addr = a.local_addr().unwrap();
        let mut plain = TunnelStream::Plain(a).rebind().unwrap();
        let mut buffered = BufferedTcp::new(b);
        buffered.rebind().unwrap();
        let (p1, p1_addr) = l.accept().await.unwrap();
        let (p2, _) = l.accept().await.unwrap();
        let (mut plain_peer, mut buffered_peer) = if p1_addr == a_addr {
            (p1, p2)
        } else {
            (p2, p1)
        };
        // Both carry bytes both ways on this runtime (the maintenance runtime's drivers no
        // longer see them).
        let mut got = [0u8; 4];
        plain_peer.write_all(b"ping").await.unwrap();
        plain.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        plain.write_all(b"pong").await.unwrap();
        plain_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        buffered_peer.write_all(b"ping").await.unwrap();
        buffered.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        buffered.write_all(b"pong").await.unwrap();
        buffered_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    #[tokio::test]
    async fn runs_inline_under_a_current_thread_runtime() {
        let (name, ran) = offload(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(ran, Ran::Inline);
        assert_ne!(name.as_deref(), Some(THREAD_NAME));
    }

    /// The nice value of the calling thread (field 19 of `/proc/thread-self/stat`).
    fn nice_of_this_thread() -> Option<i32> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        let after_comm = &stat[stat.rfind(')')? + 2..];
        after_comm.split(' ').nth(16)?.parse().ok()
    }
}
