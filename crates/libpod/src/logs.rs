//! Container logs in the CRI format: one line per record, `<RFC 3339 time> <stdout|stderr> <F|P> <content>`,
//! `P` for a partial line (no newline yet), `F` for a full one.
//!
//! The log file is the record of what the daemon has received: after a restart, the byte counts of each stream
//! are recovered from it, and the agent resends from there.

use std::fs::File;
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
    /// Bytes of each stream recorded so far (its offset in the agent's numbering).
    pub stdout: u64,
    pub stderr: u64,
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

impl LogWriter {
    /// Opens (creating) a log and recovers the stream offsets from its content. A trailing record cut short by a
    /// crash is dropped: it was never acknowledged, so the agent sends it again.
    pub fn open(path: &Path) -> std::io::Result<LogWriter> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let (stdout, stderr, good_len) = scan(&mut file)?;
        if file.metadata()?.len() != good_len {
            file.set_len(good_len)?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(LogWriter { file, path: path.to_path_buf(), stdout, stderr })
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
        self.file.write_all(&out)?;
        *self.len_mut(src) += data.len() as u64;
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

/// Reads a log from a byte position: complete records, and the position after the last one.
pub fn read_from(path: &Path, pos: u64) -> std::io::Result<(Vec<Record>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], pos)),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(pos))?;
    let mut out = Vec::new();
    let mut at = pos;
    complete_lines(BufReader::new(f), |line, n| {
        at += n;
        out.extend(parse_line(line));
        true
    })?;
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut w = LogWriter::open(&p).unwrap();
        w.write(Source::Stdout, b"hello\nwor").unwrap();
        w.write(Source::Stdout, b"ld\n").unwrap();
        w.write(Source::Stderr, b"oops\n").unwrap();
        assert_eq!((w.stdout, w.stderr), (12, 5));
        drop(w);
        // A crash left half a record behind.
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"2026-01-01T00:00:00Z stdout F trunc").unwrap();
        let w = LogWriter::open(&p).unwrap();
        assert_eq!((w.stdout, w.stderr), (12, 5), "offsets recovered, the torn record dropped");
        let (recs, _) = read_from(&p, 0).unwrap();
        let text: Vec<u8> = recs
            .iter()
            .filter(|r| r.source == Source::Stdout)
            .flat_map(|r| {
                let mut c = r.content.clone();
                if r.full {
                    c.push(b'\n');
                }
                c
            })
            .collect();
        assert_eq!(text, b"hello\nworld\n");
        assert_eq!(recs.len(), 4);
    }
}
