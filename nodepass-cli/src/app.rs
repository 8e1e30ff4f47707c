//! The shared `main` of the executables: arguments, URL, `--check`, logging, run, exit code.

use std::process::ExitCode;

use anyhow::Context;
use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};
use nodepass_core::Config;
use nodepass_core::config::Role;
use tokio_util::sync::CancellationToken;

use crate::args::{self, Args, Cli, Command};
use crate::{commands, help, logging, run, signal, usage};

/// Exit status for usage and configuration errors (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit status for runtime failures.
pub const EXIT_FAILURE: u8 = 1;

/// What distinguishes one executable from another.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// The executable name shown in `--help`.
    pub name: &'static str,
    /// The one role it runs, or `None` for any role (the URL scheme decides).
    pub role: Option<Role>,
    /// One line for `--help`.
    pub about: &'static str,
}

/// The clap definition of `program`: its name, summary and reference text.
pub fn command(program: &Program) -> clap::Command {
    let cmd = Cli::command()
        .name(program.name)
        .bin_name(program.name)
        .about(program.about)
        .long_about(None)
        .after_help(help::after_help(program.name, program.role));
    if has_import(program) {
        cmd
    } else {
        cmd.mut_subcommand("import", |s| s.hide(true))
    }
}

/// Whether `program` offers `import` (a master's task: `nodepass` and `nodepass-master`).
fn has_import(program: &Program) -> bool {
    matches!(program.role, None | Some(Role::Master))
}

/// Run the executable described by `program` and return its exit status.
pub fn main(program: Program) -> ExitCode {
    let raw: Vec<OsString> = std::env::args_os().collect();
    let cmd = command(&program);
    let known = usage::known_words(&cmd);
    let parsed = cmd
        .try_get_matches_from(&raw)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: nothing of the user's arguments in there.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Plain text: the message is rewritten, so clap's styling cannot be kept.
            let message = e.render().to_string();
            eprint!(
                "{}",
                usage::redact(&message, raw.get(1..).unwrap_or_default(), &known)
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(Command::Import(import)) = &cli.command {
        if !has_import(&program) {
            eprintln!(
                "{}: import is a subcommand of nodepass and nodepass-master",
                program.name
            );
            return ExitCode::from(EXIT_USAGE);
        }
        return crate::import::run(program.name, import);
    }
    if let Some(sub) = &cli.command {
        return match commands::run(sub, command(&program)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: {e:#}", program.name);
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    let args = cli.run;
    let config = match load(&args, program.role) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}: {e:#}", program.name);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let exposed = config.is_derived_key_exposed();
    if args.check {
        println!("{config}");
        if exposed {
            eprintln!("{}: warning: {DERIVED_KEY_WARNING}", program.name);
        }
        return ExitCode::SUCCESS;
    }
    let level = config.log_level();
    let format = std::env::var(logging::FORMAT_ENV).ok();
    let setup = logging::Format::from_env_value(format.as_deref())
        .and_then(|format| logging::init(level, format, config.role() == Role::Master));
    if let Err(e) = setup {
        eprintln!("{}: {e:#}", program.name);
        return ExitCode::from(EXIT_USAGE);
    }
    tracing::info!(url = %config, "starting nodepass {}", env!("CARGO_PKG_VERSION"));
    // (The tunnel itself logs the derived-key warning when it starts.)
    raise_fd_limit();
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if logging::shows_errors(level) => {
            tracing::error!("{e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("{}: {e:#}", program.name);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

const DERIVED_KEY_WARNING: &str = "no key given: the key is derived from the tunnel port and \
    anyone who can reach the tunnel can guess it; set one with KEY@ in the URL";

/// Raise the soft open-files limit to the hard limit: every tunneled connection holds two or
/// more descriptors, and the common soft default of 1024 caps a tunnel at a few hundred users.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

/// The URL from wherever it was given, with the scheme checked, parsed.
fn load(args: &Args, role: Option<Role>) -> anyhow::Result<Config> {
    let text = args.url_text(std::env::var(args::URL_ENV).ok())?;
    let text = match role {
        Some(role) => args::with_scheme(&text, role)?,
        None => text,
    };
    Ok(Config::parse(&text)?)
}

/// Start the runtime, hook up the signals and run the instance to completion.
fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        signal::cancel_on_signals(shutdown.clone()).context("cannot install signal handlers")?;
        // On a worker thread, not on this one: the tunnel's accept loops then hand each new
        // connection's task to their own worker (its next-task slot) instead of waking another
        // thread for it (issue 17).
        match tokio::spawn(run::run_instance(config, shutdown)).await {
            Ok(res) => res,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(anyhow::anyhow!("the instance task stopped: {e}")),
        }
    })
}
