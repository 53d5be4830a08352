//! `hyperd`: parse the configuration, open the state, serve the API.

mod config;
mod daemon;
mod errors;
mod logger;
mod routes;
mod web;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    let flags = config::Flags::parse();
    let config = match config::Config::from_flags(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hyperd: {e:#}");
            return ExitCode::from(2);
        }
    };
    logger::init(config.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyperd: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let d = Arc::new(daemon::Daemon::open(config)?);
        d.serve().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
