#!/usr/bin/env python3
"""Benchmarks of the qemu driver (TCG on hosts without a usable KVM), run by bench/run.sh vm.

1. `hyper run -d` of a 2-container busybox pod until both processes run, vs a bare QEMU boot of the same
   kernel and a trivial initrd until /init runs (the floor: bench/floor-init.c, which only prints its mark). Each run follows a floor boot, and the overhead
   is the median over these pairs: this shared machine's speed drifts by 10% and more within minutes, which
   made unpaired medians of the two (measured a minute apart) swing by ~10 points between runs.
2. `hyper replace` vs `hyper run -d`.
3. Host memory (PSS) of an idle 128 MiB VM pod; boot-to-agent time; guest kernel size.
4. The same start with --vm-templates, with --vm-cache 1 (a VM booted ahead of time, each run after the
   cache is full again), and with both.
"""
import json, os, re, select, shutil, statistics, subprocess, sys, tempfile, time

BIN, FIXTURES, KERNEL, FLOOR_INITRD = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
INITRD = f"{BIN}/hyper-initrd.img"

RUNS = int(os.environ.get("RUNS", "10"))

def med(v): return statistics.median(v)

def paired(runs, floors):
    """The median of each run's overhead over the floor boot just before it, with its spread."""
    o = sorted((r / f - 1) * 100 for r, f in zip(runs, floors))
    return f"{med(o):.0f}% (pairs from {o[0]:.0f}% to {o[-1]:.0f}%)"

def kernel_size(path):
    """The file's size; for an ELF vmlinux, what it loads (its file has 2 MiB-aligned holes)."""
    import struct
    b = open(path, "rb").read()
    if b[:4] != b"\x7fELF":
        return f"{len(b)/1e6:.2f} MB"
    phoff, = struct.unpack_from("<Q", b, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", b, 0x36)
    load = sum(struct.unpack_from("<Q", b, phoff + i * phentsize + 0x20)[0]
               for i in range(phnum) if struct.unpack_from("<I", b, phoff + i * phentsize)[0] == 1)
    return f"{load/1e6:.2f} MB loaded (uncompressed vmlinux, {len(b)/1e6:.1f} MB file)"

def pss(pid):
    for l in open(f"/proc/{pid}/smaps_rollup"):
        if l.startswith("Pss:"): return int(l.split()[1]) * 1024
    return 0

def floor_boot(machine, accel, append):
    """One boot of bare QEMU with the driver's kernel and the trivial initrd until its /init runs."""
    t = time.monotonic()
    p = subprocess.Popen(["qemu-system-x86_64", "-machine", machine, "-accel", accel, "-smp", "1", "-m", "128M", "-nodefaults",
                          "-no-user-config", "-display", "none", "-no-reboot", "-kernel", KERNEL, "-initrd", FLOOR_INITRD,
                          "-append", append,
                          "-serial", "stdio"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    buf = b""
    while b"HYPER-PROBE-OK" not in buf:
        r, _, _ = select.select([p.stdout], [], [], 30)
        if not r: raise SystemExit(f"floor boot ({machine}) timed out")
        d = os.read(p.stdout.fileno(), 4096)
        if not d: raise SystemExit(f"QEMU ({machine}) exited before /init ran")
        buf += d
    e = time.monotonic() - t
    p.kill(); p.wait()
    return e

work = tempfile.mkdtemp(prefix="hyper-bench-vm-")
pod = lambda n: {"id": n, "resource": {"vcpu": 1, "memory": 128}, "containers": [
    {"name": "a", "image": "busybox", "command": ["sleep", "100000"]},
    {"name": "b", "image": "busybox", "command": ["sleep", "100001"]}]}
daemons = []

def daemon(name, *args):
    """A hyperd of its own (root, socket, log, bridge); returns a function running the hyper CLI against it."""
    env = dict(os.environ, HYPER_HOST=f"unix://{work}/{name}.sock")
    def hyper(*a, check=True): return subprocess.run([f"{BIN}/hyper", *a], env=env, check=check, capture_output=True, text=True)
    log = open(f"{work}/{name}.log", "w")
    daemons.append(subprocess.Popen([f"{BIN}/hyperd", "--root", f"{work}/{name}", "--socket", f"{work}/{name}.sock", "--driver", "qemu",
                                     "--kernel", KERNEL, "--initrd", INITRD, *args, *os.environ.get("HYPERD_ARGS", "").split()], stderr=log))
    for _ in range(200):
        if hyper("version", check=False).returncode == 0: break
        time.sleep(0.05)
    hyper("load", "-i", f"{FIXTURES}/busybox.tar")
    return hyper

def measure(hyper, tag, floor):
    """`run -d` (+ rm), each right after a floor boot (this shared machine's speed drifts by 10% and more
    within minutes: each pair sees the same machine); `replace` between two pods, the first of those replaces
    (the one that finds the VM as its start left it), and the PSS of the idle VM after them. Returns the
    runs, the floor boots, the median replace, the first replace and the PSS."""
    runs, floors = [], []
    for i in range(RUNS):
        floors.append(floor_boot(*floor))
        time.sleep(0.3)  # the floor's QEMU is gone, and so is its memory, before the run starts
        pf = f"{work}/{tag}r{i}.json"; json.dump(pod(f"{tag}r{i}"), open(pf, "w"))
        t = time.monotonic(); hyper("run", "-d", pf); runs.append(time.monotonic() - t)
        hyper("rm", "-f", f"{tag}r{i}")
    for n in ("a", "b"):
        pf = f"{work}/{tag}{n}.json"; json.dump(pod(f"{tag}{n}"), open(pf, "w")); hyper("create", "-p", pf)
    hyper("start", f"{tag}a")
    reps, cur, other = [], f"{tag}a", f"{tag}b"
    for i in range(RUNS):
        t = time.monotonic(); hyper("replace", "-o", cur, "-n", other); reps.append(time.monotonic() - t)
        cur, other = other, cur
    time.sleep(5)
    idle = pss(json.loads(hyper("inspect", cur).stdout)["sandbox"]["pid"])
    hyper("rm", "-f", f"{tag}a", f"{tag}b")
    return runs, floors, med(reps), reps[0], idle

def density(hyper, tag, n=4):
    """The PSS of each of n idle pods running side by side, after a while (free page reporting)."""
    for i in range(n):
        pf = f"{work}/{tag}{i}.json"; json.dump(pod(f"{tag}{i}"), open(pf, "w")); hyper("run", "-d", pf)
    time.sleep(8)
    out = []
    for i in range(n):
        out.append(pss(json.loads(hyper("inspect", f"{tag}{i}").stdout)["sandbox"]["pid"]))
        hyper("rm", "-f", f"{tag}{i}")
    return out

def cached_runs(name, bridge, cidr, floor, *args):
    """`run -d` with --vm-cache 1, each run paired with a floor boot once the cache is full again; returns the
    runs, the floor boots and the PSS of a VM waiting in the cache (idle, no pod)."""
    hyper = daemon(name, "--vm-cache", "1", "--bridge", bridge, "--pod-cidr", cidr, *args)
    def ready():
        for _ in range(1200):
            st = json.loads(hyper("info", "--format", "json").stdout)["driver_status"]
            if "1 waiting for a pod" in dict((k, v) for k, v in st).get("VM cache", ""): return
            time.sleep(0.05)
        raise SystemExit("the VM cache did not fill")
    ready()
    time.sleep(5)  # as for the idle pods: free page reporting returns what the guest freed after boot
    qpids = [int(x) for x in subprocess.run(["pgrep", "-f", f"{work}/{name}/vm-cache/vc-"], capture_output=True, text=True).stdout.split()]
    parked = pss(qpids[0]) if len(qpids) == 1 else 0
    runs, floors = [], []
    for i in range(RUNS):
        ready()
        time.sleep(0.5)
        floors.append(floor_boot(*floor))
        time.sleep(0.3)
        pf = f"{work}/{name}{i}.json"; json.dump(pod(f"{name}{i}"), open(pf, "w"))
        t = time.monotonic(); hyper("run", "-d", pf); runs.append(time.monotonic() - t)
        if json.loads(hyper("inspect", f"{name}{i}").stdout)["sandbox"]["details"]["boot"] != "cache":
            raise SystemExit("a run did not start in the cached VM")
        hyper("rm", "-f", f"{name}{i}")
    return runs, floors, parked

try:
    # 1a. the floor: QEMU with the machine, accelerator and kernel command line of the driver's own VMs (read
    # from one it runs), no devices, the trivial initrd (its /init prints its mark and nothing else).
    hyper = daemon("boot")
    pf = f"{work}/probe.json"; json.dump(pod("probe"), open(pf, "w")); hyper("run", "-d", pf)
    argv = open(f"/proc/{json.loads(hyper('inspect', 'probe').stdout)['sandbox']['pid']}/cmdline").read().split("\0")
    hyper("rm", "-f", "probe")
    machine, accel, append = (argv[argv.index(o) + 1] for o in ("-machine", "-accel", "-append"))
    # the same on QEMU's `pc` machine (what the driver used before microvm), for comparison
    floor_pc = [floor_boot("pc", accel, append) for _ in range(RUNS)]
    # 1-3. booting VMs, each run paired with a floor boot
    runs, floor, rp, rp1, qemu_pss = measure(hyper, "x", (machine, accel, append))
    r = med(runs)
    # 4. density: four idle pods side by side share QEMU's code pages; PSS splits them fairly.
    many = density(hyper, "m")
    # Of the timed runs only (the probe's boot came first; the four side by side, slower, come after).
    ready = [int(m) for m in re.findall(r"agent ready (\d+) ms after start", open(f"{work}/boot.log").read())][1:1 + RUNS]

    # 5. the same with --vm-templates; the first run of the shape makes the template (not counted).
    thyper = daemon("tpl", "--vm-templates", "--bridge", "hypert0", "--pod-cidr", "10.231.0.0/24")
    pf = f"{work}/tw.json"; json.dump(pod("tw"), open(pf, "w"))
    t = time.monotonic(); thyper("run", "-d", pf); tmake = time.monotonic() - t
    thyper("rm", "-f", "tw")
    truns, tfloor, trp, trp1, tpss = measure(thyper, "t", (machine, accel, append))
    tr = med(truns)
    retries = open(f"{work}/tpl.log").read().count("connecting again")
    # 5b. density again: four idle pods restored from the one template share its RAM file's pages, which PSS
    # splits between them as it splits QEMU's code.
    tmany = density(thyper, "tm")

    # 6. --vm-cache 1 (and with --vm-templates as well): each run takes the VM that waits; the next run (and its
    # floor boot) waits until another one is ready, so no boot in the background skews either.
    cruns, cfloor, parked_pss = cached_runs("cache", "hyperc0", "10.232.0.0/24", (machine, accel, append))
    cr = med(cruns)
    ctruns, ctfloor, ct_parked_pss = cached_runs("cachetpl", "hyperc1", "10.233.0.0/24", (machine, accel, append), "--vm-templates")
    ctr = med(ctruns)

    f = med(floor)
    print(f"qemu driver, TCG, 1 vCPU, 128 MiB, guest kernel {kernel_size(KERNEL)}, initrd {os.path.getsize(INITRD)/1e6:.2f} MB (the floor's {os.path.getsize(FLOOR_INITRD)/1e3:.0f} KB); medians of {RUNS}")
    print("| | time |")
    print("|---|---|")
    print(f"| floor: bare QEMU boot until /init runs (-machine {machine}) | {f*1000:.0f} ms |")
    print(f"| (the same with -machine pc, for comparison) | {med(floor_pc)*1000:.0f} ms |")
    print(f"| boot until the agent answers (hyperd log, the timed runs) | {med(ready)} ms |")
    print(f"| hyper run -d, 2-container pod, both processes running | {r*1000:.0f} ms |")
    print(f"| overhead over the floor (median of the {RUNS} pairs) | {paired(runs, floor)} | goal <= 15%")
    print(f"| hyper replace (same pod shape) | {rp*1000:.0f} ms |")
    print(f"| ratio replace / run | {rp/r:.3f} | goal <= 0.10 (Hyper: 0.40)")
    print(f"| the first replace after the pod started (one sample) | {rp1*1000:.0f} ms |")
    print(f"| PSS of an idle 128 MiB VM pod's QEMU | {qemu_pss/1e6:.1f} MB | goal <= 60 MB under TCG")
    print(f"| same, mean of 4 idle pods running side by side | {sum(many)/len(many)/1e6:.1f} MB |")
    print()
    print(f"With --vm-templates (template made by the first run: {tmake*1000:.0f} ms; hellos retried on a new connection: {retries})")
    print("| | time |")
    print("|---|---|")
    print(f"| hyper run -d, 2-container pod, both processes running | {tr*1000:.0f} ms |")
    print(f"| overhead over the floor (median of the {RUNS} pairs) | {paired(truns, tfloor)} | goal <= 15%")
    print(f"| hyper replace | {trp*1000:.0f} ms |")
    print(f"| ratio replace / run | {trp/tr:.3f} | goal <= 0.10")
    print(f"| the first replace after the pod started (one sample) | {trp1*1000:.0f} ms |")
    print(f"| PSS of an idle 128 MiB VM pod's QEMU | {tpss/1e6:.1f} MB | goal <= 60 MB under TCG")
    print(f"| same, mean of 4 idle pods running side by side | {sum(tmany)/len(tmany)/1e6:.1f} MB |")
    print()
    print("With --vm-cache 1 (each run takes the VM that waits, once it is ready)")
    print("| | time |")
    print("|---|---|")
    print(f"| hyper run -d, 2-container pod, both processes running | {cr*1000:.0f} ms |")
    print(f"| overhead over the floor (median of the {RUNS} pairs) | {paired(cruns, cfloor)} | goal <= 15%")
    print(f"| PSS of the VM waiting in the cache (no pod) | {parked_pss/1e6:.1f} MB |")
    print()
    print("With --vm-cache 1 --vm-templates (the cache's VMs are restored from the template)")
    print("| | time |")
    print("|---|---|")
    print(f"| hyper run -d, 2-container pod, both processes running | {ctr*1000:.0f} ms |")
    print(f"| overhead over the floor (median of the {RUNS} pairs) | {paired(ctruns, ctfloor)} | goal <= 15%")
    print(f"| PSS of the VM waiting in the cache (no pod) | {ct_parked_pss/1e6:.1f} MB |")

finally:
    for d in daemons:
        d.terminate(); d.wait()
    shutil.rmtree(work, ignore_errors=True)
