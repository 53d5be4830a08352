//! Pod semantics and lifecycle, end to end, for every sandbox driver (one suite, parameterised by driver).

use std::path::Path;
use std::time::Duration;

use hyper_tests::daemon::{Daemon, mounts_mentioning, sandbox_processes};
use hyper_tests::wait_until;
use serde_json::{Value, json};

fn state(d: &Daemon, pod: &str) -> String {
    d.inspect(pod)["state"].as_str().unwrap().to_string()
}

fn sandbox_id(d: &Daemon, pod: &str) -> String {
    d.inspect(pod)["sandbox"]["id"].as_str().unwrap_or_else(|| panic!("pod {pod} has no sandbox")).to_string()
}

/// Nothing of a sandbox is left on the host: no process, no mount, no state directory.
fn assert_sandbox_gone(d: &Daemon, sb: &str) {
    let gone = wait_until(Duration::from_secs(10), || sandbox_processes(sb).is_empty());
    assert!(gone, "processes of sandbox {sb} remain: {:?}", sandbox_processes(sb));
    assert_eq!(mounts_mentioning(sb), Vec::<String>::new(), "mounts of sandbox {sb} remain");
    assert!(!d.root.join("sandboxes").join(sb).exists(), "state of sandbox {sb} remains");
    for c in ["memory", "cpu", "pids", "devices", "unified"] {
        assert!(!Path::new("/sys/fs/cgroup").join(c).join("hyper").join(sb).exists(), "cgroup {c}/hyper/{sb} remains");
    }
}

fn long_running_pod(name: &str) -> Value {
    json!({"id": name, "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "100000"]}]})
}

/// Two containers from two different images: one PID, IPC, UTS and network namespace, two root filesystems.
pub fn shared_namespaces(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let pf = d.podfile(
        "pod.json",
        &json!({"id": "duo", "hostname": "duo-host", "containers": [
            {"name": "a", "image": "busybox", "command": ["sleep", "1000"]},
            {"name": "b", "image": "toolbox", "command": ["sleep", "1001"]}]}),
    );
    d.ok(&["run", "-d", &pf]);
    // ps in one lists the other's processes
    let ps = d.sh("duo/a", "ps -o pid,args");
    assert!(ps.contains("sleep 1001"), "a sees b's process: {ps}");
    let ps = d.sh("duo/b", "ps -o pid,args");
    assert!(ps.contains("sleep 1000"), "b sees a's process: {ps}");
    // same hostname
    assert_eq!(d.sh("duo/a", "hostname").trim(), "duo-host");
    assert_eq!(d.sh("duo/b", "hostname").trim(), "duo-host");
    // the same namespaces but for mounts
    let ns = |t: &str| d.sh(t, "for n in pid ipc uts net mnt; do readlink /proc/self/ns/$n; done");
    let (na, nb) = (ns("duo/a"), ns("duo/b"));
    let (la, lb): (Vec<&str>, Vec<&str>) = (na.lines().collect(), nb.lines().collect());
    assert_eq!(la[..4], lb[..4], "pid, ipc, uts and net namespaces are shared");
    assert_ne!(la[4], lb[4], "each container has its own mount namespace");
    // POSIX shared memory written in one is read in the other
    d.sh("duo/a", "echo shared-segment > /dev/shm/seg");
    assert_eq!(d.sh("duo/b", "cat /dev/shm/seg").trim(), "shared-segment");
    // same network interfaces
    assert_eq!(d.sh("duo/a", "ls /sys/class/net"), d.sh("duo/b", "ls /sys/class/net"));
    // separate root filesystems: a file at / of one is absent from the other
    d.sh("duo/a", "echo mine > /only-in-a");
    let out = d.hyper(&["exec", "duo/b", "cat", "/only-in-a"]);
    assert!(!out.status.success(), "b must not see a's root filesystem");
    assert!(d.sh("duo/b", "cat /etc/toolbox").contains("toolbox"), "b runs its own image");
    assert!(!d.hyper(&["exec", "duo/a", "cat", "/etc/toolbox"]).status.success(), "a runs its own image");
    // the agent is invisible to the pod: pid 1 is pod-init
    assert!(d.sh("duo/a", "cat /proc/1/cmdline | tr '\\0' ' '").contains("pod-init"));
    d.ok(&["rm", "-f", "duo"]);
}

/// The whole lifecycle, checking state, processes, mounts and files after every step.
pub fn lifecycle(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let old = d.podfile("old.json", &json!({"id": "old", "hostname": "old-host", "resource": {"vcpu": 1, "memory": 128},
        "containers": [{"name": "web", "image": "busybox", "command": ["sleep", "100000"]}]}));
    let new = d.podfile("new.json", &json!({"id": "new", "hostname": "new-host", "resource": {"vcpu": 1, "memory": 128},
        "containers": [{"name": "app", "image": "toolbox", "command": ["sleep", "100001"]}]}));
    let big = d.podfile("big.json", &json!({"id": "big", "resource": {"vcpu": 2, "memory": 256},
        "containers": [{"image": "busybox", "command": ["true"]}]}));

    // create: Created, storage allocated, no sandbox, no process
    let id = d.ok(&["create", "-p", &old]).trim().to_string();
    assert!(id.starts_with("pod-"), "{id}");
    // an id prefix must say something of the random part: `rm pod` removed the only pod
    assert_eq!(d.inspect(&id[..7])["id"], json!(id));
    for vague in ["pod", "pod-", "pod-x"] {
        let err = d.fails(&["rm", "-f", vague]);
        assert!(err.contains("no such pod"), "{vague}: {err}");
    }
    assert_eq!(state(&d, "old"), "created");
    assert!(d.inspect("old")["sandbox"].is_null());
    assert_eq!(d.entries("sandboxes"), Vec::<String>::new());
    assert!(d.root.join("pods").join(&id).join("containers").is_dir(), "writable layers are allocated at create");
    // stop of a Created pod: a clear error, no change
    let err = d.fails(&["stop", "old"]);
    assert!(err.contains("pod old is not running"), "{err}");
    assert_eq!(state(&d, "old"), "created");

    // start: Running
    d.ok(&["start", "old"]);
    assert_eq!(state(&d, "old"), "running");
    let sb = sandbox_id(&d, "old");
    assert!(!sandbox_processes(&sb).is_empty());
    let c = &d.inspect("old")["containers"][0];
    assert_eq!(c["state"], "running");
    assert!(c["pid"].as_i64().unwrap() > 0);
    // start of a Running pod: a clear error, no change
    let err = d.fails(&["start", "old"]);
    assert!(err.contains("pod old is already running"), "{err}");
    assert_eq!(sandbox_id(&d, "old"), sb);

    // a write survives stop/start
    d.sh("old", "echo persisted > /data.txt");
    d.ok(&["stop", "old"]);
    assert_eq!(state(&d, "old"), "created");
    assert_eq!(d.inspect("old")["containers"][0]["state"], "exited");
    assert_sandbox_gone(&d, &sb);
    d.ok(&["start", "old"]);
    assert_eq!(d.sh("old", "cat /data.txt").trim(), "persisted");
    let sb = sandbox_id(&d, "old");
    let sandbox_pid = d.inspect("old")["sandbox"]["pid"].clone();

    // replace: wrong states and resources are refused without change
    d.ok(&["create", "-p", &new]);
    d.ok(&["create", "-p", &big]);
    let err = d.fails(&["replace", "-o", "new", "-n", "old"]);
    assert!(err.contains("pod new is not running"), "{err}");
    let err = d.fails(&["replace", "-o", "old", "-n", "big"]);
    assert!(err.contains("different resources"), "{err}");
    assert_eq!((state(&d, "old"), state(&d, "new")), ("running".into(), "created".into()));
    assert_eq!(sandbox_id(&d, "old"), sb);

    // replace: OLD back to Created, NEW runs in the same sandbox
    d.ok(&["replace", "-o", "old", "-n", "new"]);
    assert_eq!(state(&d, "old"), "created");
    assert_eq!(state(&d, "new"), "running");
    assert_eq!(sandbox_id(&d, "new"), sb, "the sandbox was handed over");
    assert_eq!(d.inspect("new")["sandbox"]["pid"], sandbox_pid, "the same sandbox process");
    assert_eq!(d.sh("new", "hostname").trim(), "new-host");
    let ps = d.sh("new", "ps -o args");
    assert!(ps.contains("sleep 100001") && !ps.contains("sleep 100000"), "only NEW's processes run: {ps}");
    assert!(ps.contains("pod-init"), "the same pod-init: {ps}");
    assert!(d.sh("new", "cat /etc/toolbox").contains("toolbox"));
    // a replace whose NEW cannot start loses no pod: OLD takes its sandbox back and runs again
    let broken = d.podfile("broken.json", &json!({"id": "broken", "resource": {"vcpu": 1, "memory": 128},
        "containers": [{"image": "busybox", "command": ["no-such-program"]}]}));
    d.ok(&["create", "-p", &broken]);
    let err = d.fails(&["replace", "-o", "new", "-n", "broken"]);
    assert!(err.contains("no-such-program") && err.contains("pod new runs again in its sandbox"), "{err}");
    assert_eq!((state(&d, "new"), state(&d, "broken")), ("running".into(), "created".into()));
    assert_eq!(d.inspect("new")["sandbox"]["pid"], sandbox_pid, "in the same sandbox process");
    assert_eq!(d.sh("new", "hostname").trim(), "new-host");
    let ps = d.sh("new", "ps -o args");
    assert!(ps.contains("sleep 100001"), "NEW's container runs again: {ps}");
    d.ok(&["rm", "broken"]);
    // Hyper's other forms: -f PODFILE (the new pod is made, and removed again when the replace fails), OLD NEW
    let err = d.fails(&["replace", "-o", "new", "-f", &broken]);
    assert!(err.contains("pod new runs again in its sandbox"), "{err}");
    assert!(!d.hyper(&["inspect", "broken"]).status.success(), "the pod made from the podfile is gone again");
    d.ok(&["replace", "new", "old"]);
    assert_eq!((state(&d, "old"), state(&d, "new")), ("running".into(), "created".into()));
    d.ok(&["replace", "old", "new"]);
    assert_eq!(sandbox_id(&d, "new"), sb);
    // replace with NEW not Created: refused
    let err = d.fails(&["replace", "-o", "new", "-n", "new"]);
    assert!(err.contains("cannot replace itself"), "{err}");
    d.ok(&["start", "old"]);
    let err = d.fails(&["replace", "-o", "new", "-n", "old"]);
    assert!(err.contains("only a created pod can replace another"), "{err}");
    d.ok(&["stop", "-t", "1", "old"]);

    // A container that ends while its pod is still starting (here: while the next ones start) is recorded
    // as exited, and a pod whose containers have all ended stops by itself.
    let quick = d.podfile("quick.json", &json!({"id": "quick", "containers": [
        {"name": "q", "image": "busybox", "command": ["sh", "-c", "exit 3"]},
        {"name": "s", "image": "busybox", "command": ["sleep", "100002"]},
        {"name": "t", "image": "busybox", "command": ["sleep", "100003"]},
        {"name": "u", "image": "busybox", "command": ["sleep", "100004"]}]}));
    d.ok(&["run", "-d", &quick]);
    assert!(wait_until(Duration::from_secs(30), || d.inspect("quick")["containers"][0]["state"] == "exited"), "{}", d.inspect("quick"));
    let q = d.inspect("quick");
    assert_eq!((q["containers"][0]["exit_code"].clone(), q["containers"][1]["state"].clone()), (json!(3), json!("running")), "{q}");
    d.ok(&["rm", "-f", "quick"]);
    let done = d.podfile("done.json", &json!({"id": "done", "containers": [{"image": "busybox", "command": ["true"]}]}));
    d.ok(&["run", "-d", &done]);
    assert!(wait_until(Duration::from_secs(30), || state(&d, "done") == "created"), "{}", d.inspect("done"));
    assert_eq!(d.inspect("done")["containers"][0]["exit_code"], json!(0));
    d.ok(&["rm", "done"]);

    // rm of a running pod stops it first (as Hyper's did), its containers' stop signal and all; rm removes
    // everything
    d.ok(&["rm", "new"]);
    assert_sandbox_gone(&d, &sb);
    d.ok(&["rm", "old", "big"]);
    assert_eq!(d.entries("pods"), Vec::<String>::new(), "nothing of the pods is left under the root");
    assert_eq!(d.entries("sandboxes"), Vec::<String>::new());
    assert_eq!(mounts_mentioning(d.root.to_str().unwrap()), Vec::<String>::new());
    assert_eq!(d.json(&["list"]), json!([]));
}

/// `run -t` through a real pseudo-terminal: prompt, output, resize, exit code.
pub fn run_tty(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let mut pty = hyper_tests::pty::Pty::spawn(&d, &["run", "-t", "--rm", "--name", "tty", "busybox", "sh"]);
    pty.expect("# ", Duration::from_secs(60));
    pty.send("echo hel''lo\n");
    pty.expect("hello\r\n", Duration::from_secs(10));
    pty.resize(33, 99);
    std::thread::sleep(Duration::from_millis(300));
    pty.send("stty size\n");
    pty.expect("33 99", Duration::from_secs(10));
    pty.send("exit 7\n");
    assert_eq!(pty.wait(), 7, "hyper exits with the shell's code");
    assert_eq!(d.json(&["list"]), json!([]), "--rm removed the pod by the time hyper returned");
}

/// A daemon killed with SIGKILL: its pods keep running, and after a restart they are fully manageable, with
/// logs written while it was down.
pub fn daemon_restart(driver: &str) {
    let mut d = Daemon::with_driver(driver, &[]);
    for i in 0..3 {
        let pf = d.podfile(&format!("p{i}.json"), &json!({"id": format!("p{i}"), "containers": [{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.02; done"]}]}));
        d.ok(&["run", "-d", &pf]);
    }
    let lines = |d: &Daemon, p: &str| d.ok(&["logs", p]).lines().count();
    for i in 0..3 {
        assert!(wait_until(Duration::from_secs(60), || lines(&d, &format!("p{i}")) >= 5), "p{i} logs");
    }
    let before: Vec<usize> = (0..3).map(|i| lines(&d, &format!("p{i}"))).collect();
    d.kill();
    // The pods keep writing while no daemon listens.
    std::thread::sleep(Duration::from_millis(1500));
    d.restart();

    for i in 0..3 {
        let p = format!("p{i}");
        assert_eq!(state(&d, &p), "running", "{p} survived the daemon");
        assert_eq!(d.sh(&p, "echo alive").trim(), "alive", "exec works in {p}");
    }
    for i in 0..3 {
        let p = format!("p{i}");
        assert!(wait_until(Duration::from_secs(60), || lines(&d, &p) >= before[i] + 20), "{p}: the log grows again after the restart");
        d.ok(&["stop", "-t", "1", &p]);
        let logs = d.ok(&["logs", &p]);
        let all: Vec<&str> = logs.lines().collect();
        let nums: Vec<u64> = all
            .iter()
            .enumerate()
            .map(|(k, l)| {
                l.trim_start_matches("line ").parse().unwrap_or_else(|_| panic!("{p}: bad line {k} {l:?}, around it: {:?}", &all[k.saturating_sub(3)..(k + 3).min(all.len())]))
            })
            .collect();
        assert!(nums.len() >= before[i] + 20, "{p}: only {} lines", nums.len());

        for (k, n) in nums.iter().enumerate() {
            assert_eq!(*n, k as u64, "{p}: the log is continuous (no gap, no duplicate) across the daemon's death");
        }
    }
}

/// A sandbox that no pod's record names, as a daemon killed half way through a start leaves it: its process
/// (recorded in its directory, as the drivers do when they start one), its network link and, for a VM, its
/// share's mount. The next daemon ends and removes all of it before it serves. (tests/vm.rs kills a daemon in the
/// middle of real VM starts.)
pub fn unrecorded_sandbox_removed_at_restart(driver: &str) {
    let mut d = Daemon::with_driver(driver, &[]);
    d.kill();
    let id = format!("sb-abandon{}", &driver[..2]);
    let dir = d.root.join("sandboxes").join(&id);
    std::fs::create_dir_all(dir.join("share")).unwrap();
    let mut process = std::process::Command::new("sleep").arg(format!("100{}", d.net_id)).spawn().unwrap();
    let pid = process.id() as i32;
    // Its start time (ticks since boot): /proc/PID/stat's field 22, the 20th after the command's ')'.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    std::fs::write(dir.join("process"), format!("{pid} {start} {}\n", boot.trim())).unwrap();
    if driver == "qemu" {
        // A VM's share is mounted on the host (the ns driver mounts nothing there: its agent mounts in its own
        // mount namespace).
        hyper_tests::run(std::process::Command::new("mount").args(["-t", "tmpfs", "abandoned", dir.join("share").to_str().unwrap()]));
    }
    let link = format!("hv{}", &id[2..]);
    hyper_tests::run(std::process::Command::new("ip").args(["link", "add", &link, "type", "veth", "peer", "name", &format!("hp{}", &id[2..])]));

    d.restart();
    assert!(wait_until(Duration::from_secs(10), || process.try_wait().unwrap().is_some()), "the sandbox's process was ended");
    assert!(!dir.exists(), "the sandbox's directory is gone");
    assert!(mounts_mentioning(&id).is_empty(), "its mount is gone");
    let links = hyper_tests::run(std::process::Command::new("ip").args(["-o", "link"]));
    assert!(!links.contains(&link), "its link is gone: {links}");
    assert!(d.log().contains(&format!("removing sandbox {id}: no pod records it")), "{}", d.log());
    // The daemon works as ever.
    let pf = d.podfile("after.json", &long_running_pod("after"));
    d.ok(&["run", "-d", &pf]);
    assert_eq!(state(&d, "after"), "running");
    d.ok(&["rm", "-f", "after"]);
}

/// Bad podfiles: clear errors, nothing created.
pub fn bad_podfiles(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let dir = d.dir.path();
    let cases: Vec<(&str, &str, &str)> = vec![
        ("malformed.json", "{\"containers\": [", "malformed JSON"),
        ("malformed.yaml", "containers: [ {", "malformed YAML"),
        ("unknown.json", r#"{"containers":[{"image":"busybox","comand":["true"]}]}"#, "containers[0].comand: unknown field (did you mean `command`?)"),
        ("noimage.json", r#"{"containers":[{"name":"x"}]}"#, "containers[0]"),
        ("missing.json", r#"{"containers":[{"image":"127.0.0.1:1/nope/missing:1"}]}"#, "containers[0].image: pulling 127.0.0.1:1/nope/missing:1"),
        ("dup.json", r#"{"containers":[{"name":"a","image":"busybox"},{"name":"a","image":"busybox"}]}"#, "containers[1].name: duplicate container name \"a\""),
        ("host.json", r#"{"hostname":"not_valid!","containers":[{"image":"busybox"}]}"#, "hostname: invalid hostname"),
        ("ports.json", r#"{"containers":[{"image":"busybox"}],"portmappings":[{"containerPort":80,"hostPort":8080},{"containerPort":81,"hostPort":"8079-8081"}]}"#,
            "portmappings[1].hostPort: host port 8080 is mapped twice"),
    ];
    for (name, text, expect) in cases {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let err = d.fails(&["create", "-p", p.to_str().unwrap()]);
        assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
        assert!(err.contains(name) || !expect.starts_with("malformed"), "{name}: the error names the file: {err}");
    }
    // The daemon refuses bad podfiles on its own too (not only the CLI).
    let out = d.ok(&["list", "--format", "json"]);
    assert_eq!(out.trim(), "[]");
    assert_eq!(d.entries("pods"), Vec::<String>::new(), "nothing was allocated");
    // A duplicate pod name
    let pf = d.podfile("a.json", &long_running_pod("same"));
    d.ok(&["create", &pf]);
    let err = d.fails(&["create", &pf]);
    assert!(err.contains("a pod named \"same\" exists"), "{err}");
    assert_eq!(d.entries("pods").len(), 1);
    // A name that is another pod's id: `rm NAME` would have removed the other pod.
    let id = d.inspect("same")["id"].as_str().unwrap().to_string();
    let err = d.fails(&["create", &d.podfile("b.json", &long_running_pod(&id))]);
    assert!(err.contains(&format!("\"{id}\" is the id of pod \"same\"")), "{err}");
    assert_eq!(d.entries("pods").len(), 1);
    // An absurd stop grace time is a long one, not an overflow: the stop works.
    d.ok(&["start", "same"]);
    d.ok(&["stop", "-t", &u64::MAX.to_string(), "same"]);
    assert_eq!(state(&d, "same"), "created");
}

/// Clients that stop reading hold back nothing but their own output: the pod's other containers go on logging,
/// an attach that falls behind is cut off and told so, and a slow exec loses no byte and gets its exit code.
/// The daemon used to wait for each client in the one task that carries all of a pod's output, so one stalled
/// `hyper attach | less` stopped every log of the pod.
pub fn stalled_clients_hold_up_nothing_else(driver: &str) {
    use std::io::Read;
    use std::process::Stdio;
    let d = Daemon::with_driver(driver, &[]);
    let pf = d.podfile("slow.json", &json!({"id": "slow", "containers": [
        {"name": "ticker", "image": "busybox", "command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"]},
        {"name": "flood", "image": "busybox", "command": ["sh", "-c", "while true; do head -c 1000000 /dev/zero | tr '\\0' f; sleep 0.2; done"]}]}));
    d.ok(&["run", "-d", &pf]);
    let attach_err = d.dir.path().join("attach.err");
    let mut attach = d.cmd(&["attach", "slow/flood"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(std::fs::File::create(&attach_err).unwrap()).spawn().unwrap();
    let bytes = 8_000_000;
    let script = format!("head -c {bytes} /dev/zero | tr '\\0' x; exit 7");
    let mut exec = d.cmd(&["exec", "slow/flood", "sh", "-c", &script]).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    // Neither is read: their pipes, sockets and queues fill up.
    std::thread::sleep(Duration::from_secs(3));
    let ticks = || d.ok(&["logs", "slow/ticker"]).lines().count();
    let before = ticks();
    // Stalled clients would hold the log back for good: a generous deadline still tells.
    let grows = wait_until(Duration::from_secs(20), || ticks() >= before + 8);
    assert!(grows, "the ticker's log while clients stall: {before} lines, then {}", ticks());

    let mut out = Vec::new();
    exec.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out.len(), bytes, "the slow exec's whole output");
    assert!(out.iter().all(|&b| b == b'x'));
    assert_eq!(exec.wait().unwrap().code(), Some(7), "and its exit code");

    // The attach: what it still gets, then the note that it was cut off.
    let mut so = attach.stdout.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut so, &mut std::io::sink()));
    let note = || std::fs::read_to_string(&attach_err).unwrap_or_default();
    let told = wait_until(Duration::from_secs(30), || note().contains("`hyper logs` has all of its output"));
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(told, "{}", note());
    assert_eq!(state(&d, "slow"), "running");
    d.ok(&["rm", "-f", "slow"]);
}

/// `replace` ends every process of the old pod, even ones that fork all the time: one pass over the pod's
/// processes missed the children forked while it went through them, and those ran on in the new pod.
pub fn replace_leaves_no_process_of_the_old_pod(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let pod = |name: &str, forks: bool| {
        let command = if forks {
            json!(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do (while true; do sleep 1000 & kill $! 2>/dev/null; done) & done; wait"])
        } else {
            json!(["sleep", "100002"])
        };
        d.podfile(&format!("{name}.json"), &json!({"id": name, "containers": [{"name": "c", "image": "busybox", "command": command}]}))
    };
    let replace = |old: &str, new: &str, forks: bool| {
        d.ok(&["create", "-p", &pod(new, forks)]);
        d.ok(&["replace", "-o", old, "-n", new]);
        d.ok(&["rm", old]);
    };
    d.ok(&["run", "-d", &pod("f0", true)]);
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(1000));
        let (forker, calm) = (format!("f{i}"), format!("c{i}"));
        replace(&forker, &calm, false);
        let ps = d.sh(&calm, "ps -o args");
        let others: Vec<&str> = ps.lines().skip(1).filter(|l| !l.contains("pod-init") && !l.starts_with("sleep 100002") && !l.contains("ps -o args")).collect();
        assert!(others.is_empty(), "round {i}: processes of the replaced pod run on in the new one: {others:?}");
        replace(&calm, &format!("f{}", i + 1), true);
    }
    d.ok(&["rm", "-f", "f3"]);
}

/// A container that prints a lot and ends while hyperd is down: the next hyperd writes all of its output to the
/// log before the pod finishes. The pod used to finish as soon as the exit was known, and the agent went down
/// with the output it still held (all but about one window of it).
pub fn output_of_a_container_that_ended_while_the_daemon_was_down_is_all_logged(driver: &str) {
    let mut d = Daemon::with_driver(driver, &[]);
    let pf = d.podfile("late.json", &json!({"id": "late", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c",
        "sleep 2; head -c 800000 /dev/zero | tr '\\0' a; echo; echo END"]}]}));
    d.ok(&["run", "-d", &pf]);
    d.kill();
    std::thread::sleep(Duration::from_secs(6));
    d.restart();
    assert!(wait_until(Duration::from_secs(30), || state(&d, "late") == "created"), "the pod finishes: {}", state(&d, "late"));
    let log = d.ok(&["logs", "late"]);
    assert_eq!(log.len(), 800_000 + "\nEND\n".len(), "the whole output is logged");
    assert!(log.ends_with("a\nEND\n"));
    d.ok(&["rm", "late"]);
}

/// A container that makes its /etc/passwd a FIFO (or a link to /dev/zero) does not wedge the agent: an exec
/// that looks a user up there gets on without it. The lookup used to block on the FIFO, and the agent, which
/// waits for it, served nobody in the pod for two minutes per exec.
pub fn a_hostile_passwd_file_holds_up_no_exec(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    d.ok(&["run", "-d", "--name", "fifo", "busybox", "sleep", "100000"]);
    // A VM's 9p share makes no FIFO: a link to /dev/zero stands in there.
    d.sh("fifo", "rm /etc/passwd /etc/group && { mkfifo /etc/passwd 2>/dev/null || ln -s /dev/zero /etc/passwd; } && ln -s /dev/zero /etc/group");
    let out = d.cmd(&["exec", "fifo", "echo", "served"]).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(out.wait_with_output());
    });
    let served = rx.recv_timeout(Duration::from_secs(30));
    assert!(served.as_ref().is_ok_and(|o| o.as_ref().is_ok_and(|o| o.stdout == b"served\n")), "the exec, within 30 s: {served:?}");
    d.ok(&["rm", "-f", "fifo"]);
}

/// Client sessions behave as a terminal user expects: `run -i` without `-t` gives the container its input;
/// `exec -t` without `-i` leaves ^C to the local terminal (it was raw, and ^C reached nothing); a client
/// killed while its terminal is raw gives the terminal back; an exec's input ends when its client goes away
/// (a shell left by a closed terminal used to wait for input forever).
pub fn client_sessions_behave_like_a_terminal(driver: &str) {
    use std::io::Write;
    use std::process::Stdio;
    let d = Daemon::with_driver(driver, &[]);
    let mut run = d.cmd(&["run", "-i", "--rm", "busybox", "cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    run.stdin.take().unwrap().write_all(b"from stdin\n").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()), (Some(0), "from stdin\n".to_string()), "run -i without -t");

    // attach sends input to a container that keeps its input open without a terminal (the podfile's "stdin")
    let pf = d.podfile("in.json", &json!({"id": "in", "containers": [{"image": "busybox", "command": ["cat"], "stdin": true}]}));
    d.ok(&["run", "-d", &pf]);
    // Attaches, sends until cat echoes (the attach is then in place), then ends its input and goes.
    let attach_and_echo = || {
        let mut att = d.cmd(&["attach", "in"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut input = att.stdin.take().unwrap();
        let out = att.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut echoed = false;
        for _ in 0..20 {
            if input.write_all(b"via attach\n").is_err() {
                break;
            }
            if rx.recv_timeout(Duration::from_secs(1)).is_ok_and(|l| l == "via attach") {
                echoed = true;
                break;
            }
        }
        drop(input);
        std::thread::sleep(Duration::from_millis(300));
        let _ = att.kill();
        let _ = att.wait();
        echoed
    };
    assert!(attach_and_echo(), "the container's cat echoes what attach sent");
    assert!(attach_and_echo(), "one attach's end of input leaves the container's input open for the next");
    assert_eq!(d.inspect("in")["containers"][0]["state"], "running");
    d.ok(&["rm", "-f", "in"]);

    d.ok(&["run", "-d", "--name", "term", "busybox", "sleep", "100000"]);
    // Hyper's `exec -t POD sh`: on a terminal, -t takes the input too (as `run -t` does)
    let mut t = hyper_tests::pty::Pty::spawn(&d, &["exec", "-t", "term", "sh", "-c", "echo ready; read x; echo got $x"]);
    t.expect("ready", Duration::from_secs(20));
    assert!(wait_until(Duration::from_secs(10), || t.is_raw()), "exec -t on a terminal: the terminal is raw");
    t.send("typed\r");
    t.expect("got typed", Duration::from_secs(20));
    assert_eq!(t.status().code(), Some(0));

    let mut t = hyper_tests::pty::Pty::spawn(&d, &["exec", "-t", "-i", "term", "sleep", "1000"]);
    assert!(wait_until(Duration::from_secs(10), || t.is_raw()), "exec -t -i: the terminal is raw");
    // SAFETY: kill has no memory arguments; the pid is our own child's.
    unsafe { libc::kill(t.pid(), libc::SIGTERM) };
    t.status();
    assert!(!t.is_raw(), "a client killed with SIGTERM gives the terminal back");

    let mut exec = d.cmd(&["exec", "-i", "term", "sh", "-c", "cat >/dev/null; touch /tmp/exec-input-ended"]).stdin(Stdio::piped()).spawn().unwrap();
    let keep_open = exec.stdin.take();
    std::thread::sleep(Duration::from_millis(1500));
    exec.kill().unwrap();
    exec.wait().unwrap();
    let ended = wait_until(Duration::from_secs(15), || d.hyper(&["exec", "term", "test", "-e", "/tmp/exec-input-ended"]).status.success());
    drop(keep_open);
    assert!(ended, "the exec's input ends with its client");
    d.ok(&["rm", "-f", "term"]);
}

/// A container ends with its program: what the program left running in it (a background child) goes too, while
/// the pod's other containers run on. Such processes used to run on, in a container reported as exited.
pub fn a_container_ends_with_its_program(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let pf = d.podfile("e.json", &json!({"id": "ends", "containers": [
        {"name": "short", "image": "busybox", "command": ["sh", "-c", "sleep 1000 & sleep 1; exit 3"]},
        {"name": "long", "image": "busybox", "command": ["sleep", "100003"]}]}));
    d.ok(&["run", "-d", &pf]);
    let short = |d: &Daemon| d.inspect("ends")["containers"].as_array().unwrap().iter().find(|c| c["name"] == "short").cloned().unwrap();
    assert!(wait_until(Duration::from_secs(20), || short(&d)["state"] == "exited"), "{}", short(&d));
    assert_eq!(short(&d)["exit_code"], 3);
    let ps = d.sh("ends/long", "ps -o args");
    assert!(!ps.lines().any(|l| l.starts_with("sleep 1000") && !l.starts_with("sleep 100003")), "the background child of the ended container: {ps}");
    assert_eq!(state(&d, "ends"), "running");
    d.ok(&["rm", "-f", "ends"]);
}

/// A container that restarts while hyperd is down loses none of its previous run's output: what that run left in
/// its pipe, behind the agent's full buffer, used to go with the pipe when the restart replaced it.
pub fn a_restart_while_the_daemon_is_down_loses_no_output(driver: &str) {
    let mut d = Daemon::with_driver(driver, &[]);
    // The first run waits for the daemon to go, then writes its 1 MiB buffer's worth and 32 KiB more.
    let pf = d.podfile("again.json", &json!({"id": "again", "containers": [{"name": "c", "image": "busybox", "restartPolicy": "always",
        "command": ["sh", "-c", "if [ -e /ran ]; then exec sleep 100000; fi; touch /ran; sleep 3; head -c 1081344 /dev/zero | tr '\\0' a; echo; echo END1"]}]}));
    d.ok(&["run", "-d", &pf]);
    d.kill();
    std::thread::sleep(Duration::from_secs(7));
    d.restart();
    let whole = || d.ok(&["logs", "again"]);
    assert!(wait_until(Duration::from_secs(20), || whole().ends_with("a\nEND1\n")), "the first run's output, to its end: {} bytes", whole().len());
    assert_eq!(whole().len(), 1_081_344 + "\nEND1\n".len());
    // and the daemon counts the restart it did not see
    assert!(wait_until(Duration::from_secs(20), || d.inspect("again")["containers"][0]["restarts"] == 1), "{}", d.inspect("again"));
    d.ok(&["rm", "-f", "again"]);
}

/// A root reached through a symlink (a state directory moved to another disk): stopping and removing a pod loses
/// none of its container's files and none of a host volume's. Mounts are found by their real paths: with the
/// symlink's spelling a VM's stop found none, and removed the container's directory, then the sandbox's,
/// through the still-mounted overlay and volume.
pub fn symlinked_root_loses_nothing(driver: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (disk, link, host_dir) = (tmp.path().join("disk"), tmp.path().join("state"), tmp.path().join("hostvol"));
    std::fs::create_dir(&disk).unwrap();
    std::fs::create_dir(&host_dir).unwrap();
    std::os::unix::fs::symlink(&disk, &link).unwrap();
    std::fs::write(host_dir.join("mine"), "the user's file").unwrap();
    let d = Daemon::with_driver(driver, &["--root", link.to_str().unwrap()]);
    let pf = d.podfile("s.json", &json!({"id": "s", "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "100000"],
        "volumes": [{"volume": "host", "path": "/host"}]}],
        "volumes": [{"name": "host", "source": host_dir.to_str().unwrap(), "format": "vfs"}]}));
    d.ok(&["run", "-d", &pf]);
    d.sh("s/c", "echo written > /written && cat /host/mine >/dev/null");
    let sb = sandbox_id(&d, "s");
    d.ok(&["stop", "s"]);
    assert_eq!(std::fs::read_to_string(host_dir.join("mine")).unwrap(), "the user's file", "the host volume after stop");
    assert_sandbox_gone(&d, &sb);
    d.ok(&["start", "s"]);
    assert_eq!(d.sh("s/c", "cat /written; ls /bin/busybox"), "written\n/bin/busybox\n", "the container's files after stop and start");
    d.ok(&["rm", "-f", "s"]);
    assert_eq!(std::fs::read_to_string(host_dir.join("mine")).unwrap(), "the user's file", "the host volume after rm");
    assert_eq!(mounts_mentioning(&disk.display().to_string()), Vec::<String>::new(), "mounts left");
    assert!(std::fs::read_dir(disk.join("pods")).unwrap().next().is_none(), "the pod's directory is gone");
}

/// Every podfile field does what Hyper's did: volumes (pod-owned, host vfs, shared, read-only), files with
/// mode and owner, users and groups from the image, envs for exec'd processes too, sysctls, ulimits, readOnly.
pub fn podfile_fields(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let host_dir = d.dir.path().join("hostvol");
    std::fs::create_dir(&host_dir).unwrap();
    // The container runs as uid 1000: the host directory's own permissions apply.
    std::fs::set_permissions(&host_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    std::fs::write(host_dir.join("from-host"), "hi from host").unwrap();
    // A mount inside the host directory: a read-only volume must be read-only all the way down.
    let sub = host_dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    hyper_tests::run(std::process::Command::new("mount").args(["-t", "tmpfs", "tmpfs", sub.to_str().unwrap()]));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _sub = Unmount(sub.clone());
    let host_file = d.dir.path().join("app.conf");
    std::fs::write(&host_file, "from a host file\n").unwrap();
    std::fs::set_permissions(&host_file, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let pf = d.podfile("f.json", &json!({
        "id": "fields", "hostname": "fields",
        "containers": [
            {"name": "w", "image": "busybox", "command": ["sleep", "1000"], "workdir": "/work/dir", "labels": {"tier": "web"},
             "envs": [{"env": "MODE", "value": "prod"}, {"env": "PATH", "value": "/bin:/usr/bin"}],
             "user": {"name": "app", "group": "staff", "additionalGroups": ["tty"]},
             "volumes": [{"volume": "data", "path": "/data"}, {"volume": "host", "path": "/host"}, {"volume": "conf", "path": "/etc/app.conf"}],
             "files": [{"filename": "cfg", "path": "/etc/app/", "perm": "0640", "user": "app", "group": "staff"},
                       {"filename": "bin", "path": "/usr/local/bin/hello.sh", "perm": "0755"},
                       {"filename": "resolv", "path": "/etc/resolv.conf"}],
             "sysctl": {"net.ipv4.ip_unprivileged_port_start": "80"},
             "ulimits": [{"Name": "nofile", "Soft": 1234, "Hard": 2345}]},
            {"name": "r", "image": "busybox", "command": ["sleep", "1000"], "readOnly": true,
             "volumes": [{"volume": "data", "path": "/mnt/data", "readOnly": true}, {"volume": "host", "path": "/ro-host", "readOnly": true}]},
            // Neither files nor volumes: a VM's daemon looks the user and program up on the host.
            {"name": "u", "image": "busybox", "command": ["sleep", "1001"], "envs": [{"env": "PATH", "value": "/usr/bin:/bin"}],
             "user": {"name": "app", "group": "staff", "additionalGroups": ["tty"]}},
            // Says on the host that it got its stop signal.
            {"name": "t", "image": "busybox", "command": ["sh", "-c", "trap 'echo stopped > /host/by-rm; exit 0' TERM; while :; do sleep 0.1; done"],
             "volumes": [{"volume": "host", "path": "/host"}]}],
        "files": [{"name": "cfg", "encoding": "raw", "content": "key=value\n"},
                  {"name": "bin", "encoding": "base64", "content": "IyEvYmluL3NoCmVjaG8gaGVsbG8gZnJvbSBmaWxlCg=="},
                  {"name": "resolv", "encoding": "raw", "content": "nameserver 192.0.2.53\n"}],
        "volumes": [{"name": "data", "source": "", "format": ""},
                    {"name": "host", "source": host_dir.to_str().unwrap(), "format": "vfs"},
                    // Hyper's file volume: one host file
                    {"name": "conf", "source": host_file.to_str().unwrap(), "format": "vfs"}]
    }));
    d.ok(&["run", "-d", &pf]);
    assert_eq!(d.inspect("fields")["containers"][0]["labels"], json!({"tier": "web"}));
    let id = d.sh("fields/w", "id");
    assert!(id.contains("uid=1000(app)") && id.contains("gid=50(staff)") && id.contains("tty"), "{id}");
    let pid1 = d.sh("fields/u", "for p in $(pidof sleep); do grep -q 1001 /proc/$p/cmdline && echo $p; done; true").trim().to_string();
    let status = d.sh("fields/u", &format!("grep -E '^(Uid|Gid|Groups):' /proc/{pid1}/status"));
    assert!(status.contains("Uid:\t1000\t") && status.contains("Gid:\t50\t"), "{status}");
    assert!(status.lines().any(|l| l.starts_with("Groups:") && l.contains('5')), "tty is gid 5: {status}");
    assert_eq!(d.sh("fields/u", "echo $HOME").trim(), "/home/app");
    assert_eq!(d.sh("fields/w", "pwd").trim(), "/work/dir");
    assert_eq!(d.sh("fields/w", "echo $MODE:$PATH").trim(), "prod:/bin:/usr/bin", "envs reach exec'd processes");
    assert_eq!(d.sh("fields/w", "stat -c '%a %U %G' /etc/app/cfg").trim(), "640 app staff");
    assert_eq!(d.sh("fields/w", "cat /etc/app/cfg"), "key=value\n");
    assert_eq!(d.sh("fields/w", "/usr/local/bin/hello.sh").trim(), "hello from file");
    // a pod file in place of one of the files the pod makes (Hyper's users mapped their own resolv.conf)
    assert_eq!(d.sh("fields/w", "cat /etc/resolv.conf"), "nameserver 192.0.2.53\n");
    assert!(d.sh("fields/r", "cat /etc/resolv.conf").contains("nameserver"), "the other containers keep the pod's");

    assert_eq!(d.sh("fields/w", "cat /proc/sys/net/ipv4/ip_unprivileged_port_start").trim(), "80");
    assert_eq!(d.sh("fields/w", "ulimit -n").trim(), "1234");
    // one volume, two containers, two paths; read-only enforced; host directory shared both ways
    d.sh("fields/w", "echo shared > /data/x");
    assert_eq!(d.sh("fields/r", "cat /mnt/data/x").trim(), "shared");
    assert!(!d.hyper(&["exec", "fields/r", "sh", "-c", "echo no > /mnt/data/y"]).status.success(), "readOnly volume");
    assert!(!d.hyper(&["exec", "fields/r", "touch", "/rootfile"]).status.success(), "readOnly rootfs");
    assert_eq!(d.sh("fields/r", "cat /ro-host/from-host"), "hi from host");
    assert!(!d.hyper(&["exec", "fields/r", "touch", "/ro-host/sub/x"]).status.success(), "a readOnly volume's submounts are read-only too");
    assert_eq!(d.sh("fields/w", "cat /host/from-host"), "hi from host");
    d.sh("fields/w", "echo from-pod > /host/from-pod");
    assert_eq!(std::fs::read_to_string(host_dir.join("from-pod")).unwrap().trim(), "from-pod");
    assert_eq!(d.sh("fields/w", "cat /etc/app.conf"), "from a host file\n");
    d.sh("fields/w", "echo changed in the pod > /etc/app.conf");
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "changed in the pod\n");
    // pod-owned volume lives under the pod and goes with it; the host directory stays
    let pod_id = d.inspect("fields")["id"].as_str().unwrap().to_string();
    assert!(d.root.join("pods").join(&pod_id).join("volumes/data/x").exists());
    // rm of a running pod stops it as `stop` does (Hyper's rm did too): its containers get their stop signal
    d.ok(&["rm", "fields"]);
    assert_eq!(std::fs::read_to_string(host_dir.join("by-rm")).unwrap_or_default().trim(), "stopped");
    assert!(!d.root.join("pods").join(&pod_id).exists());
    assert!(host_dir.join("from-pod").exists(), "a vfs volume's host directory is not the pod's to delete");
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "changed in the pod\n", "nor its host file");
    assert_eq!(mounts_mentioning(d.root.to_str().unwrap()), Vec::<String>::new());

    // A user or a program the image does not have: the start fails, naming it, and the pod stays Created.
    for (name, container, expect) in [
        ("ghost-user", json!({"image": "busybox", "command": ["true"], "user": {"name": "ghost"}}), "no user \"ghost\""),
        ("ghost-prog", json!({"image": "busybox", "command": ["no-such-program"]}), "executable \"no-such-program\" not found"),
    ] {
        let pf = d.podfile(&format!("{name}.json"), &json!({"id": name, "containers": [container]}));
        d.ok(&["create", "-p", &pf]);
        let out = d.hyper(&["start", name]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(expect), "{name}: {err}");
        assert_eq!(state(&d, name), "created");
        d.ok(&["rm", name]);
    }
}

/// Security defaults: Docker's capability set, no_new_privs, seccomp, and a cgroup with the pod's limits.
pub fn confinement(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let pf = d.podfile("c.json", &json!({"id": "conf", "resource": {"vcpu": 1, "memory": 96},
        "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["run", "-d", &pf]);
    let status = d.sh("conf", "grep -E 'CapInh|CapEff|CapBnd|NoNewPrivs|Seccomp:' /proc/self/status");
    assert!(status.contains("CapInh:\t0000000000000000"), "no inheritable capabilities, as Docker: {status}");
    assert!(status.contains("CapEff:\t00000000a80425fb"), "{status}");
    assert!(status.contains("CapBnd:\t00000000a80425fb"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    let out = d.hyper(&["exec", "conf", "sh", "-c", "mount -t tmpfs x /mnt"]);
    assert!(!out.status.success(), "mount is refused inside a container");
    let out = d.hyper(&["exec", "conf", "unshare", "-U", "true"]);
    assert!(!out.status.success(), "new namespaces are refused inside a container");
    assert_eq!(d.sh("conf", "ls -A /sys/firmware | wc -w").trim(), "0", "/sys/firmware is masked");
    // A process without input reads the container's own /dev/null: it had the agent's (the host's, in the ns
    // driver), which a root process could chmod through /proc/self/fd/0.
    let nulls = d.sh("conf", "stat -L -c %d:%i /proc/self/fd/0 /dev/null");
    let nulls: Vec<&str> = nulls.lines().collect();
    assert_eq!(nulls.len(), 2, "{nulls:?}");
    assert_eq!(nulls[0], nulls[1], "stdin is the container's /dev/null");
    // An image (or podfile) working directory through a magic link out of the container is refused (it was
    // the host's root, with every capability still held, in the ns driver)
    let pf = d.podfile("cwd.json", &json!({"id": "cwd", "containers": [{"image": "busybox", "command": ["pwd"], "workdir": "/proc/1/root"}]}));
    d.ok(&["create", "-p", &pf]);
    let err = d.fails(&["start", "cwd"]);
    assert!(err.contains("outside the container's root filesystem"), "{err}");
    d.ok(&["rm", "cwd"]);
    // Nor is a missing working directory made through another container's root (/proc/2/root: the first
    // container's process, in the pod's PID namespace) before that check: container-init made it there.
    let pf = d.podfile("cwd2.json", &json!({"id": "cwd2", "containers": [{"name": "a", "image": "busybox", "command": ["sleep", "1000"]},
        {"name": "b", "image": "busybox", "command": ["true"], "workdir": "/proc/2/root/made-by-b"}]}));
    d.ok(&["create", "-p", &pf]);
    // (The containers start in the podfile's order: a's process is the pod's PID 2, after pod-init.)
    let err = d.fails(&["start", "cwd2"]);
    assert!(err.contains("creating /proc/2/root/made-by-b"), "{err}");
    let pod = d.inspect("cwd2");
    let upper = d.root.join("pods").join(pod["id"].as_str().unwrap()).join("containers").join(pod["containers"][0]["id"].as_str().unwrap()).join("upper");
    assert!(upper.is_dir(), "{}", upper.display());
    assert!(!upper.join("made-by-b").exists(), "a container's set-up made a directory in another container's root");
    d.ok(&["rm", "-f", "cwd2"]);
    // Nor does an image's symlink through /proc/1/root and `..` lead the set-up out: a podfile file written
    // there landed on the host (ns driver), through the agent's root that pod-init kept (and with a chroot,
    // through the tree above it).
    let outside = tempfile::Builder::new().prefix("hyper-outside-").tempdir_in("/var/tmp").unwrap();
    let layout = tempfile::tempdir().unwrap();
    let mut l = hyper_tests::image::Layout::new(&layout.path().join("oci"));
    let busybox = hyper_tests::image::Entry::File { path: "bin/busybox".into(), data: std::fs::read("/bin/busybox").unwrap(), mode: 0o755, uid: 0, gid: 0, xattrs: vec![] };
    let link = format!("/proc/1/root/..{}", outside.path().display());
    let m = l.image(&[(vec![hyper_tests::image::Entry::dir("bin"), busybox, hyper_tests::image::Entry::symlink("out", &link)], hyper_tests::image::Compression::Gzip)], json!({}), "amd64");
    l.tag(&m, "test/out-link:1");
    d.ok(&["load", "-i", l.dir.to_str().unwrap()]);
    let pf = d.podfile("out.json", &json!({"id": "out", "containers": [{"image": "test/out-link:1", "command": ["/bin/busybox", "sleep", "1000"],
        "files": [{"filename": "f", "path": "/out/escaped"}]}], "files": [{"name": "f", "encoding": "raw", "content": "from a container"}]}));
    d.ok(&["create", "-p", &pf]);
    let _ = d.hyper(&["start", "out"]);
    assert!(!outside.path().join("escaped").exists(), "a container's set-up wrote on the host");
    d.ok(&["rm", "-f", "out"]);
    let mem = d.sh("conf", "cat /sys/fs/cgroup/memory.max 2>/dev/null || true");
    let sb = sandbox_id(&d, "conf");
    if driver == "ns" {
        let v1 = Path::new("/sys/fs/cgroup/memory/hyper").join(&sb).join("memory.limit_in_bytes");
        let v2 = Path::new("/sys/fs/cgroup/hyper").join(&sb).join("memory.max");
        let limit = std::fs::read_to_string(&v1).or_else(|_| std::fs::read_to_string(&v2)).expect("the pod's memory cgroup");
        assert_eq!(limit.trim(), (96u64 << 20).to_string());
        let _ = mem;
        // The device cgroup: a node of a host device outside Docker's list can be made (as in Docker) but not
        // opened. (/dev/loop-control: root opens it on this host, where even root cannot open the disk.)
        if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let out = d.hyper(&["exec", "conf", "sh", "-c", "mknod /tmp/lc c 10 237 && exec 3</tmp/lc"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains("Operation not permitted"), "a host device opened in a container: {err}");
        }
    }
    d.ok(&["rm", "-f", "conf"]);
}

/// exec with input, kill, restart policies, logs options, list output.
pub fn processes_and_logs(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let pf = d.podfile("p.json", &json!({"id": "procs", "containers": [
        {"name": "main", "image": "busybox", "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo out $i; echo err $i >&2; done; sleep 1000"]},
        {"name": "flaky", "image": "busybox", "command": ["sh", "-c", "echo try; exit 1"], "restartPolicy": "onFailure"}]}));
    d.ok(&["run", "-d", &pf]);
    // exec with stdin
    let mut child = d.cmd(&["exec", "-i", "procs/main", "sh", "-c", "tr a-z A-Z; exit 4"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        i.write_all(b"hello through stdin\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO THROUGH STDIN\n");
    assert_eq!(out.status.code(), Some(4), "exec returns the process's exit code");
    let out = d.hyper(&["exec", "procs/nosuch", "true"]);
    assert_eq!(out.status.code(), Some(125), "exec's own failure is 125, as Docker's: {}", String::from_utf8_lossy(&out.stderr));
    // restart policy
    assert!(wait_until(Duration::from_secs(20), || d.inspect("procs")["containers"][1]["restarts"].as_u64().unwrap_or(0) >= 2), "onFailure restarts");
    // logs: both streams, tail, timestamps
    assert!(wait_until(Duration::from_secs(10), || d.ok(&["logs", "procs/main"]).lines().count() >= 5));
    let out = d.hyper(&["logs", "procs/main"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out 1\nout 2\nout 3\nout 4\nout 5\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err 1\nerr 2\nerr 3\nerr 4\nerr 5\n");
    let tail = d.hyper(&["logs", "--tail", "2", "procs/main"]);
    let t = String::from_utf8_lossy(&tail.stdout).to_string() + &String::from_utf8_lossy(&tail.stderr);
    assert_eq!(t.lines().count(), 2, "{t}");
    let ts = d.ok(&["logs", "--timestamps", "procs/main"]);
    assert!(ts.lines().all(|l| l.len() > 20 && l.as_bytes()[4] == b'-' && l.contains("out ")), "{ts}");
    assert!(d.ok(&["logs", "procs/flaky"]).lines().filter(|l| *l == "try").count() >= 2, "one log across restarts");
    // Hyper's ways to name a container: POD:CONTAINER, or its id alone
    let main_id = d.inspect("procs")["containers"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(d.ok(&["logs", &main_id]), "out 1\nout 2\nout 3\nout 4\nout 5\n");
    assert_eq!(d.ok(&["exec", "procs:main", "echo", "colon"]).trim(), "colon");
    assert_eq!(d.ok(&["exec", &main_id, "echo", "by id"]).trim(), "by id");
    assert_eq!(d.inspect(&main_id)["name"], "procs", "inspect of a container id shows its pod");
    // A session request made without the session protocol is refused before it runs anything (it ran the
    // process, whose output then went nowhere)
    {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        let cmd = "%5B%22touch%22%2C%22%2Ftmp%2Fplain%22%5D"; // ["touch","/tmp/plain"]
        write!(s, "POST /v1/pods/exec?pod=procs&cmd={cmd} HTTP/1.1\r\nHost: hyperd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(!d.hyper(&["exec", "procs/main", "test", "-e", "/tmp/plain"]).status.success(), "the process did not run");
    }
    // logs -f follows until the container ends
    let f = d.cmd(&["logs", "-f", "procs/main"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    d.ok(&["kill", "-s", "TERM", "procs"]);
    let out = f.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("out 5"));
    assert!(wait_until(Duration::from_secs(10), || d.inspect("procs")["containers"][0]["exit_code"] == json!(143)), "killed by SIGTERM: 128+15");
    // list
    let list = d.ok(&["list"]);
    assert!(list.starts_with("POD ID") && list.contains("NAME") && list.contains("STATE") && list.contains("DRIVER") && list.contains("CREATED"), "{list}");
    let cs = d.ok(&["list", "containers"]);
    assert!(cs.contains("flaky") && cs.contains("main"), "{cs}");
    d.ok(&["rm", "-f", "procs"]);
}

/// A sandbox that stops answering (its agent, or the VM, frozen) does not hold its pod forever: `rm -f` gives up
/// on the agent after a bounded wait, ends the sandbox, and leaves nothing. It used to wait forever for the
/// answer to its stop request, holding the pod's lock, so that no later stop or rm of the pod could run either.
pub fn a_frozen_sandbox_is_removed(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let pf = d.podfile("frozen.json", &long_running_pod("frozen"));
    d.ok(&["run", "-d", &pf]);
    let sb = sandbox_id(&d, "frozen");
    let pid = d.inspect("frozen")["sandbox"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: a signal to the sandbox process the daemon started for this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut rm = d.cmd(&["rm", "-f", "frozen"]).stdin(std::process::Stdio::null()).spawn().unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(90), || {
        status = rm.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = rm.kill();
        // SAFETY: as above; the sandbox goes on, so that the daemon's cleanup can end it.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    assert!(status.is_some_and(|s| s.success()), "rm -f of a frozen sandbox: {status:?}\n{}", d.log());
    assert_sandbox_gone(&d, &sb);
    assert_eq!(d.json(&["list"]), json!([]));
}

/// On a host with only cgroup v2 the ns driver's device list is a BPF program on the sandbox's cgroup: a node of
/// a host device outside the list can be made but not opened, the usual devices open.
#[test]
fn ns_device_list_on_cgroup_v2() {
    let d = Daemon::start_seeing_cgroup2(&["--driver", "ns"]);
    d.ok(&["load", "-i", hyper_tests::fixtures_dir().join("busybox.tar").to_str().unwrap()]);
    let pf = d.podfile("v2.json", &json!({"id": "v2", "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["run", "-d", &pf]);
    let sb = sandbox_id(&d, "v2");
    assert_eq!(d.sh("v2", "grep '^0::' /proc/self/cgroup").trim(), format!("0::/hyper/{sb}"), "the container is in the sandbox's v2 cgroup");
    assert!(d.inspect("v2")["sandbox"]["details"]["cgroups"].as_str().unwrap_or_default().starts_with("/sys/fs/cgroup/hyper/"), "{}", d.inspect("v2"));
    let out = d.hyper(&["exec", "v2", "sh", "-c", "mknod /tmp/lc c 10 237 && exec 3</tmp/lc"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Operation not permitted"), "a host device opened in a container: {err}");
    assert_eq!(d.sh("v2", "mknod /tmp/null c 1 3 && echo x > /tmp/null && head -c 3 /dev/zero | wc -c && ls /dev/pts/ptmx").trim(), "3\n/dev/pts/ptmx");
    d.ok(&["rm", "-f", "v2"]);
}

/// A container's log is rotated at `--log-max-size`: two files of about that size stay, `hyper logs` shows
/// their lines in order without a gap, and a daemon killed and started again takes up the stream where it was
/// (no line twice, none missing: the counts of the rotated bytes are kept). It used to grow without end.
#[test]
fn a_container_log_is_rotated_at_its_limit() {
    let mut d = Daemon::with_driver("ns", &["--log-max-size", "1"]);
    let pf = d.podfile("chatty.json", &json!({"id": "chatty", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c",
        "i=0; while [ $i -lt 30000 ]; do echo \"line $i ..................................................\"; i=$((i+1)); done; \
         i=0; while true; do echo \"tick $i\"; i=$((i+1)); sleep 0.05; done"]}]}));
    d.ok(&["run", "-d", &pf]);
    let logs = |d: &Daemon| d.ok(&["logs", "chatty"]);
    assert!(wait_until(Duration::from_secs(60), || logs(&d).contains("tick 3\n")), "{}", d.ok(&["logs", "--tail", "5", "chatty"]));
    let path = std::path::PathBuf::from(d.inspect("chatty")["containers"][0]["log_path"].as_str().unwrap());
    for p in [path.clone(), std::path::PathBuf::from(format!("{}.1", path.display()))] {
        let len = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).len();
        assert!(len <= 1 << 20, "{}: {len} bytes", p.display());
    }
    // In order, without a gap: the kept end of the lines, then the ticks.
    let check = |text: &str| -> u64 {
        let (mut line, mut tick) = (None::<u64>, None::<u64>);
        // The oldest line kept may be the end of a line whose start was rotated away.
        let first_whole = text.lines().position(|l| l.starts_with("line ") || l.starts_with("tick ")).unwrap_or(0);
        assert!(first_whole <= 1, "{:?}", &text[..200]);
        for l in text.lines().skip(first_whole) {
            let mut w = l.split(' ');
            let (kind, n) = (w.next().unwrap(), w.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or_else(|| panic!("{l:?}")));
            assert!(kind != "line" || tick.is_none(), "a line after a tick: {l}");
            let last = if kind == "line" { &mut line } else { &mut tick };
            if let Some(prev) = *last {
                assert_eq!(n, prev + 1, "after {kind} {prev}");
            }
            *last = Some(n);
        }
        assert_eq!(line, Some(29999));
        tick.unwrap()
    };
    let before = check(&logs(&d));
    assert!(!logs(&d).contains("line 0 "), "the oldest lines are gone");
    d.restart();
    assert!(wait_until(Duration::from_secs(30), || check(&logs(&d)) > before + 10), "ticks go on after the daemon's restart");
    check(&logs(&d));
    assert!(!d.log().contains("never arrived"), "{}", d.log());
    let tail = d.ok(&["logs", "--tail", "2", "chatty"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.starts_with("tick "), "{tail}");
    d.ok(&["rm", "-f", "chatty"]);
}

macro_rules! pod_suite {
    ($driver:literal: $($name:ident),* $(,)?) => {
        $( #[test] fn $name() { super::$name($driver) } )*
    };
}

mod ns {
    pod_suite!("ns": shared_namespaces, lifecycle, run_tty, daemon_restart, unrecorded_sandbox_removed_at_restart, symlinked_root_loses_nothing, stalled_clients_hold_up_nothing_else, replace_leaves_no_process_of_the_old_pod, output_of_a_container_that_ended_while_the_daemon_was_down_is_all_logged, a_hostile_passwd_file_holds_up_no_exec, client_sessions_behave_like_a_terminal, a_container_ends_with_its_program, a_restart_while_the_daemon_is_down_loses_no_output, bad_podfiles, podfile_fields, confinement, processes_and_logs, a_frozen_sandbox_is_removed);
}

mod qemu {
    pod_suite!("qemu": shared_namespaces, lifecycle, run_tty, daemon_restart, unrecorded_sandbox_removed_at_restart, symlinked_root_loses_nothing, stalled_clients_hold_up_nothing_else, replace_leaves_no_process_of_the_old_pod, output_of_a_container_that_ended_while_the_daemon_was_down_is_all_logged, a_hostile_passwd_file_holds_up_no_exec, client_sessions_behave_like_a_terminal, a_container_ends_with_its_program, a_restart_while_the_daemon_is_down_loses_no_output, bad_podfiles, podfile_fields, confinement, processes_and_logs, a_frozen_sandbox_is_removed);
}
