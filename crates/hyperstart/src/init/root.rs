//! The container's own root filesystem, seen from container-init after pivot_root.

use std::os::unix::fs::PermissionsExt;

/// `/` of the calling process, for the lookups of the `passwd` crate.
pub struct Slash;

impl passwd::RootFs for Slash {
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn is_executable(&self, path: &str) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
}
