//! Registry authentication: `WWW-Authenticate` challenges and the credentials file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic {
            realm: params.get("realm").cloned(),
        }),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            value = s[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, value);
        }
    }
    out
}

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Serialize, Deserialize)]
struct AuthEntry {
    auth: String,
}

/// Errors of the credentials file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading credentials file {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("credentials file {0} is malformed: {1}")]
    Malformed(PathBuf, String),
    #[error("writing credentials file {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// Credentials per registry host, in a Docker-style `{"auths": {host: {"auth": base64(user:pass)}}}` file
/// that is only ever readable by its owner (mode 0600) and replaced atomically.
#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl CredentialStore {
    pub fn new(path: &Path) -> CredentialStore {
        CredentialStore {
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        }
    }

    fn load(&self) -> Result<AuthFile, CredentialError> {
        match fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| CredentialError::Malformed(self.path.clone(), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
            Err(e) => Err(CredentialError::Read(self.path.clone(), e)),
        }
    }

    fn save(&self, f: &AuthFile) -> Result<(), CredentialError> {
        let werr = |e| CredentialError::Write(self.path.clone(), e);
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(werr)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(werr)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(werr)?;
        file.write_all(&serde_json::to_vec_pretty(f).expect("auth file serialises"))
            .map_err(werr)?;
        file.sync_all().map_err(werr)?;
        fs::rename(&tmp, &self.path).map_err(werr)
    }

    /// The credential for a registry host, if one is stored.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>, CredentialError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let f = self.load()?;
        let Some(e) = f.auths.get(registry) else {
            return Ok(None);
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&e.auth)
            .map_err(|_| CredentialError::Malformed(self.path.clone(), format!("bad auth for {registry}")))?;
        let raw = String::from_utf8_lossy(&raw);
        let (u, p) = raw.split_once(':').ok_or_else(|| {
            CredentialError::Malformed(self.path.clone(), format!("bad auth for {registry}"))
        })?;
        Ok(Some(Credential {
            username: u.to_string(),
            password: p.to_string(),
        }))
    }

    pub fn set(&self, registry: &str, c: &Credential) -> Result<(), CredentialError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = self.load()?;
        let raw = format!("{}:{}", c.username, c.password);
        f.auths.insert(
            registry.to_string(),
            AuthEntry {
                auth: base64::engine::general_purpose::STANDARD.encode(raw),
            },
        );
        self.save(&f)
    }

    /// Removes a registry's credential; returns whether there was one.
    pub fn remove(&self, registry: &str) -> Result<bool, CredentialError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = self.load()?;
        let had = f.auths.remove(registry).is_some();
        if had {
            self.save(&f)?;
        }
        Ok(had)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn credential_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = CredentialStore::new(&dir.path().join("auth.json"));
        let c = Credential {
            username: "u".into(),
            password: "p:w".into(),
        };
        s.set("r:5000", &c).unwrap();
        assert_eq!(s.get("r:5000").unwrap(), Some(c));
        let mode = fs::metadata(dir.path().join("auth.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(s.remove("r:5000").unwrap());
        assert!(!s.remove("r:5000").unwrap());
        assert_eq!(s.get("r:5000").unwrap(), None);
    }
}
