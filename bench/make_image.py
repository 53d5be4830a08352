#!/usr/bin/env python3
"""Build the benchmark image as an OCI layout: ~N MB of real files from /usr split into L gzip layers.

Usage: make_image.py OUTDIR [TOTAL_MB=300] [LAYERS=10]
Real binaries, libraries and text compress like real images do (about 3:1). Cached: reused if present.
"""
import gzip, hashlib, io, json, os, sys, tarfile

out = sys.argv[1]
total = int(sys.argv[2]) * 1000 * 1000 if len(sys.argv) > 2 else 300 * 1000 * 1000
nlayers = int(sys.argv[3]) if len(sys.argv) > 3 else 10
if os.path.exists(os.path.join(out, "index.json")):
    sys.exit(0)
per_layer = total // nlayers

files = []
for root in ["/usr/lib", "/usr/share", "/usr/bin", "/usr/libexec", "/usr/sbin"]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
os.makedirs(os.path.join(out, "blobs/sha256"), exist_ok=True)

def blob(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs/sha256", d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)

layers, diff_ids = [], []
it = iter(files)
for i in range(nlayers):
    buf = io.BytesIO()
    size = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for p in it:
            try:
                t.add(p, arcname=f"layer{i}" + p, recursive=False)
            except OSError:
                continue
            size += os.path.getsize(p)
            if size >= per_layer:
                break
    raw = buf.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    d, n = blob(gzip.compress(raw, compresslevel=6, mtime=0))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                     "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cd, cn = blob(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                       "layers": layers}).encode()
md, mn = blob(manifest)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "big"}}]}, f)
print(f"{out}: {nlayers} layers, {sum(l['size'] for l in layers) / 1e6:.0f} MB compressed")
