//! `nodepass import --from URL`: move every instance of a running Go NodePass master into a
//! running master of ours (which reads the Go master and recreates the instances; see
//! `POST /v1/import` in docs/api.md). Prints what was imported and skipped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::app::{EXIT_FAILURE, EXIT_USAGE};

/// The Go master's key, when neither `--key` nor `--key-file` is given.
pub const IMPORT_KEY_ENV: &str = "NODEPASS_IMPORT_KEY";

/// The reference text after `nodepass import --help`.
pub const AFTER_HELP: &str = "\
Process arguments are visible to every local user (ps): prefer --key-file or the environment
for keys.

Environment:
  NODEPASS_IMPORT_KEY  the Go master's API key (instead of --key or --key-file)
  NODEPASS_API_KEY     our master's API key (instead of --to-key-file)

Exit status: 0 when every instance was imported, 1 when some were skipped or the import
failed, 64 for a usage error.";

/// The arguments of `nodepass import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The Go master's API base URL, e.g. http://127.0.0.1:10101/api (http:// only).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The Go master's API key. Visible to local users through ps: prefer --key-file or
    /// NODEPASS_IMPORT_KEY.
    #[arg(long, value_name = "KEY", conflicts_with = "key_file")]
    pub key: Option<String>,
    /// Read the Go master's API key from this file (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Our master's API base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9090/api")]
    pub to: String,
    /// Read our master's API key from this file (`-` for standard input; else
    /// NODEPASS_API_KEY).
    #[arg(long, value_name = "PATH")]
    pub to_key_file: Option<PathBuf>,
}

/// Run `nodepass import` with `args` (`name` is the executable's, for messages).
pub(crate) fn run(name: &str, args: &ImportArgs) -> ExitCode {
    if args.key_file.as_deref().is_some_and(is_stdin)
        && args.to_key_file.as_deref().is_some_and(is_stdin)
    {
        eprintln!("{name} import: --key-file and --to-key-file cannot both read standard input");
        return ExitCode::from(EXIT_USAGE);
    }
    let keys = secret(
        args.key.clone(),
        args.key_file.as_ref(),
        IMPORT_KEY_ENV,
        "--key",
    )
    .and_then(|from| {
        let to = secret(
            None,
            args.to_key_file.as_ref(),
            "NODEPASS_API_KEY",
            "--to-key-file",
        )?;
        Ok((from, to))
    });
    let (from_key, to_key) = match keys {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{name} import: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name} import: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(nodepass_api::import_remote(
        &args.to, &to_key, &args.from, &from_key,
    ));
    match result {
        Ok(report) => {
            for i in &report.imported {
                println!("imported {} as {} {}", i.source, i.id, i.alias);
            }
            for s in &report.skipped {
                println!("skipped {}: {}", s.source, s.reason);
            }
            println!(
                "{} imported, {} skipped",
                report.imported.len(),
                report.skipped.len()
            );
            if report.skipped.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => {
            eprintln!("{name} import: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// More than any key is long: a key file is read up to this many bytes.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// `-`: standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// A key from the argument, else the file, else the environment variable.
fn secret(
    arg: Option<String>,
    file: Option<&PathBuf>,
    env: &str,
    flag: &str,
) -> anyhow::Result<String> {
    let key = match (arg, file) {
        (Some(k), _) => k,
        (None, Some(path)) if is_stdin(path) => {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_KEY_FILE_LEN)
                .read_to_string(&mut text)
                .context("cannot read the key from standard input")?;
            text.trim().to_string()
        }
        (None, Some(path)) => {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_KEY_FILE_LEN).read_to_string(&mut text))
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            text.trim().to_string()
        }
        (None, None) => std::env::var(env).unwrap_or_default().trim().to_string(),
    };
    if key.is_empty() {
        bail!("no key: give {flag} (or its file) or set {env}");
    }
    Ok(key)
}
