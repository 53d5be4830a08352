#!/usr/bin/env python3
"""Build a small OCI/Docker image from Debian's busybox-static, as a docker-archive tar.

Usage: build-busybox-image.py OUT.tar [NAME:TAG [MARKER [SRC=DEST]]]

With MARKER, the image gets a second layer holding /etc/MARKER (a different image on the same base layer, for
tests that need two images), and with SRC=DEST the host file SRC at DEST (an executable) in that layer.

The image has /bin/busybox with a symlink per applet, /etc/passwd and /etc/group (root, nobody and an
unprivileged `app` user), and the usual empty directories. Timestamps are fixed, so the same busybox binary
always gives the same image id.
"""
import hashlib, io, json, os, subprocess, sys, tarfile

EPOCH = 1700000000  # fixed mtime for reproducible layers
BUSYBOX = "/bin/busybox"


def add_dir(t, name, mode=0o755):
    i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = mode; i.mtime = EPOCH; t.addfile(i)


def add_file(t, name, data, mode=0o644):
    i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode; i.mtime = EPOCH; t.addfile(i, io.BytesIO(data))


def add_link(t, name, target):
    i = tarfile.TarInfo(name); i.type = tarfile.SYMTYPE; i.linkname = target; i.mtime = EPOCH; t.addfile(i)


def main():
    out = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "busybox:latest"
    marker = sys.argv[3] if len(sys.argv) > 3 else None
    extra_file = sys.argv[4].split("=", 1) if len(sys.argv) > 4 else None
    applets = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "home/app", "var", "proc", "sys", "dev", "run"]:
            add_dir(t, d, 0o700 if d == "root" else 0o755)
        add_dir(t, "tmp", 0o1777)
        add_dir(t, "var/tmp", 0o1777)
        with open(BUSYBOX, "rb") as f:
            add_file(t, "bin/busybox", f.read(), 0o755)
        for a in sorted(set(applets)):
            a = a.lstrip("/")
            if a == "bin/busybox":
                continue
            if a.startswith("bin/"):
                target = "busybox"
            else:
                target = "../" * a.count("/") + "bin/busybox"
            add_link(t, a, target)
        add_file(t, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add_file(t, "etc/group", b"root:x:0:\ntty:x:5:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n")
        add_file(t, "etc/os-release", b'NAME="hyper busybox"\nID=busybox\n')
    layers = [layer.getvalue()]
    if marker:
        extra = io.BytesIO()
        with tarfile.open(fileobj=extra, mode="w", format=tarfile.PAX_FORMAT) as t:
            add_dir(t, "etc")
            add_file(t, "etc/" + marker, (marker + "\n").encode())
            if extra_file:
                src, dest = extra_file
                with open(src, "rb") as f:
                    add_file(t, dest.lstrip("/"), f.read(), 0o755)

        layers.append(extra.getvalue())
    diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
    config = {
        "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "scripts/build-busybox-image.py"}],
    }
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    hexes = [d.split(":")[1] for d in diff_ids]
    manifest = [{"Config": config_hex + ".json", "RepoTags": [name], "Layers": [h + "/layer.tar" for h in hexes]}]
    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w") as t:
        add_file(t, config_hex + ".json", config_bytes)
        for h, l in zip(hexes, layers):
            add_dir(t, h)
            add_file(t, h + "/layer.tar", l)
        add_file(t, "manifest.json", json.dumps(manifest).encode())

    os.replace(tmp, out)
    print(f"{out}: {name} sha256:{config_hex}")


if __name__ == "__main__":
    main()
