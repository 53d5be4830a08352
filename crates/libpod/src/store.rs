//! Pod records in the daemon's database.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use sandbox::SandboxState;
use serde::{Deserialize, Serialize};

use crate::PodError;

/// pod id -> JSON [`PodRecord`]
const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
/// pod name -> pod id
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("pod_names");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// Defined, storage allocated, images present; no sandbox.
    Created,
    /// Its containers were started in a sandbox.
    Running,
    /// Its sandbox died (see `failure`); like `Created` otherwise: it can be started or removed.
    Failed,
}

impl PodState {
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Created => "created",
            PodState::Running => "running",
            PodState::Failed => "failed",
        }
    }
}

/// A container as resolved at create time (podfile + image defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// Snapshot directories, lowest first.
    pub lowers: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub group: String,
    pub additional_groups: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub read_only: bool,
    pub stop_signal: i32,
    pub restart: agent_proto::Restart,
    pub sysctl: BTreeMap<String, String>,
    pub rlimits: Vec<(u32, u64, u64)>,
    /// (volume name, path in the container, read-only)
    pub volumes: Vec<(String, String, bool)>,
    pub files: Vec<agent_proto::InjectedFile>,
    /// The podfile's labels for this container.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub status: ContainerStatus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// `created`, `running` or `exited`.
    pub state: String,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub restarts: u32,
    pub stdin_stream: Option<u32>,
    pub stdout_stream: Option<u32>,
    pub stderr_stream: Option<u32>,
    /// Log byte counts (stdout, stderr) when the current run started: the agent's offsets count from there.
    #[serde(default)]
    pub log_base: (u64, u64),
}

/// A pod volume: where its data lives on the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub host_path: String,
    /// Created with the pod and removed with it.
    pub owned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub vcpu: u32,
    pub memory: u32,
    pub labels: BTreeMap<String, String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub created: String,
    pub state: PodState,
    pub failure: Option<String>,
    pub auto_remove: bool,
    pub containers: Vec<ContainerRecord>,
    pub volumes: Vec<VolumeRecord>,
    pub sandbox: Option<SandboxState>,
    /// Port mappings: the podfile's, plus those added with `hyper ports add`.
    #[serde(default)]
    pub ports: Vec<network::PortMapping>,
    /// The podfile as given.
    pub spec: serde_json::Value,
}

fn db_err(e: impl std::fmt::Display) -> PodError {
    PodError::Internal(format!("pod database: {e}"))
}

/// Typed access to the pod tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: std::sync::Arc<redb::Database>,
}

impl Store {
    pub fn open(db: std::sync::Arc<redb::Database>) -> Result<Store, PodError> {
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(PODS).map_err(db_err)?;
        txn.open_table(NAMES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Store { db })
    }

    pub fn get(&self, id: &str) -> Result<Option<PodRecord>, PodError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(PODS).map_err(db_err)?;
        let v = t.get(id).map_err(db_err)?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(db_err)).transpose()
    }

    pub fn all(&self) -> Result<Vec<PodRecord>, PodError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(PODS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(db_err)?);
        }
        Ok(out)
    }

    /// Finds a pod by id, name, or unique id prefix.
    pub fn resolve(&self, key: &str) -> Result<PodRecord, PodError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let pods = txn.open_table(PODS).map_err(db_err)?;
        let names = txn.open_table(NAMES).map_err(db_err)?;
        let load = |id: &str| -> Result<Option<PodRecord>, PodError> {
            pods.get(id).map_err(db_err)?.map(|v| serde_json::from_slice(v.value()).map_err(db_err)).transpose()
        };
        if let Some(r) = load(key)? {
            return Ok(r);
        }
        if let Some(id) = names.get(key).map_err(db_err)? {
            if let Some(r) = load(id.value())? {
                return Ok(r);
            }
        }
        // An id prefix names at least 3 characters of the id's random part: every id starts with "pod-", and
        // `rm pod` must not remove whichever pod happens to be alone.
        if key.strip_prefix("pod-").is_some_and(|random| random.len() >= 3) {
            let mut found = None;
            for item in pods.range(key..).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                if !k.value().starts_with(key) {
                    break;
                }
                if found.is_some() {
                    return Err(PodError::InvalidArgument(format!("pod id prefix {key:?} is ambiguous")));
                }
                found = Some(serde_json::from_slice::<PodRecord>(v.value()).map_err(db_err)?);
            }
            if let Some(r) = found {
                return Ok(r);
            }
        }
        Err(PodError::NotFound(format!("no such pod: {key}")))
    }

    /// Inserts a new pod, refusing a name in use.
    pub fn insert(&self, r: &PodRecord) -> Result<(), PodError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut names = txn.open_table(NAMES).map_err(db_err)?;
            if names.get(r.name.as_str()).map_err(db_err)?.is_some() {
                return Err(PodError::AlreadyExists(format!("a pod named {:?} exists", r.name)));
            }
            names.insert(r.name.as_str(), r.id.as_str()).map_err(db_err)?;
            let mut pods = txn.open_table(PODS).map_err(db_err)?;
            pods.insert(r.id.as_str(), serde_json::to_vec(r).expect("serialisable").as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Replaces records in one transaction.
    pub fn put(&self, records: &[&PodRecord]) -> Result<(), PodError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut pods = txn.open_table(PODS).map_err(db_err)?;
            for r in records {
                pods.insert(r.id.as_str(), serde_json::to_vec(r).expect("serialisable").as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    pub fn delete(&self, r: &PodRecord) -> Result<(), PodError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut pods = txn.open_table(PODS).map_err(db_err)?;
            pods.remove(r.id.as_str()).map_err(db_err)?;
            let mut names = txn.open_table(NAMES).map_err(db_err)?;
            names.remove(r.name.as_str()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }
}
