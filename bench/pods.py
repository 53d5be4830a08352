#!/usr/bin/env python3
"""Benchmarks of the pods issue (ns driver), run by bench/run.sh pods inside private net+mount namespaces.

1. `hyper run -d` of a one-container busybox pod (image present) until its process runs, then `hyper rm -f`;
   vs `crun run --detach` + `crun delete -f` of the same rootfs as an OCI bundle, and vs `podman pod create`
   + `podman run -d --pod` + `podman pod rm -f`.
2. `hyper replace` vs `hyper stop` + `hyper start` of the same two pods.
3. 200 idle pods at once: per-pod host memory (PSS of agent + pod-init, plus the daemon's growth / 200).
"""
import json, os, shutil, statistics, subprocess, sys, tarfile, tempfile, time

BIN = sys.argv[1]
FIXTURES = sys.argv[2]
RUNS = int(os.environ.get("RUNS", "30"))
PODS = int(os.environ.get("PODS", "200"))

work = tempfile.mkdtemp(prefix="hyper-bench-pods-")
root, sock = f"{work}/root", f"{work}/hyper.sock"
env = dict(os.environ, HYPER_HOST=f"unix://{sock}")

def hyper(*args, check=True):
    return subprocess.run([f"{BIN}/hyper", *args], env=env, check=check, capture_output=True, text=True)

# Before each measured step the machine is left idle for a moment, as it is when a user starts one pod. It
# matters: writing a pid into a cgroup v1 `cgroup.procs` (crun does, for its container) waits for an RCU grace
# period, unless another such write happened a few ms before; back-to-back runs hide that wait.
SETTLE = 0.1

def timed(fn, settle=SETTLE):
    time.sleep(settle)
    t = time.monotonic(); fn(); return time.monotonic() - t

def pss(pid):
    try:
        for l in open(f"/proc/{pid}/smaps_rollup"):
            if l.startswith("Pss:"):
                return int(l.split()[1]) * 1024
    except OSError:
        pass
    return 0

def med(v):
    return statistics.median(v)

# crun refuses hybrid cgroup layouts; the unified mount is only hidden in this private mount namespace.
subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=False)
d = subprocess.Popen([f"{BIN}/hyperd", "--root", root, "--socket", sock, "--log-level", "warn", "--driver", "ns"])
try:
    for _ in range(200):
        if hyper("version", check=False).returncode == 0: break
        time.sleep(0.05)
    hyper("load", "-i", f"{FIXTURES}/busybox.tar")

    # --- 1. run -d + rm, each hyper run paired with a crun run right after it: this machine's speed drifts
    # over seconds, and the two of a pair see the same drift.
    bundle = f"{work}/bundle"
    os.makedirs(f"{bundle}/rootfs")
    with tarfile.open(f"{FIXTURES}/busybox.tar") as t:
        m = json.load(t.extractfile("manifest.json"))[0]
        with tarfile.open(fileobj=t.extractfile(m["Layers"][0])) as layer:
            layer.extractall(f"{bundle}/rootfs")
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    cfg = json.load(open(f"{bundle}/config.json"))
    cfg["process"]["args"] = ["sleep", "1000"]; cfg["process"]["terminal"] = False
    json.dump(cfg, open(f"{bundle}/config.json", "w"))
    def pairs(settle):
        runs, rms, cruns, crms = [], [], [], []
        for i in range(RUNS):
            runs.append(timed(lambda: hyper("run", "-d", "--name", f"b{i}", "busybox", "sleep", "1000"), settle))
            rms.append(timed(lambda: hyper("rm", "-f", f"b{i}"), settle))
            cruns.append(timed(lambda: subprocess.run(["crun", "run", "--detach", "-b", bundle, f"c{i}"], check=True), settle))
            crms.append(timed(lambda: subprocess.run(["crun", "delete", "-f", f"c{i}"], check=True), settle))
        return runs, rms, cruns, crms
    runs, rms, cruns, crms = pairs(SETTLE)
    # The earlier method, for comparison: all hyper runs back to back, then all crun runs back to back.
    bruns, brms, bcruns, bcrms = [], [], [], []
    for i in range(RUNS):
        bruns.append(timed(lambda: hyper("run", "-d", "--name", f"b{i}", "busybox", "sleep", "1000"), 0))
        brms.append(timed(lambda: hyper("rm", "-f", f"b{i}"), 0))
    for i in range(RUNS):
        bcruns.append(timed(lambda: subprocess.run(["crun", "run", "--detach", "-b", bundle, f"c{i}"], check=True), 0))
        bcrms.append(timed(lambda: subprocess.run(["crun", "delete", "-f", f"c{i}"], check=True), 0))

    conf = f"{work}/containers.conf"
    open(conf, "w").write("[containers]\ndefault_ulimits = []\n")
    penv = dict(os.environ, CONTAINERS_CONF=conf)
    proot = ["--root", f"{work}/podman-root", "--runroot", f"{work}/podman-run"]
    subprocess.run(["podman", *proot, "load", "-i", f"{FIXTURES}/busybox.tar"], env=penv, check=True, capture_output=True)
    pruns, prms = [], []
    for i in range(max(5, RUNS // 2)):
        def prun():
            subprocess.run(["podman", *proot, "pod", "create", "--infra=false", "--name", f"p{i}"], env=penv, check=True, capture_output=True)
            subprocess.run(["podman", *proot, "run", "-d", "--pod", f"p{i}", "--network", "none", "busybox", "sleep", "1000"], env=penv, check=True, capture_output=True)
        pruns.append(timed(prun))
        prms.append(timed(lambda: subprocess.run(["podman", *proot, "pod", "rm", "-f", "-t", "0", f"p{i}"], env=penv, check=True, capture_output=True)))

    h, c, p = med(runs), med(cruns), med(pruns)
    hr, cr, pr = med([a + b for a, b in zip(runs, rms)]), med([a + b for a, b in zip(cruns, crms)]), med([a + b for a, b in zip(pruns, prms)])
    print(f"## 1. one-container busybox pod, until its process runs (median of {RUNS}; podman {len(pruns)})")
    print("| | start | start + remove |")
    print("|---|---|---|")
    print(f"| hyper run -d (+ rm -f) | {h*1000:.1f} ms | {hr*1000:.1f} ms |")
    print(f"| crun run --detach (+ delete -f) | {c*1000:.1f} ms | {cr*1000:.1f} ms |")
    print(f"| podman pod create + run -d --pod (+ pod rm -f) | {p*1000:.0f} ms | {pr*1000:.0f} ms |")
    print(f"| ratio hyper / crun | {h/c:.2f}x | {hr/cr:.2f}x |  goal <= 1.5x")
    print(f"| (median of the {RUNS} paired ratios) | {med([a / b for a, b in zip(runs, cruns)]):.2f}x | |")
    bh, bc = med(bruns), med(bcruns)
    bhr, bcr = med([a + b for a, b in zip(bruns, brms)]), med([a + b for a, b in zip(bcruns, bcrms)])
    print(f"| back to back, all hyper runs: hyper run -d (+ rm -f) | {bh*1000:.1f} ms | {bhr*1000:.1f} ms |")
    print(f"| back to back, then all crun runs: crun run --detach (+ delete -f) | {bc*1000:.1f} ms | {bcr*1000:.1f} ms |")
    print(f"| back to back: ratio hyper / crun | {bh/bc:.2f}x | {bhr/bcr:.2f}x |")

    print(f"| ratio hyper / podman | {h/p:.2f}x | {hr/pr:.2f}x |  goal <= 0.3x")
    print()

    # --- 2. replace vs stop + start
    for n in ("ra", "rb"):
        pf = f"{work}/{n}.json"
        json.dump({"id": n, "containers": [{"image": "busybox", "command": ["sleep", "100000"]}]}, open(pf, "w"))
        hyper("create", "-p", pf)
    hyper("start", "ra")
    reps, sss = [], []
    cur, other = "ra", "rb"
    for i in range(RUNS):
        reps.append(timed(lambda: hyper("replace", "-o", cur, "-n", other)))
        cur, other = other, cur
    for i in range(RUNS):
        sss.append(timed(lambda: (hyper("stop", cur), hyper("start", other))))
        cur, other = other, cur
    print(f"## 2. replace vs stop + start (median of {RUNS})")
    print("| | time |")
    print("|---|---|")
    print(f"| hyper replace -o A -n B | {med(reps)*1000:.0f} ms |")
    print(f"| hyper stop A + hyper start B | {med(sss)*1000:.0f} ms |")
    print(f"| ratio replace / (stop + start) | {med(reps)/med(sss):.2f}x |")
    print()
    hyper("rm", "-f", "ra", "rb")

    # --- 3. many idle pods
    base = pss(d.pid)
    t0 = time.monotonic()
    failures = 0
    for i in range(PODS):
        r = hyper("run", "-d", "--name", f"idle{i}", "busybox", "sleep", "100000", check=False)
        failures += r.returncode != 0
    elapsed = time.monotonic() - t0
    time.sleep(2)
    listing = json.loads(hyper("list", "--format", "json").stdout)
    running = sum(1 for p in listing if p["state"] == "running")
    agents = inits = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd[:2] == [f"{BIN}/hyperstart".encode(), b"agent"]:
            agents += pss(pid)
        elif cmd and cmd[0] == b"pod-init":
            inits += pss(pid)
    grown = pss(d.pid) - base
    per_pod = (agents + inits + grown) / PODS
    print(f"## 3. {PODS} idle busybox pods at once")
    print(f"started in {elapsed:.1f} s; {running} running, {failures} failures")
    print("| per pod | PSS |")
    print("|---|---|")
    print(f"| hyperstart agent | {agents/PODS/1024:.0f} KiB |")
    print(f"| pod-init | {inits/PODS/1024:.0f} KiB |")
    print(f"| hyperd growth / {PODS} | {grown/PODS/1024:.0f} KiB |")
    print(f"| total | {per_pod/1024/1024:.2f} MiB | goal <= 2 MiB")
    for i in range(PODS):
        hyper("rm", "-f", f"idle{i}", check=False)
finally:
    d.terminate(); d.wait()
    shutil.rmtree(work, ignore_errors=True)
