//! `hyper`: a thin client of hyperd. Each subcommand is a file under `commands/`.

mod client;
mod commands;
mod output;
mod stream;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;

/// Default daemon address.
pub const DEFAULT_HOST: &str = "unix:///run/hyper/hyper.sock";

#[derive(Debug, Parser)]
#[command(
    name = "hyper",
    version,
    about = "Run pods of OCI images in lightweight VMs",
    disable_help_subcommand = true
)]
struct Cli {
    /// Daemon socket to talk to.
    #[arg(short = 'H', long = "host", env = "HYPER_HOST", default_value = DEFAULT_HOST, global = true, value_name = "unix://PATH")]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show client and daemon versions.
    Version(commands::system::VersionArgs),
    /// Show daemon-wide information.
    Info(commands::system::InfoArgs),
    /// Pull an image from a registry.
    Pull(commands::images::PullArgs),
    /// Push an image to a registry.
    Push(commands::images::PushArgs),
    /// Load images from a docker-archive or OCI-layout tar (or an OCI layout directory).
    Load(commands::images::LoadArgs),
    /// Save images to a tar archive (docker-archive and OCI layout in one).
    Save(commands::images::SaveArgs),
    /// Give an image another name.
    Tag(commands::images::TagArgs),
    /// List images.
    Images(commands::images::ImagesArgs),
    /// Show a pod's (or else an image's) details as JSON.
    Inspect(commands::images::InspectArgs),
    /// Create a pod from a podfile (Created: storage allocated, images pulled, no sandbox).
    Create(commands::pods::CreateArgs),
    /// Start created pods (each in a new sandbox).
    Start(commands::pods::StartArgs),
    /// Create and start a pod from a podfile, or from an image and a command.
    Run(commands::pods::RunArgs),
    /// Stop running pods: their sandboxes end, the pods are Created again.
    Stop(commands::pods::StopArgs),
    /// Remove pods and everything they own.
    Rm(commands::pods::RmArgs),
    /// Run a created pod in a running pod's sandbox (the running pod stops).
    Replace(commands::pods::ReplaceArgs),
    /// Run a command in a running container.
    Exec(commands::pods::ExecArgs),
    /// Attach to a running container's input and output.
    Attach(commands::pods::AttachArgs),
    /// Show a container's log.
    Logs(commands::pods::LogsArgs),
    /// Send a signal to the containers of pods.
    Kill(commands::pods::KillArgs),
    /// List pods or containers.
    List(commands::pods::ListArgs),
    /// List, add or remove a pod's port mappings.
    Ports(commands::pods::PortsArgs),
    /// Remove images.
    Rmi(commands::images::RmiArgs),
    /// Store credentials for a registry.
    Login(commands::images::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(commands::images::LogoutArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = match Client::new(&cli.host) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hyper: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    // Commands whose success is their process's exit code fail with 125 of their own, as Docker's: a script can
    // tell "hyper could not" from "the program said no".
    let own_failure = if matches!(cli.command, Command::Run(_) | Command::Exec(_) | Command::Attach(_)) { ExitCode::from(125) } else { ExitCode::FAILURE };
    let result = rt.block_on(async {
        match cli.command {
            Command::Version(a) => commands::system::version(&client, a).await,
            Command::Info(a) => commands::system::info(&client, a).await,
            Command::Pull(a) => commands::images::pull(&client, a).await,
            Command::Push(a) => commands::images::push(&client, a).await,
            Command::Load(a) => commands::images::load(&client, a).await,
            Command::Save(a) => commands::images::save(&client, a).await,
            Command::Tag(a) => commands::images::tag(&client, a).await,
            Command::Images(a) => commands::images::images(&client, a).await,
            Command::Inspect(a) => commands::images::inspect(&client, a).await,
            Command::Rmi(a) => commands::images::rmi(&client, a).await,
            Command::Login(a) => commands::images::login(&client, a).await,
            Command::Logout(a) => commands::images::logout(&client, a).await,
            Command::Create(a) => commands::pods::create(&client, a).await,
            Command::Start(a) => commands::pods::start(&client, a).await,
            Command::Run(a) => commands::pods::run(&client, a).await,
            Command::Stop(a) => commands::pods::stop(&client, a).await,
            Command::Rm(a) => commands::pods::rm(&client, a).await,
            Command::Replace(a) => commands::pods::replace(&client, a).await,
            Command::Exec(a) => commands::pods::exec(&client, a).await,
            Command::Attach(a) => commands::pods::attach(&client, a).await,
            Command::Logs(a) => commands::pods::logs(&client, a).await,
            Command::Kill(a) => commands::pods::kill(&client, a).await,
            Command::List(a) => commands::pods::list(&client, a).await,
            Command::Ports(a) => commands::pods::ports(&client, a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hyper: {}", chain(&*e));
            own_failure
        }
    }
}

/// The error and its causes, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
