//! `load` and `save`: Docker archives (`docker save` tars) and OCI image layouts (tar or directory).
//!
//! `save` writes one tar that is both: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/..`)
//! and a Docker archive whose `manifest.json` points into the same blobs, as current Docker does. Layers are
//! written as stored (their original compression), so a saved image keeps its manifest digest.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::content::{ContentError, Layout, expect_digest, expect_size};
use crate::digest::Digest;
use crate::manifest::{
    self, Compression, Descriptor, MAX_JSON_SIZE, ManifestKind, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
    OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::progress::{LayerState, ProgressSink};
use crate::pull::unpack_stored;
use crate::reference::Reference;
use crate::store::{ImageError, ImageRecord, ImageStore, LayerRecord};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Debug, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A file of the archive: kept in memory when small, else stored as a blob.
#[derive(Debug, Clone)]
enum Item {
    Small(Arc<Vec<u8>>, Digest),
    Blob(Digest, u64),
}

impl Item {
    fn digest(&self) -> &Digest {
        match self {
            Item::Small(_, d) | Item::Blob(d, _) => d,
        }
    }
    fn size(&self) -> u64 {
        match self {
            Item::Small(b, _) => b.len() as u64,
            Item::Blob(_, s) => *s,
        }
    }
}

/// The files of an archive, by normalised path; symlinks resolved on lookup.
#[derive(Debug, Default)]
struct Files {
    items: HashMap<String, Item>,
    links: HashMap<String, String>,
}

fn archive_err(msg: impl Into<String>) -> ImageError {
    ImageError::Archive(msg.into())
}

fn norm(p: &str) -> Result<String, ImageError> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(archive_err(format!(
                        "archive entry {p:?} leads outside the archive"
                    )));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

impl Files {
    fn get(&self, path: &str) -> Result<&Item, ImageError> {
        let mut p = norm(path)?;
        for _ in 0..16 {
            if let Some(i) = self.items.get(&p) {
                return Ok(i);
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(archive_err(format!("the archive has no file {path:?}")))
    }

    fn small(&self, path: &str, layout: &Layout) -> Result<Arc<Vec<u8>>, ImageError> {
        match self.get(path)? {
            Item::Small(b, _) => Ok(b.clone()),
            Item::Blob(d, _) => Ok(Arc::new(layout.read_blob(d, MAX_JSON_SIZE)?)),
        }
    }

    fn add(&mut self, path: String, item: Item) {
        self.items.insert(path, item);
    }
}

fn ingest<R: Read>(layout: &Layout, mut r: R, size: u64, path: &str) -> Result<Item, ImageError> {
    if size <= MAX_JSON_SIZE {
        let mut b = Vec::with_capacity(size as usize);
        r.read_to_end(&mut b)
            .map_err(|e| archive_err(format!("reading {path}: {e}")))?;
        let d = Digest::of(&b);
        return Ok(Item::Small(Arc::new(b), d));
    }
    let mut w = layout.blob_writer()?;
    io::copy(&mut r, &mut w).map_err(|e| archive_err(format!("reading {path}: {e}")))?;
    let n = w.written();
    let d = w.commit(None, Some(n), path)?;
    Ok(Item::Blob(d, n))
}

fn read_tar<R: Read>(layout: &Layout, r: R) -> Result<Files, ImageError> {
    let mut files = Files::default();
    let mut ar = tar::Archive::new(r);
    for e in ar
        .entries()
        .map_err(|e| archive_err(format!("reading archive: {e}")))?
    {
        let e = e.map_err(|e| archive_err(format!("reading archive: {e}")))?;
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = norm(&raw)?;
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = e.size();
                let item = ingest(layout, e, size, &path)?;
                files.add(path, item);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let resolved = if e.header().entry_type() == tar::EntryType::Symlink {
                    let parent = Path::new(&path)
                        .parent()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    norm(&format!("{parent}/{target}"))?
                } else {
                    norm(&target)?
                };
                files.links.insert(path, resolved);
            }
            _ => {}
        }
    }
    Ok(files)
}

fn read_dir(layout: &Layout, root: &Path) -> Result<Files, ImageError> {
    let mut files = Files::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd =
            std::fs::read_dir(&dir).map_err(|e| archive_err(format!("reading {}: {e}", dir.display())))?;
        for e in rd {
            let e = e.map_err(|e| archive_err(format!("reading {}: {e}", dir.display())))?;
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("walk stays under root")
                .to_string_lossy()
                .into_owned();
            let ft = e
                .file_type()
                .map_err(|e| archive_err(format!("{}: {e}", p.display())))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let f = File::open(&p).map_err(|e| archive_err(format!("opening {}: {e}", p.display())))?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                let item = ingest(layout, io::BufReader::with_capacity(1 << 20, f), size, &rel)?;
                files.add(rel, item);
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).map_err(|e| archive_err(format!("{}: {e}", p.display())))?;
                let parent = Path::new(&rel)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files
                    .links
                    .insert(rel, norm(&format!("{parent}/{}", t.to_string_lossy()))?);
            }
        }
    }
    Ok(files)
}

/// An image found in an archive, before it is recorded.
struct Candidate {
    config: (Arc<Vec<u8>>, Digest),
    manifest: Option<(Arc<Vec<u8>>, Digest, String)>,
    layers: Vec<(Digest, u64, Option<String>)>,
    names: Vec<String>,
}

/// What `load` did: the images and the names it gave them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadedImage {
    pub id: Digest,
    pub names: Vec<String>,
}

impl ImageStore {
    /// Loads every image of a tar stream (Docker archive or OCI layout).
    pub async fn load_tar<R: Read + Send + 'static>(
        &self,
        r: R,
        progress: ProgressSink,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        let layout = self.layout.clone();
        self.load_with(move || read_tar(&layout, r), progress).await
    }

    /// Loads every image of a directory (an OCI layout, or an unpacked Docker archive).
    pub async fn load_dir(
        &self,
        dir: PathBuf,
        progress: ProgressSink,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        let layout = self.layout.clone();
        self.load_with(move || read_dir(&layout, &dir), progress).await
    }

    async fn load_with(
        &self,
        read: impl FnOnce() -> Result<Files, ImageError> + Send + 'static,
        progress: ProgressSink,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        let result = {
            let _g = self.gc_lock.read().await;
            let layout = self.layout.clone();
            let p = progress.clone();
            let records = tokio::task::spawn_blocking(
                move || -> Result<Vec<(ImageRecord, Vec<String>)>, ImageError> {
                    let files = read()?;
                    let candidates = find_images(&files, &layout)?;
                    candidates
                        .into_iter()
                        .map(|c| build_record(&layout, &files, c, &p))
                        .collect()
                },
            )
            .await
            .expect("load task does not panic");
            match records {
                Ok(records) => {
                    let mut out = Vec::new();
                    for (rec, names) in records {
                        self.commit_image(&rec, &names)?;
                        out.push(LoadedImage { id: rec.id, names });
                    }
                    Ok(out)
                }
                Err(e) => Err(e),
            }
        };
        // Archive files nobody references (and anything of a failed load) go now.
        self.gc().await?;
        result
    }

    /// Writes the named images as one archive (Docker archive + OCI layout) to `w`.
    pub async fn save<W: Write + Send + 'static>(&self, names: Vec<String>, w: W) -> Result<(), ImageError> {
        let mut images = Vec::new();
        for n in &names {
            let rec = self.resolve(n)?;
            let tag = n
                .parse::<Reference>()
                .ok()
                .filter(|r| r.digest().is_none() && rec.id.hex() != n.trim_start_matches("sha256:"));
            images.push((rec, tag));
        }
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || write_archive(&layout, &images, w))
            .await
            .expect("save task does not panic")
    }
}

fn find_images(files: &Files, layout: &Layout) -> Result<Vec<Candidate>, ImageError> {
    if files.items.contains_key("manifest.json") {
        let bytes = files.small("manifest.json", layout)?;
        let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&bytes)
            .map_err(|e| archive_err(format!("malformed manifest.json: {e}")))?;
        let mut out = Vec::new();
        for e in entries {
            let config = files.small(&e.config, layout)?;
            let cd = Digest::of(&config);
            let mut layers = Vec::new();
            for l in &e.layers {
                let item = files.get(l)?;
                layers.push((item.digest().clone(), item.size(), None));
            }
            let mut names = Vec::new();
            for t in e.repo_tags.unwrap_or_default() {
                let r: Reference = t
                    .parse()
                    .map_err(|e| archive_err(format!("manifest.json: {e}")))?;
                names.push(r.to_string());
            }
            out.push(Candidate {
                config: (config, cd),
                manifest: None,
                layers,
                names,
            });
        }
        return Ok(out);
    }
    if files.items.contains_key("index.json") {
        let bytes = files.small("index.json", layout)?;
        let index = match manifest::parse_manifest(&bytes, None) {
            Ok(ManifestKind::Index(i)) => i,
            Ok(ManifestKind::Image(_)) => return Err(archive_err("index.json is a manifest, not an index")),
            Err(e) => return Err(archive_err(format!("index.json: {e}"))),
        };
        let mut out = Vec::new();
        for desc in &index.manifests {
            let mut names = Vec::new();
            if let Some(n) = desc
                .annotations
                .get(CONTAINERD_NAME)
                .or(desc.annotations.get(REF_NAME))
            {
                // A bare tag ("latest") names no repository: such an image is loaded without a name.
                if n.contains('/') || n.contains(':') || desc.annotations.contains_key(CONTAINERD_NAME) {
                    let r: Reference = n.parse().map_err(|e| archive_err(format!("index.json: {e}")))?;
                    names.push(r.to_string());
                }
            }
            out.push(oci_candidate(files, layout, desc, names, 0)?);
        }
        return Ok(out);
    }
    Err(archive_err(
        "not a Docker archive or an OCI image layout: it has neither manifest.json nor index.json",
    ))
}

fn oci_blob<'a>(files: &'a Files, d: &Digest) -> Result<&'a Item, ImageError> {
    let path = format!("blobs/sha256/{}", d.hex());
    let item = files.get(&path)?;
    expect_digest(&format!("archive file {path}"), d, item.digest())?;
    Ok(item)
}

fn oci_candidate(
    files: &Files,
    layout: &Layout,
    desc: &Descriptor,
    names: Vec<String>,
    depth: u32,
) -> Result<Candidate, ImageError> {
    let item = oci_blob(files, &desc.digest)?;
    let bytes = files.small(&format!("blobs/sha256/{}", desc.digest.hex()), layout)?;
    expect_size(&format!("manifest {}", desc.digest), desc.size, item.size())?;
    let what = format!("manifest {}", desc.digest);
    match manifest::parse_manifest(&bytes, Some(&desc.media_type)).map_err(|source| ImageError::Manifest {
        what: what.clone(),
        source,
    })? {
        ManifestKind::Index(i) if depth == 0 => {
            let chosen = i
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .ok_or_else(|| ImageError::NoPlatform {
                    reference: what,
                    available: "no linux/amd64".into(),
                })?;
            oci_candidate(files, layout, chosen, names, depth + 1)
        }
        ManifestKind::Index(_) => Err(archive_err(format!("{what}: nested image index"))),
        ManifestKind::Image(m) => {
            let citem = oci_blob(files, &m.config.digest)?;
            expect_size(
                &format!("config {}", m.config.digest),
                m.config.size,
                citem.size(),
            )?;
            let config = files.small(&format!("blobs/sha256/{}", m.config.digest.hex()), layout)?;
            let mut layers = Vec::new();
            for l in &m.layers {
                let li = oci_blob(files, &l.digest)?;
                expect_size(&format!("layer {}", l.digest), l.size, li.size())?;
                layers.push((l.digest.clone(), l.size, Some(l.media_type.clone())));
            }
            let mt = manifest::manifest_media_type(&m).to_string();
            Ok(Candidate {
                config: (config, m.config.digest.clone()),
                manifest: Some((bytes, desc.digest.clone(), mt)),
                layers,
                names,
            })
        }
    }
}

/// Stores small archive items that became layer blobs, unpacks layers, synthesises a manifest if needed.
fn build_record(
    layout: &Arc<Layout>,
    files: &Files,
    c: Candidate,
    progress: &ProgressSink,
) -> Result<(ImageRecord, Vec<String>), ImageError> {
    let (config_bytes, config_digest) = c.config;
    let config =
        manifest::parse_config(&config_bytes, c.layers.len()).map_err(|source| ImageError::Config {
            what: config_digest.to_string(),
            source,
        })?;
    let mut layers = Vec::new();
    let mut total = 0;
    for ((digest, size, media_type), diff_id) in c.layers.into_iter().zip(&config.rootfs.diff_ids) {
        // Small layers were kept in memory: store them as blobs now.
        if !layout.has_blob(&digest) {
            let item = files
                .items
                .values()
                .find(|i| i.digest() == &digest)
                .ok_or_else(|| archive_err(format!("layer {digest} vanished from the archive")))?;
            if let Item::Small(b, _) = item {
                layout.write_blob(b, Some(&digest), "layer")?;
            }
        }
        let compression = match &media_type {
            Some(mt) => Compression::of_layer_media_type(mt)
                .ok_or_else(|| archive_err(format!("layer {digest}: unknown media type {mt}")))?,
            None => {
                let mut head = [0u8; 4];
                let mut f = File::open(layout.blob_path(&digest))
                    .map_err(|e| archive_err(format!("layer {digest}: {e}")))?;
                let n = f.read(&mut head).unwrap_or(0);
                Compression::sniff(&head[..n])
            }
        };
        progress.layer(&digest, LayerState::Extracting, 0, size);
        let unpacked = if layout.has_snapshot(diff_id) {
            layout.snapshot_size(diff_id)
        } else {
            unpack_stored(layout, &digest, diff_id, compression)?
        };
        progress.layer(&digest, LayerState::Complete, size, size);
        total += unpacked;
        let media_type = media_type.unwrap_or_else(|| {
            match compression {
                Compression::None => OCI_LAYER,
                Compression::Gzip => OCI_LAYER_GZIP,
                Compression::Zstd => OCI_LAYER_ZSTD,
            }
            .to_string()
        });
        layers.push(LayerRecord {
            digest,
            diff_id: diff_id.clone(),
            size,
            media_type,
        });
    }
    layout.write_blob(&config_bytes, Some(&config_digest), "image config")?;
    let (manifest_digest, manifest_media_type) = match c.manifest {
        Some((bytes, d, mt)) => {
            layout.write_blob(&bytes, Some(&d), "manifest")?;
            (d, mt)
        }
        None => {
            let m = manifest::Manifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: OCI_CONFIG.to_string(),
                    digest: config_digest.clone(),
                    size: config_bytes.len() as u64,
                    platform: None,
                    annotations: BTreeMap::new(),
                    urls: vec![],
                },
                layers: layers
                    .iter()
                    .map(|l| Descriptor {
                        media_type: l.media_type.clone(),
                        digest: l.digest.clone(),
                        size: l.size,
                        platform: None,
                        annotations: BTreeMap::new(),
                        urls: vec![],
                    })
                    .collect(),
                annotations: BTreeMap::new(),
            };
            let bytes = serde_json::to_vec(&m).expect("manifest serialises");
            (
                layout.write_blob(&bytes, None, "manifest")?,
                OCI_MANIFEST.to_string(),
            )
        }
    };
    let record = ImageRecord {
        id: config_digest,
        manifest_digest,
        manifest_media_type,
        layers,
        created: config.created,
        size: total,
        repo_digests: vec![],
    };
    Ok((record, c.names))
}

fn write_archive<W: Write>(
    layout: &Layout,
    images: &[(ImageRecord, Option<Reference>)],
    w: W,
) -> Result<(), ImageError> {
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Deterministic);
    let werr = |e: io::Error| archive_err(format!("writing archive: {e}"));
    let mut written = std::collections::HashSet::new();
    let mut blob = |tar: &mut tar::Builder<W>, d: &Digest| -> Result<(), ImageError> {
        if !written.insert(d.clone()) {
            return Ok(());
        }
        let path = layout.blob_path(d);
        let f = File::open(&path).map_err(|_| ContentError::Missing(d.clone()))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(f.metadata().map_err(werr)?.len());
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(
            &mut h,
            format!("blobs/sha256/{}", d.hex()),
            io::BufReader::with_capacity(1 << 20, f),
        )
        .map_err(werr)
    };
    let add_bytes = |tar: &mut tar::Builder<W>, name: &str, b: &[u8]| -> Result<(), ImageError> {
        let mut h = tar::Header::new_gnu();
        h.set_size(b.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(&mut h, name, b).map_err(werr)
    };
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for (rec, tag) in images {
        for l in &rec.layers {
            blob(&mut tar, &l.digest)?;
        }
        blob(&mut tar, &rec.id)?;
        blob(&mut tar, &rec.manifest_digest)?;
        let msize = std::fs::metadata(layout.blob_path(&rec.manifest_digest))
            .map_err(werr)?
            .len();
        let mut annotations = BTreeMap::new();
        if let Some(t) = tag {
            annotations.insert(CONTAINERD_NAME.to_string(), t.to_string());
            if let Some(tg) = t.tag() {
                annotations.insert(REF_NAME.to_string(), tg.to_string());
            }
        }
        index.push(Descriptor {
            media_type: rec.manifest_media_type.clone(),
            digest: rec.manifest_digest.clone(),
            size: msize,
            platform: None,
            annotations,
            urls: vec![],
        });
        docker.push(DockerManifestEntry {
            config: format!("blobs/sha256/{}", rec.id.hex()),
            repo_tags: Some(
                tag.iter()
                    .map(|t| format!("{}:{}", t.familiar_name(), t.tag().unwrap_or("latest")))
                    .collect(),
            ),
            layers: rec
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                .collect(),
        });
    }
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let idx = manifest::Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_string()),
        manifests: index,
        annotations: BTreeMap::new(),
    };
    add_bytes(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&idx).expect("index serialises"),
    )?;
    add_bytes(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&docker).expect("manifest serialises"),
    )?;
    tar.into_inner().map_err(werr)?.flush().map_err(werr)?;
    Ok(())
}
