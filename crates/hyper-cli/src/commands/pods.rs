//! Pod commands: create, start, run, stop, rm, replace, exec, attach, logs, kill, list.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use http::Method;
use hyper_api::pod as api;
use serde_json::{Value, json};

use super::CmdResult;
use crate::client::{self, Client, q};
use crate::output::{self, Format, LayerProgress};
use crate::stream;

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The podfile (JSON, or YAML by extension).
    #[arg(short = 'p', long = "podfile", value_name = "FILE")]
    podfile: Option<PathBuf>,
    /// The podfile, as a positional argument.
    #[arg(value_name = "FILE", conflicts_with = "podfile")]
    file: Option<PathBuf>,
    /// Treat the podfile as YAML whatever its name.
    #[arg(short = 'y', long)]
    yaml: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[arg(required = true)]
    pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run detached: print the pod id and return.
    #[arg(short, long)]
    detach: bool,
    /// Allocate a terminal for the container.
    #[arg(short, long)]
    tty: bool,
    /// Keep standard input open and send it to the container.
    #[arg(short, long)]
    interactive: bool,
    /// `-p FILE`: the podfile; `-p [HOSTIP:]HOSTPORT:CONTAINERPORT[/udp]`: a port mapping (repeatable). An
    /// existing file or a .json/.yaml/.yml name is a podfile.
    #[arg(short = 'p', value_name = "FILE|PORTS")]
    p: Vec<String>,
    /// The podfile (JSON, or YAML by extension).
    #[arg(long = "podfile", value_name = "FILE")]
    podfile: Option<PathBuf>,
    /// Treat the podfile as YAML whatever its name.
    #[arg(short = 'y', long)]
    yaml: bool,
    /// The pod's name.
    #[arg(long)]
    name: Option<String>,
    /// Remove the pod when its containers have exited.
    #[arg(long)]
    rm: bool,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Replaces the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Working directory in the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User (name or uid) in the container.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// vCPUs of the pod.
    #[arg(long)]
    cpu: Option<u32>,
    /// Memory of the pod, in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// Publish a port: [HOSTIP:]HOSTPORT:CONTAINERPORT[/udp], or Hyper's [tcp|udp:]HOSTPORT:CONTAINERPORT (repeatable).
    #[arg(long = "publish", value_name = "PORTS")]
    publish: Vec<String>,
    /// A podfile (an existing .json/.yaml/.yml file), or an image.
    #[arg(value_name = "IMAGE|PODFILE")]
    target: Option<String>,
    /// Command and arguments (with an image).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before killing.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running pods' containers at once (without -f a running pod is stopped as `stop` does first).
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplaceArgs {
    /// The running pod whose sandbox is taken over.
    #[arg(short = 'o', long = "oldpod", required_unless_present = "pods")]
    old: Option<String>,
    /// The created pod that runs in it.
    #[arg(short = 'n', long = "newpod", conflicts_with = "file", required_unless_present_any = ["file", "pods"])]
    new: Option<String>,
    /// Or a podfile: the new pod is created from it (and removed again if the replace fails), as Hyper's -f.
    #[arg(short = 'f', long = "file", value_name = "PODFILE")]
    file: Option<PathBuf>,
    /// Treat the podfile as YAML whatever its name.
    #[arg(short = 'y', long)]
    yaml: bool,
    /// Hyper's first form: OLD NEW.
    #[arg(value_names = ["OLD", "NEW"], num_args = 2, conflicts_with_all = ["old", "new", "file"])]
    pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Give the process a terminal; on a terminal, what is typed goes to it too.
    #[arg(short, long)]
    tty: bool,
    /// Send standard input to the process.
    #[arg(short, long)]
    interactive: bool,
    /// POD or POD/CONTAINER.
    target: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// POD or POD/CONTAINER.
    target: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following the log while the container runs.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<String>,
    /// Prefix each line with its time.
    #[arg(short = 't', long)]
    timestamps: bool,
    /// POD or POD/CONTAINER.
    target: String,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal name or number.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    pods: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum ListItem {
    #[default]
    Pods,
    Pod,
    Containers,
    Container,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(value_enum, default_value_t)]
    item: ListItem,
    #[arg(short, long)]
    quiet: bool,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// `POD`, `POD/CONTAINER`, Hyper's `POD:CONTAINER`, or a container id alone (which the daemon looks up).
fn split_target(t: &str) -> (&str, Option<&str>) {
    match t.split_once(['/', ':']) {
        Some((p, c)) if !c.is_empty() => (p, Some(c)),
        _ => (t, None),
    }
}

/// Reads a podfile into JSON (YAML converted); errors name the file.
fn read_podfile(path: &Path, yaml: bool) -> Result<Value, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let fmt = if yaml { podspec::Format::Yaml } else { podspec::Format::from_path(&path.to_string_lossy()) };
    let v: Value = match fmt {
        podspec::Format::Json => serde_json::from_str(&text).map_err(|e| format!("{}: malformed JSON: {e}", path.display()))?,
        podspec::Format::Yaml => serde_yaml_to_json(&text).map_err(|e| format!("{}: malformed YAML: {e}", path.display()))?,
    };
    // Validate locally too, so errors name the file.
    podspec::parse(&serde_json::to_string(&v)?, podspec::Format::Json).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(v)
}

fn serde_yaml_to_json(text: &str) -> Result<Value, String> {
    podspec::yaml_to_json(text)
}

async fn create_pod(c: &Client, spec: Value, auto_remove: bool) -> Result<api::CreatedPod, Box<dyn std::error::Error>> {
    let mut p = LayerProgress::new();
    let body = client::json_body(&api::CreateRequest { spec, auto_remove });
    let r: api::CreatedPod = c
        .stream(Method::POST, "/pods", body, "application/json", |l: hyper_api::image::Progress| match l {
            hyper_api::image::Progress::Status { text } => p.status(&text),
            hyper_api::image::Progress::Layer { digest, state, current, total } => p.layer(&digest, &state, current, total),
        })
        .await?;
    p.finish();
    Ok(r)
}

pub async fn create(c: &Client, a: CreateArgs) -> CmdResult {
    let path = a.podfile.or(a.file).ok_or("give a podfile: hyper create -p FILE")?;
    let spec = read_podfile(&path, a.yaml)?;
    let r = create_pod(c, spec, false).await?;
    println!("{}", r.id);
    Ok(ExitCode::SUCCESS)
}

pub async fn start(c: &Client, a: StartArgs) -> CmdResult {
    each(&a.pods, |p| async move {
        c.call::<_, api::PodSummary>(Method::POST, &format!("/pods/start?pod={}", q(&p)), &json!({})).await.map(|s| s.id)
    })
    .await
}

fn is_podfile(t: &str) -> bool {
    (t.ends_with(".json") || t.ends_with(".yaml") || t.ends_with(".yml")) && Path::new(t).is_file()
}

fn parse_publish(p: &str) -> Result<Value, String> {
    let (spec, proto) = match p.rsplit_once('/') {
        Some((s, pr)) => (s, pr),
        None => (p, "tcp"),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, cont, proto) = match parts.as_slice() {
        // Hyper's own form: [tcp|udp:]HOSTPORT:CONTAINERPORT
        [pr @ ("tcp" | "udp"), h, c] if !p.contains('/') => ("", *h, *c, *pr),
        [h, c] => ("", *h, *c, proto),
        [ip, h, c] => (*ip, *h, *c, proto),
        _ => return Err(format!("--publish {p:?}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/udp] (or Hyper's [tcp|udp:]HOSTPORT:CONTAINERPORT)")),
    };
    let mut m = json!({"containerPort": cont, "hostPort": host, "protocol": proto});
    if !ip.is_empty() {
        m["hostIP"] = json!(ip);
    }
    Ok(m)
}

pub async fn run(c: &Client, mut a: RunArgs) -> CmdResult {
    for v in std::mem::take(&mut a.p) {
        let looks_like_file = Path::new(&v).is_file() || v.ends_with(".json") || v.ends_with(".yaml") || v.ends_with(".yml");
        if looks_like_file {
            if a.podfile.is_some() {
                return Err(format!("-p {v}: a second podfile").into());
            }
            a.podfile = Some(PathBuf::from(v));
        } else if parse_publish(&v).is_ok() {
            a.publish.push(v);
        } else {
            return Err(format!("-p {v:?}: neither a podfile nor a port mapping ([HOSTIP:]HOSTPORT:CONTAINERPORT[/udp])").into());
        }
    }
    let podfile = match (&a.podfile, &a.target) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(t)) if is_podfile(t) => Some(PathBuf::from(t)),
        _ => None,
    };
    let (spec, attach) = match podfile {
        Some(path) => {
            if !a.command.is_empty() {
                return Err("a command cannot be given with a podfile".into());
            }
            let mut spec = read_podfile(&path, a.yaml)?;
            if !a.publish.is_empty() {
                let pm: Result<Vec<Value>, String> = a.publish.iter().map(|p| parse_publish(p)).collect();
                let list = spec.as_object_mut().ok_or("a podfile must be an object")?.entry("portmappings").or_insert(json!([]));
                if let Some(arr) = list.as_array_mut() {
                    arr.extend(pm?);
                }
            }
            (spec, !a.detach && (a.tty || a.interactive))
        }
        None => {
            let image = a.target.clone().ok_or("give an image or a podfile: hyper run [-d] IMAGE [COMMAND...]")?;
            // -i keeps the container's input open for this client, with or without a terminal.
            let mut container = json!({"image": image, "tty": a.tty, "stdin": a.interactive});
            if let Some(n) = &a.name {
                container["name"] = json!(n);
            }
            if !a.command.is_empty() {
                container["command"] = json!(a.command);
            }
            if let Some(e) = &a.entrypoint {
                container["entrypoint"] = json!([e]);
            }
            if let Some(w) = &a.workdir {
                container["workdir"] = json!(w);
            }
            if let Some(u) = &a.user {
                container["user"] = json!({"name": u});
            }
            let envs: Result<Vec<Value>, String> = a
                .env
                .iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => Ok(json!({"env": k, "value": v})),
                    None => Ok(json!({"env": e, "value": std::env::var(e).unwrap_or_default()})),
                })
                .collect();
            container["envs"] = json!(envs?);
            let mut spec = json!({"containers": [container]});
            if let Some(n) = &a.name {
                spec["id"] = json!(n);
            }
            let mut res = json!({});
            if let Some(cpu) = a.cpu {
                res["vcpu"] = json!(cpu);
            }
            if let Some(m) = a.memory {
                res["memory"] = json!(m);
            }
            if res.as_object().is_some_and(|o| !o.is_empty()) {
                spec["resource"] = res;
            }
            let pm: Result<Vec<Value>, String> = a.publish.iter().map(|p| parse_publish(p)).collect();
            let pm = pm?;
            if !pm.is_empty() {
                spec["portmappings"] = json!(pm);
            }
            (spec, !a.detach)
        }
    };
    let created = create_pod(c, spec, a.rm).await?;
    if !attach {
        let r = c.call::<_, api::PodSummary>(Method::POST, &format!("/pods/start?pod={}", q(&created.id)), &json!({})).await;
        if let Err(e) = r {
            if a.rm {
                let _ = c.send(Method::DELETE, &format!("/pods?pod={}&force=true", q(&created.id)), client::empty(), "application/json").await;
            }
            return Err(Box::new(e));
        }
        println!("{}", created.id);
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = a.interactive || (a.tty && std::io::stdin().is_terminal());
    let path = format!("/pods/start?pod={}&attach=true", q(&created.id));
    let code = stream::session(c, Method::POST, &path, stdin, a.tty).await;
    match code {
        Ok(code) => {
            if a.rm {
                // The daemon removes the pod once its VM or namespaces are gone: return after that, as `docker
                // run --rm` does, so the pod's name is free again for the next command.
                wait_removed(c, &created.id).await;
            }
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Err(e) => {
            if a.rm {
                let _ = c.send(Method::DELETE, &format!("/pods?pod={}&force=true", q(&created.id)), client::empty(), "application/json").await;
            }
            Err(e)
        }
    }
}

/// Waits (up to a minute) until the daemon no longer knows pod `id`, which it removes once all its containers
/// have exited. While one of them still runs (a pod of several), the removal is not for now: no wait.
async fn wait_removed(c: &Client, id: &str) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < end {
        match c.get::<api::PodInspect>(&format!("/pods/inspect?pod={}", q(id))).await {
            Ok(p) if p.containers.iter().any(|c| c.state == "running") => return,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            // Gone (or the daemon cannot say): nothing to wait for.
            Err(_) => return,
        }
    }
}

pub async fn stop(c: &Client, a: StopArgs) -> CmdResult {
    each(&a.pods, |p| async move {
        c.call::<_, api::PodSummary>(Method::POST, &format!("/pods/stop?pod={}&time={}", q(&p), a.time), &json!({})).await.map(|s| s.id)
    })
    .await
}

pub async fn rm(c: &Client, a: RmArgs) -> CmdResult {
    each(&a.pods, |p| async move {
        let resp = c.send(Method::DELETE, &format!("/pods?pod={}&force={}", q(&p), a.force), client::empty(), "application/json").await?;
        client::read_json::<api::PodSummary>(resp).await.map(|s| s.id)
    })
    .await
}

/// Runs `f` for each pod, printing ids and errors; fails if any failed.
async fn each<F, Fut>(pods: &[String], f: F) -> CmdResult
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, client::ClientError>>,
{
    let mut failed = false;
    for p in pods {
        match f(p.clone()).await {
            Ok(id) => println!("{id}"),
            Err(e) => {
                eprintln!("hyper: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn replace(c: &Client, a: ReplaceArgs) -> CmdResult {
    let (old, new, made) = match (a.pods.as_slice(), a.old, a.new, a.file) {
        ([old, new], ..) => (old.clone(), new.clone(), false),
        (_, Some(old), Some(new), None) => (old, new, false),
        (_, Some(old), None, Some(file)) => {
            let created = create_pod(c, read_podfile(&file, a.yaml)?, false).await?;
            (old, created.id, true)
        }
        _ => return Err("give the new pod: -n POD, or -f PODFILE".into()),
    };
    match c.call::<_, api::PodSummary>(Method::POST, "/pods/replace", &api::ReplaceRequest { old, new: new.clone() }).await {
        Ok(s) => {
            println!("{}", s.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // The pod made from the podfile goes again, unless it runs after all (the answer lost on the way).
            if made {
                let still_created = c.get::<api::PodInspect>(&format!("/pods/inspect?pod={}", q(&new))).await.is_ok_and(|p| p.state == "created");
                let removed = still_created
                    && c.send(Method::DELETE, &format!("/pods?pod={}", q(&new)), client::empty(), "application/json").await.is_ok_and(|r| r.status().is_success());
                if !removed {
                    eprintln!("hyper: the pod made from the podfile, {new}, is left");
                }
            }
            Err(Box::new(e))
        }
    }
}

pub async fn exec(c: &Client, a: ExecArgs) -> CmdResult {
    let (pod, container) = split_target(&a.target);
    // As with `run -t`, and Hyper's `exec -t POD sh`: a terminal given to the process takes what is typed.
    let stdin = a.interactive || (a.tty && std::io::stdin().is_terminal());
    let mut path = format!("/pods/exec?pod={}&cmd={}&tty={}&stdin={stdin}", q(pod), q(&serde_json::to_string(&a.command)?), a.tty);
    if let Some(cn) = container {
        path.push_str(&format!("&container={}", q(cn)));
    }
    let code = stream::session(c, Method::POST, &path, stdin, a.tty).await?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub async fn attach(c: &Client, a: AttachArgs) -> CmdResult {
    let (pod, container) = split_target(&a.target);
    let inspect: api::PodInspect = c.get(&format!("/pods/inspect?pod={}", q(pod))).await?;
    let cont = match container {
        Some(n) => inspect.containers.iter().find(|x| x.name == n || x.id == n),
        // A container id alone names that container; a pod, its first.
        None => inspect.containers.iter().find(|x| x.id == pod).or(inspect.containers.first()),
    }
    .ok_or("no such container")?;
    let mut path = format!("/pods/attach?pod={}", q(pod));
    if let Some(cn) = container {
        path.push_str(&format!("&container={}", q(cn)));
    }
    // Input goes to a container that keeps its input open (a terminal, or the podfile's "stdin").
    let code = stream::session(c, Method::POST, &path, cont.tty || cont.stdin, cont.tty).await?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub async fn logs(c: &Client, a: LogsArgs) -> CmdResult {
    let (pod, container) = split_target(&a.target);
    let mut path = format!("/pods/logs?pod={}&follow={}&timestamps={}", q(pod), a.follow, a.timestamps);
    if let Some(cn) = container {
        path.push_str(&format!("&container={}", q(cn)));
    }
    if let Some(t) = &a.tail {
        path.push_str(&format!("&tail={}", q(t)));
    }
    let resp = c.send(Method::GET, &path, client::empty(), "application/json").await?;
    stream::print_framed(resp).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn kill(c: &Client, a: KillArgs) -> CmdResult {
    let signal = &a.signal;
    each(&a.pods, |p| async move {
        c.call::<_, api::PodSummary>(Method::POST, &format!("/pods/kill?pod={}&signal={}", q(&p), q(signal)), &json!({}))
            .await
            .map(|s| s.id)
    })
    .await
}

pub async fn list(c: &Client, a: ListArgs) -> CmdResult {
    match a.item {
        ListItem::Pods | ListItem::Pod => {
            let pods: Vec<api::PodSummary> = c.get("/pods").await?;
            if a.format == Format::Json {
                output::print_json(&pods);
            } else if a.quiet {
                pods.iter().for_each(|p| println!("{}", p.id));
            } else {
                let rows: Vec<Vec<String>> = pods
                    .iter()
                    .map(|p| vec![p.id.clone(), p.name.clone(), p.state.clone(), p.driver.clone(), output::ago(Some(&p.created))])
                    .collect();
                output::table(&["POD ID", "NAME", "STATE", "DRIVER", "CREATED"], &rows);
            }
        }
        ListItem::Containers | ListItem::Container => {
            let cs: Vec<api::ContainerSummary> = c.get("/containers").await?;
            if a.format == Format::Json {
                output::print_json(&cs);
            } else if a.quiet {
                cs.iter().for_each(|c| println!("{}", c.id));
            } else {
                let rows: Vec<Vec<String>> = cs
                    .iter()
                    .map(|c| {
                        let state = match c.exit_code {
                            Some(code) if c.state == "exited" => format!("exited ({code})"),
                            _ => c.state.clone(),
                        };
                        vec![c.id.clone(), c.name.clone(), c.pod_id.clone(), c.image.clone(), state]
                    })
                    .collect();
                output::table(&["CONTAINER ID", "NAME", "POD ID", "IMAGE", "STATE"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct PortsArgs {
    #[command(subcommand)]
    action: PortsAction,
}

#[derive(Debug, clap::Subcommand)]
enum PortsAction {
    /// List a pod's port mappings.
    Ls {
        pod: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Add port mappings to a pod (applied at once if it runs).
    Add {
        pod: String,
        /// [HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/udp], or Hyper's [tcp|udp:]HOSTPORT:CONTAINERPORT (repeatable).
        #[arg(short = 'p', long = "publish", required = true, value_name = "PORTS")]
        ports: Vec<String>,
    },
    /// Remove port mappings from a pod.
    Rm {
        pod: String,
        #[arg(short = 'p', long = "publish", required = true, value_name = "PORTS")]
        ports: Vec<String>,
    },
}

fn print_ports(ports: &[api::PortMapping], format: Format) {
    if format == Format::Json {
        output::print_json(&ports);
        return;
    }
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            let host = match &p.host_ip {
                Some(ip) => format!("{ip}:{}", p.host_ports),
                None => p.host_ports.clone(),
            };
            vec![p.protocol.clone(), host, p.container_ports.clone()]
        })
        .collect();
    output::table(&["PROTOCOL", "HOST PORTS", "CONTAINER PORTS"], &rows);
}

pub async fn ports(c: &Client, a: PortsArgs) -> CmdResult {
    match a.action {
        PortsAction::Ls { pod, format } => {
            let p: Vec<api::PortMapping> = c.get(&format!("/pods/ports?pod={}", q(&pod))).await?;
            print_ports(&p, format);
        }
        PortsAction::Add { pod, ports } => {
            let p: Vec<api::PortMapping> =
                c.call(Method::POST, &format!("/pods/ports?pod={}", q(&pod)), &api::PortsRequest { add: ports, remove: vec![] }).await?;
            print_ports(&p, Format::Table);
        }
        PortsAction::Rm { pod, ports } => {
            let p: Vec<api::PortMapping> =
                c.call(Method::POST, &format!("/pods/ports?pod={}", q(&pod)), &api::PortsRequest { add: vec![], remove: ports }).await?;
            print_ports(&p, Format::Table);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_takes_dockers_and_hypers_forms() {
        assert_eq!(parse_publish("127.0.0.1:8080:80/udp").unwrap(), json!({"containerPort": "80", "hostPort": "8080", "protocol": "udp", "hostIP": "127.0.0.1"}));
        assert_eq!(parse_publish("udp:5353:53").unwrap(), json!({"containerPort": "53", "hostPort": "5353", "protocol": "udp"}));
        assert_eq!(parse_publish("tcp:8080:80").unwrap(), json!({"containerPort": "80", "hostPort": "8080", "protocol": "tcp"}));
        assert!(parse_publish("1:2:3:4").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(split_target("web"), ("web", None));
        assert_eq!(split_target("web/app"), ("web", Some("app")));
        assert_eq!(split_target("pod-3uhg23po:nginx"), ("pod-3uhg23po", Some("nginx")), "Hyper's form");
    }
}
