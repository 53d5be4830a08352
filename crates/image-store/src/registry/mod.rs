//! A client for the OCI distribution API (v2): manifests and blobs, pull and push, bearer-token and basic
//! authentication, insecure (plain HTTP) registries and pull mirrors.

pub mod auth;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;

pub use auth::{Challenge, Credential, CredentialError, CredentialStore};

use crate::digest::Digest;
use crate::manifest::{MANIFEST_ACCEPT, MAX_JSON_SIZE};
use crate::reference::{DEFAULT_REGISTRY, Reference};

/// How hyperd talks to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Hosts (`host[:port]`) that may be reached over plain HTTP or with an unverified certificate.
    pub insecure: Vec<String>,
    /// Per registry, mirror base URLs tried (in order) before the registry itself when pulling.
    pub mirrors: BTreeMap<String, Vec<String>>,
}

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: registry answered {status}{message}")]
    Status {
        method: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{registry}: authentication required{hint}")]
    Unauthorized { registry: String, hint: String },
    #[error("{registry}: access denied{message}")]
    Denied { registry: String, message: String },
    #[error("{0}: not found in the registry")]
    NotFound(String),
    #[error("token server {realm}: {reason}")]
    Token { realm: String, reason: String },
    #[error("{url}: response larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: invalid upload location {location:?}")]
    BadLocation { url: String, location: String },
    #[error("reading credentials")]
    Credentials(#[from] CredentialError),
}

#[derive(Debug, Clone)]
struct Endpoint {
    /// `https://host` or the mirror's base URL, without a trailing slash.
    base: String,
    /// The host:port credentials are looked up by.
    host: String,
    /// Whether https may fall back to http (insecure registries and loopback).
    insecure: bool,
    /// Whether `base` carries an explicit scheme (mirrors), so no scheme probing is done.
    fixed_scheme: bool,
}

#[derive(Debug, Clone)]
struct Token {
    header: String,
    expires: Instant,
}

/// The registry client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    http_insecure: reqwest::Client,
    config: RegistryConfig,
    creds: Arc<CredentialStore>,
    /// (host, scope) -> Authorization header value
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// host -> "http" for insecure hosts found to speak plain HTTP
    schemes: Mutex<HashMap<String, &'static str>>,
}

/// What a push or pull needs from a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

fn scope(repo: &str, access: Access) -> String {
    match access {
        Access::Pull => format!("repository:{repo}:pull"),
        Access::Push => format!("repository:{repo}:pull,push"),
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

#[derive(Deserialize)]
struct OciErrors {
    #[serde(default)]
    errors: Vec<OciError>,
}

#[derive(Deserialize)]
struct OciError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<OciErrors>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|e| format!("{} ({})", e.message, e.code))
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => {
            let s = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string();
            if s.is_empty() {
                String::new()
            } else {
                format!(": {s}")
            }
        }
    }
}

/// A fetched manifest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` header, if the registry sent one.
    pub claimed_digest: Option<String>,
}

/// A repository on one endpoint: what pull and push operate on.
#[derive(Debug, Clone)]
pub struct Repo {
    client: RegistryClient,
    endpoint: Endpoint,
    registry: String,
    repository: String,
    access: Access,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig, creds: Arc<CredentialStore>) -> RegistryClient {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("hyper/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(120))
                .danger_accept_invalid_certs(insecure)
                .pool_max_idle_per_host(8)
                .build()
                .expect("HTTP client configuration is valid")
        };
        RegistryClient {
            inner: Arc::new(Inner {
                http: build(false),
                http_insecure: build(true),
                config,
                creds,
                tokens: Mutex::new(HashMap::new()),
                schemes: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn credentials(&self) -> &CredentialStore {
        &self.inner.creds
    }

    /// Forgets cached tokens of a registry host (after its credentials changed).
    pub fn forget_tokens(&self, host: &str) {
        self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner()).retain(|(h, _), _| h != host);
    }

    fn origin(&self, registry: &str) -> Endpoint {
        let host = if registry == DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            registry
        };
        let insecure = is_loopback(registry) || self.inner.config.insecure.iter().any(|h| h == registry);
        Endpoint {
            base: format!("https://{host}"),
            host: registry.to_string(),
            insecure,
            fixed_scheme: false,
        }
    }

    /// The endpoints a pull of `reference` tries, mirrors first.
    fn pull_endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut eps: Vec<Endpoint> = self
            .inner
            .config
            .mirrors
            .get(registry)
            .into_iter()
            .flatten()
            .map(|url| {
                let base = url.trim_end_matches('/').to_string();
                let host = base
                    .split_once("://")
                    .map(|(_, h)| h)
                    .unwrap_or(&base)
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                let insecure =
                    base.starts_with("http://") || self.inner.config.insecure.iter().any(|h| h == &host);
                Endpoint {
                    base,
                    host,
                    insecure,
                    fixed_scheme: true,
                }
            })
            .collect();
        eps.push(self.origin(registry));
        eps
    }

    /// Repositories to try for pulling `r`: its mirrors, then the registry itself.
    pub fn pull_repos(&self, r: &Reference) -> Vec<Repo> {
        self.pull_endpoints(r.registry())
            .into_iter()
            .map(|endpoint| Repo {
                client: self.clone(),
                endpoint,
                registry: r.registry().to_string(),
                repository: r.repository().to_string(),
                access: Access::Pull,
            })
            .collect()
    }

    /// The repository to push `r` to (never a mirror).
    pub fn push_repo(&self, r: &Reference) -> Repo {
        Repo {
            client: self.clone(),
            endpoint: self.origin(r.registry()),
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            access: Access::Push,
        }
    }

    /// Checks credentials against a registry's `/v2/` endpoint (what `hyper login` does before saving).
    pub async fn check_login(&self, registry: &str, cred: &Credential) -> Result<(), RegistryError> {
        let ep = self.origin(registry);
        let url = self.url(&ep, "/v2/");
        let resp = self.raw_send(&ep, Method::GET, &url, None, &[], None).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return if resp.status().is_success() {
                Ok(())
            } else {
                Err(RegistryError::Status {
                    method: "GET".into(),
                    url,
                    status: resp.status().as_u16(),
                    message: String::new(),
                })
            };
        }
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(auth::parse_challenge);
        let header = match challenge {
            Some(Challenge::Basic { .. }) | None => cred.basic_header(),
            Some(Challenge::Bearer { realm, service, .. }) => {
                self.fetch_token(&realm, service.as_deref(), None, Some(cred))
                    .await?
                    .header
            }
        };
        let resp = self
            .raw_send(&ep, Method::GET, &url, Some(&header), &[], None)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RegistryError::Unauthorized {
                registry: registry.to_string(),
                hint: ": the user name or password is wrong".into(),
            }),
            s => Err(RegistryError::Status {
                method: "GET".into(),
                url,
                status: s.as_u16(),
                message: String::new(),
            }),
        }
    }

    fn url(&self, ep: &Endpoint, path: &str) -> String {
        if !ep.fixed_scheme {
            if let Some(scheme) = self
                .inner
                .schemes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&ep.host)
            {
                return format!("{scheme}://{}{path}", ep.base.trim_start_matches("https://"));
            }
        }
        format!("{}{path}", ep.base)
    }

    /// Sends one request; for insecure endpoints, falls back from https to http once and remembers it.
    async fn raw_send(
        &self,
        ep: &Endpoint,
        method: Method,
        url: &str,
        auth: Option<&str>,
        extra: &[(&str, String)],
        body: Option<Body>,
    ) -> Result<reqwest::Response, RegistryError> {
        let client = if ep.insecure {
            &self.inner.http_insecure
        } else {
            &self.inner.http
        };
        let build = |url: &str, body: Option<Body>| {
            let mut rb = client.request(method.clone(), url);
            if let Some(a) = auth {
                rb = rb.header(header::AUTHORIZATION, a);
            }
            for (k, v) in extra {
                rb = rb.header(*k, v);
            }
            if let Some(b) = body {
                rb = rb
                    .header(header::CONTENT_TYPE, b.content_type)
                    .header(header::CONTENT_LENGTH, b.len)
                    .body(b.body);
            }
            rb
        };
        let can_retry = body.as_ref().is_none_or(|b| b.rebuild.is_some());
        let rebuilt = body.as_ref().and_then(|b| b.rebuild.as_ref().map(|f| f()));
        match build(url, body).send().await {
            Ok(r) => Ok(r),
            Err(e) if ep.insecure && !ep.fixed_scheme && url.starts_with("https://") && can_retry => {
                let http_url = format!("http://{}", &url["https://".len()..]);
                let r = build(&http_url, rebuilt)
                    .send()
                    .await
                    .map_err(|_| RegistryError::Connect {
                        url: url.to_string(),
                        source: e,
                    })?;
                self.inner
                    .schemes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ep.host.clone(), "http");
                Ok(r)
            }
            Err(e) => Err(RegistryError::Connect {
                url: url.to_string(),
                source: e,
            }),
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        cred: Option<&Credential>,
    ) -> Result<Token, RegistryError> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| RegistryError::Token {
            realm: realm.to_string(),
            reason: format!("invalid realm URL: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = scope {
                q.append_pair("scope", s);
            }
        }
        let host = url.host_str().unwrap_or("");
        let insecure = is_loopback(host) || self.inner.config.insecure.iter().any(|h| h == host);
        let client = if insecure {
            &self.inner.http_insecure
        } else {
            &self.inner.http
        };
        let mut rb = client.get(url.clone());
        if let Some(c) = cred {
            rb = rb.header(header::AUTHORIZATION, c.basic_header());
        }
        let resp = rb.send().await.map_err(|e| RegistryError::Connect {
            url: realm.to_string(),
            source: e,
        })?;
        let status = resp.status();
        let body = read_limited(resp, 1 << 20, realm).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Token {
                realm: realm.to_string(),
                reason: if cred.is_some() {
                    "credentials rejected".into()
                } else {
                    "anonymous access refused; run `hyper login`".into()
                },
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Token {
                realm: realm.to_string(),
                reason: format!("answered {status}"),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| RegistryError::Token {
            realm: realm.to_string(),
            reason: format!("malformed token response: {e}"),
        })?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Token {
                realm: realm.to_string(),
                reason: "response has no token".into(),
            })?;
        // Refresh a little early; the spec's default lifetime is 60 s.
        let ttl = t.expires_in.unwrap_or(60).max(10) - 5;
        Ok(Token {
            header: format!("Bearer {token}"),
            expires: Instant::now() + Duration::from_secs(ttl),
        })
    }
}

/// A request body that can be rebuilt for a retry (after an auth challenge or a scheme fallback).
pub struct Body {
    body: reqwest::Body,
    len: u64,
    content_type: String,
    rebuild: Option<Arc<dyn Fn() -> Body + Send + Sync>>,
}

impl Body {
    pub fn bytes(data: Bytes, content_type: &str) -> Body {
        let ct = content_type.to_string();
        let d2 = data.clone();
        Body {
            len: data.len() as u64,
            body: reqwest::Body::from(data),
            content_type: ct.clone(),
            rebuild: Some(Arc::new(move || Body::bytes(d2.clone(), &ct))),
        }
    }

    /// A body streamed from a file; rebuilt by reopening it.
    pub fn file(path: std::path::PathBuf, len: u64) -> Body {
        let p2 = path.clone();
        let stream = futures_util::stream::once(async move { tokio::fs::File::open(path).await })
            .map(|r| match r {
                Ok(f) => tokio_util_like::reader_stream(f).boxed(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten();
        Body {
            body: reqwest::Body::wrap_stream(stream),
            len,
            content_type: "application/octet-stream".into(),
            rebuild: Some(Arc::new(move || Body::file(p2.clone(), len))),
        }
    }
}

/// A minimal `ReaderStream`: chunks of an `AsyncRead` as a stream of `Bytes`.
mod tokio_util_like {
    use bytes::{Bytes, BytesMut};
    use futures_util::Stream;
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub fn reader_stream<R: AsyncRead + Unpin + Send + 'static>(
        r: R,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        futures_util::stream::unfold(Some(r), |state| async move {
            let mut r = state?;
            let mut buf = BytesMut::with_capacity(256 << 10);
            match r.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buf.freeze()), Some(r))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

async fn read_limited(resp: reqwest::Response, limit: u64, url: &str) -> Result<Bytes, RegistryError> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(RegistryError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Connect {
            url: url.to_string(),
            source: e,
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(RegistryError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

impl Repo {
    /// Where this repository lives, for messages (`127.0.0.1:5000/a/b`, or the mirror URL).
    pub fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.endpoint.base.trim_start_matches("https://"),
            self.repository
        )
    }

    pub fn is_mirror(&self) -> bool {
        self.endpoint.fixed_scheme
    }

    /// Sends a request with authentication: the cached token first; on 401, answers the challenge once.
    async fn send(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, String)],
        body: Option<Body>,
    ) -> Result<reqwest::Response, RegistryError> {
        let scope = scope(&self.repository, self.access);
        let key = (self.endpoint.host.clone(), scope.clone());
        let client = &self.client;
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            client.url(&self.endpoint, path)
        };
        let cached = {
            let tokens = client.inner.tokens.lock().unwrap_or_else(|e| e.into_inner());
            tokens
                .get(&key)
                .filter(|t| t.expires > Instant::now())
                .map(|t| t.header.clone())
        };
        let retry_body = body.as_ref().and_then(|b| b.rebuild.as_ref().map(|f| f()));
        let resp = self
            .send_once(&method, &url, cached.as_deref(), extra, body)
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(auth::parse_challenge);
        let cred = client.inner.creds.get(&self.endpoint.host)?;
        let token = match challenge {
            Some(Challenge::Bearer { realm, service, .. }) => {
                client
                    .fetch_token(&realm, service.as_deref(), Some(&scope), cred.as_ref())
                    .await?
            }
            Some(Challenge::Basic { .. }) | None => match &cred {
                Some(c) => Token {
                    header: c.basic_header(),
                    expires: Instant::now() + Duration::from_secs(3600),
                },
                None => {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        hint: format!("; run `hyper login {}`", self.endpoint.host),
                    });
                }
            },
        };
        client
            .inner
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, token.clone());
        let resp = self
            .send_once(&method, &url, Some(&token.header), extra, retry_body)
            .await?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                hint: if cred.is_some() {
                    ": credentials rejected".into()
                } else {
                    format!("; run `hyper login {}`", self.endpoint.host)
                },
            }),
            _ => Ok(resp),
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        auth: Option<&str>,
        extra: &[(&str, String)],
        body: Option<Body>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.client
            .raw_send(&self.endpoint, method.clone(), url, auth, extra, body)
            .await
    }

    async fn check(
        &self,
        method: &str,
        what: &str,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let url = resp.url().to_string();
        let body = read_limited(resp, 64 << 10, &url).await.unwrap_or_default();
        match status {
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound(what.to_string())),
            StatusCode::FORBIDDEN => Err(RegistryError::Denied {
                registry: self.registry.clone(),
                message: error_message(&body),
            }),
            _ => Err(RegistryError::Status {
                method: method.to_string(),
                url,
                status: status.as_u16(),
                message: error_message(&body),
            }),
        }
    }

    /// GETs a manifest by tag or digest (at most 4 MiB).
    pub async fn get_manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let resp = self
            .send(
                Method::GET,
                &path,
                &[("Accept", MANIFEST_ACCEPT.to_string())],
                None,
            )
            .await?;
        let what = format!("{}:{reference}", self.describe());
        let resp = self.check("GET", &what, resp).await?;
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let claimed_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let url = resp.url().to_string();
        let bytes = read_limited(resp, MAX_JSON_SIZE, &url).await?;
        Ok(FetchedManifest {
            bytes,
            content_type,
            claimed_digest,
        })
    }

    /// Starts a blob download; the caller streams and verifies it.
    pub async fn get_blob(&self, digest: &Digest) -> Result<reqwest::Response, RegistryError> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let resp = self.send(Method::GET, &path, &[], None).await?;
        self.check("GET", &format!("blob {digest}"), resp).await
    }

    /// GETs a small blob (a config) fully, at most `limit` bytes.
    pub async fn get_small_blob(&self, digest: &Digest, limit: u64) -> Result<Bytes, RegistryError> {
        let resp = self.get_blob(digest).await?;
        let url = resp.url().to_string();
        read_limited(resp, limit, &url).await
    }

    /// Whether the registry already has a blob.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let resp = self.send(Method::HEAD, &path, &[], None).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => self
                .check("HEAD", &format!("blob {digest}"), resp)
                .await
                .map(|_| false),
        }
    }

    /// Uploads a blob monolithically (POST to start an upload, PUT with the digest).
    pub async fn put_blob(&self, digest: &Digest, body: Body) -> Result<(), RegistryError> {
        let path = format!("/v2/{}/blobs/uploads/", self.repository);
        let resp = self.send(Method::POST, &path, &[], None).await?;
        let resp = self.check("POST", &format!("upload of {digest}"), resp).await?;
        let base = resp.url().clone();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::BadLocation {
                url: base.to_string(),
                location: String::new(),
            })?
            .to_string();
        let mut url = base.join(&location).map_err(|_| RegistryError::BadLocation {
            url: base.to_string(),
            location: location.clone(),
        })?;
        url.query_pairs_mut().append_pair("digest", &digest.to_string());
        let resp = self.send(Method::PUT, url.as_str(), &[], Some(body)).await?;
        self.check("PUT", &format!("blob {digest}"), resp)
            .await
            .map(|_| ())
    }

    /// PUTs a manifest under a tag or digest.
    pub async fn put_manifest(
        &self,
        reference: &str,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let resp = self
            .send(Method::PUT, &path, &[], Some(Body::bytes(bytes, media_type)))
            .await?;
        self.check("PUT", &format!("manifest {reference}"), resp)
            .await
            .map(|_| ())
    }
}
