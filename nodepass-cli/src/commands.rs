//! The subcommands: `keygen`, `completions SHELL`, `man`. Each writes to stdout and returns.
//! (`import` talks to two masters and has its own exit statuses: see `crate::import`.)

use std::io::Write;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::args::Command;

/// Random bytes in a generated key: 192 bits, 32 characters of base64url.
pub const KEY_BYTES: usize = 24;

/// Run `command` for the executable whose clap definition is `cli`.
pub fn run(command: &Command, cli: clap::Command) -> anyhow::Result<()> {
    let mut text = Vec::new();
    match command {
        Command::Keygen => writeln!(text, "{}", generate_key()?)?,
        Command::Completions { shell } => {
            let mut cli = cli;
            let name = cli.get_name().to_owned();
            clap_complete::generate(*shell, &mut cli, name, &mut text);
        }
        Command::Man => clap_mangen::Man::new(cli)
            .render(&mut text)
            .context("cannot render the manual page")?,
        Command::Import(_) => anyhow::bail!("import is run by app::main, not here"),
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(&text).and_then(|()| out.flush()) {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// A new tunnel key from the system's secure random source, in base64url: its characters
/// (`A-Z a-z 0-9 - _`) need no percent-encoding in a URL.
pub fn generate_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_url_safe_and_differ() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        let url = format!("server://{a}@:10101/127.0.0.1:8080");
        let config = nodepass_core::Config::parse(&url).unwrap();
        assert_eq!(config.tunnel_params().unwrap().key.expose(), a);
    }
}
