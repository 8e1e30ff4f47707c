//! Pool maintenance at low CPU priority (issue 17): the TCP dials, TLS handshakes and keyed
//! handshakes that refill a pool run on one process-wide thread (`nodepass-pool`, nice
//! [`MAINTENANCE_NICE`]), so on a busy host they give way to the user connections they prepare
//! for instead of competing with them for the cores.
//!
//! [`offload`] runs a future there, but the future keeps belonging to the caller's runtime:
//! every poll enters the caller's runtime handle, so its sockets and timers are registered with
//! that runtime's drivers and whatever it spawns runs on that runtime. The connection it yields
//! is used there as it is, without being moved between reactors. The thread only lends the CPU
//! time of the polls, which is where the handshakes' computation happens (key exchange,
//! signatures, the key schedule, the proofs).
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
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

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
    // No I/O or time driver: the futures it polls use their own runtime's drivers.
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
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

/// Run `fut` on the maintenance thread at low priority, inside the caller's runtime (see the
/// module doc); inline when the caller's runtime is not multi-threaded. Cancel safe: dropping
/// the returned future drops `fut` too (on the maintenance thread).
pub(crate) async fn offload<F>(fut: F) -> Result<F::Output, OffloadError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let here = match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => h,
        _ => return Ok(fut.await),
    };
    let Some(exec) = executor() else {
        return Ok(fut.await);
    };
    let task = AbortOnDropHandle::new(exec.spawn(Entered {
        handle: here,
        fut: Box::pin(fut),
    }));
    match task.await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(OffloadError::Stopped),
    }
}

/// Polls `fut` with `handle`'s runtime as the current one.
struct Entered<F> {
    handle: Handle,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for Entered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _current = this.handle.enter();
        this.fut.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The future runs on the low-priority thread, but what it creates and spawns belongs to
    /// the caller's runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_the_maintenance_thread_inside_the_callers_runtime() {
        let caller = Handle::current().id();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let out = offload(async move {
            let name = std::thread::current().name().map(str::to_owned);
            let nice = nice_of_this_thread();
            // A socket and a timer of the caller's runtime, and a task spawned onto it.
            let (conn, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let spawned_on = tokio::spawn(async { Handle::current().id() })
                .await
                .unwrap();
            (name, nice, conn.unwrap(), accepted.unwrap().0, spawned_on)
        })
        .await
        .unwrap();
        let (name, nice, conn, mut accepted, spawned_on) = out;
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        #[cfg(target_os = "linux")]
        assert_eq!(nice, Some(MAINTENANCE_NICE));
        assert_eq!(spawned_on, caller);
        // The connection made there works here.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = conn;
        conn.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        accepted.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"x");
    }

    #[tokio::test]
    async fn runs_inline_under_a_current_thread_runtime() {
        let name = offload(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_ne!(name.as_deref(), Some(THREAD_NAME));
    }

    /// The nice value of the calling thread (field 19 of `/proc/thread-self/stat`).
    fn nice_of_this_thread() -> Option<i32> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        let after_comm = &stat[stat.rfind(')')? + 2..];
        after_comm.split(' ').nth(16)?.parse().ok()
    }
}
