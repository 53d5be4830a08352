//! The framing of interactive streams (attach, exec, run -t) and of log output, between hyper and hyperd.
//!
//! After an HTTP upgrade (`Upgrade: hyper-stream`), or as the body of `GET /v1/pods/logs`, both sides exchange
//! frames `| u8 kind | u32 length (big-endian) | payload |`.

pub const UPGRADE: &str = "hyper-stream";

pub const STDIN: u8 = 1;
pub const STDOUT: u8 = 2;
pub const STDERR: u8 = 3;
/// Payload: u16 rows, u16 columns.
pub const RESIZE: u8 = 4;
/// No more input.
pub const STDIN_CLOSE: u8 = 5;
/// Payload: i32 exit code; the last frame of a session.
pub const EXIT: u8 = 6;
/// Payload: a UTF-8 message; the session ends.
pub const ERROR: u8 = 7;

pub const MAX_FRAME: u32 = 1 << 20;

pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(kind);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Splits complete frames off the front of `buf`.
pub fn decode(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len > MAX_FRAME {
        return Err(format!("stream frame of {len} bytes is too large"));
    }
    if !(STDIN..=ERROR).contains(&buf[0]) {
        return Err(format!("unknown stream frame kind {}", buf[0]));
    }
    let total = 5 + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[5..total].to_vec();
    buf.drain(..total);
    Ok(Some((kind, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut b = encode(STDOUT, b"hi");
        b.extend(encode(EXIT, &3i32.to_be_bytes()));
        assert_eq!(decode(&mut b).unwrap(), Some((STDOUT, b"hi".to_vec())));
        assert_eq!(decode(&mut b).unwrap(), Some((EXIT, 3i32.to_be_bytes().to_vec())));
        assert_eq!(decode(&mut b).unwrap(), None);
        let mut bad = vec![99, 0, 0, 0, 0];
        assert!(decode(&mut bad).is_err());
    }
}
