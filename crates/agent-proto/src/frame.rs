//! Frame encoding and incremental decoding.

use crate::VERSION;

pub const HEADER_LEN: usize = 12;
/// Largest payload accepted; data frames are much smaller (senders cut them at 64 KiB).
pub const MAX_PAYLOAD: u32 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Request = 1,
    Response = 2,
    Event = 3,
    Data = 4,
    Ack = 5,
    Close = 6,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Event,
            4 => FrameKind::Data,
            5 => FrameKind::Ack,
            6 => FrameKind::Close,
            _ => return None,
        })
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Request(Vec<u8>),
    Response(Vec<u8>),
    Event(Vec<u8>),
    Data { stream: u32, offset: u64, data: Vec<u8> },
    Ack { stream: u32, offset: u64 },
    Close { stream: u32, offset: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("protocol version {0} is not supported (this side speaks version {VERSION})")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(u32),
    #[error("{kind:?} frame payload of {len} bytes is too short")]
    Short { kind: FrameKind, len: usize },
    #[error("control frame on stream {0} (must be 0)")]
    ControlOnStream(u32),
}

fn header(out: &mut Vec<u8>, kind: FrameKind, stream: u32, len: usize) {
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// Appends a control frame (`Request`, `Response`, `Event`) with a JSON payload.
pub fn encode(out: &mut Vec<u8>, kind: FrameKind, json: &[u8]) {
    debug_assert!(matches!(kind, FrameKind::Request | FrameKind::Response | FrameKind::Event));
    header(out, kind, 0, json.len());
    out.extend_from_slice(json);
}

pub fn encode_data(out: &mut Vec<u8>, stream: u32, offset: u64, data: &[u8]) {
    header(out, FrameKind::Data, stream, 8 + data.len());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(data);
}

pub fn encode_ack(out: &mut Vec<u8>, stream: u32, offset: u64) {
    header(out, FrameKind::Ack, stream, 8);
    out.extend_from_slice(&offset.to_be_bytes());
}

pub fn encode_close(out: &mut Vec<u8>, stream: u32, offset: u64) {
    header(out, FrameKind::Close, stream, 8);
    out.extend_from_slice(&offset.to_be_bytes());
}

/// Accumulates bytes and yields whole frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 20 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Skips the undecoded bytes before the first whole control frame of `kind` that `accept`s and begins after
    /// them: what is left of a frame a dead host cut off, when a new host's first frame follows. Returns how
    /// many bytes were skipped, None (nothing skipped) without such a frame.
    pub fn skip_to_control_frame(&mut self, kind: FrameKind, accept: impl Fn(&[u8]) -> bool) -> Option<usize> {
        let rest = self.buf.get(self.pos + 1..)?;
        let at = find_control_frame(rest, kind, accept)? + 1;
        self.pos += at;
        Some(at)
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed. After an error the stream is unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let b = &self.buf[self.pos..];
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        if b[0] != VERSION {
            return Err(FrameError::Version(b[0]));
        }
        let kind = FrameKind::from_u8(b[1]).ok_or(FrameError::Kind(b[1]))?;
        let stream = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let len = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        let len = len as usize;
        if b.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let p = &b[HEADER_LEN..HEADER_LEN + len];
        let offset = || -> Result<u64, FrameError> {
            if p.len() < 8 {
                return Err(FrameError::Short { kind, len: p.len() });
            }
            Ok(u64::from_be_bytes(p[..8].try_into().expect("8 bytes")))
        };
        let control = |f: fn(Vec<u8>) -> Frame| {
            if stream != 0 { Err(FrameError::ControlOnStream(stream)) } else { Ok(f(p.to_vec())) }
        };
        let frame = match kind {
            FrameKind::Request => control(Frame::Request)?,
            FrameKind::Response => control(Frame::Response)?,
            FrameKind::Event => control(Frame::Event)?,
            FrameKind::Data => Frame::Data { stream, offset: offset()?, data: p[8..].to_vec() },
            FrameKind::Ack => Frame::Ack { stream, offset: offset()? },
            FrameKind::Close => Frame::Close { stream, offset: offset()? },
        };
        self.pos += HEADER_LEN + len;
        Ok(Some(frame))
    }
}

/// Where, in bytes that may start with the rest of an earlier connection's stream, the first whole control
/// frame of `kind` whose payload `accept`s begins: None until one has arrived whole. A control frame's header
/// starts with [`VERSION`] and its kind, on stream 0, and its JSON payload never holds those bytes raw
/// (JSON escapes control characters), so a match inside a real frame's payload is impossible; one inside
/// stale binary data would also need a payload `accept` likes.
pub fn find_control_frame(buf: &[u8], kind: FrameKind, accept: impl Fn(&[u8]) -> bool) -> Option<usize> {
    let mut at = 0;
    while at + HEADER_LEN <= buf.len() {
        let i = at + buf[at..].iter().position(|&b| b == VERSION)?;
        at = i + 1;
        let h = buf.get(i..i + HEADER_LEN)?;
        if h[1] != kind as u8 || h[2..8] != [0; 6] {
            continue;
        }
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if len > MAX_PAYLOAD {
            continue;
        }
        if buf.get(i + HEADER_LEN..i + HEADER_LEN + len as usize).is_some_and(&accept) {
            return Some(i);
        }
    }
    None
}

/// The start of a connection whose first bytes may be the rest of an earlier connection's stream: bytes go in
/// until the first whole control frame of a kind that a test accepts (the answer to the connection's first
/// request) has come; from that frame on, they are the stream. Of the bytes before it, no more is kept than
/// a frame that is still to be completed could span.
#[derive(Debug, Default)]
pub struct Resync {
    pre: Vec<u8>,
    skipped: usize,
}

impl Resync {
    pub fn new() -> Resync {
        Resync::default()
    }

    /// Takes `data`. Once the awaited frame has come whole, returns the bytes from its first one on (for a
    /// [`Decoder`]) and how many bytes came before it.
    pub fn push(&mut self, data: &[u8], kind: FrameKind, accept: impl Fn(&[u8]) -> bool) -> Option<(Vec<u8>, usize)> {
        self.pre.extend_from_slice(data);
        if let Some(at) = find_control_frame(&self.pre, kind, accept) {
            let rest = self.pre.split_off(at);
            return Some((rest, self.skipped + at));
        }
        let keep = HEADER_LEN + MAX_PAYLOAD as usize;
        if self.pre.len() > keep {
            let cut = self.pre.len() - keep;
            self.pre.drain(..cut);
            self.skipped += cut;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_frame_is_found_after_stale_bytes() {
        let mut stale = Vec::new();
        encode_data(&mut stale, 3, 0, b"\x01\x02 binary output with the version byte in it");
        encode(&mut stale, FrameKind::Response, br#"{"id":7}"#);
        let mut buf = stale[5..].to_vec(); // the tail of an earlier connection's stream
        let at = buf.len();
        encode(&mut buf, FrameKind::Response, br#"{"id":1}"#);
        encode_data(&mut buf, 3, 0, b"after");
        let is_first = |p: &[u8]| p == br#"{"id":1}"#;
        // Not before it has arrived whole...
        for cut in 0..at + HEADER_LEN + 8 {
            assert_eq!(find_control_frame(&buf[..cut], FrameKind::Response, is_first), None, "cut at {cut}");
        }
        // ...then exactly where it starts, and the stream decodes from there.
        assert_eq!(find_control_frame(&buf, FrameKind::Response, is_first), Some(at));
        let mut d = Decoder::new();
        d.feed(&buf[at..]);
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Response(br#"{"id":1}"#.to_vec())));
        assert!(matches!(d.next_frame().unwrap(), Some(Frame::Data { stream: 3, .. })));
    }

    #[test]
    fn resync_keeps_no_more_than_a_frame_could_span() {
        let is_first = |p: &[u8]| p == br#"{"id":1}"#;
        let mut r = Resync::new();
        let junk = vec![0u8; 3 * (MAX_PAYLOAD as usize)];
        for chunk in junk.chunks(1 << 20) {
            assert_eq!(r.push(chunk, FrameKind::Response, is_first), None);
            assert!(r.pre.len() <= HEADER_LEN + MAX_PAYLOAD as usize);
        }
        let mut answer = Vec::new();
        encode(&mut answer, FrameKind::Response, br#"{"id":1}"#);
        encode_ack(&mut answer, 5, 9);
        let (rest, skipped) = r.push(&answer, FrameKind::Response, is_first).expect("found");
        assert_eq!((rest, skipped), (answer, junk.len()));
    }

    #[test]
    fn roundtrip_in_pieces() {
        let mut out = Vec::new();
        encode(&mut out, FrameKind::Request, br#"{"id":1}"#);
        encode_data(&mut out, 7, 42, b"hello");
        encode_ack(&mut out, 7, 47);
        encode_close(&mut out, 9, 0);
        let mut d = Decoder::new();
        let mut frames = vec![];
        for chunk in out.chunks(3) {
            d.feed(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Request(br#"{"id":1}"#.to_vec()),
                Frame::Data { stream: 7, offset: 42, data: b"hello".to_vec() },
                Frame::Ack { stream: 7, offset: 47 },
                Frame::Close { stream: 9, offset: 0 },
            ]
        );
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn rejects_bad_frames() {
        let mut d = Decoder::new();
        d.feed(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Version(2)));
        let mut d = Decoder::new();
        d.feed(&[1, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Kind(99)));
        let mut d = Decoder::new();
        d.feed(&[1, 4, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));
        let mut d = Decoder::new();
        d.feed(&[1, 5, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0]);
        assert!(matches!(d.next_frame(), Err(FrameError::Short { .. })));
        let mut d = Decoder::new();
        d.feed(&[1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::ControlOnStream(1)));
    }

    /// Arbitrary bytes never panic the decoder (the fuzz target in fuzz/ explores this much further).
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 88172645463325252;
        for _ in 0..20_000 {
            let mut d = Decoder::new();
            let n = (x % 64) as usize;
            let mut buf = vec![1u8, (x % 7) as u8];
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            d.feed(&buf);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }

    #[test]
    fn a_new_hosts_first_frame_is_found_after_a_frame_its_predecessor_cut_off() {
        let hello = br#"{"id":1,"request":{"hello":{}}}"#;
        let mut old = Vec::new();
        encode_data(&mut old, 7, 0, &[b'x'; 5000]);
        let mut new = Vec::new();
        encode(&mut new, FrameKind::Request, hello);
        let is_hello = |p: &[u8]| p == hello;
        // Cut within the old frame's payload, far enough from its end that the new frame does not complete it (a
        // cut within its header, or one the new bytes complete, makes what follows an error instead).
        for cut in [HEADER_LEN, HEADER_LEN + 9, 2000, old.len() - new.len() - 1] {
            let mut d = Decoder::new();
            d.feed(&old[..cut]);
            d.feed(&new);
            assert_eq!(d.next_frame(), Ok(None), "cut at {cut}: the old frame swallows the new one");
            assert_eq!(d.skip_to_control_frame(FrameKind::Request, is_hello), Some(cut), "cut at {cut}");
            assert_eq!(d.next_frame(), Ok(Some(Frame::Request(hello.to_vec()))));
        }
        // A whole frame first: nothing to skip, it decodes.
        let mut d = Decoder::new();
        d.feed(&new);
        assert_eq!(d.skip_to_control_frame(FrameKind::Request, is_hello), None);
        assert_eq!(d.next_frame(), Ok(Some(Frame::Request(hello.to_vec()))));
    }
}
