//! Builds OCI image layouts for tests: arbitrary layers (hostile ones included), configs, indexes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One tar entry, written byte for byte as given (paths are not sanitised: tests need hostile ones).
#[derive(Debug, Clone)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    File { path: String, data: Vec<u8>, mode: u32, uid: u64, gid: u64, xattrs: Vec<(String, Vec<u8>)> },
    Symlink { path: String, target: String },
    Hardlink { path: String, target: String },
    Char { path: String, major: u32, minor: u32 },
    Fifo { path: String },
    /// A GNU sparse file of `size` bytes: holes, then `data` at its end.
    Sparse { path: String, size: u64, data: Vec<u8> },
}

impl Entry {
    pub fn dir(path: &str) -> Entry {
        Entry::Dir { path: path.into(), mode: 0o755 }
    }
    pub fn file(path: &str, data: &[u8]) -> Entry {
        Entry::File { path: path.into(), data: data.to_vec(), mode: 0o644, uid: 0, gid: 0, xattrs: vec![] }
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink { path: path.into(), target: target.into() }
    }
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::Hardlink { path: path.into(), target: target.into() }
    }
}

fn raw_header(path: &str, kind: tar::EntryType, size: u64, mode: u32, uid: u64, gid: u64, link: &str) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().expect("ustar header");
        assert!(path.len() <= 100 && link.len() <= 100, "test paths are short");
        u.name[..path.len()].copy_from_slice(path.as_bytes());
        u.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(1_700_000_000);
    h
}

/// The uncompressed tar of some entries.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::Dir { path, mode } => {
                let mut h = raw_header(path, tar::EntryType::Directory, 0, *mode, 0, 0, "");
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
            Entry::File { path, data, mode, uid, gid, xattrs } => {
                if !xattrs.is_empty() {
                    let ext: Vec<(String, &[u8])> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice())).collect();
                    b.append_pax_extensions(ext.iter().map(|(k, v)| (k.as_str(), *v))).expect("pax");
                }
                let mut h = raw_header(path, tar::EntryType::Regular, data.len() as u64, *mode, *uid, *gid, "");
                h.set_cksum();
                b.append(&h, data.as_slice()).expect("append");
            }
            Entry::Symlink { path, target } => {
                let mut h = raw_header(path, tar::EntryType::Symlink, 0, 0o777, 0, 0, target);
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
            Entry::Hardlink { path, target } => {
                let mut h = raw_header(path, tar::EntryType::Link, 0, 0o644, 0, 0, target);
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
            Entry::Char { path, major, minor } => {
                let mut h = raw_header(path, tar::EntryType::Char, 0, 0o666, 0, 0, "");
                h.set_device_major(*major).expect("major");
                h.set_device_minor(*minor).expect("minor");
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
            Entry::Fifo { path } => {
                let mut h = raw_header(path, tar::EntryType::Fifo, 0, 0o600, 0, 0, "");
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
            Entry::Sparse { path, size, data } => {
                let mut h = tar::Header::new_gnu();
                h.as_gnu_mut().expect("gnu header").name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_entry_type(tar::EntryType::GNUSparse);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1_700_000_000);
                let g = h.as_gnu_mut().expect("gnu header");
                g.set_real_size(*size);
                g.sparse[0].set_offset(size - data.len() as u64);
                g.sparse[0].set_length(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_slice()).expect("append");
            }
        }
    }
    b.into_inner().expect("finish tar")
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::encode_all(data, 3).expect("zstd"),
    }
}

fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// A descriptor as JSON.
pub fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    index: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dirs");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let l = Layout { dir: dir.to_path_buf(), index: vec![] };
        l.write_index();
        l
    }

    /// Stores a blob; returns (digest, size).
    pub fn blob(&self, data: &[u8]) -> (String, usize) {
        let d = sha256(data);
        std::fs::write(self.dir.join("blobs/sha256").join(d.trim_start_matches("sha256:")), data).expect("write blob");
        (d, data.len())
    }

    /// Writes an image; returns its manifest descriptor (with `platform`). Layers are (entries, compression).
    pub fn image(&self, layers: &[(Vec<Entry>, Compression)], config: Value, arch: &str) -> Value {
        let mut diff_ids = vec![];
        let mut descs = vec![];
        for (entries, c) in layers {
            let tar = tar_of(entries);
            diff_ids.push(sha256(&tar));
            let (d, n) = self.blob(&compress(&tar, *c));
            descs.push(descriptor(layer_media_type(*c), &d, n));
        }
        let mut cfg = json!({
            "architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let (Some(o), Some(extra)) = (cfg.get_mut("config").and_then(Value::as_object_mut), config.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        let cfg_bytes = serde_json::to_vec(&cfg).expect("config");
        let (cd, cn) = self.blob(&cfg_bytes);
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &cd, cn),
            "layers": descs,
        });
        let mb = serde_json::to_vec(&manifest).expect("manifest");
        let (md, mn) = self.blob(&mb);
        let mut d = descriptor("application/vnd.oci.image.manifest.v1+json", &md, mn);
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    }

    /// Writes an image index over manifests; returns its descriptor.
    pub fn index_of(&self, manifests: &[Value]) -> Value {
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        let b = serde_json::to_vec(&idx).expect("index");
        let (d, n) = self.blob(&b);
        descriptor("application/vnd.oci.image.index.v1+json", &d, n)
    }

    /// Names `desc` with `ref_name` (a tag, or a full reference) in index.json.
    pub fn tag(&mut self, desc: &Value, ref_name: &str) {
        let mut d = desc.clone();
        d.as_object_mut().expect("object").remove("platform");
        d["annotations"] = json!({"org.opencontainers.image.ref.name": ref_name});
        self.index.push(d);
        self.write_index();
    }

    fn write_index(&self) {
        let idx = json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx).expect("index")).expect("index.json");
    }
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
