//! Image routes.

use std::path::PathBuf;
use std::sync::Arc;

use ::http::StatusCode;
use hyper_api::image as api;
use hyper_api::{ApiError, ErrorKind, StreamLine};
use image_store::{LayerState, Progress, ProgressSink, Reference};

use crate::daemon::Daemon;
use crate::errors::image_error;
use crate::web::{self, Req, Resp, api_error};

type Line<R> = StreamLine<api::Progress, R>;

pub fn progress_line(p: Progress) -> api::Progress {
    match p {
        Progress::Status { text } => api::Progress::Status { text },
        Progress::Layer {
            digest,
            state,
            current,
            total,
        } => api::Progress::Layer {
            digest: digest.to_string(),
            state: match state {
                LayerState::Waiting => "waiting",
                LayerState::Downloading => "downloading",
                LayerState::Extracting => "extracting",
                LayerState::Complete => "complete",
                LayerState::AlreadyExists => "already exists",
                LayerState::Uploading => "uploading",
                LayerState::Pushed => "pushed",
                LayerState::AlreadyPushed => "already pushed",
            }
            .to_string(),
            current,
            total,
        },
    }
}

fn sink<R: serde::Serialize + Send + 'static>(tx: &web::LineSender) -> ProgressSink {
    let tx = tx.clone();
    ProgressSink::new(move |p| tx.try_line::<api::Progress, R>(&Line::<R>::Progress(progress_line(p))))
}

pub async fn pull(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let body: api::PullRequest = web::read_json(req).await?;
    let reference: Reference =
        body.reference
            .parse()
            .map_err(|e: image_store::reference::ReferenceError| {
                api_error(ErrorKind::InvalidArgument, e.to_string())
            })?;
    let (tx, resp) = web::ndjson_stream();
    tokio::spawn(async move {
        let progress = sink::<api::PullResult>(&tx);
        let line = match d.images.pull(&reference, progress).await {
            Ok(rec) => {
                log::info!("pulled {reference} ({})", rec.manifest_digest);
                Line::Result(api::PullResult {
                    reference: reference.to_string(),
                    id: rec.id.to_string(),
                    digest: rec.manifest_digest.to_string(),
                })
            }
            Err(e) => {
                let e = image_error(&e);
                log::warn!("pull of {reference} failed: {}", e.message);
                Line::Error(e)
            }
        };
        tx.line(&line).await;
    });
    Ok(resp)
}

pub async fn push(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let body: api::PushRequest = web::read_json(req).await?;
    d.images.resolve(&body.name).map_err(|e| image_error(&e))?;
    let (tx, resp) = web::ndjson_stream();
    tokio::spawn(async move {
        let progress = sink::<api::PushResult>(&tx);
        let line = match d.images.push(&body.name, progress).await {
            Ok(digest) => Line::Result(api::PushResult {
                name: body.name.clone(),
                digest: digest.to_string(),
            }),
            Err(e) => Line::Error(image_error(&e)),
        };
        tx.line(&line).await;
    });
    Ok(resp)
}

pub async fn load(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let (tx, resp) = web::ndjson_stream();
    if let Some(path) = web::query_one(&q, "path") {
        // A daemon-local path: a directory (OCI layout) or a tar file.
        let path = PathBuf::from(path);
        let meta = std::fs::metadata(&path)
            .map_err(|e| api_error(ErrorKind::InvalidArgument, format!("{}: {e}", path.display())))?;
        tokio::spawn(async move {
            let progress = sink::<Vec<api::LoadedImage>>(&tx);
            let r = if meta.is_dir() {
                d.images.load_dir(path, progress).await
            } else {
                match std::fs::File::open(&path) {
                    Ok(f) => {
                        d.images
                            .load_tar(std::io::BufReader::with_capacity(1 << 20, f), progress)
                            .await
                    }
                    Err(e) => Err(image_store::ImageError::Archive(format!(
                        "{}: {e}",
                        path.display()
                    ))),
                }
            };
            tx.line(&load_line(r)).await;
        });
        return Ok(resp);
    }
    // The archive is the request body.
    let (btx, brx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(web::forward_body(req, btx));
    tokio::spawn(async move {
        let progress = sink::<Vec<api::LoadedImage>>(&tx);
        let r = d
            .images
            .load_tar(image_store::bridge::ChannelReader::new(brx), progress)
            .await;
        tx.line(&load_line(r)).await;
    });
    Ok(resp)
}

fn load_line(
    r: Result<Vec<image_store::LoadedImage>, image_store::ImageError>,
) -> Line<Vec<api::LoadedImage>> {
    match r {
        Ok(v) => {
            for i in &v {
                log::info!("loaded image {} {:?}", i.id, i.names);
            }
            Line::Result(
                v.into_iter()
                    .map(|i| api::LoadedImage {
                        id: i.id.to_string(),
                        names: i.names,
                    })
                    .collect(),
            )
        }
        Err(e) => Line::Error(image_error(&e)),
    }
}

pub async fn save(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let names = q.get("name").cloned().unwrap_or_default();
    if names.is_empty() {
        return Err(api_error(
            ErrorKind::InvalidArgument,
            "no image named (query parameter \"name\")",
        ));
    }
    for n in &names {
        d.images.resolve(n).map_err(|e| image_error(&e))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let w = image_store::bridge::ChannelWriter::new(tx.clone());
        if let Err(e) = d.images.save(names, w).await {
            let _ = tx.send(Err(std::io::Error::other(web::chain(&e)))).await;
        }
    });
    Ok(web::byte_stream(rx, "application/x-tar"))
}

pub async fn tag(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let body: api::TagRequest = web::read_json(req).await?;
    let target = d
        .images
        .tag(&body.source, &body.target)
        .map_err(|e| image_error(&e))?;
    Ok(web::json(
        StatusCode::CREATED,
        &serde_json::json!({ "target": target.to_string() }),
    ))
}

pub fn display_name(full: &str) -> (String, String) {
    match full.parse::<Reference>() {
        Ok(r) => (
            r.familiar_name(),
            r.tag()
                .map(str::to_string)
                .or(r.digest().map(|d| d.to_string()))
                .unwrap_or_default(),
        ),
        Err(_) => (full.to_string(), String::new()),
    }
}

pub async fn list(d: Arc<Daemon>) -> Result<Resp, ApiError> {
    let list = d.images.list().map_err(|e| image_error(&e))?;
    let out: Vec<api::ImageSummary> = list
        .into_iter()
        .map(|s| api::ImageSummary {
            id: s.id.to_string(),
            display: s.tags.iter().map(|t| display_name(t)).collect(),
            tags: s.tags,
            repo_digests: s.repo_digests,
            created: s.created,
            size: s.size,
        })
        .collect();
    Ok(web::ok(&out))
}

pub async fn inspect(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let name = web::require(&q, "name")?;
    Ok(web::ok(&inspect_image(&d, &name)?))
}

pub fn inspect_image(d: &Daemon, name: &str) -> Result<api::ImageInspect, ApiError> {
    let rec = d.images.resolve(name).map_err(|e| image_error(&e))?;
    let config = d.images.config_json(&rec).map_err(|e| image_error(&e))?;
    let tags = d
        .images
        .list()
        .map_err(|e| image_error(&e))?
        .into_iter()
        .find(|s| s.id == rec.id)
        .map(|s| s.tags)
        .unwrap_or_default();
    Ok(api::ImageInspect {
        id: rec.id.to_string(),
        tags,
        repo_digests: rec.repo_digests.clone(),
        manifest_digest: rec.manifest_digest.to_string(),
        manifest_media_type: rec.manifest_media_type.clone(),
        size: rec.size,
        layers: rec
            .layers
            .iter()
            .map(|l| api::ImageLayer {
                digest: l.digest.to_string(),
                diff_id: l.diff_id.to_string(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect(),
        config,
    })
}

pub async fn remove(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let name = web::require(&q, "name")?;
    let force = web::query_bool(&q, "force");
    let (untagged, deleted) = d.images.remove(&name, force).await.map_err(|e| image_error(&e))?;
    for id in &deleted {
        log::info!("deleted image {id}");
    }
    Ok(web::ok(&api::RemoveResult {
        untagged,
        deleted: deleted.iter().map(|d| d.to_string()).collect(),
    }))
}

pub async fn login(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let body: api::LoginRequest = web::read_json(req).await?;
    let registry = normalize_registry(&body.registry);
    let cred = image_store::Credential {
        username: body.username,
        password: body.password,
    };
    d.images
        .registry()
        .check_login(&registry, &cred)
        .await
        .map_err(|e| ApiError {
            kind: crate::errors::registry_kind(&e),
            message: web::chain(&e),
        })?;
    d.images
        .registry()
        .credentials()
        .set(&registry, &cred)
        .map_err(|e| api_error(ErrorKind::Internal, web::chain(&e)))?;
    d.images.registry().forget_tokens(&registry);
    log::info!("stored credentials for {registry}");
    Ok(web::ok(
        &serde_json::json!({ "registry": registry, "status": "Login Succeeded" }),
    ))
}

pub async fn logout(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let body: api::LogoutRequest = web::read_json(req).await?;
    let registry = normalize_registry(&body.registry);
    let had = d
        .images
        .registry()
        .credentials()
        .remove(&registry)
        .map_err(|e| api_error(ErrorKind::Internal, web::chain(&e)))?;
    d.images.registry().forget_tokens(&registry);
    if !had {
        return Err(api_error(
            ErrorKind::NotFound,
            format!("not logged in to {registry}"),
        ));
    }
    Ok(web::ok(
        &serde_json::json!({ "registry": registry, "status": "Removed login credentials" }),
    ))
}

/// `https://index.docker.io/v1/`, `docker.io`, `registry-1.docker.io` all mean Docker Hub.
fn normalize_registry(r: &str) -> String {
    let r = r.trim_start_matches("https://").trim_start_matches("http://");
    let r = r.split('/').next().unwrap_or(r);
    match r {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "" => "docker.io".into(),
        other => other.to_string(),
    }
}
