//! The daemon's state and its lifecycle: open the store, serve the socket, shut down.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use image_store::{CredentialStore, ImageStore, RegistryClient, RegistryConfig};
use tokio::net::UnixListener;

use crate::config::Config;

/// Everything the API handlers share.
#[derive(Debug)]
pub struct Daemon {
    pub config: Config,
    pub images: Arc<ImageStore>,
    pub engine: Arc<libpod::Engine>,
    driver: Arc<dyn sandbox::Driver>,
    _lock: std::fs::File,
}

impl Daemon {
    /// Opens the state under the configured root (one daemon per root).
    pub fn open(config: Config) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(&config.root)
            .with_context(|| format!("creating {}", config.root.display()))?;
        // Root's only: images' layers and containers' writable layers hold whatever their authors put there,
        // setuid-root programs and device nodes included, usable by anyone who could reach them on the host.
        std::fs::set_permissions(&config.root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode of {}", config.root.display()))?;
        let lock = lock_root(&config.root)?;
        let db_path = config.root.join("hyperd.redb");
        let db = redb::Database::create(&db_path)
            .with_context(|| format!("opening database {}", db_path.display()))?;
        let db = Arc::new(db);
        let creds = Arc::new(CredentialStore::new(&config.root.join("auth.json")));
        let client = RegistryClient::new(
            RegistryConfig {
                insecure: config.insecure_registries.clone(),
                mirrors: config.registry_mirrors.clone(),
            },
            creds,
        );
        let images = Arc::new(ImageStore::open(&config.root.join("image"), db.clone(), client).context("opening the image store")?);
        let (driver, agent_timeout): (Arc<dyn sandbox::Driver>, u64) = match config.driver.as_str() {
            "ns" => {
                if !config.agent.is_file() {
                    bail!("the agent binary {} does not exist (build it with scripts/build.sh, or give --agent)", config.agent.display());
                }
                (Arc::new(sandbox::ns::NsDriver::new(config.agent.clone())), 30)
            }
            "qemu" => {
                let d = sandbox::qemu::QemuDriver::new(sandbox::qemu::QemuOptions {
                    qemu: config.qemu.clone(),
                    kernel: config.kernel.clone(),
                    initrd: config.initrd.clone(),
                    accel: config.accel,
                    kernel_append: config.kernel_append.clone(),
                    tcg_tb_size_mib: config.tcg_tb_size_mib,
                    template_dir: config.template_dir.clone(),
                    vm_templates: config.vm_templates,
                    vm_cache: Some(config.vm_cache.clone()),
                })
                .context("the qemu driver")?
                .shared();
                // A guest under emulation on a busy host can take a while to boot.
                let t = if d.accel() == sandbox::qemu::Accel::Tcg { 120 } else { 30 };
                (d, t)
            }
            other => bail!("unknown sandbox driver {other:?}"),
        };
        let engine = (|| {
            let network = network::Network::setup(config.network.clone(), db.clone()).context("setting up pod networking")?;
            libpod::Engine::new(
                libpod::EngineConfig { root: config.root.clone(), agent_timeout: std::time::Duration::from_secs(agent_timeout), log_max_size: config.log_max_size },
                db,
                images.clone(),
                driver.clone(),
                Some(network),
            )
            .context("opening the pod engine")
        })();
        let engine = engine.inspect_err(|_| driver.shutdown())?;
        Ok(Daemon { config, images, engine, driver, _lock: lock })
    }

    /// Serves the API until SIGTERM or SIGINT (or a failure); then the driver lets go of what no pod uses (the VM
    /// cache). Pods keep running.
    pub async fn serve(self: Arc<Self>) -> anyhow::Result<()> {
        let served = self.clone().serve_api().await;
        self.driver.shutdown();
        served
    }

    async fn serve_api(self: Arc<Self>) -> anyhow::Result<()> {
        self.engine.recover().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let listener = bind(&self.config.socket)?;
        log::info!(
            "hyperd {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            self.config.socket.display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let in_flight = Arc::new(InFlight::default());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            // Out of descriptors, say: the listener stays ready, and an immediate retry would spin.
                            log::warn!("accept: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let d = self.clone();
                    let in_flight = in_flight.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let d = d.clone();
                            // A request on a connection kept alive, once the daemon is stopping: refused, since it
                            // could be cut at the end of the grace, half done.
                            let closing = in_flight.is_closing();
                            let started = in_flight.enter();
                            // A log follower may go on for ever: it does not hold a stopping daemon up.
                            let follows = req.uri().path().ends_with("/pods/logs");
                            // Each request runs in a task of its own, to its end: hyper drops a request's future when
                            // its client goes away (a Ctrl-C), and a start, stop or replace dropped between two steps
                            // would leave a VM no pod records, or a pod half started.
                            async move {
                                let resp = tokio::spawn(async move {
                                    if closing {
                                        return crate::web::error(crate::web::api_error(hyper_api::ErrorKind::Conflict, "hyperd is shutting down"));
                                    }
                                    let resp = crate::routes::route(d, req).await;
                                    // Counted until its answer is written, not only until it is made: a stopping
                                    // daemon would otherwise go with the answer unsent.
                                    if follows { resp } else { resp.map(|b| http_body_util::BodyExt::boxed_unsync(Counted::body(b, started))) }
                                })
                                .await
                                .unwrap_or_else(|e| {
                                    crate::web::error(crate::web::api_error(hyper_api::ErrorKind::Internal, format!("the request's task failed: {e}")))
                                });
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        // A client that sends half a request does not hold its connection for ever.
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(std::time::Duration::from_secs(30))
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades()
                            .await
                        {
                            log::debug!("connection: {e}");
                        }
                    });
                }
                _ = term.recv() => { log::info!("SIGTERM: shutting down"); break; }
                _ = int.recv() => { log::info!("SIGINT: shutting down"); break; }
            }
        }
        // No new requests; those under way (a start booting a VM, a stop) end first, or a pod would be left
        // half started, its VM on no record until the next daemon cleans it up. Streams (attach, exec, logs)
        // do not count: their pods run on without the daemon.
        drop(listener);
        in_flight.close();
        let _ = std::fs::remove_file(&self.config.socket);
        let busy = in_flight.count();
        if busy > 0 {
            log::info!("waiting up to {} s for {busy} request(s) under way", SHUTDOWN_GRACE.as_secs());
            if tokio::time::timeout(SHUTDOWN_GRACE, in_flight.idle()).await.is_err() {
                log::warn!("{} request(s) still under way: leaving them", in_flight.count());
            }
            // The last answer's bytes may still sit in its connection's buffer: a moment to flush.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// How long a daemon told to stop waits for the requests under way.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The requests under way.
#[derive(Default)]
struct InFlight {
    n: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
    closing: std::sync::atomic::AtomicBool,
}

/// One request under way, until dropped.
struct Counted(Arc<InFlight>);

/// A response body that keeps its request counted until it has been sent (or dropped).
struct CountedBody {
    inner: crate::web::Body,
    counted: Option<Counted>,
}

impl Counted {
    fn body(inner: crate::web::Body, counted: Counted) -> CountedBody {
        CountedBody { inner, counted: Some(counted) }
    }
}

impl hyper::body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.counted = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> Counted {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Counted(self.clone())
    }

    fn close(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn count(&self) -> usize {
        self.n.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn idle(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn lock_root(root: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = root.join("hyperd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        bail!(
            "another hyperd is already using {} (lock {} is held)",
            root.display(),
            path.display()
        );
    }
    Ok(f)
}

/// Binds the API socket: removes a stale socket file, refuses if another daemon answers on it.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!("another daemon is serving {}", path.display()),
            // Nobody listens: a socket left by a daemon that died. Anything else (not a socket, no
            // permission) is not ours to remove.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
            Err(e) => bail!("{} exists and is not a stale socket: {e}", path.display()),
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    // Made 0660 from the start: with the process's umask, a socket open to every user until the chmod
    // below would take connections that outlive the chmod. (The daemon runs no other thread that creates
    // files yet.)
    // SAFETY: umask has no failure mode; the previous mask is restored right after.
    let old = unsafe { libc::umask(0o117) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = bound.with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode of {}", path.display()))?;
    Ok(l)
}
