//! Container logs in the CRI format: one line per record, `<RFC 3339 time> <stdout|stderr> <F|P> <content>`,
//! `P` for a partial line (no newline yet), `F` for a full one.
//!
//! The log file is the record of what the daemon has received: after a restart, the byte counts of each stream
//! are recovered from it, and the agent resends from there.
//!
//! A log may have a size limit. A file that a write would take past it becomes `<name>.1` (replacing the one before) and a new
//! file starts, so a container keeps at most two files of the limit's size. The counts of the bytes before the
//! current file are kept in `<name>.base`, written (as `.base.tmp`) before the file is renamed and put in place
//! after it: a rotation cut short by a crash is finished or undone at the next open, never half done.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
}

impl Source {
    fn tag(self) -> &'static str {
        match self {
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
        }
    }
}

/// Appends records to a container's log.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    /// Bytes of each stream recorded so far (its offset in the agent's numbering), rotated files included.
    pub stdout: u64,
    pub stderr: u64,
    /// Bytes in the current file, and the size at which it is rotated (`None`: never).
    size: u64,
    max_size: Option<u64>,
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The file a log's current file becomes when it reaches its size limit.
pub fn previous_path(path: &Path) -> PathBuf {
    with_suffix(path, ".1")
}

/// The byte counts of each stream before the current file: `<stdout> <stderr>`.
fn read_base(path: &Path) -> std::io::Result<(u64, u64)> {
    let text = match std::fs::read_to_string(with_suffix(path, ".base")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let mut n = text.split_whitespace().map(str::parse::<u64>);
    match (n.next(), n.next(), n.next()) {
        (Some(Ok(out)), Some(Ok(err)), None) => Ok((out, err)),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: not two byte counts: {text:?}", with_suffix(path, ".base").display()))),
    }
}

impl LogWriter {
    /// Opens (creating) a log and recovers the stream offsets from its content. A trailing record cut short by a
    /// crash is dropped: it was never acknowledged, so the agent sends it again. `max_size` is the size at
    /// which the current file is rotated (`None`: never).
    pub fn open(path: &Path, max_size: Option<u64>) -> std::io::Result<LogWriter> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        // A rotation cut short: if the full file was renamed, the new counts belong; if not, they do not.
        let tmp = with_suffix(path, ".base.tmp");
        if tmp.exists() {
            if path.exists() {
                std::fs::remove_file(&tmp)?;
            } else {
                std::fs::rename(&tmp, with_suffix(path, ".base"))?;
            }
        }
        let (base_out, base_err) = read_base(path)?;
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let (stdout, stderr, good_len) = scan(&mut file)?;
        if file.metadata()?.len() != good_len {
            file.set_len(good_len)?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(LogWriter { file, path: path.to_path_buf(), stdout: base_out + stdout, stderr: base_err + stderr, size: good_len, max_size })
    }

    /// Moves the full current file to `<name>.1` and starts a new one (see the module's comment).
    fn rotate(&mut self) -> std::io::Result<()> {
        let tmp = with_suffix(&self.path, ".base.tmp");
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{} {}", self.stdout, self.stderr)?;
            f.sync_all()?;
        }
        // (A rotation that failed after this rename, opening the new file, is taken up again from here.)
        if self.path.exists() {
            std::fs::rename(&self.path, previous_path(&self.path))?;
        }
        std::fs::rename(&tmp, with_suffix(&self.path, ".base"))?;
        self.file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `data` of one stream (one write of whole records).
    pub fn write(&mut self, src: Source, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let ts = now();
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut rest = data;
        while !rest.is_empty() {
            let (line, tag, adv) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], "F", i + 1),
                None => (rest, "P", rest.len()),
            };
            out.extend_from_slice(ts.as_bytes());
            out.push(b' ');
            out.extend_from_slice(src.tag().as_bytes());
            out.push(b' ');
            out.extend_from_slice(tag.as_bytes());
            out.push(b' ');
            out.extend_from_slice(line);
            out.push(b'\n');
            rest = &rest[adv..];
        }
        // Rotated before a write that would take the file past its limit: a file outgrows it only by a
        // single write larger than the limit.
        if self.max_size.is_some_and(|max| self.size > 0 && self.size + out.len() as u64 > max) {
            self.rotate()?;
        }
        self.file.write_all(&out)?;
        *self.len_mut(src) += data.len() as u64;
        self.size += out.len() as u64;
        Ok(())
    }

    /// Bytes of `src` in the log.
    pub fn len(&self, src: Source) -> u64 {
        match src {
            Source::Stdout => self.stdout,
            Source::Stderr => self.stderr,
        }
    }

    fn len_mut(&mut self, src: Source) -> &mut u64 {
        match src {
            Source::Stdout => &mut self.stdout,
            Source::Stderr => &mut self.stderr,
        }
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: String,
    pub source: Source,
    pub full: bool,
    pub content: Vec<u8>,
}

/// Parses a record line (without its newline).
pub fn parse_line(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let source = match parts.next()? {
        b"stdout" => Source::Stdout,
        b"stderr" => Source::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or(b"").to_vec();
    Some(Record { time, source, full, content })
}

/// Calls `each` with every complete line (without its newline) and its length in bytes, until a line is
/// incomplete (a write cut short) or `each` says stop.
fn complete_lines(mut r: impl BufRead, mut each: impl FnMut(&[u8], u64) -> bool) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') || !each(&line[..n - 1], n as u64) {
            return Ok(());
        }
    }
}

/// Recovers (stdout bytes, stderr bytes, length of the well-formed prefix).
fn scan(file: &mut File) -> std::io::Result<(u64, u64, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let (mut out, mut err, mut good) = (0u64, 0u64, 0u64);
    complete_lines(BufReader::new(&*file), |line, n| {
        let Some(rec) = parse_line(line) else { return false };
        let bytes = rec.content.len() as u64 + u64::from(rec.full);
        match rec.source {
            Source::Stdout => out += bytes,
            Source::Stderr => err += bytes,
        }
        good += n;
        true
    })?;
    Ok((out, err, good))
}

/// Reads a container's log from its oldest record on, in batches of bounded size, and follows it across
/// rotations: it holds the file it reads open, and moves on to the file that came after it at its end.
#[derive(Debug)]
pub struct LogCursor {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
}

fn inode(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

impl LogCursor {
    /// A cursor at the start of the log (the previous file's, if there is one).
    pub fn new(path: &Path) -> LogCursor {
        LogCursor { path: path.to_path_buf(), file: None, pos: 0 }
    }

    /// Complete records from where the cursor is, at most about `max_bytes` of them (at least one); empty when
    /// there is nothing more for now.
    pub fn next_batch(&mut self, max_bytes: u64) -> std::io::Result<Vec<Record>> {
        loop {
            let Some(file) = self.file.as_mut() else {
                // The first file: the previous one if any, else the current one, else nothing yet.
                for p in [previous_path(&self.path), self.path.clone()] {
                    match File::open(&p) {
                        Ok(f) => {
                            self.file = Some(f);
                            break;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                }
                if self.file.is_none() {
                    return Ok(vec![]);
                }
                continue;
            };
            let records = read_batch(file, &mut self.pos, max_bytes)?;
            if !records.is_empty() {
                return Ok(records);
            }
            // At the end of this file. If it is no longer the current file, it was rotated (or is the previous
            // one): anything written to it was written before the rename seen here, so read it out once more,
            // then go on to the file that came after it.
            let meta = file.metadata()?;
            let me = Some((meta.dev(), meta.ino()));
            let current = inode(&self.path);
            if current == me || current.is_none() {
                return Ok(vec![]);
            }
            let rest = read_batch(file, &mut self.pos, max_bytes)?;
            if !rest.is_empty() {
                return Ok(rest);
            }
            let previous = previous_path(&self.path);
            // The previous file is newer than this one if this one was rotated away twice since.
            let prev = inode(&previous);
            let next = if prev.is_some() && prev != me { previous } else { self.path.clone() };
            match File::open(&next) {
                Ok(f) => {
                    self.file = Some(f);
                    self.pos = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Complete records of `file` from `*pos`, about `max_bytes` of them; moves `*pos` past them.
fn read_batch(file: &mut File, pos: &mut u64, max_bytes: u64) -> std::io::Result<Vec<Record>> {
    file.seek(SeekFrom::Start(*pos))?;
    let mut out = Vec::new();
    let mut taken = 0u64;
    complete_lines(BufReader::new(&*file), |line, n| {
        taken += n;
        out.extend(parse_line(line));
        taken < max_bytes
    })?;
    *pos += taken;
    Ok(out)
}

/// How many full records (lines) the log holds, in both files.
pub fn count_full_records(path: &Path) -> std::io::Result<u64> {
    let mut full = 0;
    for p in [previous_path(path), path.to_path_buf()] {
        match File::open(&p) {
            Ok(f) => complete_lines(BufReader::new(f), |line, _| {
                full += u64::from(parse_line(line).is_some_and(|r| r.full));
                true
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(recs: &[Record], src: Source) -> Vec<u8> {
        recs.iter()
            .filter(|r| r.source == src)
            .flat_map(|r| {
                let mut c = r.content.clone();
                if r.full {
                    c.push(b'\n');
                }
                c
            })
            .collect()
    }

    fn read_all(c: &mut LogCursor) -> Vec<Record> {
        let mut all = Vec::new();
        loop {
            let b = c.next_batch(100).unwrap();
            if b.is_empty() {
                return all;
            }
            all.extend(b);
        }
    }

    #[test]
    fn records_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut w = LogWriter::open(&p, None).unwrap();
        w.write(Source::Stdout, b"hello\nwor").unwrap();
        w.write(Source::Stdout, b"ld\n").unwrap();
        w.write(Source::Stderr, b"oops\n").unwrap();
        assert_eq!((w.stdout, w.stderr), (12, 5));
        drop(w);
        // A crash left half a record behind.
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"2026-01-01T00:00:00Z stdout F trunc").unwrap();
        let w = LogWriter::open(&p, None).unwrap();
        assert_eq!((w.stdout, w.stderr), (12, 5), "offsets recovered, the torn record dropped");
        let recs = read_all(&mut LogCursor::new(&p));
        assert_eq!(text(&recs, Source::Stdout), b"hello\nworld\n");
        assert_eq!(recs.len(), 4);
        assert_eq!(count_full_records(&p).unwrap(), 3);
    }

    #[test]
    fn a_full_log_is_rotated_and_its_counts_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut w = LogWriter::open(&p, Some(1000)).unwrap();
        let mut all = Vec::new();
        for i in 0..100 {
            let line = format!("line {i}\n");
            w.write(Source::Stdout, line.as_bytes()).unwrap();
            all.extend_from_slice(line.as_bytes());
        }
        w.write(Source::Stderr, b"e\n").unwrap();
        let counts = (w.stdout, w.stderr);
        assert_eq!(counts, (all.len() as u64, 2));
        let cur = std::fs::metadata(&p).unwrap().len();
        let prev = std::fs::metadata(previous_path(&p)).unwrap().len();
        assert!(cur <= 1000 && (900..=1000).contains(&prev), "{cur} {prev}");
        drop(w);
        // The counts survive a reopen (a daemon restart): the agent must not resend, nor be skipped.
        let w = LogWriter::open(&p, Some(1000)).unwrap();
        assert_eq!((w.stdout, w.stderr), counts);
        drop(w);
        // What is kept is the end of the output, in order, without a gap.
        let recs = read_all(&mut LogCursor::new(&p));
        let kept = text(&recs, Source::Stdout);
        // A record is ~40 bytes of time and stream around each 8-byte line: two files of 1000 bytes hold ~25-50.
        let lines = kept.iter().filter(|&&b| b == b'\n').count();
        assert!(all.ends_with(&kept) && (20..55).contains(&lines) && kept.starts_with(b"line "), "{}", String::from_utf8_lossy(&kept));
        assert_eq!(text(&recs, Source::Stderr), b"e\n");
    }

    #[test]
    fn a_rotation_cut_short_is_finished_or_undone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut w = LogWriter::open(&p, None).unwrap();
        w.write(Source::Stdout, b"abc\n").unwrap();
        drop(w);
        // Cut before the rename: the new counts are not yet true.
        std::fs::write(with_suffix(&p, ".base.tmp"), "4 0\n").unwrap();
        let w = LogWriter::open(&p, None).unwrap();
        assert_eq!((w.stdout, w.stderr), (4, 0));
        assert!(!with_suffix(&p, ".base.tmp").exists());
        drop(w);
        // Cut after it: they are.
        std::fs::write(with_suffix(&p, ".base.tmp"), "4 0\n").unwrap();
        std::fs::rename(&p, previous_path(&p)).unwrap();
        let mut w = LogWriter::open(&p, None).unwrap();
        assert_eq!((w.stdout, w.stderr), (4, 0));
        w.write(Source::Stdout, b"de\n").unwrap();
        drop(w);
        assert_eq!(LogWriter::open(&p, None).unwrap().stdout, 7);
        assert_eq!(text(&read_all(&mut LogCursor::new(&p)), Source::Stdout), b"abc\nde\n");
        // A damaged counts file is an error, not counts of zero (the agent would resend all it still holds).
        std::fs::write(with_suffix(&p, ".base"), "x").unwrap();
        let e = LogWriter::open(&p, None).unwrap_err();
        assert!(e.to_string().contains("not two byte counts"), "{e}");
    }

    #[test]
    fn a_cursor_follows_the_log_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut c = LogCursor::new(&p);
        assert!(c.next_batch(100).unwrap().is_empty(), "no log yet");
        let mut w = LogWriter::open(&p, Some(300)).unwrap();
        let mut seen = Vec::new();
        let mut all = Vec::new();
        for round in 0..6 {
            // A record is ~77 bytes: at most one rotation between two reads, but several in round 3.
            let lines = if round == 3 { 30 } else { 3 };
            for i in 0..lines {
                let line = format!("r{round} l{i} ..............................\n");
                w.write(Source::Stdout, line.as_bytes()).unwrap();
                all.extend_from_slice(line.as_bytes());
            }
            seen.extend(text(&read_all(&mut c), Source::Stdout));
        }
        // Two rotations between two reads lose the file in between (it is gone); otherwise nothing is missed.
        let seen = String::from_utf8(seen).unwrap();
        let all = String::from_utf8(all).unwrap();
        assert!(all.ends_with(&seen[seen.find("r4 l0").unwrap()..]), "{seen}");
        assert!(all.starts_with(&seen[..seen.find("r3 ").unwrap()]), "{seen}");
        assert!(seen.contains("r3 l29"), "{seen}");
    }
}
