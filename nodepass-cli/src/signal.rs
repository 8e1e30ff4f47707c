//! SIGINT and SIGTERM cancel the shutdown token; a second signal exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit status when a second signal interrupts a graceful shutdown.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Listen for SIGINT and SIGTERM: the first cancels `shutdown` (a graceful stop), a second one
/// ends the process immediately with [`EXIT_INTERRUPTED`]. Must be called inside a Tokio runtime.
///
/// Returns once the handlers are installed; errors only if they cannot be.
pub fn cancel_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
            // Shut down for another reason: nothing to listen for any more.
            () = shutdown.cancelled() => return,
        };
        tracing::info!("received {name}, shutting down (send it again to stop at once)");
        shutdown.cancel();
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::warn!("second signal, exiting without waiting");
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone()).unwrap();
        // The handler is installed, so this SIGTERM reaches it instead of ending the test run.
        // Only this test sends a signal: a second one would exit the process.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", std::process::id()))
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), shutdown.cancelled())
            .await
            .expect("SIGTERM cancels the token");
    }
}
