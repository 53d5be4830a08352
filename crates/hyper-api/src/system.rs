//! `GET /v1/version`, `GET /v1/info`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
    pub api_version: u32,
    pub os: String,
    pub arch: String,
}

/// What `hyper info` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub root: String,
    pub socket: String,
    pub images: usize,
    pub pods: usize,
    pub pods_running: usize,
    pub driver: String,
    /// Driver-specific facts (kernel, initrd, accelerator and why, ...), as ordered key/value pairs.
    #[serde(default)]
    pub driver_status: Vec<(String, String)>,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    pub kernel_version: String,
    pub operating_system: String,
    pub total_memory: u64,
    pub cpus: usize,
}
