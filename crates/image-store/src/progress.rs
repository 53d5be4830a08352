//! Progress of long image operations, reported per layer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// One progress event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Progress {
    /// A free-form status line ("pulling from ...", "using mirror ...").
    Status { text: String },
    /// A layer's state changed or it moved forward.
    Layer {
        digest: Digest,
        state: LayerState,
        current: u64,
        total: u64,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LayerState {
    Waiting,
    Downloading,
    Extracting,
    Complete,
    AlreadyExists,
    Uploading,
    Pushed,
    AlreadyPushed,
}

/// Where progress goes. Cheap to clone; a no-op sink ignores everything.
#[derive(Clone)]
pub struct ProgressSink(Option<Arc<dyn Fn(Progress) + Send + Sync>>);

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl ProgressSink {
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        ProgressSink(Some(Arc::new(f)))
    }
    pub fn none() -> Self {
        ProgressSink(None)
    }
    pub fn send(&self, p: Progress) {
        if let Some(f) = &self.0 {
            f(p)
        }
    }
    pub fn status(&self, text: impl Into<String>) {
        self.send(Progress::Status { text: text.into() })
    }
    pub fn layer(&self, digest: &Digest, state: LayerState, current: u64, total: u64) {
        self.send(Progress::Layer {
            digest: digest.clone(),
            state,
            current,
            total,
        })
    }
}
