//! A container's root filesystem as the host sees it (a VM's share), read the way the container would: every
//! path resolves inside it (`openat2(RESOLVE_IN_ROOT)`), so an image's absolute symlinks stay in the image, and
//! only regular files are ever opened (a device node or a FIFO in a layer is never touched).

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use agent_proto::{ProcessConfig, Resolved};
use sandbox::rootdir::RootDir;

/// Files larger than this are not an /etc/passwd the daemon will parse.
const MAX_READ: u64 = 4 << 20;

pub struct HostRoot(RootDir);

impl HostRoot {
    #[cfg(test)]
    pub fn open(dir: &std::path::Path) -> std::io::Result<HostRoot> {
        RootDir::open(dir).map(HostRoot)
    }

    /// Opens `path` inside the root, following symlinks within it.
    fn open_in(&self, path: &str, flags: libc::c_int) -> Option<OwnedFd> {
        self.0.open_in(path, flags).ok()
    }

    /// What `path` leads to (its final symlink followed), without opening the file itself.
    fn stat(&self, path: &str) -> Option<libc::stat> {
        fstat(self.open_in(path, libc::O_PATH)?.as_raw_fd())
    }
}

fn fstat(fd: RawFd) -> Option<libc::stat> {
    // SAFETY: all-zero is a valid `stat`, which fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid out-pointer.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
}

fn is_regular(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

impl passwd::RootFs for HostRoot {
    fn read(&self, path: &str) -> Option<String> {
        let st = self.stat(path)?;
        if !is_regular(&st) || st.st_size as u64 > MAX_READ {
            return None;
        }
        let fd = self.open_in(path, libc::O_RDONLY | libc::O_NONBLOCK)?;
        // The same file as the one checked (nothing swapped it in between).
        let again = fstat(fd.as_raw_fd())?;
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
            return None;
        }
        let mut s = String::new();
        std::fs::File::from(fd).take(MAX_READ).read_to_string(&mut s).ok()?;
        Some(s)
    }

    fn is_executable(&self, path: &str) -> bool {
        self.stat(path).is_some_and(|st| is_regular(&st) && st.st_mode & 0o111 != 0)
    }
}

/// The identity and program of process `p`, looked up in its container's root (`dir`, opened on the host); None
/// when a lookup fails (the agent then looks for itself, and reports the error as for any container).
pub fn resolve(dir: OwnedFd, p: &ProcessConfig) -> Option<Resolved> {
    let root = HostRoot(RootDir::from_fd(dir));

    let id = passwd::resolve(&root, &p.user, &p.group, &p.additional_groups).ok()?;
    let exe = passwd::find_executable(&root, p.args.first()?, &p.env).ok()?;
    Some(Resolved { exe, uid: id.uid, gid: id.gid, groups: id.groups, home: id.home })
}

#[cfg(test)]
mod tests {
    use super::*;
    use passwd::RootFs;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn reads_inside_the_root_only() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("etc/passwd"), "app:x:7:7::/home/app:/bin/sh\n").unwrap();
        // An absolute symlink resolves inside the root, not on the host.
        std::fs::write(t.path().join("secret"), "host file").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("../../secret", r.join("etc/escape")).unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), r.join("etc/absolute")).unwrap();
        std::fs::write(r.join("bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("bin/tool"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(r.join("bin/data"), "x").unwrap();
        let fifo = CString::new(r.join("etc/group").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

        let h = HostRoot::open(&r).unwrap();
        assert_eq!(h.read("/etc/passwd").unwrap(), "app:x:7:7::/home/app:/bin/sh\n");
        assert_eq!(h.read("/etc/link").unwrap(), "app:x:7:7::/home/app:/bin/sh\n");
        assert_eq!(h.read("/etc/escape"), None);
        assert_eq!(h.read("/etc/absolute"), None);
        // A FIFO is not opened (opening it would block the daemon).
        assert_eq!(h.read("/etc/group"), None);
        assert!(h.is_executable("/bin/tool"));
        assert!(!h.is_executable("/bin/data"));
        assert!(!h.is_executable("/bin/none"));
        assert_eq!(passwd::find_executable(&h, "tool", &["PATH=/usr/bin:/bin".into()]).unwrap(), "/bin/tool");
    }
}
