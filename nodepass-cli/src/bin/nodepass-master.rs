//! `nodepass-master URL`: run a NodePass master; the `master://` scheme may be left out of the URL.

use std::process::ExitCode;

use nodepass_cli::Program;
use nodepass_core::config::Role;

fn main() -> ExitCode {
    nodepass_cli::main(Program {
        name: "nodepass-master",
        role: Some(Role::Master),
        about: "NodePass master: runs master:// URLs (the scheme may be left out)",
    })
}
