//! Image store end to end: the real hyperd and hyper against a real docker-registry.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyper_tests::daemon::{Daemon, list};
use hyper_tests::image::{Compression, Entry, Layout, noise};
use hyper_tests::registry::{Auth, Registry};
use hyper_tests::{fixtures_dir, run, wait_until};
use serde_json::{Value, json};

fn busybox(d: &Daemon) {
    let tar = fixtures_dir().join("busybox.tar");
    let out = d.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// The store holds no image, blob or snapshot, and no leftover temporary file.
fn assert_store_empty(d: &Daemon) {
    assert_eq!(d.json(&["images"]), json!([]));
    assert_eq!(d.entries("image/blobs/sha256"), Vec::<String>::new(), "blobs left");
    assert_eq!(d.entries("image/snapshots"), Vec::<String>::new(), "snapshots left");
    assert_eq!(d.entries("image/tmp"), Vec::<String>::new(), "temporary files left");
}

fn snapshot(d: &Daemon, diff_id: &str) -> PathBuf {
    d.image_root().join("snapshots").join(diff_id.trim_start_matches("sha256:"))
}

#[test]
fn load_list_inspect_remove() {
    let d = Daemon::start(&[]);
    busybox(&d);
    let out = d.ok(&["images"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY") && lines[0].contains("IMAGE ID") && lines[0].contains("SIZE"), "{out}");
    assert!(lines[1].starts_with("busybox") && lines[1].contains("latest"), "{out}");
    let list = d.json(&["images"]);
    assert_eq!(list[0]["tags"], json!(["docker.io/library/busybox:latest"]));
    let inspect: Value = serde_json::from_str(&d.ok(&["inspect", "busybox"])).unwrap();
    assert_eq!(inspect["config"]["config"]["Cmd"], json!(["sh"]));
    assert_eq!(inspect["id"], list[0]["id"]);
    // Another name, then remove by id: refused while it has two names, forced works.
    d.ok(&["tag", "busybox", "example.com/team/bb:v2"]);
    let id = list[0]["id"].as_str().unwrap()[7..19].to_string();
    let err = d.fails(&["rmi", &id]);
    assert!(err.contains("several tags"), "{err}");
    d.ok(&["rmi", "-f", &id]);
    assert_store_empty(&d);
    let err = d.fails(&["rmi", "busybox"]);
    assert!(err.contains("no such image: busybox"), "{err}");
}

#[test]
fn daemon_unreachable_is_a_clear_error() {
    let out = Command::new(hyper_tests::bin_dir().join("hyper"))
        .env("HYPER_HOST", "unix:///nonexistent/hyper.sock")
        .arg("images")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to the hyper daemon at unix:///nonexistent/hyper.sock") && err.contains("is hyperd running?"), "{err}");
}

/// A three-layer image exercising every kind of entry and both kinds of whiteout.
fn rich_image(l: &mut Layout, tag: &str) -> Value {
    let l1 = vec![
        Entry::dir("etc"),
        Entry::File { path: "etc/a".into(), data: b"alpha".to_vec(), mode: 0o640, uid: 1000, gid: 1001, xattrs: vec![("user.test".into(), b"hello".to_vec())] },
        Entry::hardlink("etc/a-link", "etc/a"),
        Entry::symlink("etc/s", "a"),
        Entry::symlink("etc/abs", "/etc/passwd"),
        Entry::File { path: "bin-suid".into(), data: b"#!/bin/sh\n".to_vec(), mode: 0o4755, uid: 0, gid: 0, xattrs: vec![] },
        Entry::Char { path: "null".into(), major: 1, minor: 3 },
        Entry::Fifo { path: "fifo".into() },
        Entry::dir("opq"),
        Entry::file("opq/old", b"old"),
        Entry::file("gone", b"bye"),
        Entry::file("deep/auto/parent", b"parents created on the fly"),
    ];
    let l2 = vec![Entry::file(".wh.gone", b""), Entry::dir("opq"), Entry::file("opq/.wh..wh..opq", b""), Entry::file("opq/new", b"new")];
    let l3 = vec![Entry::file("top", &noise(300_000, 7))];
    let m = l.image(&[(l1, Compression::Gzip), (l2, Compression::Zstd), (l3, Compression::None)], json!({"Cmd": ["/top"]}), "amd64");
    l.tag(&m, tag);
    m
}

#[test]
fn push_pull_roundtrip_preserves_digests_and_content() {
    let reg = Registry::start(Auth::None);
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&dir.path().join("oci"));
    let m = rich_image(&mut layout, "rich");
    // skopeo fills the registry; hyper pulls, pushes under another name, and pulls that back.
    reg.push_layout(&layout.dir, "rich", "test/rich:v1");
    let src = format!("{}/test/rich:v1", reg.host());
    // skopeo compresses the uncompressed layer on upload, so the registry's manifest is its own.
    let sk: Value = serde_json::from_str(&run(Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{src}")]))).unwrap();
    let digest = sk["Digest"].as_str().unwrap().to_string();
    assert_ne!(m["digest"].as_str().unwrap(), "");
    let out = d.ok(&["pull", &src]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    let dst = format!("{}/copy/rich:v2", reg.host());
    d.ok(&["tag", &src, &dst]);
    let out = d.ok(&["push", &dst]);
    assert!(out.contains(&digest), "{out}");
    let sk: Value = serde_json::from_str(&run(Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{dst}")]))).unwrap();
    assert_eq!(sk["Digest"].as_str(), Some(digest.as_str()), "the registry has the same manifest digest");
    d.ok(&["rmi", &src, &dst]);
    assert_store_empty(&d);
    d.ok(&["pull", &dst]);
    let inspect: Value = serde_json::from_str(&d.ok(&["inspect", &dst])).unwrap();
    assert_eq!(inspect["manifest_digest"].as_str(), Some(digest.as_str()));
    assert_eq!(inspect["config"]["config"]["Cmd"], json!(["/top"]));

    let layers = inspect["layers"].as_array().unwrap();
    let s1 = snapshot(&d, layers[0]["diff_id"].as_str().unwrap());
    let s2 = snapshot(&d, layers[1]["diff_id"].as_str().unwrap());
    let s3 = snapshot(&d, layers[2]["diff_id"].as_str().unwrap());
    // owners, modes, xattrs, hardlinks, symlinks, devices
    let a = std::fs::metadata(s1.join("etc/a")).unwrap();
    assert_eq!((a.uid(), a.gid(), a.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(std::fs::read(s1.join("etc/a")).unwrap(), b"alpha");
    assert_eq!(getxattr(&s1.join("etc/a"), "user.test").as_deref(), Some(&b"hello"[..]));
    assert_eq!(std::fs::metadata(s1.join("etc/a-link")).unwrap().ino(), a.ino(), "hardlink shares the inode");
    assert_eq!(std::fs::read_link(s1.join("etc/s")).unwrap(), Path::new("a"));
    assert_eq!(std::fs::read_link(s1.join("etc/abs")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(std::fs::metadata(s1.join("bin-suid")).unwrap().permissions().mode() & 0o7777, 0o4755, "setuid kept");
    let null = std::fs::symlink_metadata(s1.join("null")).unwrap();
    assert_eq!(null.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(std::fs::symlink_metadata(s1.join("fifo")).unwrap().mode() & libc::S_IFMT, libc::S_IFIFO);
    assert_eq!(std::fs::read(s1.join("deep/auto/parent")).unwrap(), b"parents created on the fly");
    // whiteouts in overlayfs form
    let gone = std::fs::symlink_metadata(s2.join("gone")).unwrap();
    assert_eq!((gone.mode() & libc::S_IFMT, gone.rdev()), (libc::S_IFCHR, 0));
    assert_eq!(getxattr(&s2.join("opq"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!s2.join(".wh.gone").exists() && !s2.join("opq/.wh..wh..opq").exists());
    // and overlayfs agrees: stack the snapshots and look.
    let mnt = tempfile::tempdir().unwrap();
    let opts = format!("lowerdir={}:{}:{}", s3.display(), s2.display(), s1.display());
    run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(mnt.path()));
    let seen = (mnt.path().join("gone").exists(), mnt.path().join("opq/old").exists(), mnt.path().join("opq/new").exists());
    let top = std::fs::read(mnt.path().join("top")).map(|b| b.len());
    run(Command::new("umount").arg(mnt.path()));
    assert_eq!(seen, (false, false, true), "whiteout and opaque directory hide lower files");
    assert_eq!(top.unwrap(), 300_000);
}

#[test]
fn multi_arch_index_selects_linux_amd64() {
    let reg = Registry::start(Auth::None);
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&dir.path().join("oci"));
    let arm = l.image(&[(vec![Entry::file("arch", b"arm64")], Compression::Gzip)], json!({}), "arm64");
    let amd = l.image(&[(vec![Entry::file("arch", b"amd64")], Compression::Gzip)], json!({}), "amd64");
    let idx = l.index_of(&[arm.clone(), amd.clone()]);
    l.tag(&idx, "multi");
    let only_arm = l.index_of(&[arm]);
    l.tag(&only_arm, "armonly");
    reg.push_layout(&l.dir, "multi", "test/multi:latest");
    reg.push_layout(&l.dir, "armonly", "test/armonly:latest");
    let name = format!("{}/test/multi", reg.host());
    d.ok(&["pull", &name]);
    let inspect: Value = serde_json::from_str(&d.ok(&["inspect", &name])).unwrap();
    assert_eq!(inspect["manifest_digest"], amd["digest"]);
    assert_eq!(inspect["config"]["architecture"], "amd64");
    let snap = snapshot(&d, inspect["layers"][0]["diff_id"].as_str().unwrap());
    assert_eq!(std::fs::read(snap.join("arch")).unwrap(), b"amd64");
    let err = d.fails(&["pull", &format!("{}/test/armonly", reg.host())]);
    assert!(err.contains("no manifest for linux/amd64") && err.contains("linux/arm64"), "{err}");
}

#[test]
fn basic_auth_login_logout() {
    let reg = Registry::start(Auth::Basic { user: "alice".into(), password: "s3cret".into() });
    let d = Daemon::start(&[]);
    busybox(&d);
    let name = format!("{}/private/bb:1", reg.host());
    d.ok(&["tag", "busybox", &name]);
    let err = d.fails(&["push", &name]);
    assert!(err.contains("authentication required") && err.contains("hyper login"), "{err}");
    let login = |pw: &str| {
        let mut c = d.cmd(&["login", &reg.host(), "-u", "alice", "--password-stdin"]);
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(format!("{pw}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let bad = login("wrong");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("user name or password is wrong"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(!d.root.join("auth.json").exists(), "a failed login stores nothing");
    let good = login("s3cret");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let mode = std::fs::metadata(d.root.join("auth.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file is private");
    d.ok(&["push", &name]);
    d.ok(&["rmi", &name]);
    d.ok(&["pull", &name]);
    d.ok(&["logout", &reg.host()]);
    d.ok(&["rmi", &name]);
    let err = d.fails(&["pull", &name]);
    assert!(err.contains("authentication required"), "{err}");
}

#[test]
fn bearer_token_auth() {
    let reg = Registry::start(Auth::Token { user: "bob".into(), password: "tok-pass".into() });
    let d = Daemon::start(&[]);
    busybox(&d);
    let name = format!("{}/bob/bb:1", reg.host());
    d.ok(&["tag", "busybox", &name]);
    let err = d.fails(&["push", &name]);
    assert!(err.contains("anonymous access refused") || err.contains("authentication required"), "{err}");
    let mut c = d.cmd(&["login", &reg.host(), "-u", "bob", "--password-stdin"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"tok-pass").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.ok(&["push", &name]);
    d.ok(&["rmi", &name]);
    d.ok(&["pull", &name]);
    assert!(d.ok(&["images"]).contains(&format!("{}/bob/bb", reg.host())));
}

#[test]
fn pulls_go_to_the_mirror_first() {
    let mirror = Registry::start(Auth::None);
    let seed = Daemon::start(&[]);
    busybox(&seed);
    let in_mirror = format!("{}/library/mirrored:latest", mirror.host());
    seed.ok(&["tag", "busybox", &in_mirror]);
    seed.ok(&["push", &in_mirror]);
    // docker.io is unreachable from the test's network namespace: only the mirror can answer.
    let d = Daemon::start(&["--registry-mirror", &format!("docker.io=http://{}", mirror.host())]);
    let out = d.ok(&["pull", "mirrored"]);
    assert!(out.contains("Status: downloaded docker.io/library/mirrored:latest"), "{out}");
    assert!(d.ok(&["images"]).lines().any(|l| l.starts_with("mirrored ")));
    // A name the mirror lacks falls through to docker.io, which fails: the error mentions both.
    let err = d.fails(&["pull", "absent-everywhere"]);
    assert!(err.contains("also tried") && err.contains(&mirror.host()), "{err}");
}

#[test]
fn config_file_sets_mirrors_and_insecure_registries() {
    let mirror = Registry::start(Auth::None);
    let seed = Daemon::start(&[]);
    busybox(&seed);
    let in_mirror = format!("{}/library/fromconfig:latest", mirror.host());
    seed.ok(&["tag", "busybox", &in_mirror]);
    seed.ok(&["push", &in_mirror]);
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), format!("insecure_registries = [\"{0}\"]\nregistry_mirrors = [\"docker.io=http://{0}\"]\n", mirror.host())).unwrap();
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    d.ok(&["pull", "fromconfig"]);
    let info = d.json(&["info"]);
    assert_eq!(info["insecure_registries"], json!([mirror.host()]));
    assert_eq!(info["registry_mirrors"], json!([format!("docker.io=http://{}", mirror.host())]));
    // A bad config file is refused with its name in the error.
    std::fs::write(cfg.path(), "insecure_registry = 3\nbogus = 1\n").unwrap();
    let out = Command::new(hyper_tests::bin_dir().join("hyperd")).args(["--config", cfg.path().to_str().unwrap(), "--root", "/nonexistent"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&cfg.path().display().to_string()));
}

#[test]
fn corrupted_and_truncated_blobs_are_refused_and_nothing_is_kept() {
    let reg = Registry::start(Auth::None);
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&dir.path().join("oci"));
    let m = l.image(&[(vec![Entry::file("data", &noise(200_000, 3))], Compression::Gzip)], json!({}), "amd64");
    l.tag(&m, "t");
    reg.push_layout(&l.dir, "t", "test/corrupt:1");
    let manifest: Value = serde_json::from_slice(&std::fs::read(l.dir.join("blobs/sha256").join(&m["digest"].as_str().unwrap()[7..])).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let blob = reg.blob_file(&layer);
    let good = std::fs::read(&blob).unwrap();
    let name = format!("{}/test/corrupt:1", reg.host());

    // Same length, one byte flipped in the middle.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&blob, &bad).unwrap();
    let err = d.fails(&["pull", &name]);
    assert!(err.contains(&format!("layer {layer}: digest mismatch")), "{err}");
    assert_store_empty(&d);

    // Truncated.
    std::fs::write(&blob, &good[..good.len() - 100]).unwrap();
    let err = d.fails(&["pull", &name]);
    assert!(err.contains("size mismatch") || err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&layer), "{err}");
    assert_store_empty(&d);

    // Repaired: the same pull now works.
    std::fs::write(&blob, &good).unwrap();
    d.ok(&["pull", &name]);
}

fn hostile(entries: Vec<Entry>, expect: &str, leaked: &[&str]) {
    let reg = Registry::start(Auth::None);
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&dir.path().join("oci"));
    let m = l.image(&[(entries, Compression::Gzip)], json!({}), "amd64");
    l.tag(&m, "t");
    reg.push_layout(&l.dir, "t", "evil/image:1");
    let err = d.fails(&["pull", &format!("{}/evil/image:1", reg.host())]);
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    for p in leaked {
        assert!(!Path::new(p).exists(), "{p} was written outside the snapshot");
    }
    assert_store_empty(&d);
}

#[test]
fn hostile_layer_dotdot() {
    let marker = format!("/tmp/hyper-escape-dotdot-{}", std::process::id());
    let rel = format!("../../../../../../../..{marker}");
    hostile(vec![Entry::file(&rel, b"pwned")], &format!("layer entry \"{rel}\": path contains \"..\""), &[&marker]);
}

#[test]
fn hostile_layer_absolute_path() {
    let marker = format!("/tmp/hyper-escape-abs-{}", std::process::id());
    hostile(vec![Entry::file(&marker, b"pwned")], &format!("layer entry \"{marker}\": absolute path"), &[&marker]);
}

#[test]
fn hostile_layer_write_through_symlink() {
    let dir = format!("/tmp/hyper-escape-link-{}", std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    let victim = format!("{dir}/victim");
    hostile(
        vec![Entry::symlink("evil", &dir), Entry::file("evil/victim", b"pwned")],
        "layer entry \"evil/victim\": path goes through a symlink",
        &[&victim],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_layer_symlink_escape() {
    hostile(vec![Entry::dir("a"), Entry::symlink("a/up", "../../../etc")], "layer entry \"a/up\": symlink target \"../../../etc\" leads outside the image", &[]);
}

#[test]
fn hostile_layer_hardlink_outside() {
    hostile(vec![Entry::hardlink("shadow", "../../../../../etc/shadow")], "layer entry \"shadow\": hardlink target", &[]);
    hostile(vec![Entry::symlink("etcdir", "/etc"), Entry::hardlink("passwd", "etcdir/passwd")], "layer entry \"passwd\": path goes through a symlink", &[]);
}

#[test]
fn save_is_readable_by_skopeo_and_loads_back_identically() {
    let reg = Registry::start(Auth::None);
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&dir.path().join("oci"));
    rich_image(&mut l, "rich");
    reg.push_layout(&l.dir, "rich", "test/save:1");
    let name = format!("{}/test/save:1", reg.host());
    d.ok(&["pull", &name]);
    busybox(&d);
    let before = d.json(&["images"]);
    let archive = dir.path().join("images.tar");
    d.ok(&["save", "-o", archive.to_str().unwrap(), &name, "busybox"]);
    // skopeo reads it as a docker-archive and as an OCI layout.
    let sk: Value = serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &format!("docker-archive:{}:{name}", archive.display())]))).unwrap();
    assert_eq!(sk["Architecture"], "amd64");
    let unpacked = dir.path().join("saved-layout");
    std::fs::create_dir(&unpacked).unwrap();
    run(Command::new("tar").arg("-C").arg(&unpacked).arg("-xf").arg(&archive));
    let oci: Value = serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &format!("oci:{}:1", unpacked.display())]))).unwrap();
    let ours: Value = serde_json::from_str(&d.ok(&["inspect", &name])).unwrap();
    let field = |k: &str| Value::Array(ours["layers"].as_array().unwrap().iter().map(|l| l[k].clone()).collect());
    assert_eq!(oci["Layers"], field("digest"), "the OCI view has the stored (compressed) layers");
    assert_eq!(sk["Layers"], field("diff_id"), "the docker-archive view decompresses them to the config's diff ids");
    // and can copy every layer out of it (decompressing and checking each against the config's diff ids)
    run(Command::new("skopeo").args(["copy", "--quiet", &format!("docker-archive:{}:{name}", archive.display()), &format!("oci:{}:x", dir.path().join("via-docker").display())]));
    d.ok(&["rmi", &name, "busybox"]);
    assert_store_empty(&d);
    let out = d.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:latest") && out.contains("test/save"), "{out}");
    let after = d.json(&["images"]);
    let ids = |v: &Value| {
        let mut x: Vec<String> = v.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
        x.sort();
        x
    };
    assert_eq!(ids(&before), ids(&after));
    // The directory form loads too (an OCI layout directory).
    d.ok(&["rmi", &name, "busybox"]);
    let out = d.ok(&["load", "-i", unpacked.to_str().unwrap()]);
    assert!(out.contains("Loaded image"), "{out}");
}

/// Loads an image of one layer holding `entry`, as an OCI layout written to `dir` and tagged `tag`; returns the
/// layout and the image's manifest descriptor.
fn load_one_layer(d: &Daemon, dir: &Path, entry: Entry, tag: &str) -> (Layout, Value) {
    let mut l = Layout::new(dir);
    let m = l.image(&[(vec![entry], Compression::Gzip)], json!({}), "amd64");
    l.tag(&m, tag);
    d.ok(&["load", "-i", l.dir.to_str().unwrap()]);
    (l, m)
}

/// An image whose config lies about what one of its layers unpacks to is refused, and the layer's blob, which
/// an installed image shares, stays: the refusal used to delete it, and the installed image could no longer be
/// saved or pushed.
#[test]
fn a_layer_refused_for_another_image_stays_for_the_image_that_has_it() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (good, m) = load_one_layer(&d, &dir.path().join("good"), Entry::file("hello", b"hello"), "good:1");
    let manifest: Value = serde_json::from_slice(&std::fs::read(good.dir.join("blobs/sha256").join(&m["digest"].as_str().unwrap()[7..])).unwrap()).unwrap();
    let layer = manifest["layers"][0].clone();
    let blob = layer["digest"].as_str().unwrap().to_string();

    // The same layer blob, under a config that claims another uncompressed digest.
    let mut evil = Layout::new(&dir.path().join("evil"));
    evil.blob(&std::fs::read(good.dir.join("blobs/sha256").join(&blob[7..])).unwrap());
    let lie = format!("sha256:{}", "0".repeat(64));
    let cfg = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [lie]}})).unwrap();
    let (cd, cn) = evil.blob(&cfg);
    let mb = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": hyper_tests::image::descriptor("application/vnd.oci.image.config.v1+json", &cd, cn), "layers": [layer]})).unwrap();
    let (md, mn) = evil.blob(&mb);
    evil.tag(&hyper_tests::image::descriptor("application/vnd.oci.image.manifest.v1+json", &md, mn), "evil:1");
    let err = d.fails(&["load", "-i", evil.dir.to_str().unwrap()]);
    assert!(err.contains(&format!("but the image config says {lie}")), "{err}");

    assert!(d.image_root().join("blobs/sha256").join(&blob[7..]).is_file(), "the shared layer's blob is kept");
    let out = dir.path().join("good.tar");
    d.ok(&["save", "-o", out.to_str().unwrap(), "good:1"]);
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
}

/// Nothing under the daemon's root is reachable by the host's other users: an image's layers may hold a
/// setuid-root program or a device node open to all, usable by anyone who could reach the file. The root used
/// to be open to all for lookups (0711), and the layers' directories readable.
#[test]
fn the_store_is_closed_to_the_hosts_other_users() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    load_one_layer(&d, &dir.path().join("oci"), Entry::file("bin/tool", b"#!/bin/sh\necho hi\n"), "closed:1");
    let inspect: Value = serde_json::from_str(&d.ok(&["inspect", "closed:1"])).unwrap();
    let tool = snapshot(&d, inspect["layers"][0]["diff_id"].as_str().unwrap()).join("bin/tool");
    assert!(tool.is_file(), "{}", tool.display());
    // The test's own directory around the root is open, as /var/lib is.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (what, cmd) in [("list the snapshots", format!("ls {}", d.image_root().join("snapshots").display())), ("read a layer's file", format!("cat {}", tool.display()))] {
        let out = Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", &cmd]).output().unwrap();
        assert!(!out.status.success(), "another user could {what}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A lease left by a pod that does not exist (hyperd killed between a create's lease and its record, or between
/// an rm's removal of the record and its release) is released when hyperd starts again: the images it held are
/// collected once nothing else names them. They used to stay for good.
#[test]
fn a_lease_of_a_pod_that_does_not_exist_is_released_at_start() {
    let mut d = Daemon::start(&[]);
    busybox(&d);
    let id: String = d.json(&["images"])[0]["id"].as_str().unwrap().to_string();
    let inspect: Value = serde_json::from_str(&d.ok(&["inspect", "busybox"])).unwrap();
    let snap = snapshot(&d, inspect["layers"][0]["diff_id"].as_str().unwrap());
    d.kill();
    {
        let db = std::sync::Arc::new(redb::Database::open(d.root.join("hyperd.redb")).unwrap());
        let creds = std::sync::Arc::new(image_store::CredentialStore::new(&d.root.join("auth.json")));
        let store = image_store::ImageStore::open(&d.image_root(), db, image_store::RegistryClient::new(Default::default(), creds)).unwrap();
        store.lease("pod:pod-ghostghost", &[id.parse().unwrap()]).unwrap();
    }
    d.restart();
    assert!(d.log().contains("releasing the lease of pod:pod-ghostghost"), "{}", d.log());
    d.ok(&["rmi", "busybox"]);
    assert!(!snap.exists(), "the image nothing holds any more is collected");
    assert_store_empty(&d);
}

/// A client that sends half a request and waits loses its connection after 30 s: such connections used to stay
/// for good, each holding a descriptor and a task of the daemon.
#[test]
fn a_half_sent_request_does_not_hold_its_connection() {
    use std::io::{Read, Write};
    let d = Daemon::start(&[]);
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"GET /v1/version HTTP/1.1\r\nHost: hyperd\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf);
    assert!(matches!(n, Ok(_)), "the daemon closed or answered, it did not leave the connection open: {n:?}");
    assert!(t.elapsed() < Duration::from_secs(40), "{:?}", t.elapsed());
    assert_eq!(d.json(&["version"])["server"]["version"], json!(env!("CARGO_PKG_VERSION")), "the daemon serves on");
}

/// A known path asked with the wrong method is 405 with the methods it takes, an unknown one 404, a JSON body
/// over the limit 413: each names the problem (a wrong method used to be a 404 "no route").
#[test]
fn wrong_methods_and_big_bodies_get_their_own_answers() {
    use std::io::{Read, Write};
    let d = Daemon::start(&[]);
    let ask = |head: &str, body: &[u8]| {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        write!(s, "{head} HTTP/1.1\r\nHost: hyperd\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
        // The daemon may answer before it has read all of a body it refuses.
        let _ = s.write_all(body);
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    };
    let r = ask("PUT /v1/pods", b"");
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert!(r.to_ascii_lowercase().contains("allow: get, post, delete"), "{r}");
    assert!(r.contains("PUT is not allowed on /v1/pods: use GET or POST or DELETE"), "{r}");
    let r = ask("GET /v1/pods/start?pod=x", b"");
    assert!(r.starts_with("HTTP/1.1 405") && r.contains("use POST"), "{r}");
    let r = ask("GET /v1/nosuch", b"");
    assert!(r.starts_with("HTTP/1.1 404") && r.contains("no route for GET /v1/nosuch"), "{r}");
    let big = vec![b' '; 17 << 20];
    let r = ask("POST /v1/images/tag", &big);
    assert!(r.starts_with("HTTP/1.1 413") && r.contains("larger than 16 MiB"), "{}", &r[..r.len().min(300)]);
    assert_eq!(d.json(&["version"])["server"]["version"], json!(env!("CARGO_PKG_VERSION")), "the daemon serves on");
}

/// A small disk (a 600 MiB tmpfs) for the image store of a daemon; unmounted when dropped.
struct SmallDisk {
    tmp: tempfile::TempDir,
    disk: PathBuf,
}

impl SmallDisk {
    fn new() -> SmallDisk {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk");
        std::fs::create_dir(&disk).unwrap();
        run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=600m", "tmpfs", disk.to_str().unwrap()]));
        SmallDisk { tmp, disk }
    }

    fn daemon(&self) -> Daemon {
        Daemon::start(&["--root", self.disk.join("root").to_str().unwrap()])
    }

    /// Loads a one-layer image of `entries` into `d`, which must refuse it; returns the error.
    fn load_fails(&self, d: &Daemon, entries: Vec<Entry>, compression: Compression) -> String {
        let mut l = Layout::new(&self.tmp.path().join("oci"));
        let m = l.image(&[(entries, compression)], json!({}), "amd64");
        l.tag(&m, "bomb:1");
        d.fails(&["load", "-i", l.dir.to_str().unwrap()])
    }

    fn free_mib(&self) -> u64 {
        let free = String::from_utf8(Command::new("df").args(["--output=avail", "-B1M"]).arg(&self.disk).output().unwrap().stdout).unwrap();
        free.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.disk).status();
    }
}

/// A layer that unpacks to more than the disk holds (a compression bomb: here 200 MiB of zeros in 200 KiB)
/// stops before the disk fills, with an error that says so, and leaves nothing: the rest of the host keeps
/// its disk. It used to write until the disk was full.
#[test]
fn a_layer_that_would_fill_the_disk_stops_short() {
    let disk = SmallDisk::new();
    let d = disk.daemon();
    let err = disk.load_fails(&d, vec![Entry::file("zeros", &vec![0u8; 200 << 20])], Compression::Gzip);
    assert!(err.contains("MiB free: unpacking stops before it fills"), "{err}");
    assert_store_empty(&d);
    assert!(disk.free_mib() > 550, "the disk is given back: {} MiB free", disk.free_mib());
    drop(d);
}

/// A sparse file that lists a terabyte of holes in a few bytes is refused before any of it is written. It
/// used to be written out, zeros and all, until the disk's reserve was reached.
#[test]
fn a_sparse_file_larger_than_the_disk_is_refused_before_it_is_written() {
    let disk = SmallDisk::new();
    let d = disk.daemon();
    let err = disk.load_fails(&d, vec![Entry::Sparse { path: "holes".into(), size: 1 << 40, data: vec![b'x'; 512] }], Compression::None);
    assert!(err.contains("holes") && err.contains("this file is 1048576 MiB and the image store's disk has"), "{err}");
    assert_store_empty(&d);
    drop(d);
}

#[test]
fn malformed_archives_are_refused() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let err = d.fails(&["load", "-i", junk.to_str().unwrap()]);
    assert!(err.contains("archive"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = d.fails(&["load", "-i", empty.to_str().unwrap()]);
    assert!(err.contains("neither manifest.json nor index.json"), "{err}");
    assert_store_empty(&d);
}

/// A TCP relay that passes bytes at a limited rate, so a pull is slow enough to be interrupted.
fn slow_proxy(target: u16, bytes_per_sec: usize) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", target)) else { continue };
            let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            let (mut c, mut up) = (c, up);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut up2);
            });
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = vec![0u8; bytes_per_sec / 20];
                loop {
                    match up.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_daemon_killed_mid_pull_leaves_no_half_image_and_the_next_pull_completes() {
    let reg = Registry::start(Auth::None);
    let mut d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&dir.path().join("oci"));
    let m = l.image(
        &[(vec![Entry::file("small", b"x")], Compression::Gzip), (vec![Entry::file("big", &noise(8 << 20, 11))], Compression::Gzip)],
        json!({}),
        "amd64",
    );
    l.tag(&m, "t");
    reg.push_layout(&l.dir, "t", "test/big:1");
    let slow = slow_proxy(reg.port, 1 << 20);
    let name = format!("127.0.0.1:{slow}/test/big:1");
    let mut child = d.cmd(&["pull", &name]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Wait until some of the big layer has been written to the daemon's scratch area, then crash it.
    let tmp = d.image_root().join("tmp");
    let started = wait_until(Duration::from_secs(30), || {
        list(&tmp).iter().any(|f| std::fs::metadata(tmp.join(f)).map(|m| m.len() > 100_000).unwrap_or(false))
    });
    assert!(started, "the pull never started writing: {}", d.log());
    d.kill();
    let _ = child.wait();
    d.restart();
    assert_eq!(d.json(&["images"]), json!([]), "no half image is visible");
    assert_eq!(d.entries("image/tmp"), Vec::<String>::new(), "scratch files are cleared at start");
    let out = d.ok(&["pull", &format!("{}/test/big:1", reg.host())]);
    assert!(out.contains(m["digest"].as_str().unwrap()), "{out}");
    let inspect: Value = serde_json::from_str(&d.ok(&["inspect", &format!("{}/test/big:1", reg.host())])).unwrap();
    let snap = snapshot(&d, inspect["layers"][1]["diff_id"].as_str().unwrap());
    assert_eq!(std::fs::metadata(snap.join("big")).unwrap().len(), 8 << 20);
}

/// A registry that lies: canned answers for `/v2/<repo>/manifests/latest`, and blobs served as given.
fn lying_registry(routes: Vec<(String, Vec<(String, String)>, Vec<u8>)>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut c = c;
            match routes.iter().find(|(p, _, _)| *p == path) {
                Some((_, headers, body)) => {
                    let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                    for (k, v) in headers {
                        resp.push_str(&format!("{k}: {v}\r\n"));
                    }
                    resp.push_str("\r\n");
                    let _ = c.write_all(resp.as_bytes());
                    let _ = c.write_all(body);
                }
                None if path == "/v2/" => {
                    let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
                }
                None => {
                    let _ = c.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    port
}

#[test]
fn a_lying_registry_gets_clear_errors_and_nothing_is_stored() {
    let d = Daemon::start(&[]);
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let config_digest = hyper_tests::image::sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": oci,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() + 5},
        "layers": [],
    }))
    .unwrap();
    let ct = |t: &str| vec![("Content-Type".to_string(), t.to_string())];
    let mut claims = ct(oci);
    claims.push(("Docker-Content-Digest".into(), format!("sha256:{}", "0".repeat(64))));
    let port = lying_registry(vec![
        ("/v2/lie/digest/manifests/latest".into(), claims, manifest.clone()),
        ("/v2/lie/json/manifests/latest".into(), ct(oci), b"{\"schemaVersion\": 2, \"config\": ".to_vec()),
        ("/v2/lie/mediatype/manifests/latest".into(), ct("application/x-evil"), br#"{"schemaVersion":2,"mediaType":"application/x-evil"}"#.to_vec()),
        ("/v2/lie/huge/manifests/latest".into(), ct(oci), vec![b' '; 5 << 20]),
        ("/v2/lie/config/manifests/latest".into(), ct(oci), manifest.clone()),
        (format!("/v2/lie/config/blobs/{config_digest}"), vec![], config.clone()),
    ]);
    let host = format!("127.0.0.1:{port}");
    let cases = [
        ("lie/digest", "the registry claims manifest digest sha256:0000"),
        ("lie/json", "malformed manifest JSON"),
        ("lie/mediatype", "unknown manifest media type \"application/x-evil\""),
        ("lie/huge", "response larger than 4194304 bytes"),
        ("lie/config", "size mismatch"),
    ];
    for (repo, expect) in cases {
        let err = d.fails(&["pull", &format!("{host}/{repo}")]);
        assert!(err.contains(expect), "{repo}: expected {expect:?} in {err}");
    }
    assert_store_empty(&d);
}

/// A load whose client stalls mid-upload holds up no pod removal. The removal collected images behind the
/// upload's hold on the store, and every pull, load, push and create queued behind that removal.
#[test]
fn a_stalled_upload_holds_up_no_pod_removal() {
    use std::io::Write;
    let d = Daemon::start(&[]);
    busybox(&d);
    let pf = d.podfile("p.json", &json!({"id": "idle", "containers": [{"image": "busybox", "command": ["true"]}]}));
    d.ok(&["create", "-p", &pf]);
    let tar = std::fs::read(fixtures_dir().join("busybox.tar")).unwrap();
    let mut load = d.cmd(&["load"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut upload = load.stdin.take().unwrap();
    upload.write_all(&tar[..tar.len() / 2]).unwrap();
    upload.flush().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut rm = d.cmd(&["rm", "idle"]).spawn().unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = rm.try_wait().unwrap();
        status.is_some()
    });
    let _ = rm.kill();
    drop(upload);
    let _ = load.kill();
    let _ = load.wait();
    assert!(status.is_some_and(|s| s.success()), "rm behind a stalled upload: {status:?}");
    assert_eq!(d.json(&["list"]), json!([]));
}
