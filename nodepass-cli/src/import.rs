//! `nodepass import --from URL`: move every instance of a running Go NodePass master into a
//! running master of ours (which reads the Go master and recreates the instances; see
//! `POST /v1/import` in docs/api.md). Prints what was imported and skipped.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use crate::app::{EXIT_FAILURE, EXIT_USAGE};

/// The Go master's key, when neither `--key` nor `--key-file` is given.
pub const IMPORT_KEY_ENV: &str = "NODEPASS_IMPORT_KEY";

const AFTER_HELP: &str = "\
Process arguments are visible to every local user (ps): prefer --key-file or the environment
for keys.

Environment:
  NODEPASS_IMPORT_KEY  the Go master's API key (instead of --key or --key-file)
  NODEPASS_API_KEY     our master's API key (instead of --to-key-file)

Exit status: 0 when every instance was imported, 1 when some were skipped or the import
failed, 64 for a usage error.";

/// `nodepass import`.
#[derive(Debug, Parser)]
#[command(
    name = "nodepass import",
    about = "Copy every instance of a running Go NodePass master into a running nodepass master",
    after_help = AFTER_HELP
)]
struct ImportArgs {
    /// The Go master's API base URL, e.g. http://127.0.0.1:10101/api (http:// only).
    #[arg(long, value_name = "URL")]
    from: String,
    /// The Go master's API key. Visible to local users through ps: prefer --key-file or
    /// NODEPASS_IMPORT_KEY.
    #[arg(long, value_name = "KEY", conflicts_with = "key_file")]
    key: Option<String>,
    /// Read the Go master's API key from this file.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Our master's API base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9090/api")]
    to: String,
    /// Read our master's API key from this file (else NODEPASS_API_KEY).
    #[arg(long, value_name = "PATH")]
    to_key_file: Option<PathBuf>,
}

/// Run `nodepass import ARGS...` (`args` starts with the program name).
pub(crate) fn main(name: &str, args: Vec<String>) -> ExitCode {
    let args = match ImportArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
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

/// A key from the argument, else the file, else the environment variable.
fn secret(
    arg: Option<String>,
    file: Option<&PathBuf>,
    env: &str,
    flag: &str,
) -> anyhow::Result<String> {
    let key = match (arg, file) {
        (Some(k), _) => k,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => std::env::var(env).unwrap_or_default().trim().to_string(),
    };
    if key.is_empty() {
        bail!("no key: give {flag} (or its file) or set {env}");
    }
    Ok(key)
}
