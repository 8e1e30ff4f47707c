//! The one place where a parsed [`Config`] becomes a running instance.

use anyhow::bail;
use nodepass_core::Config;
use tokio_util::sync::CancellationToken;

/// Run the instance `config` describes until `shutdown` is cancelled or it fails.
///
/// Returns `Ok(())` after a clean shutdown. This is the single place roles are dispatched; no
/// role is wired in yet, so for now every role returns an error saying so.
///
/// Not cancel safe: stop it by cancelling `shutdown` and awaiting it, not by dropping it.
pub async fn run_instance(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let role = config.role();
    match config {
        Config::Server(_) | Config::Client(_) | Config::Master(_) => {
            drop(shutdown);
            bail!("{role} mode is not available yet")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roles_say_they_are_not_available_yet() {
        for (url, role) in [
            ("server://:0/127.0.0.1:1", "server"),
            ("client://127.0.0.1:0/127.0.0.1:1", "client"),
            ("master://127.0.0.1:0", "master"),
        ] {
            let config = Config::parse(url).unwrap();
            let err = run_instance(config, CancellationToken::new())
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), format!("{role} mode is not available yet"));
        }
    }
}
