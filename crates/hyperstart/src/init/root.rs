//! The container's own root filesystem, seen from container-init after pivot_root.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

/// The most of a file (/etc/passwd, /etc/group) read for a lookup.
const MAX_READ: u64 = 4 << 20;

/// `/` of the calling process, for the lookups of the `passwd` crate.
pub struct Slash;

impl passwd::RootFs for Slash {
    /// Regular files only, and at most [`MAX_READ`] of them: the container's processes own these files, and a
    /// FIFO (or a link to /dev/zero) there would hold up the agent, which waits for this lookup.
    fn read(&self, path: &str) -> Option<String> {
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut s = String::new();
        f.take(MAX_READ).read_to_string(&mut s).ok()?;
        Some(s)
    }

    fn is_executable(&self, path: &str) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
}
