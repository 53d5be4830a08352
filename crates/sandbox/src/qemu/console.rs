//! A VM's serial console goes to `<sandbox dir>/console.log`, appended by QEMU (`append=on`). The guest writes
//! there what it likes, as fast as the emulated UART goes (megabytes a second under KVM): left alone, a hostile
//! or broken guest fills the host's disk. A thread of the driver looks at the console logs of the directories
//! it was shown every few seconds and cuts each log longer than [`MAX`] to its last [`KEEP`] bytes.
//!
//! Bytes QEMU appends while a log is being cut may be lost (between the read of its end and the truncation);
//! a console log is for people reading why a guest failed, and that is always at its end.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The name of the console log in a sandbox's directory.
pub const FILE: &str = "console.log";
/// A console log longer than this is cut.
pub const MAX: u64 = 1 << 20;
/// What is kept of it: its end.
pub const KEEP: u64 = 256 << 10;
/// How often the logs are looked at.
const EVERY: Duration = Duration::from_secs(5);

/// Cuts the log at `path` to its last `keep` bytes (from a line's start) if it is longer than `max`; returns
/// whether it did.
pub fn trim(path: &Path, max: u64, keep: u64) -> std::io::Result<bool> {
    // Looked at every few seconds for every VM: a stat, and the file opened only when there is work.
    if std::fs::symlink_metadata(path)?.len() <= max {
        return Ok(false);
    }
    let mut f = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let len = f.metadata()?.len();
    if len <= max {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - keep.min(len)))?;
    let mut tail = Vec::new();
    (&mut f).take(keep).read_to_end(&mut tail)?;
    let from = tail.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    f.set_len(0)?;
    // Appended, as QEMU appends: after whatever it wrote since the truncation, never over it.
    let mut a = std::fs::OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let note = format!("[hyper: console log cut to its last {} KiB: the guest wrote {} KiB]\n", (tail.len() - from) >> 10, len >> 10);
    a.write_all(note.as_bytes())?;
    a.write_all(&tail[from..])?;
    Ok(true)
}

/// The directories holding sandbox directories whose console logs are kept short, and the thread that does.
#[derive(Debug, Default)]
pub struct Trimmer {
    dirs: Mutex<BTreeSet<PathBuf>>,
}

impl Trimmer {
    /// Starts the thread; it runs as long as the driver.
    pub fn start() -> Arc<Trimmer> {
        let t = Arc::new(Trimmer::default());
        let weak = Arc::downgrade(&t);
        let spawned = std::thread::Builder::new().name("console-trim".into()).spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                let Some(t) = weak.upgrade() else { return };
                t.trim_all();
            }
        });
        if let Err(e) = spawned {
            log::warn!("console logs will not be kept short: starting their thread: {e}");
        }
        t
    }

    /// Keeps the console log of the sandbox directory `dir`, and of every directory beside it, short.
    pub fn watch(&self, dir: &Path) {
        if let Some(parent) = dir.parent() {
            let mut dirs = self.dirs.lock().expect("trimmer lock");
            if !dirs.contains(parent) {
                dirs.insert(parent.to_path_buf());
            }
        }
    }

    fn trim_all(&self) {
        let dirs: Vec<PathBuf> = self.dirs.lock().expect("trimmer lock").iter().cloned().collect();
        for d in dirs {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path().join(FILE);
                match trim(&p, MAX, KEEP) {
                    Ok(true) => log::warn!("{}: cut to its last {} KiB (its guest writes a lot to its console)", p.display(), KEEP >> 10),
                    Ok(false) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => log::debug!("{}: {e}", p.display()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_console_log_is_cut_to_its_end() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(FILE);
        let mut text = String::new();
        for i in 0..2000 {
            text.push_str(&format!("line {i} of the console\n"));
        }
        std::fs::write(&p, &text).unwrap();
        assert!(!trim(&p, 1 << 20, 1000).unwrap(), "a short log is left alone");
        assert!(trim(&p, 10_000, 1000).unwrap());
        let cut = std::fs::read_to_string(&p).unwrap();
        let mut lines = cut.lines();
        assert!(lines.next().unwrap().starts_with("[hyper: console log cut to its last 0 KiB: the guest wrote 4"), "{cut}");
        let rest: Vec<&str> = lines.collect();
        assert!(rest.len() > 20 && rest.iter().all(|l| l.starts_with("line ")), "from a line's start: {rest:?}");
        assert!(text.ends_with(&(rest.join("\n") + "\n")));
        assert!(cut.len() < 1100);
    }
}
