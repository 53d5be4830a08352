//! The image store: image records and tags in the daemon's database, content in a [`Layout`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::content::{ContentError, Layout};
use crate::digest::Digest;
use crate::manifest::{ConfigError, ImageConfig, ManifestError};
use crate::reference::{Reference, ReferenceError};
use crate::registry::{RegistryClient, RegistryError};
use crate::unpack::UnpackError;

/// image id (config digest) -> JSON [`ImageRecord`]
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// full reference (`docker.io/library/busybox:latest`, `host/a@sha256:..`) -> image id
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("image_tags");
/// lease holder (a pod's container) -> JSON list of image ids it keeps alive
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_leases");

/// One layer of a stored image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    /// Digest of the uncompressed tar: the snapshot's name.
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A stored image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, as Docker shows `IMAGE ID`.
    pub id: Digest,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub layers: Vec<LayerRecord>,
    /// `created` from the image config.
    pub created: Option<String>,
    /// Sum of the unpacked layers' file sizes.
    pub size: u64,
    /// `name@digest` references this image is known by in registries.
    #[serde(default)]
    pub repo_digests: Vec<String>,
}

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("image reference {0:?} is ambiguous: it matches several image ids")]
    Ambiguous(String),
    #[error("image {image} is referenced by several tags ({tags}); remove them by name or use --force")]
    MultipleTags { image: String, tags: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("manifest of {what}")]
    Manifest {
        what: String,
        #[source]
        source: ManifestError,
    },
    #[error("config of {what}")]
    Config {
        what: String,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("layer {layer}")]
    Unpack {
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("layer {layer}: {reason}")]
    Layer { layer: Digest, reason: String },
    #[error(
        "{reference}: the registry claims manifest digest {claimed} but sent content with digest {actual}"
    )]
    LyingRegistry {
        reference: String,
        claimed: String,
        actual: Digest,
    },
    #[error("{reference}: no manifest for linux/amd64 in the image index (it has: {available})")]
    NoPlatform { reference: String, available: String },
    #[error("{0}")]
    Archive(String),
    #[error("image database")]
    Db(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{what} (also tried: {mirrors})")]
    WithMirrors {
        what: String,
        mirrors: String,
        #[source]
        source: Box<ImageError>,
    },
}

impl ImageError {
    pub(crate) fn db(e: impl std::error::Error + Send + Sync + 'static) -> ImageError {
        ImageError::Db(Box::new(e))
    }

    /// Whether the error means "it does not exist" (for HTTP 404s).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ImageError::NotFound(_) | ImageError::Registry(RegistryError::NotFound(_))
        ) || matches!(self, ImageError::WithMirrors { source, .. } if source.is_not_found())
    }
}

/// A line of `hyper images`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: Digest,
    /// Tags this image has (full references); empty for a dangling image.
    pub tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: Option<String>,
    pub size: u64,
}

/// The image store.
#[derive(Debug)]
pub struct ImageStore {
    pub(crate) layout: Arc<Layout>,
    pub(crate) db: Arc<redb::Database>,
    pub(crate) client: RegistryClient,
    /// Pulls and loads hold it shared; garbage collection exclusively, so it never removes content that an
    /// operation in progress has stored but not yet recorded.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
}

impl ImageStore {
    /// Opens the store with content under `root` and records in `db`.
    pub fn open(
        root: &Path,
        db: Arc<redb::Database>,
        client: RegistryClient,
    ) -> Result<ImageStore, ImageError> {
        let layout = Arc::new(Layout::open(root)?);
        let txn = db.begin_write().map_err(ImageError::db)?;
        {
            txn.open_table(IMAGES).map_err(ImageError::db)?;
            txn.open_table(TAGS).map_err(ImageError::db)?;
            txn.open_table(LEASES).map_err(ImageError::db)?;
        }
        txn.commit().map_err(ImageError::db)?;
        Ok(ImageStore {
            layout,
            db,
            client,
            gc_lock: tokio::sync::RwLock::new(()),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.client
    }

    /// The snapshot directories of an image's layers, lowest first (overlayfs wants them highest first).
    pub fn snapshot_dirs(&self, record: &ImageRecord) -> Vec<PathBuf> {
        record
            .layers
            .iter()
            .map(|l| self.layout.snapshot_path(&l.diff_id))
            .collect()
    }

    pub fn get_record(&self, id: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        let txn = self.db.begin_read().map_err(ImageError::db)?;
        let t = txn.open_table(IMAGES).map_err(ImageError::db)?;
        let v = t.get(id.to_string().as_str()).map_err(ImageError::db)?;
        Ok(match v {
            Some(v) => Some(serde_json::from_slice(v.value()).map_err(ImageError::db)?),
            None => None,
        })
    }

    /// Records an image and points `names` at it, in one transaction.
    pub(crate) fn commit_image(&self, record: &ImageRecord, names: &[String]) -> Result<(), ImageError> {
        let txn = self.db.begin_write().map_err(ImageError::db)?;
        {
            let mut images = txn.open_table(IMAGES).map_err(ImageError::db)?;
            let id = record.id.to_string();
            let mut merged = record.clone();
            if let Some(old) = images.get(id.as_str()).map_err(ImageError::db)? {
                let old: ImageRecord = serde_json::from_slice(old.value()).map_err(ImageError::db)?;
                for d in old.repo_digests {
                    if !merged.repo_digests.contains(&d) {
                        merged.repo_digests.push(d);
                    }
                }
            }
            let bytes = serde_json::to_vec(&merged).expect("record serialises");
            images
                .insert(id.as_str(), bytes.as_slice())
                .map_err(ImageError::db)?;
            let mut tags = txn.open_table(TAGS).map_err(ImageError::db)?;
            for n in names {
                tags.insert(n.as_str(), id.as_str()).map_err(ImageError::db)?;
            }
        }
        txn.commit().map_err(ImageError::db)?;
        Ok(())
    }

    /// Finds an image by name (`busybox`, `host/a:b`, `a@sha256:..`) or by id (full or a unique prefix).
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let txn = self.db.begin_read().map_err(ImageError::db)?;
        let tags = txn.open_table(TAGS).map_err(ImageError::db)?;
        let images = txn.open_table(IMAGES).map_err(ImageError::db)?;
        if let Ok(r) = name.parse::<Reference>() {
            if let Some(id) = tags.get(r.to_string().as_str()).map_err(ImageError::db)? {
                let id = id.value().to_string();
                let rec = images
                    .get(id.as_str())
                    .map_err(ImageError::db)?
                    .ok_or_else(|| ImageError::NotFound(name.into()))?;
                return serde_json::from_slice(rec.value()).map_err(ImageError::db);
            }
            // `name@digest` also matches an image by manifest digest.
            if let Some(d) = r.digest() {
                for item in images.iter().map_err(ImageError::db)? {
                    let (_, v) = item.map_err(ImageError::db)?;
                    let rec: ImageRecord = serde_json::from_slice(v.value()).map_err(ImageError::db)?;
                    if &rec.manifest_digest == d
                        && rec.repo_digests.iter().any(|rd| rd.starts_with(&r.name()))
                    {
                        return Ok(rec);
                    }
                }
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let prefix = format!("sha256:{}", hex.to_ascii_lowercase());
            let mut found = None;
            for item in images.range(prefix.as_str()..).map_err(ImageError::db)? {
                let (k, v) = item.map_err(ImageError::db)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                if found.is_some() {
                    return Err(ImageError::Ambiguous(name.into()));
                }
                found = Some(serde_json::from_slice::<ImageRecord>(v.value()).map_err(ImageError::db)?);
            }
            if let Some(r) = found {
                return Ok(r);
            }
        }
        Err(ImageError::NotFound(name.into()))
    }

    /// The image's configuration (from its stored config blob).
    pub fn config(&self, record: &ImageRecord) -> Result<ImageConfig, ImageError> {
        let bytes = self
            .layout
            .read_blob(&record.id, crate::manifest::MAX_JSON_SIZE)?;
        crate::manifest::parse_config(&bytes, record.layers.len()).map_err(|source| ImageError::Config {
            what: record.id.to_string(),
            source,
        })
    }

    /// The raw config JSON (what `hyper inspect IMAGE` prints).
    pub fn config_json(&self, record: &ImageRecord) -> Result<serde_json::Value, ImageError> {
        let bytes = self
            .layout
            .read_blob(&record.id, crate::manifest::MAX_JSON_SIZE)?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Config {
            what: record.id.to_string(),
            source: ConfigError::Json(e),
        })
    }

    /// Every image with its tags.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let txn = self.db.begin_read().map_err(ImageError::db)?;
        let tags = txn.open_table(TAGS).map_err(ImageError::db)?;
        let images = txn.open_table(IMAGES).map_err(ImageError::db)?;
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in tags.iter().map_err(ImageError::db)? {
            let (k, v) = item.map_err(ImageError::db)?;
            by_id
                .entry(v.value().to_string())
                .or_default()
                .push(k.value().to_string());
        }
        let mut out = Vec::new();
        for item in images.iter().map_err(ImageError::db)? {
            let (k, v) = item.map_err(ImageError::db)?;
            let rec: ImageRecord = serde_json::from_slice(v.value()).map_err(ImageError::db)?;
            let tags = by_id.remove(k.value()).unwrap_or_default();
            out.push(ImageSummary {
                id: rec.id,
                tags,
                repo_digests: rec.repo_digests,
                created: rec.created,
                size: rec.size,
            });
        }
        Ok(out)
    }

    /// Gives image `source` the additional name `target`.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference, ImageError> {
        let rec = self.resolve(source)?;
        let target: Reference = target.parse()?;
        if target.digest().is_some() {
            return Err(ImageError::Archive(format!(
                "cannot tag with a digest reference: {target}"
            )));
        }
        let txn = self.db.begin_write().map_err(ImageError::db)?;
        {
            let mut tags = txn.open_table(TAGS).map_err(ImageError::db)?;
            tags.insert(target.to_string().as_str(), rec.id.to_string().as_str())
                .map_err(ImageError::db)?;
        }
        txn.commit().map_err(ImageError::db)?;
        Ok(target)
    }

    /// Removes an image name, or with an id all of the image's names (`force` needed if it has several).
    /// The image goes when no name is left and no pod holds it; unreferenced content is then collected.
    /// Returns what was untagged and what was deleted.
    pub async fn remove(&self, name: &str, force: bool) -> Result<(Vec<String>, Vec<Digest>), ImageError> {
        let rec = self.resolve(name)?;
        let id = rec.id.to_string();
        let untagged;
        let mut deleted = Vec::new();
        {
            let txn = self.db.begin_write().map_err(ImageError::db)?;
            {
                let mut tags = txn.open_table(TAGS).map_err(ImageError::db)?;
                let mut names = Vec::new();
                for item in tags.iter().map_err(ImageError::db)? {
                    let (k, v) = item.map_err(ImageError::db)?;
                    if v.value() == id {
                        names.push(k.value().to_string());
                    }
                }
                let by_name = name
                    .parse::<Reference>()
                    .ok()
                    .map(|r| r.to_string())
                    .filter(|n| names.contains(n));
                let doomed: Vec<String> = match by_name {
                    Some(n) => vec![n],
                    None if names.len() > 1 && !force => {
                        return Err(ImageError::MultipleTags {
                            image: rec.id.short().to_string(),
                            tags: names.join(", "),
                        });
                    }
                    None => names.clone(),
                };
                for n in &doomed {
                    tags.remove(n.as_str()).map_err(ImageError::db)?;
                }
                let remaining = names.len() - doomed.len();
                untagged = doomed;
                let leased = Self::leased_ids(&txn)?.contains(&id);
                if remaining == 0 && !leased {
                    let mut images = txn.open_table(IMAGES).map_err(ImageError::db)?;
                    images.remove(id.as_str()).map_err(ImageError::db)?;
                    deleted.push(rec.id.clone());
                }
            }
            txn.commit().map_err(ImageError::db)?;
        }
        if !deleted.is_empty() {
            self.gc().await?;
        }
        Ok((untagged, deleted))
    }

    fn leased_ids(txn: &redb::WriteTransaction) -> Result<HashSet<String>, ImageError> {
        let leases = txn.open_table(LEASES).map_err(ImageError::db)?;
        let mut out = HashSet::new();
        for item in leases.iter().map_err(ImageError::db)? {
            let (_, v) = item.map_err(ImageError::db)?;
            let ids: Vec<String> = serde_json::from_slice(v.value()).map_err(ImageError::db)?;
            out.extend(ids);
        }
        Ok(out)
    }

    /// Records that `holder` uses these images: they, their blobs and snapshots stay until released. Refused
    /// for an image that is gone (removed, or collected, since the holder looked it up): a collection decides
    /// and removes records in one transaction, as this one checks and leases.
    pub fn lease(&self, holder: &str, images: &[Digest]) -> Result<(), ImageError> {
        let ids: Vec<String> = images.iter().map(|d| d.to_string()).collect();
        let txn = self.db.begin_write().map_err(ImageError::db)?;
        {
            let records = txn.open_table(IMAGES).map_err(ImageError::db)?;
            for id in &ids {
                if records.get(id.as_str()).map_err(ImageError::db)?.is_none() {
                    return Err(ImageError::NotFound(format!("{id} (removed while it was being put to use)")));
                }
            }
            let mut t = txn.open_table(LEASES).map_err(ImageError::db)?;
            t.insert(
                holder,
                serde_json::to_vec(&ids).expect("ids serialise").as_slice(),
            )
            .map_err(ImageError::db)?;
        }
        txn.commit().map_err(ImageError::db)
    }

    /// Who holds leases.
    pub fn lease_holders(&self) -> Result<Vec<String>, ImageError> {
        let txn = self.db.begin_read().map_err(ImageError::db)?;
        let t = txn.open_table(LEASES).map_err(ImageError::db)?;
        let mut v = Vec::new();
        for item in t.iter().map_err(ImageError::db)? {
            v.push(item.map_err(ImageError::db)?.0.value().to_string());
        }
        Ok(v)
    }

    /// Drops a lease; images nobody names or holds any more are removed.
    pub async fn release(&self, holder: &str) -> Result<(), ImageError> {
        let txn = self.db.begin_write().map_err(ImageError::db)?;
        {
            let mut t = txn.open_table(LEASES).map_err(ImageError::db)?;
            t.remove(holder).map_err(ImageError::db)?;
        }
        txn.commit().map_err(ImageError::db)?;
        // Not behind a pull, load or push under way (an upload a client stalls could hold one for ever): the
        // images the lease kept, if untagged, go at the next collection.
        self.gc_if_idle().await
    }

    /// Removes untagged, unleased image records, then every blob and snapshot no image record references.
    pub async fn gc(&self) -> Result<(), ImageError> {
        let _g = self.gc_lock.write().await;
        self.collect().await
    }

    /// [`ImageStore::gc`] if no pull, load or push is under way, else nothing (a later collection will do): for
    /// after a failure, which should not wait for, nor hold up, the operations of others.
    pub async fn gc_if_idle(&self) -> Result<(), ImageError> {
        match self.gc_lock.try_write() {
            Ok(_g) => self.collect().await,
            Err(_) => Ok(()),
        }
    }

    async fn collect(&self) -> Result<(), ImageError> {
        let (blobs, snaps) = {
            let txn = self.db.begin_write().map_err(ImageError::db)?;
            let leased = Self::leased_ids(&txn)?;
            let mut live_blobs = BTreeSet::new();
            let mut live_snaps = BTreeSet::new();
            {
                let tags = txn.open_table(TAGS).map_err(ImageError::db)?;
                let mut named = HashSet::new();
                for item in tags.iter().map_err(ImageError::db)? {
                    named.insert(item.map_err(ImageError::db)?.1.value().to_string());
                }
                let mut images = txn.open_table(IMAGES).map_err(ImageError::db)?;
                let mut dead = Vec::new();
                for item in images.iter().map_err(ImageError::db)? {
                    let (k, v) = item.map_err(ImageError::db)?;
                    let rec: ImageRecord = serde_json::from_slice(v.value()).map_err(ImageError::db)?;
                    if !named.contains(k.value()) && !leased.contains(k.value()) {
                        dead.push(k.value().to_string());
                        continue;
                    }
                    live_blobs.insert(rec.id.clone());
                    live_blobs.insert(rec.manifest_digest.clone());
                    for l in rec.layers {
                        live_blobs.insert(l.digest);
                        live_snaps.insert(l.diff_id);
                    }
                }
                for k in dead {
                    images.remove(k.as_str()).map_err(ImageError::db)?;
                }
            }
            txn.commit().map_err(ImageError::db)?;
            (live_blobs, live_snaps)
        };
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ContentError> {
            for d in layout.list_blobs()? {
                if !blobs.contains(&d) {
                    layout.remove_blob(&d)?;
                }
            }
            for d in layout.list_snapshots()? {
                if !snaps.contains(&d) {
                    layout.remove_snapshot(&d)?;
                }
            }
            Ok(())
        })
        .await
        .expect("gc task does not panic")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_image_that_is_gone_cannot_be_leased() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("db")).unwrap());
        let creds = Arc::new(crate::registry::auth::CredentialStore::new(&dir.path().join("auth.json")));
        let store = ImageStore::open(&dir.path().join("image"), db, RegistryClient::new(Default::default(), creds)).unwrap();
        let gone: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let e = store.lease("pod:x", &[gone.clone()]).unwrap_err();
        assert!(e.to_string().contains(&format!("no such image: {gone} (removed")), "{e}");
        store.lease("pod:y", &[]).unwrap();
    }
}
