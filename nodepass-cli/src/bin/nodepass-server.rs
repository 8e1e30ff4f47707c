//! `nodepass-server URL`: run a NodePass server; the `server://` scheme may be left out of the URL.

use std::process::ExitCode;

use nodepass_cli::Program;
use nodepass_core::config::Role;

fn main() -> ExitCode {
    nodepass_cli::main(Program {
        name: "nodepass-server",
        role: Some(Role::Server),
        about: "NodePass server: runs server:// URLs (the scheme may be left out)",
    })
}
