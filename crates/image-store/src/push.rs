//! `push`: upload an image's layers and config (skipping blobs the registry has), then its manifest,
//! byte for byte as stored, so the pushed manifest digest equals the local one.

use bytes::Bytes;

use crate::digest::Digest;
use crate::manifest::MAX_JSON_SIZE;
use crate::progress::{LayerState, ProgressSink};
use crate::reference::Reference;
use crate::registry::Body;
use crate::store::{ImageError, ImageStore};

impl ImageStore {
    /// Pushes the local image named `name` to the registry and repository its name designates.
    /// Returns the manifest digest.
    pub async fn push(&self, name: &str, progress: ProgressSink) -> Result<Digest, ImageError> {
        let reference: Reference = name.parse()?;
        // No collection while the image's blobs are read and its record written back: one in between would
        // remove blobs under the upload, or leave the record written back without them.
        let _g = self.gc_lock.read().await;
        let record = self.resolve(name)?;
        let repo = self.client.push_repo(&reference);
        progress.status(format!("pushing {} to {}", reference, repo.describe()));
        for l in &record.layers {
            progress.layer(&l.digest, LayerState::Waiting, 0, l.size);
        }
        for l in &record.layers {
            if repo.has_blob(&l.digest).await? {
                progress.layer(&l.digest, LayerState::AlreadyPushed, l.size, l.size);
                continue;
            }
            progress.layer(&l.digest, LayerState::Uploading, 0, l.size);
            repo.put_blob(&l.digest, Body::file(self.layout.blob_path(&l.digest), l.size))
                .await?;
            progress.layer(&l.digest, LayerState::Pushed, l.size, l.size);
        }
        let config = Bytes::from(self.layout.read_blob(&record.id, MAX_JSON_SIZE)?);
        if !repo.has_blob(&record.id).await? {
            repo.put_blob(&record.id, Body::bytes(config, "application/octet-stream"))
                .await?;
        }
        let manifest = Bytes::from(self.layout.read_blob(&record.manifest_digest, MAX_JSON_SIZE)?);
        let target = reference
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| record.manifest_digest.to_string());
        repo.put_manifest(&target, manifest, &record.manifest_media_type)
            .await?;
        let repo_digest = format!("{}@{}", reference.name(), record.manifest_digest);
        if !record.repo_digests.contains(&repo_digest) {
            let mut r = record.clone();
            r.repo_digests.push(repo_digest);
            self.commit_image(&r, &[])?;
        }
        progress.status(format!(
            "{}: digest: {} size: {}",
            target,
            record.manifest_digest,
            record.layers.iter().map(|l| l.size).sum::<u64>()
        ));
        Ok(record.manifest_digest)
    }
}
