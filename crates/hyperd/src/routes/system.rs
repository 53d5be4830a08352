//! `version`, `info`, `_ping`.

use std::sync::Arc;

use hyper_api::ApiError;
use hyper_api::system::{Info, Version};

use crate::daemon::Daemon;
use crate::errors::image_error;
use crate::web::{self, Resp};

pub fn version() -> Version {
    Version {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: hyper_api::API_VERSION,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    }
}

pub async fn info(d: Arc<Daemon>) -> Result<Resp, ApiError> {
    let images = d.images.list().map_err(|e| image_error(&e))?.len();
    let uname = uname();
    let (pods, pods_running) = d.engine.counts();
    let info = Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        root: d.config.root.display().to_string(),
        socket: d.config.socket.display().to_string(),
        images,
        pods,
        pods_running,
        driver: d.engine.driver().name().into(),
        driver_status: d.engine.driver().info(),
        insecure_registries: d.config.insecure_registries.clone(),
        registry_mirrors: d
            .config
            .registry_mirrors
            .iter()
            .flat_map(|(r, urls)| urls.iter().map(move |u| format!("{r}={u}")))
            .collect(),
        kernel_version: uname,
        operating_system: os_release(),
        total_memory: total_memory(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    Ok(web::ok(&info))
}

fn uname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_release() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
