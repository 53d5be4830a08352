//! Image commands: pull, push, load, save, tag, images, inspect, rmi, login, logout.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_api::image as api;

use super::CmdResult;
use crate::client::{self, Client, q};
use crate::output::{self, Format, LayerProgress};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference: NAME[:TAG] or NAME@DIGEST.
    reference: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// A local image name; its registry and repository say where it goes.
    name: String,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive file or OCI layout directory (default: standard input).
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Output file (default: standard output, if it is not a terminal).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only image ids.
    #[arg(short, long)]
    quiet: bool,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    name: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove every tag of an image given by id.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (default: Docker Hub).
    registry: Option<String>,
    #[arg(short, long)]
    username: String,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The password (prefer --password-stdin: command lines are visible to other users).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    registry: Option<String>,
}

fn render(p: &mut LayerProgress, line: api::Progress) {
    match line {
        api::Progress::Status { text } => p.status(&text),
        api::Progress::Layer {
            digest,
            state,
            current,
            total,
        } => p.layer(&digest, &state, current, total),
    }
}

pub async fn pull(c: &Client, a: PullArgs) -> CmdResult {
    let mut p = LayerProgress::new();
    let body = client::json_body(&api::PullRequest {
        reference: a.reference,
    });
    let r: api::PullResult = c
        .stream(Method::POST, "/images/pull", body, "application/json", |l| {
            render(&mut p, l)
        })
        .await?;
    p.finish();
    println!("Digest: {}", r.digest);
    println!("Status: downloaded {}", r.reference);
    Ok(ExitCode::SUCCESS)
}

pub async fn push(c: &Client, a: PushArgs) -> CmdResult {
    let mut p = LayerProgress::new();
    let body = client::json_body(&api::PushRequest { name: a.name });
    let r: api::PushResult = c
        .stream(Method::POST, "/images/push", body, "application/json", |l| {
            render(&mut p, l)
        })
        .await?;
    p.finish();
    println!("Pushed {} digest: {}", r.name, r.digest);
    Ok(ExitCode::SUCCESS)
}

pub async fn load(c: &Client, a: LoadArgs) -> CmdResult {
    let mut p = LayerProgress::new();
    let result: Vec<api::LoadedImage> = match &a.input {
        Some(path) if path.is_dir() => {
            let abs = std::fs::canonicalize(path)?;
            let path = format!("/images/load?path={}", q(&abs.to_string_lossy()));
            c.stream(Method::POST, &path, client::empty(), "application/json", |l| {
                render(&mut p, l)
            })
            .await?
        }
        input => {
            let reader: Box<dyn Read + Send> = match input {
                Some(f) => Box::new(std::fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?),
                None => {
                    if std::io::stdin().is_terminal() {
                        return Err("no input: give -i FILE or pipe an archive into standard input".into());
                    }
                    Box::new(std::io::stdin())
                }
            };
            c.stream(
                Method::POST,
                "/images/load",
                file_body(reader),
                "application/x-tar",
                |l| render(&mut p, l),
            )
            .await?
        }
    };
    p.finish();
    for img in result {
        if img.names.is_empty() {
            println!("Loaded image ID: {}", img.id);
        }
        for n in img.names {
            let (repo, tag) = familiar(&n);
            println!("Loaded image: {repo}:{tag}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams a blocking reader as a request body.
fn file_body(mut r: Box<dyn Read + Send>) -> client::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    BodyExt::boxed(channel_body(rx))
}

fn channel_body(
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static {
    struct RxBody(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);
    impl hyper::body::Body for RxBody {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
        }
    }
    RxBody(rx)
}

pub async fn save(c: &Client, a: SaveArgs) -> CmdResult {
    let query: Vec<String> = a.images.iter().map(|n| format!("name={}", q(n))).collect();
    let mut resp = c
        .send(
            Method::GET,
            &format!("/images/save?{}", query.join("&")),
            client::empty(),
            "application/json",
        )
        .await?;
    let (mut out, tmp): (Box<dyn Write>, Option<(PathBuf, PathBuf)>) = match &a.output {
        Some(path) => {
            let tmp = path.with_extension("hyper-partial");
            (
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?,
                )),
                Some((tmp, path.clone())),
            )
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(
                    "refusing to write an archive to a terminal: give -o FILE or redirect standard output"
                        .into(),
                );
            }
            (Box::new(std::io::stdout().lock()), None)
        }
    };
    let result: Result<(), Box<dyn std::error::Error>> = async {
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.map_err(|e| format!("the daemon failed while saving: {e}"))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data)?;
            }
        }
        out.flush()?;
        Ok(())
    }
    .await;
    drop(out);
    match (result, tmp) {
        (Ok(()), Some((tmp, path))) => std::fs::rename(&tmp, &path)?,
        (Err(e), Some((tmp, _))) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        (r, None) => r?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn tag(c: &Client, a: TagArgs) -> CmdResult {
    let _: serde_json::Value = c
        .call(
            Method::POST,
            "/images/tag",
            &api::TagRequest {
                source: a.source,
                target: a.target,
            },
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

fn familiar(full: &str) -> (String, String) {
    // docker.io/library/x:t -> x, t ; host/a:t -> host/a, t ; name@digest -> name, <none>
    let (name, tag) = match full.rsplit_once('@') {
        Some((n, _)) => (n.to_string(), "<none>".to_string()),
        None => match full.rfind(':') {
            Some(i) if !full[i..].contains('/') => (full[..i].to_string(), full[i + 1..].to_string()),
            _ => (full.to_string(), "latest".to_string()),
        },
    };
    let name = name
        .strip_prefix("docker.io/")
        .map(|n| n.strip_prefix("library/").unwrap_or(n).to_string())
        .unwrap_or(name);
    (name, tag)
}

pub async fn images(c: &Client, a: ImagesArgs) -> CmdResult {
    let mut list: Vec<api::ImageSummary> = c.get("/images").await?;
    list.sort_by(|x, y| y.created.cmp(&x.created));
    if a.format == Format::Json {
        output::print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    if a.quiet {
        for i in &list {
            println!("{}", short_id(&i.id));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for i in &list {
        let names = if i.display.is_empty() {
            vec![("<none>".to_string(), "<none>".to_string())]
        } else {
            i.display.clone()
        };
        for (repo, tag) in names {
            let tag = if tag.starts_with("sha256:") {
                "<none>".to_string()
            } else {
                tag
            };
            rows.push(vec![
                repo,
                tag,
                short_id(&i.id),
                output::ago(i.created.as_deref()),
                output::size(i.size),
            ]);
        }
    }
    output::table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub async fn inspect(c: &Client, a: InspectArgs) -> CmdResult {
    match c.get::<hyper_api::pod::PodInspect>(&format!("/pods/inspect?pod={}", q(&a.name))).await {
        Ok(p) => {
            output::print_json(&p);
            return Ok(ExitCode::SUCCESS);
        }
        Err(client::ClientError::Api(e)) if e.kind == hyper_api::ErrorKind::NotFound => {}
        Err(e) => return Err(Box::new(e)),
    }
    let i: api::ImageInspect = c.get(&format!("/images/inspect?name={}", q(&a.name))).await.map_err(|e| match e {
        client::ClientError::Api(e) if e.kind == hyper_api::ErrorKind::NotFound => {
            format!("no such pod or image: {}", a.name).into()
        }
        e => Box::<dyn std::error::Error>::from(e.to_string()),
    })?;
    output::print_json(&i);
    Ok(ExitCode::SUCCESS)
}

pub async fn rmi(c: &Client, a: RmiArgs) -> CmdResult {
    let mut failed = false;
    for name in &a.images {
        let path = format!("/images?name={}&force={}", q(name), a.force);
        match c
            .send(Method::DELETE, &path, client::empty(), "application/json")
            .await
        {
            Ok(resp) => {
                let body = resp.into_body().collect().await?.to_bytes();
                let r: api::RemoveResult = serde_json::from_slice(&body)?;
                for u in r.untagged {
                    let (repo, tag) = familiar(&u);
                    println!("Untagged: {repo}:{tag}");
                }
                for d in r.deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(e) => {
                eprintln!("hyper: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn login(c: &Client, a: LoginArgs) -> CmdResult {
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => return Err("give the password with --password-stdin".into()),
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    let registry = a.registry.unwrap_or_else(|| "docker.io".into());
    let r: serde_json::Value = c
        .call(
            Method::POST,
            "/auth/login",
            &api::LoginRequest {
                registry,
                username: a.username,
                password,
            },
        )
        .await?;
    println!("{}", r["status"].as_str().unwrap_or("Login Succeeded"));
    Ok(ExitCode::SUCCESS)
}

pub async fn logout(c: &Client, a: LogoutArgs) -> CmdResult {
    let registry = a.registry.unwrap_or_else(|| "docker.io".into());
    let r: serde_json::Value = c
        .call(
            Method::POST,
            "/auth/logout",
            &api::LogoutRequest {
                registry: registry.clone(),
            },
        )
        .await?;
    println!(
        "{} for {registry}",
        r["status"].as_str().unwrap_or("Removed login credentials")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            familiar("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b".into(), "v1".into())
        );
        assert_eq!(
            familiar("docker.io/u/app@sha256:abc"),
            ("u/app".into(), "<none>".into())
        );
    }
}
