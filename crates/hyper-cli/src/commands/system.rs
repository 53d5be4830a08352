//! `hyper version`, `hyper info`.

use std::process::ExitCode;

use clap::Args;
use hyper_api::system::{Info, Version};

use super::CmdResult;
use crate::client::Client;
use crate::output::{self, Format};

#[derive(Debug, Args)]
pub struct VersionArgs {
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn version(c: &Client, a: VersionArgs) -> CmdResult {
    let client_version = env!("CARGO_PKG_VERSION");
    let server = c.get::<Version>("/version").await;
    if a.format == Format::Json {
        output::print_json(&serde_json::json!({
            "client": { "version": client_version, "api_version": hyper_api::API_VERSION },
            "server": server.as_ref().ok(),
        }));
    } else {
        println!(
            "Client:\n Version:     {client_version}\n API version: {}",
            hyper_api::API_VERSION
        );
        if let Ok(s) = &server {
            println!(
                "Server:\n Version:     {}\n API version: {}\n OS/Arch:     {}/{}",
                s.version, s.api_version, s.os, s.arch
            );
        }
    }
    server?;
    Ok(ExitCode::SUCCESS)
}

pub async fn info(c: &Client, a: InfoArgs) -> CmdResult {
    let i: Info = c.get("/info").await?;
    if a.format == Format::Json {
        output::print_json(&i);
        return Ok(ExitCode::SUCCESS);
    }
    println!("Server Version:      {}", i.version);
    println!("Images:              {}", i.images);
    println!("Pods:                {} ({} running)", i.pods, i.pods_running);
    println!("Sandbox Driver:      {}", i.driver);
    for (k, v) in &i.driver_status {
        println!(" {k}: {v}");
    }
    println!("Hyper Root Dir:      {}", i.root);
    println!("API Socket:          unix://{}", i.socket);
    if !i.insecure_registries.is_empty() {
        println!("Insecure Registries: {}", i.insecure_registries.join(", "));
    }
    if !i.registry_mirrors.is_empty() {
        println!("Registry Mirrors:    {}", i.registry_mirrors.join(", "));
    }
    println!("Kernel Version:      {}", i.kernel_version);
    println!("Operating System:    {}", i.operating_system);
    println!("CPUs:                {}", i.cpus);
    println!("Total Memory:        {}", output::size(i.total_memory));
    Ok(ExitCode::SUCCESS)
}
