//! Unpacking arbitrary layer bytes never panics and never writes outside the snapshot directory.
//! Run as root (the unpacker restores owners and device nodes).
#![no_main]
use std::path::Path;

fn count(p: &Path) -> usize {
    std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("tempdir");
    let dest = outer.path().join("snapshot");
    std::fs::create_dir(&dest).expect("mkdir");
    let _ = image_store::unpack::unpack(data, &dest);
    // The only thing in the outer directory is the snapshot itself.
    assert_eq!(count(outer.path()), 1, "an entry escaped the snapshot");
});
