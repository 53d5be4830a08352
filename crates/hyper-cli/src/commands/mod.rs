//! One module per group of subcommands; each function is a thin adapter over one API call.

pub mod images;
pub mod pods;
pub mod system;

/// What a command returns: its exit code, or an error printed by `main`.
pub type CmdResult = Result<std::process::ExitCode, Box<dyn std::error::Error>>;
