//! A loopback TCP server that serves each connection with a handler, counts what it accepted
//! and stops (with all its connections) when dropped; and the echo server built on it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Buffer of the echo copy.
const ECHO_BUFFER: usize = 64 << 10;

/// A running server. Dropping it stops accepting and ends its connections.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Server {
    /// Bind `127.0.0.1:0` and serve each connection with `handler`.
    ///
    /// Cancel safety: safe; a dropped future has bound nothing.
    pub async fn spawn<F, Fut>(handler: F) -> Server
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a server");
        Self::serve(listener, handler)
    }

    /// Serve each connection of an already bound `listener` with `handler`.
    pub fn serve<F, Fut>(listener: TcpListener, handler: F) -> Server
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().expect("server address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection task.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, peer)) => {
                            count.fetch_add(1, Relaxed);
                            conns.spawn(handler(s, peer));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Server {
            addr,
            accepted,
            task,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Keep serving until the runtime ends (instead of stopping when dropped); returns the
    /// address.
    pub fn detach(self) -> SocketAddr {
        let this = std::mem::ManuallyDrop::new(self);
        this.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes every byte back; after the peer's EOF, shuts down its write half.
///
/// Cancel safety: safe; a dropped future has bound nothing.
pub async fn echo() -> Server {
    Server::spawn(|s, _| async move {
        let (r, mut w) = s.into_split();
        let mut r = BufReader::with_capacity(ECHO_BUFFER, r);
        let _ = tokio::io::copy_buf(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn echo_answers_and_stops_when_dropped() {
        let server = echo().await;
        let addr = server.addr();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"ping");
        assert_eq!(server.accepted(), 1);
        drop(server);
        // The listener closes once the aborted task is dropped by the runtime.
        let refused = crate::eventually(Duration::from_secs(5), "listener closed", || async {
            TcpStream::connect(addr).await.is_err().then_some(())
        });
        refused.await;
    }
}
