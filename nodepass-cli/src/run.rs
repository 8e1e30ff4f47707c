//! The one place where a parsed [`Config`] becomes a running instance.

use anyhow::Context;
use nodepass_core::{Config, Tunnel, TunnelConfig};
use tokio_util::sync::CancellationToken;

/// Run the instance `config` describes until `shutdown` is cancelled or it fails.
///
/// Returns `Ok(())` after a clean shutdown. Servers and clients run a [`Tunnel`] in this
/// process; a master serves the REST API ([`nodepass_api::serve`]).
///
/// Not cancel safe: stop it by cancelling `shutdown` and awaiting it, not by dropping it.
pub async fn run_instance(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let role = config.role();
    match config {
        Config::Server(c) => run_tunnel(TunnelConfig::Server(c), shutdown).await,
        Config::Client(c) => run_tunnel(TunnelConfig::Client(c), shutdown).await,
        Config::Master(c) => nodepass_api::serve(c, shutdown)
            .await
            .with_context(|| format!("{role} failed")),
    }
}

async fn run_tunnel(config: TunnelConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let tunnel = Tunnel::bind(config)
        .await
        .context("cannot start the tunnel")?;
    tunnel.run(shutdown).await.context("tunnel failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tunnel_runs_until_shutdown() {
        let config = Config::parse("client://127.0.0.1:0/127.0.0.1:1?mode=1").unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_instance(config, stop.clone()));
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("stops within the grace period")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_bind_failure_is_an_error() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let config =
            Config::parse(&format!("client://127.0.0.1:{port}/127.0.0.1:1?mode=1")).unwrap();
        let err = run_instance(config, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("127.0.0.1:{port}")),
            "{err:#}"
        );
    }
}
