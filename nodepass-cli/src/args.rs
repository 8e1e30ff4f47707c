//! Command-line arguments and where the URL comes from.
//!
//! The URL may be given as the positional argument, read from a file (`--url-file`), or taken
//! from the `NODEPASS_URL` environment variable. The last two keep the tunnel key out of the
//! process arguments, which every local user can read with `ps`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use nodepass_core::config::{MAX_URL_LEN, Role};

/// The environment variable read when no URL is given on the command line.
pub const URL_ENV: &str = "NODEPASS_URL";

/// The command line: a subcommand, or the arguments that run an instance.
///
/// `nodepass URL` (no subcommand) runs the instance; `nodepass keygen`, `nodepass man`, ... run
/// a [`Command`]. To add a subcommand, add a variant to [`Command`] and its arm in
/// [`crate::commands::run`].
#[derive(Debug, Clone, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A subcommand; none runs the instance described by the URL.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Where the URL comes from and whether to only check it.
    #[command(flatten)]
    pub run: Args,
}

/// The subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print a new random key for a tunnel (KEY@) or the master API (NODEPASS_API_KEY): 32
    /// characters, 192 bits, safe in a URL as is.
    Keygen,
    /// Print a shell completion script (e.g. `source <(nodepass completions bash)`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout (e.g. `nodepass man | man -l -`).
    Man,
    /// Copy every instance of a running Go NodePass master into a running nodepass master
    /// (keys from a file, standard input or the environment: `nodepass import --help`).
    #[command(after_help = crate::import::AFTER_HELP)]
    Import(crate::import::ImportArgs),
}

/// Arguments shared by all nodepass executables.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The instance URL (grammar and parameters below). Anyone on this machine can see process
    /// arguments: to keep the key private, use --url-file or NODEPASS_URL instead.
    #[arg(value_name = "URL", conflicts_with = "url_file")]
    pub url: Option<String>,

    /// Read the URL from this file (surrounding whitespace is ignored).
    #[arg(long, value_name = "PATH")]
    pub url_file: Option<PathBuf>,

    /// Validate the URL, print its canonical form (every default filled in, the key masked)
    /// and exit. Never touches the network.
    #[arg(long)]
    pub check: bool,
}

impl Args {
    /// The URL text: the positional argument, else `--url-file`, else `env_url` (the value of
    /// [`URL_ENV`]). Errors are usage errors.
    pub fn url_text(&self, env_url: Option<String>) -> anyhow::Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        if let Some(path) = &self.url_file {
            return read_url_file(path);
        }
        match env_url {
            Some(url) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
            _ => {
                bail!("no URL given: pass it as an argument, with --url-file PATH, or in {URL_ENV}")
            }
        }
    }
}

/// Read a URL file, refusing anything much larger than a URL can be.
fn read_url_file(path: &Path) -> anyhow::Result<String> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open --url-file {}", path.display()))?;
    let mut text = String::new();
    // A little slack over the URL limit for surrounding whitespace and a trailing newline.
    let limit = (MAX_URL_LEN + 1024) as u64;
    file.take(limit + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read --url-file {}", path.display()))?;
    if text.len() as u64 > limit {
        bail!("--url-file {} is larger than {limit} bytes", path.display());
    }
    Ok(text.trim().to_owned())
}

/// For a single-role executable: check the scheme when present, prepend it when absent.
pub fn with_scheme(url: &str, role: Role) -> anyhow::Result<String> {
    match url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case(role.scheme()) => Ok(url.to_owned()),
        // Show the scheme only when it looks like one: it could otherwise be part of a key.
        Some((scheme, _)) if scheme.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            bail!("this executable runs {role} URLs, not {scheme}:// (use nodepass for any role)")
        }
        Some(_) => bail!("this executable runs {role} URLs; the scheme is malformed"),
        None => Ok(format!("{}://{url}", role.scheme())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, file: Option<&Path>) -> Args {
        Args {
            url: url.map(str::to_owned),
            url_file: file.map(Path::to_path_buf),
            check: false,
        }
    }

    #[test]
    fn url_sources_in_order() {
        let env = || Some(" server://:1/a:1 \n".to_owned());
        assert_eq!(
            args(Some("client://x:1/a:1"), None)
                .url_text(env())
                .unwrap(),
            "client://x:1/a:1"
        );
        assert_eq!(args(None, None).url_text(env()).unwrap(), "server://:1/a:1");
        assert!(args(None, None).url_text(None).is_err());
        assert!(args(None, None).url_text(Some("  ".into())).is_err());

        let dir = std::env::temp_dir().join(format!("nodepass-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        std::fs::write(&file, "\n  master://:9090  \n").unwrap();
        assert_eq!(
            args(None, Some(&file)).url_text(env()).unwrap(),
            "master://:9090"
        );
        std::fs::write(&file, "x".repeat(MAX_URL_LEN + 2000)).unwrap();
        assert!(args(None, Some(&file)).url_text(None).is_err());
        assert!(
            args(None, Some(&dir.join("missing")))
                .url_text(env())
                .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scheme_is_optional_but_must_match() {
        assert_eq!(
            with_scheme(":1/a:1", Role::Server).unwrap(),
            "server://:1/a:1"
        );
        assert_eq!(
            with_scheme("k@h:1/a:1", Role::Client).unwrap(),
            "client://k@h:1/a:1"
        );
        assert_eq!(
            with_scheme("SERVER://:1/a:1", Role::Server).unwrap(),
            "SERVER://:1/a:1"
        );
        let err = with_scheme("client://:1/a:1", Role::Server)
            .unwrap_err()
            .to_string();
        assert!(err.contains("client://"), "{err}");
        let err = with_scheme("sec/ret@server://x", Role::Server)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sec"), "{err}");
    }
}
