//! HTTP plumbing for the API: body types, JSON and NDJSON responses, error mapping, query parsing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_api::{ApiError, ErrorKind, StreamLine};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;
pub type Req = hyper::Request<Incoming>;
pub type Resp = Response<Body>;

/// Largest JSON request body accepted.
const MAX_JSON_BODY: usize = 16 << 20;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec(v).expect("API types serialise");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("valid response")
}

pub fn ok<T: Serialize>(v: &T) -> Resp {
    json(StatusCode::OK, v)
}

pub fn error(e: ApiError) -> Resp {
    let status = StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &e)
}

pub fn api_error(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError {
        kind,
        message: message.into(),
    }
}

/// The whole cause chain of an error, `a: b: c`, each message once.
pub use libpod::chain;

/// A streamed response: NDJSON lines sent through the returned sender.
pub fn ndjson_stream() -> (LineSender, Resp) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(ChannelBody(rx).boxed_unsync())
        .expect("valid response");
    (LineSender(tx), resp)
}

/// Sends NDJSON lines; sending never fails loudly (a client that left just stops receiving).
#[derive(Clone, Debug)]
pub struct LineSender(tokio::sync::mpsc::Sender<Bytes>);

impl LineSender {
    pub async fn line<P: Serialize, R: Serialize>(&self, l: &StreamLine<P, R>) {
        let mut v = serde_json::to_vec(l).expect("API types serialise");
        v.push(b'\n');
        let _ = self.0.send(Bytes::from(v)).await;
    }
    /// Non-async variant for callbacks; drops the line if the client is slow.
    pub fn try_line<P: Serialize, R: Serialize>(&self, l: &StreamLine<P, R>) {
        let mut v = serde_json::to_vec(l).expect("API types serialise");
        v.push(b'\n');
        let _ = self.0.try_send(Bytes::from(v));
    }
}

/// A byte-stream response (tar archives).
pub fn byte_stream(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>, content_type: &str) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(ChannelBody(rx).boxed_unsync())
        .expect("valid response")
}

/// Reads and parses a JSON request body.
pub async fn read_json<T: DeserializeOwned>(req: Req) -> Result<T, ApiError> {
    let body = http_body_util::Limited::new(req.into_body(), MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                api_error(ErrorKind::TooLarge, format!("the request body is larger than {} MiB", MAX_JSON_BODY >> 20))
            } else {
                api_error(ErrorKind::InvalidArgument, format!("reading request body: {e}"))
            }
        })?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| api_error(ErrorKind::InvalidArgument, format!("malformed request body: {e}")))
}

/// Query parameters; repeated keys keep every value.
pub fn query(req: &Req) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(q) = req.uri().query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            out.entry(k.into_owned()).or_default().push(v.into_owned());
        }
    }
    out
}

pub fn query_one(q: &HashMap<String, Vec<String>>, key: &str) -> Option<String> {
    q.get(key).and_then(|v| v.first().cloned())
}

pub fn query_bool(q: &HashMap<String, Vec<String>>, key: &str) -> bool {
    query_one(q, key).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

pub fn require(q: &HashMap<String, Vec<String>>, key: &str) -> Result<String, ApiError> {
    query_one(q, key).ok_or_else(|| {
        api_error(
            ErrorKind::InvalidArgument,
            format!("missing query parameter {key:?}"),
        )
    })
}

/// How long an upload may send nothing before it fails: a stalled client must not hold the image store (a load
/// holds off collections while it runs).
const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Forwards a request body, chunk by chunk, to a channel (for blocking consumers via `ChannelReader`).
pub async fn forward_body(req: Req, tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>) {
    let mut body = req.into_body();
    loop {
        let frame = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => {
                let msg = format!("the client sent nothing for {} s", BODY_IDLE_TIMEOUT.as_secs());
                let _ = tx.send(Err(io::Error::new(io::ErrorKind::TimedOut, msg))).await;
                break;
            }
        };
        match frame {
            Ok(f) => {
                if let Ok(b) = f.into_data() {
                    if tx.send(Ok(b)).await.is_err() {
                        break;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                break;
            }
        }
    }
}

/// A response body fed by a channel: plain chunks, or results whose error ends the body.
pub struct ChannelBody<T>(pub tokio::sync::mpsc::Receiver<T>);

/// What a [`ChannelBody`] channel may carry.
pub trait Chunk: Send + 'static {
    fn into_frame(self) -> Result<Frame<Bytes>, io::Error>;
}

impl Chunk for Bytes {
    fn into_frame(self) -> Result<Frame<Bytes>, io::Error> {
        Ok(Frame::data(self))
    }
}

impl Chunk for io::Result<Bytes> {
    fn into_frame(self) -> Result<Frame<Bytes>, io::Error> {
        self.map(Frame::data)
    }
}

impl<T: Chunk> hyper::body::Body for ChannelBody<T> {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(Chunk::into_frame))
    }
}
