//! The one place where a parsed [`Config`] becomes a running instance.

use anyhow::Context;
use nodepass_core::{Config, Tunnel, TunnelConfig, TunnelOptions};
use tokio_util::sync::CancellationToken;

/// Environment variable that turns the zero-copy path off (`0`), e.g. to compare both paths.
pub const ZERO_COPY_ENV: &str = "NODEPASS_ZERO_COPY";
/// Environment variable setting the largest UDP datagram carried (1..=65507).
pub const UDP_MAX_DATAGRAM_ENV: &str = "NODEPASS_UDP_MAX_DATAGRAM";
/// Environment variable that makes pool refills run at normal priority (`0`) instead of on the
/// low-priority maintenance thread ([`TunnelOptions::low_priority_refill`]).
pub const LOW_PRIO_REFILL_ENV: &str = "NODEPASS_LOW_PRIO_REFILL";

/// The tunnel options with [`ZERO_COPY_ENV`], [`UDP_MAX_DATAGRAM_ENV`] and
/// [`LOW_PRIO_REFILL_ENV`] applied (the library reads no environment; this is the one place
/// that does).
pub fn tunnel_options_from_env() -> anyhow::Result<TunnelOptions> {
    let var = |name| std::env::var(name).ok();
    let env = OptionsEnv {
        zero_copy: var(ZERO_COPY_ENV),
        udp_max: var(UDP_MAX_DATAGRAM_ENV),
        low_prio_refill: var(LOW_PRIO_REFILL_ENV),
    };
    tunnel_options(&env).map_err(anyhow::Error::msg)
}

/// The values of the tunnel options' environment variables; `None` = not set.
#[derive(Debug, Default)]
pub struct OptionsEnv {
    /// [`ZERO_COPY_ENV`]: anything but `0` keeps zero copy on.
    pub zero_copy: Option<String>,
    /// [`UDP_MAX_DATAGRAM_ENV`]: a byte count from 1 to 65507.
    pub udp_max: Option<String>,
    /// [`LOW_PRIO_REFILL_ENV`]: anything but `0` keeps low-priority refills on.
    pub low_prio_refill: Option<String>,
}

/// The tunnel options for the environment values `env`.
pub fn tunnel_options(env: &OptionsEnv) -> Result<TunnelOptions, String> {
    let on_unless_zero = |v: &Option<String>| v.as_deref().is_none_or(|v| v.trim() != "0");
    let mut options = TunnelOptions::default();
    options.zero_copy = on_unless_zero(&env.zero_copy);
    options.low_priority_refill = on_unless_zero(&env.low_prio_refill);
    let udp_max = env.udp_max.as_deref();
    if let Some(v) = udp_max {
        let max = TunnelOptions::default().udp_max_datagram;
        options.udp_max_datagram = match v.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(format!(
                    "invalid {UDP_MAX_DATAGRAM_ENV} {v:?}: expected a byte count from 1 to {max}"
                ));
            }
        };
    }
    Ok(options)
}

/// Run the instance `config` describes until `shutdown` is cancelled or it fails.
///
/// Returns `Ok(())` after a clean shutdown. Servers and clients run a [`Tunnel`] in this
/// process; a master serves the REST API ([`nodepass_api::serve`]).
///
/// Not cancel safe: stop it by cancelling `shutdown` and awaiting it, not by dropping it.
pub async fn run_instance(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let role = config.role();
    let options = tunnel_options_from_env()?;
    match config {
        Config::Server(c) => run_tunnel(TunnelConfig::Server(c), options, shutdown).await,
        Config::Client(c) => run_tunnel(TunnelConfig::Client(c), options, shutdown).await,
        Config::Master(c) => {
            let mut master = nodepass_api::MasterOptions::from_env()?;
            master.supervisor.tunnel = options;
            nodepass_api::serve_with(c, master, shutdown)
                .await
                .with_context(|| format!("{role} failed"))
        }
    }
}

async fn run_tunnel(
    config: TunnelConfig,
    options: TunnelOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tunnel = Tunnel::bind_with(config, options)
        .await
        .context("cannot start the tunnel")?;
    tunnel.run(shutdown).await.context("tunnel failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_environment_values() {
        let env = |zero_copy: Option<&str>, udp_max: Option<&str>, low_prio: Option<&str>| {
            tunnel_options(&OptionsEnv {
                zero_copy: zero_copy.map(String::from),
                udp_max: udp_max.map(String::from),
                low_prio_refill: low_prio.map(String::from),
            })
        };
        let o = env(None, None, None).unwrap();
        assert!(o.zero_copy && o.low_priority_refill);
        assert_eq!(o.udp_max_datagram, 65507);
        let o = env(Some(" 0 "), Some("1000"), Some("0")).unwrap();
        assert!(!o.zero_copy && !o.low_priority_refill);
        assert_eq!(o.udp_max_datagram, 1000);
        let o = env(Some("1"), None, Some("1")).unwrap();
        assert!(o.zero_copy && o.low_priority_refill);
        for bad in ["0", "65508", "x", ""] {
            let err = env(None, Some(bad), None).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "invalid NODEPASS_UDP_MAX_DATAGRAM {bad:?}: expected a byte count from 1 to 65507"
                )
            );
        }
    }

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
