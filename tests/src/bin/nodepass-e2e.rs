//! The `nodepass` executable for the end-to-end tests: the same one-line `main` as
//! `nodepass-cli/src/bin/nodepass.rs`, built in this package so that its tests get the path
//! from `env!("CARGO_BIN_EXE_nodepass-e2e")` (Cargo gives integration tests the paths of their
//! own package's binaries only).

use std::process::ExitCode;

use nodepass_cli::Program;

fn main() -> ExitCode {
    nodepass_cli::main(Program {
        name: "nodepass",
        role: None,
        about: "NodePass TCP/UDP tunnel: the URL scheme (server://, client://, master://) picks the role",
    })
}
