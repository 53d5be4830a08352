//! OCI and Docker schema-2 manifests, indexes and image configurations: the subset hyper reads and writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDIST_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The `Accept` header for manifest requests: every manifest kind we understand.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or config we accept: real ones are a few KiB.
pub const MAX_JSON_SIZE: u64 = 4 << 20;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, or `None` if the type is not a layer type we know.
    pub fn of_layer_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            OCI_LAYER | DOCKER_LAYER | OCI_LAYER_NONDIST => Some(Compression::None),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP | DOCKER_FOREIGN_LAYER => {
                Some(Compression::Gzip)
            }
            OCI_LAYER_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Sniffs the compression from the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

/// An image manifest (OCI or Docker schema 2: the same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What a manifest endpoint returned.
#[derive(Debug, Clone)]
pub enum ManifestKind {
    Image(Manifest),
    Index(Index),
}

/// Why a manifest could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown manifest media type {0:?}")]
    UnknownMediaType(String),
    #[error("schema version {0} is not supported (only schema 2 manifests are)")]
    SchemaVersion(u32),
    #[error("unknown layer media type {0:?}")]
    UnknownLayerType(String),
    #[error("unknown config media type {0:?}")]
    UnknownConfigType(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

/// Parses manifest bytes. `content_type` is the HTTP Content-Type if any; the `mediaType` field wins.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<ManifestKind, ManifestError> {
    let probe: Probe = serde_json::from_slice(bytes)?;
    if let Some(v) = probe.schema_version {
        if v != 2 {
            return Err(ManifestError::SchemaVersion(v));
        }
    }
    let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string());
    let media_type = probe
        .media_type
        .clone()
        .or(ct.filter(|c| c.starts_with("application/vnd.")));
    let is_index = match media_type.as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        Some(other) => return Err(ManifestError::UnknownMediaType(other.to_string())),
        // OCI allows mediaType to be absent: tell the two apart by shape.
        None => probe.manifests.is_some(),
    };
    if is_index {
        Ok(ManifestKind::Index(serde_json::from_slice(bytes)?))
    } else {
        let m: Manifest = serde_json::from_slice(bytes)?;
        if m.config.media_type != OCI_CONFIG && m.config.media_type != DOCKER_CONFIG {
            return Err(ManifestError::UnknownConfigType(m.config.media_type));
        }
        for l in &m.layers {
            if Compression::of_layer_media_type(&l.media_type).is_none() {
                return Err(ManifestError::UnknownLayerType(l.media_type.clone()));
            }
        }
        Ok(ManifestKind::Image(m))
    }
}

/// The media type a manifest declares, defaulting by kind.
pub fn manifest_media_type(m: &Manifest) -> &str {
    m.media_type.as_deref().unwrap_or(OCI_MANIFEST)
}

/// An image configuration (the part hyper uses; unknown fields are kept when stored since the raw
/// bytes are stored, not this struct).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

/// Defaults for containers run from the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Parses and checks an image configuration against its manifest.
pub fn parse_config(bytes: &[u8], layer_count: usize) -> Result<ImageConfig, ConfigError> {
    let c: ImageConfig = serde_json::from_slice(bytes).map_err(ConfigError::Json)?;
    if c.rootfs.kind != "layers" {
        return Err(ConfigError::RootfsType(c.rootfs.kind));
    }
    if c.rootfs.diff_ids.len() != layer_count {
        return Err(ConfigError::LayerCount {
            diff_ids: c.rootfs.diff_ids.len(),
            layers: layer_count,
        });
    }
    Ok(c)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("malformed image config JSON: {0}")]
    Json(serde_json::Error),
    #[error("image config rootfs type is {0:?}, expected \"layers\"")]
    RootfsType(String),
    #[error("image config lists {diff_ids} layer diff ids but the manifest has {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_manifest() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":7023,
            "digest":"sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":32654,
            "digest":"sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f"}]}"#;
        match parse_manifest(m, None).unwrap() {
            ManifestKind::Image(m) => assert_eq!(m.layers.len(), 1),
            _ => panic!(),
        }
    }

    #[test]
    fn rejects_unknowns() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/x-evil","manifests":[]}"#;
        assert!(matches!(
            parse_manifest(m, None),
            Err(ManifestError::UnknownMediaType(_))
        ));
        let m = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(
            parse_manifest(m, None),
            Err(ManifestError::SchemaVersion(1))
        ));
        assert!(matches!(
            parse_manifest(b"{not json", None),
            Err(ManifestError::Json(_))
        ));
        let m =
            br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":1,
          "digest":"sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"},
          "layers":[{"mediaType":"application/x-bogus","size":1,
          "digest":"sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"}]}"#;
        assert!(matches!(
            parse_manifest(m, None),
            Err(ManifestError::UnknownLayerType(_))
        ));
    }

    #[test]
    fn index_without_media_type() {
        let m = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse_manifest(m, None).unwrap(), ManifestKind::Index(_)));
    }

    #[test]
    fn config_layer_count_must_match() {
        let c = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert!(matches!(parse_config(c, 1), Err(ConfigError::LayerCount { .. })));
        assert!(parse_config(c, 0).is_ok());
    }
}
