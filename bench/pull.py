#!/usr/bin/env python3
"""Benchmark: pull a ~300 MB, 10-layer image from a local registry into an empty store.

hyper pull (fresh hyperd and empty root each run)  vs  skopeo copy docker://... oci:DIR + umoci unpack.
Median of N runs each; also the peak RSS (VmHWM) of hyperd during its pull. Run by bench/run.sh inside a
private network namespace.
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

RUNS = int(os.environ.get("RUNS", "5"))
BIN = sys.argv[1]          # directory with hyperd and hyper (release build)
LAYOUT = sys.argv[2]       # OCI layout made by make_image.py

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("registry did not start")

def drop_caches():
    subprocess.run(["sync"]); open("/proc/sys/vm/drop_caches", "w").write("3\n")

work = tempfile.mkdtemp(prefix="hyper-bench-pull-")
port = free_port()
with open(f"{work}/reg.yml", "w") as f:
    f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/registry\nhttp:\n  addr: 127.0.0.1:{port}\n")
reg = subprocess.Popen(["docker-registry", "serve", f"{work}/reg.yml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    wait_port(port)
    ref = f"127.0.0.1:{port}/bench/big:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{LAYOUT}:big", f"docker://{ref}"], check=True)

    hyper_times, hyper_rss = [], []
    for i in range(RUNS):
        root = f"{work}/hyper-root"; sock = f"{work}/hyper.sock"
        shutil.rmtree(root, ignore_errors=True)
        d = subprocess.Popen([f"{BIN}/hyperd", "--root", root, "--socket", sock, "--log-level", "warn"])
        env = dict(os.environ, HYPER_HOST=f"unix://{sock}")
        for _ in range(200):
            if subprocess.run([f"{BIN}/hyper", "version"], env=env, capture_output=True).returncode == 0: break
            time.sleep(0.05)
        drop_caches()
        t = time.monotonic()
        subprocess.run([f"{BIN}/hyper", "pull", ref], env=env, check=True, stdout=subprocess.DEVNULL)
        hyper_times.append(time.monotonic() - t)
        status = open(f"/proc/{d.pid}/status").read()
        hyper_rss.append(int([l for l in status.splitlines() if l.startswith("VmHWM")][0].split()[1]) / 1024)
        d.terminate(); d.wait()

    base_times = []
    for i in range(RUNS):
        oci, bundle = f"{work}/skopeo-oci", f"{work}/bundle"
        shutil.rmtree(oci, ignore_errors=True); shutil.rmtree(bundle, ignore_errors=True)
        drop_caches()
        t = time.monotonic()
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{oci}:big"], check=True)
        subprocess.run(["umoci", "unpack", "--image", f"{oci}:big", bundle], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base_times.append(time.monotonic() - t)

    h, b = statistics.median(hyper_times), statistics.median(base_times)
    size = sum(l["size"] for l in json.load(open(os.path.join(LAYOUT, "blobs/sha256", json.load(open(f"{LAYOUT}/index.json"))["manifests"][0]["digest"][7:])))["layers"])
    print(f"pull of a {size/1e6:.0f} MB (compressed), 10-layer image from a loopback registry, median of {RUNS}")
    print(f"| tool | median wall time | runs |")
    print(f"|---|---|---|")
    print(f"| hyper pull | {h:.2f} s | {', '.join(f'{x:.2f}' for x in hyper_times)} |")
    print(f"| skopeo copy + umoci unpack | {b:.2f} s | {', '.join(f'{x:.2f}' for x in base_times)} |")
    print(f"| ratio hyper / baseline | {h/b:.2f}x | goal <= 0.70x |")
    print(f"hyperd peak RSS during the pull (VmHWM): median {statistics.median(hyper_rss):.0f} MiB, max {max(hyper_rss):.0f} MiB")
finally:
    reg.terminate(); reg.wait()
    shutil.rmtree(work, ignore_errors=True)
