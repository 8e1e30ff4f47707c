//! `nodepass URL`: run a server, client or master; the URL scheme picks the role.

use std::process::ExitCode;

use nodepass_cli::Program;

fn main() -> ExitCode {
    nodepass_cli::main(Program {
        name: "nodepass",
        role: None,
        about: "NodePass TCP/UDP tunnel: the URL scheme (server://, client://, master://) picks the role",
    })
}
