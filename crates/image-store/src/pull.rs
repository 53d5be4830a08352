//! `pull`: resolve a reference (mirrors first), pick linux/amd64 from an index, fetch the config, and fetch
//! layers concurrently, each streamed through digest and size checks into the blob store and unpacked into a
//! snapshot as it arrives. Nothing is recorded until every piece is verified.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use crate::content::{BlobWriter, ContentError, Layout, expect_digest, expect_size};
use crate::digest::{Digest, HashingReader};
use crate::manifest::{
    self, Compression, Descriptor, ImageConfig, MAX_JSON_SIZE, Manifest, ManifestKind, parse_manifest,
};
use crate::progress::{LayerState, ProgressSink};
use crate::reference::Reference;
use crate::registry::Repo;
use crate::store::{ImageError, ImageRecord, ImageStore, LayerRecord};
use crate::unpack::{self, UnpackError};

/// How many layers are fetched at once.
const CONCURRENT_LAYERS: usize = 4;

impl ImageStore {
    /// Pulls `reference` into the store; returns the stored image. A failed pull keeps nothing that no image
    /// uses, unless other image operations are under way: it does not wait for them, and the next collection
    /// takes what it left.
    pub async fn pull(
        &self,
        reference: &Reference,
        progress: ProgressSink,
    ) -> Result<ImageRecord, ImageError> {
        let pulled = {
            let _g = self.gc_lock.read().await;
            self.pull_sources(reference, &progress).await
        };
        if pulled.is_err() {
            if let Err(e) = self.gc_if_idle().await {
                log::warn!("collecting what the failed pull of {reference} left: {}", chain(&e));
            }
        }
        pulled
    }

    async fn pull_sources(
        &self,
        reference: &Reference,
        progress: &ProgressSink,
    ) -> Result<ImageRecord, ImageError> {
        let repos = self.client.pull_repos(reference);
        let mut mirror_errors = Vec::new();
        for repo in repos {
            progress.status(format!("pulling {} from {}", reference, repo.describe()));
            match self.pull_from(&repo, reference, progress).await {
                Ok(r) => return Ok(r),
                Err(e) if repo.is_mirror() => {
                    log::warn!(
                        "pull of {reference} from mirror {} failed: {}",
                        repo.describe(),
                        chain(&e)
                    );
                    progress.status(format!(
                        "mirror {} failed: {}; trying the next source",
                        repo.describe(),
                        chain(&e)
                    ));
                    mirror_errors.push(format!("{}: {}", repo.describe(), chain(&e)));
                }
                Err(e) if mirror_errors.is_empty() => return Err(e),
                Err(e) => {
                    return Err(ImageError::WithMirrors {
                        what: format!("pulling {reference}"),
                        mirrors: mirror_errors.join("; "),
                        source: Box::new(e),
                    });
                }
            }
        }
        unreachable!("pull_repos always returns the registry itself last")
    }

    async fn pull_from(
        &self,
        repo: &Repo,
        reference: &Reference,
        progress: &ProgressSink,
    ) -> Result<ImageRecord, ImageError> {
        let what = reference.to_string();
        let fetched = repo.get_manifest(&reference.manifest_ref()).await?;
        let top_digest = verify_manifest(
            &what,
            reference.digest(),
            &fetched.bytes,
            fetched.claimed_digest.as_deref(),
        )?;
        let kind = parse_manifest(&fetched.bytes, fetched.content_type.as_deref()).map_err(|source| {
            ImageError::Manifest {
                what: what.clone(),
                source,
            }
        })?;
        let (manifest, manifest_bytes, manifest_digest) = match kind {
            ManifestKind::Image(m) => (m, fetched.bytes, top_digest),
            ManifestKind::Index(index) => {
                let chosen = select_platform(&index.manifests).ok_or_else(|| ImageError::NoPlatform {
                    reference: what.clone(),
                    available: platforms(&index.manifests),
                })?;
                let sub = repo.get_manifest(&chosen.digest.to_string()).await?;
                let d = verify_manifest(
                    &what,
                    Some(&chosen.digest),
                    &sub.bytes,
                    sub.claimed_digest.as_deref(),
                )?;
                expect_size(&format!("manifest {d}"), chosen.size, sub.bytes.len() as u64)?;
                match parse_manifest(&sub.bytes, sub.content_type.as_deref()).map_err(|source| {
                    ImageError::Manifest {
                        what: what.clone(),
                        source,
                    }
                })? {
                    ManifestKind::Image(m) => (m, sub.bytes, d),
                    ManifestKind::Index(_) => {
                        return Err(ImageError::Manifest {
                            what,
                            source: manifest::ManifestError::UnknownMediaType("nested image index".into()),
                        });
                    }
                }
            }
        };

        // Config: small, fetched whole and verified.
        let config_bytes = if self.layout.has_blob(&manifest.config.digest) {
            Bytes::from(self.layout.read_blob(&manifest.config.digest, MAX_JSON_SIZE)?)
        } else {
            if manifest.config.size > MAX_JSON_SIZE {
                return Err(ContentError::TooLarge {
                    digest: manifest.config.digest.clone(),
                    limit: MAX_JSON_SIZE,
                }
                .into());
            }
            let b = repo
                .get_small_blob(&manifest.config.digest, MAX_JSON_SIZE)
                .await?;
            check_bytes(
                &format!("config {}", manifest.config.digest),
                &b,
                &manifest.config,
            )?;
            b
        };
        let config = manifest::parse_config(&config_bytes, manifest.layers.len()).map_err(|source| {
            ImageError::Config {
                what: what.clone(),
                source,
            }
        })?;

        let layers = self.fetch_layers(repo, &manifest, &config, progress).await?;

        // Everything verified: store the small blobs and record the image.
        self.layout
            .write_blob(&config_bytes, Some(&manifest.config.digest), "image config")?;
        self.layout
            .write_blob(&manifest_bytes, Some(&manifest_digest), "manifest")?;
        let size = layers.iter().map(|(_, s)| *s).sum();
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            manifest_digest: manifest_digest.clone(),
            manifest_media_type: manifest::manifest_media_type(&manifest).to_string(),
            layers: layers.into_iter().map(|(l, _)| l).collect(),
            created: config.created.clone(),
            size,
            repo_digests: vec![format!("{}@{}", reference.name(), manifest_digest)],
        };
        let mut names = vec![reference.to_string()];
        if reference.tag().is_some() && reference.digest().is_some() {
            names.push(reference.with_digest(manifest_digest).to_string());
        }
        self.commit_image(&record, &names)?;
        Ok(record)
    }

    async fn fetch_layers(
        &self,
        repo: &Repo,
        manifest: &Manifest,
        config: &ImageConfig,
        progress: &ProgressSink,
    ) -> Result<Vec<(LayerRecord, u64)>, ImageError> {
        for l in &manifest.layers {
            progress.layer(&l.digest, LayerState::Waiting, 0, l.size);
        }
        let jobs: Vec<_> = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(desc, diff_id)| self.fetch_layer_record(repo, desc.clone(), diff_id.clone(), progress))
            .collect();
        futures_util::stream::iter(jobs)
            .buffered(CONCURRENT_LAYERS)
            .try_collect()
            .await
    }

    async fn fetch_layer_record(
        &self,
        repo: &Repo,
        desc: Descriptor,
        diff_id: Digest,
        progress: &ProgressSink,
    ) -> Result<(LayerRecord, u64), ImageError> {
        let size = self.fetch_layer(repo, &desc, &diff_id, progress).await?;
        Ok((
            LayerRecord {
                digest: desc.digest,
                diff_id,
                size: desc.size,
                media_type: desc.media_type,
            },
            size,
        ))
    }

    async fn fetch_layer(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        diff_id: &Digest,
        progress: &ProgressSink,
    ) -> Result<u64, ImageError> {
        let compression =
            Compression::of_layer_media_type(&desc.media_type).ok_or_else(|| ImageError::Layer {
                layer: desc.digest.clone(),
                reason: format!("unknown media type {}", desc.media_type),
            })?;
        let layout = self.layout.clone();
        if layout.has_snapshot(diff_id) && layout.has_blob(&desc.digest) {
            progress.layer(&desc.digest, LayerState::AlreadyExists, desc.size, desc.size);
            return Ok(layout.snapshot_size(diff_id));
        }
        if layout.has_blob(&desc.digest) {
            // Blob present (loaded or pulled before) but not unpacked.
            progress.layer(&desc.digest, LayerState::Extracting, 0, desc.size);
            let (digest, diff_id2) = (desc.digest.clone(), diff_id.clone());
            let size =
                tokio::task::spawn_blocking(move || unpack_stored(&layout, &digest, &diff_id2, compression))
                    .await
                    .expect("unpack task does not panic")?;
            progress.layer(&desc.digest, LayerState::Complete, desc.size, desc.size);
            return Ok(size);
        }

        let resp = repo.get_blob(&desc.digest).await?;
        if let Some(len) = resp.content_length() {
            expect_size(&format!("layer {}", desc.digest), desc.size, len)?;
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let writer = layout.blob_writer()?;
        let (d, id, size) = (desc.digest.clone(), diff_id.clone(), desc.size);
        let worker = tokio::task::spawn_blocking(move || {
            stream_unpack(&layout, rx, writer, &d, size, &id, compression)
        });
        let mut stream = resp.bytes_stream();
        let mut received = 0u64;
        let mut last_report = 0u64;
        let mut download_error = None;
        progress.layer(&desc.digest, LayerState::Downloading, 0, desc.size);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    download_error = Some(ImageError::Layer {
                        layer: desc.digest.clone(),
                        reason: format!("download interrupted: {e}"),
                    });
                    break;
                }
            };
            received += chunk.len() as u64;
            if received > desc.size {
                download_error = Some(
                    ContentError::SizeMismatch {
                        what: format!("layer {}", desc.digest),
                        expected: desc.size,
                        actual: received,
                    }
                    .into(),
                );
                break;
            }
            if tx.send(chunk).await.is_err() {
                break; // the unpacker stopped: its error is the one to report
            }
            if received - last_report >= 512 << 10 || received == desc.size {
                last_report = received;
                progress.layer(&desc.digest, LayerState::Downloading, received, desc.size);
            }
        }
        drop(tx);
        let result = worker.await.expect("unpack task does not panic");
        if let Some(e) = download_error {
            return Err(e);
        }
        let size = result?;
        progress.layer(&desc.digest, LayerState::Complete, desc.size, desc.size);
        Ok(size)
    }
}

/// Checks a fetched manifest against the digest asked for and the digest the registry claims.
fn verify_manifest(
    what: &str,
    wanted: Option<&Digest>,
    bytes: &[u8],
    claimed: Option<&str>,
) -> Result<Digest, ImageError> {
    let actual = Digest::of(bytes);
    if let Some(w) = wanted {
        expect_digest(&format!("manifest of {what}"), w, &actual)?;
    }
    if let Some(c) = claimed {
        if c.parse::<Digest>().ok().as_ref() != Some(&actual) {
            return Err(ImageError::LyingRegistry {
                reference: what.to_string(),
                claimed: c.to_string(),
                actual,
            });
        }
    }
    Ok(actual)
}

fn check_bytes(what: &str, b: &[u8], desc: &Descriptor) -> Result<(), ContentError> {
    expect_size(what, desc.size, b.len() as u64)?;
    expect_digest(what, &desc.digest, &Digest::of(b))
}

fn select_platform(list: &[Descriptor]) -> Option<&Descriptor> {
    list.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    })
}

fn platforms(list: &[Descriptor]) -> String {
    let v: Vec<String> = list
        .iter()
        .map(|d| match &d.platform {
            Some(p) => format!(
                "{}/{}{}",
                p.os,
                p.architecture,
                p.variant.as_ref().map(|v| format!("/{v}")).unwrap_or_default()
            ),
            None => "unknown".into(),
        })
        .collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads chunks sent by the download loop.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Writes everything read through it into a blob writer (so the stored blob is exactly what was received).
struct Tee<R> {
    inner: R,
    writer: BlobWriter,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(&mut self.writer, &buf[..n])?;
        Ok(n)
    }
}

/// A decompressor that gives its input back.
pub(crate) enum Decoder<R: Read> {
    Plain(R),
    Gzip(flate2::read::MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, io::BufReader<R>>),
}

impl<R: Read> Decoder<R> {
    pub(crate) fn new(r: R, c: Compression) -> Self {
        match c {
            Compression::None => Decoder::Plain(r),
            Compression::Gzip => Decoder::Gzip(flate2::read::MultiGzDecoder::new(r)),
            // Creating a zstd context only fails when memory allocation fails, which aborts anyway.
            Compression::Zstd => {
                Decoder::Zstd(zstd::stream::read::Decoder::new(r).expect("allocating a zstd context"))
            }
        }
    }
    pub(crate) fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// Unpacks `src` (compressed as `c`) into a fresh temporary snapshot; returns the diff id, the file bytes and
/// the temporary directory (or the unpack error with the directory already removed).
pub(crate) fn unpack_into_temp<R: Read>(
    layout: &Layout,
    src: R,
    c: Compression,
) -> (Result<(Digest, u64, std::path::PathBuf), UnpackError>, R) {
    let dir = layout.temp_path("snap");
    if let Err(e) = std::fs::create_dir(&dir) {
        return (Err(UnpackError::Dest(dir, e)), src);
    }
    let mut dec = Decoder::new(src, c);
    let mut hr = HashingReader::new(&mut dec);
    let r = unpack::unpack(&mut hr, &dir).and_then(|stats| {
        let (diff, _) = hr.finish().map_err(UnpackError::Tar)?;
        Ok((diff, stats.bytes))
    });
    let src = dec.into_inner();
    match r {
        Ok((d, b)) => (Ok((d, b, dir)), src),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            (Err(e), src)
        }
    }
}

fn stream_unpack(
    layout: &Layout,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    writer: BlobWriter,
    digest: &Digest,
    size: u64,
    diff_id: &Digest,
    c: Compression,
) -> Result<u64, ImageError> {
    let tee = Tee {
        inner: ChannelReader {
            rx,
            cur: Bytes::new(),
        },
        writer,
    };
    let (result, mut tee) = unpack_into_temp(layout, tee, c);
    // Drain what the decompressor did not need, so the blob digest covers every byte received.
    let drained = io::copy(&mut tee, &mut io::sink());
    let Tee { writer, .. } = tee;
    let what = format!("layer {digest}");
    // A corrupted blob usually also breaks decompression: the digest mismatch is the real cause, so check it first.
    let committed = drained
        .map_err(|e| ContentError::Io {
            context: what.clone(),
            source: e,
        })
        .and_then(|_| writer.commit(Some(digest), Some(size), &what));
    let (diff, bytes, dir) = match (committed, result) {
        (Err(e), Ok((_, _, dir))) => {
            let _ = std::fs::remove_dir_all(dir);
            return Err(e.into());
        }
        (Err(e @ ContentError::DigestMismatch { .. }), Err(_))
        | (Err(e @ ContentError::SizeMismatch { .. }), Err(_)) => {
            return Err(e.into());
        }
        (_, Err(source)) => {
            // The blob is authentic but its content is unacceptable. It is not removed here: an installed
            // image may have it (a snapshot of another diff id made from it), and a failed pull or load
            // collects what no image uses.
            return Err(ImageError::Unpack {
                layer: digest.clone(),
                source,
            });
        }
        (Ok(_), Ok(v)) => v,
    };
    finish_snapshot(layout, digest, diff_id, diff, bytes, &dir)
}

fn finish_snapshot(
    layout: &Layout,
    digest: &Digest,
    want: &Digest,
    got: Digest,
    bytes: u64,
    dir: &std::path::Path,
) -> Result<u64, ImageError> {
    if &got != want {
        // The blob stays (see above): the image that lies about it is not the only one that may have it.
        let _ = std::fs::remove_dir_all(dir);
        return Err(ImageError::Layer {
            layer: digest.clone(),
            reason: format!("uncompressed content has digest {got} but the image config says {want}"),
        });
    }
    layout.commit_snapshot(dir, want)?;
    Ok(bytes)
}

/// Unpacks a blob already in the store.
pub(crate) fn unpack_stored(
    layout: &Arc<Layout>,
    digest: &Digest,
    diff_id: &Digest,
    c: Compression,
) -> Result<u64, ImageError> {
    let f = std::fs::File::open(layout.blob_path(digest)).map_err(|e| ContentError::Io {
        context: format!("opening blob {digest}"),
        source: e,
    })?;
    let (result, _) = unpack_into_temp(layout, io::BufReader::with_capacity(1 << 20, f), c);
    let (diff, bytes, dir) = result.map_err(|source| ImageError::Unpack {
        layer: digest.clone(),
        source,
    })?;
    finish_snapshot(layout, digest, diff_id, diff, bytes, &dir)
}
