//! The pod engine.
//!
//! A pod is **Created** (defined, storage allocated, images present, no sandbox) or **Running** (its containers
//! were started in a sandbox). [`Engine`] owns the lifecycle: `create`, `start`, `stop`, `replace`, `remove`,
//! plus `kill`, `exec`, `attach` and `logs`. Records live in the daemon's database; a running pod also has a
//! [`runtime::Runtime`]: the agent connection, the stream routes and the log writers. Running pods do not
//! depend on the daemon process: after a restart, [`Engine::recover`] reconnects to every agent.

mod agent;
mod create;
mod hostroot;
mod io;
mod lifecycle;
pub mod logs;
mod runtime;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use image_store::{ImageError, ImageStore};
use sandbox::Driver;

pub use io::{AttachHandle, Chunk, ExecHandle, InputHandle, LogOptions};
pub use store::{ContainerRecord, PodRecord, PodState};
pub use lifecycle::DEFAULT_STOP_TIMEOUT;

/// Errors of pod operations; the variant is the API's error kind, the string says everything.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("podfile: {0}")]
    Spec(#[from] podspec::SpecError),
    #[error("{context}")]
    Image {
        context: String,
        #[source]
        source: ImageError,
    },
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("{0}")]
    Internal(String),
}

impl From<network::NetworkError> for PodError {
    fn from(e: network::NetworkError) -> Self {
        match e {
            network::NetworkError::PortInUse { .. } => PodError::Conflict(chain(&e)),
            _ => PodError::Internal(format!("network: {}", chain(&e))),
        }
    }
}

impl From<sandbox::SandboxError> for PodError {
    fn from(e: sandbox::SandboxError) -> Self {
        PodError::Sandbox(chain(&e))
    }
}

/// An error and its causes, `a: b: c`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The daemon's root: pods live under `<root>/pods`, sandboxes under `<root>/sandboxes`.
    pub root: PathBuf,
    /// How long to wait for a new sandbox's agent to answer.
    pub agent_timeout: std::time::Duration,
    /// Bytes at which a container's log file is rotated (`None`: never; see `logs`).
    pub log_max_size: Option<u64>,
}

/// The pod engine. Create it with [`Engine::new`] and keep it in an `Arc`.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    store: store::Store,
    images: Arc<ImageStore>,
    driver: Arc<dyn Driver>,
    /// Pod networking (bridge, addresses, port mappings); None runs pods with loopback only.
    network: Option<network::Network>,
    /// One lifecycle operation at a time per pod.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Read-modify-write of records.
    records: tokio::sync::Mutex<()>,
    running: std::sync::Mutex<HashMap<String, Arc<runtime::Runtime>>>,
    me: Weak<Engine>,
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        db: Arc<redb::Database>,
        images: Arc<ImageStore>,
        driver: Arc<dyn Driver>,
        network: Option<network::Network>,
    ) -> Result<Arc<Engine>, PodError> {
        let store = store::Store::open(db)?;
        std::fs::create_dir_all(cfg.root.join("pods")).map_err(|e| PodError::Internal(format!("creating {}/pods: {e}", cfg.root.display())))?;
        std::fs::create_dir_all(cfg.root.join("sandboxes")).map_err(|e| PodError::Internal(format!("creating {}/sandboxes: {e}", cfg.root.display())))?;
        Ok(Arc::new_cyclic(|me| Engine {
            cfg,
            store,
            images,
            driver,
            network,
            locks: std::sync::Mutex::new(HashMap::new()),
            records: tokio::sync::Mutex::new(()),
            running: std::sync::Mutex::new(HashMap::new()),
            me: me.clone(),
        }))
    }

    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// The engine as an `Arc`, for tasks that outlive the call that spawns them.
    pub(crate) fn arc(&self) -> Arc<Engine> {
        self.me.upgrade().expect("the engine outlives its operations")
    }

    fn lock_for(&self, pod_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry(pod_id.to_string()).or_default().clone()
    }

    fn runtime(&self, pod_id: &str) -> Option<Arc<runtime::Runtime>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(pod_id).cloned()
    }

    fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.cfg.root.join("pods").join(pod_id)
    }

    /// Every pod.
    pub fn list(&self) -> Result<Vec<PodRecord>, PodError> {
        let mut v = self.store.all()?;
        v.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(v)
    }

    /// A pod by id, name or unique id prefix, or the pod of the container with that id.
    pub fn get(&self, key: &str) -> Result<PodRecord, PodError> {
        self.resolve_target(key, None).map(|(rec, _)| rec)
    }

    /// The log file of a container.
    pub fn log_path(&self, pod_id: &str, container: &str) -> PathBuf {
        self.pod_dir(pod_id).join("logs").join(format!("{container}.log"))
    }

    /// Counts for `hyper info`: (pods, running pods).
    pub fn counts(&self) -> (usize, usize) {
        let all = self.store.all().unwrap_or_default();
        let running = all.iter().filter(|p| p.state == PodState::Running).count();
        (all.len(), running)
    }
}

pub(crate) use sandbox::random_id;

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
