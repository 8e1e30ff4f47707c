//! `nodepass-client URL`: run a NodePass client; the `client://` scheme may be left out of the URL.

use std::process::ExitCode;

use nodepass_cli::Program;
use nodepass_core::config::Role;

fn main() -> ExitCode {
    nodepass_cli::main(Program {
        name: "nodepass-client",
        role: Some(Role::Client),
        about: "NodePass client: runs client:// URLs (the scheme may be left out)",
    })
}
