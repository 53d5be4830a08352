//! Image routes: pull, push, load, save, tag, list, inspect, remove, registry login.

use serde::{Deserialize, Serialize};

/// `POST /v1/images/pull`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    pub reference: String,
}

/// `POST /v1/images/push`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushRequest {
    pub name: String,
}

/// `POST /v1/images/tag`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagRequest {
    pub source: String,
    pub target: String,
}

/// Progress lines of pull, push and load streams.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Progress {
    Status {
        text: String,
    },
    Layer {
        digest: String,
        state: String,
        current: u64,
        total: u64,
    },
}

/// The result line of a pull.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullResult {
    pub reference: String,
    pub id: String,
    pub digest: String,
}

/// The result line of a push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResult {
    pub name: String,
    pub digest: String,
}

/// One image of a load result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadedImage {
    pub id: String,
    pub names: Vec<String>,
}

/// `GET /v1/images`: one entry per image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: String,
    /// Full references (`docker.io/library/busybox:latest`); empty for an untagged image.
    pub tags: Vec<String>,
    /// (repository, tag) pairs as people write them (`busybox`, `latest`).
    pub display: Vec<(String, String)>,
    pub repo_digests: Vec<String>,
    pub created: Option<String>,
    pub size: u64,
}

/// `GET /v1/images/inspect?name=`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageInspect {
    pub id: String,
    pub tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub size: u64,
    pub layers: Vec<ImageLayer>,
    /// The image configuration, verbatim.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageLayer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

/// `DELETE /v1/images?name=&force=`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveResult {
    pub untagged: Vec<String>,
    pub deleted: Vec<String>,
}

/// `POST /v1/auth/login`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub registry: String,
    pub username: String,
    pub password: String,
}

/// `POST /v1/auth/logout`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogoutRequest {
    pub registry: String,
}
