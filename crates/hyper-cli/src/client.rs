//! A small HTTP/1.1 client for hyperd's unix socket.

use std::path::PathBuf;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_api::{ApiError, StreamLine};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Errors of talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the hyper daemon at unix://{socket} ({source}); is hyperd running? (set -H or HYPER_HOST)"
    )]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the hyper daemon")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Api(ApiError),
    #[error("the daemon sent a malformed response: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

pub fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|n| match n {}).boxed()
}

pub fn json_body<T: Serialize>(v: &T) -> Body {
    Full::new(Bytes::from(serde_json::to_vec(v).expect("request serialises")))
        .map_err(|n| match n {})
        .boxed()
}

impl Client {
    /// `host` is `unix:///path/to.sock` or a plain path.
    pub fn new(host: &str) -> Result<Client, String> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if path.contains("://") {
            return Err(format!(
                "unsupported daemon address {host:?}: only unix:///path sockets are supported"
            ));
        }
        Ok(Client {
            socket: PathBuf::from(path),
        })
    }

    /// Sends a request on a fresh connection and returns the response with its body unread.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: &str,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let resp = self.request(method, path, body, &[(header::CONTENT_TYPE, content_type)]).await?;
        if resp.status().is_success() || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        Err(error_from(resp).await)
    }

    /// Sends a request on a fresh connection (that can be upgraded) and returns the response as it is.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(header::HeaderName, &str)],
    ) -> Result<http::Response<Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect { socket: self.socket.display().to_string(), source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = Request::builder().method(method).uri(format!("{}{path}", hyper_api::PREFIX)).header(header::HOST, "hyperd");
        for (k, v) in headers {
            req = req.header(k, *v);
        }
        Ok(sender.send_request(req.body(body).expect("valid request")).await?)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.send(Method::GET, path, empty(), "application/json").await?;
        read_json(resp).await
    }

    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self
            .send(method, path, json_body(body), "application/json")
            .await?;
        read_json(resp).await
    }

    /// A streamed call: progress lines go to `on_progress`, the result line is returned.
    pub async fn stream<P: DeserializeOwned, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: &str,
        mut on_progress: impl FnMut(P),
    ) -> Result<R, ClientError> {
        let mut resp = self.send(method, path, body, content_type).await?;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = match resp.body_mut().frame().await {
                Some(f) => f?,
                None => break,
            };
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let parsed: StreamLine<P, R> = serde_json::from_slice(&line).map_err(|e| {
                    ClientError::Malformed(format!("{e}: {}", String::from_utf8_lossy(&line)))
                })?;
                match parsed {
                    StreamLine::Progress(p) => on_progress(p),
                    StreamLine::Result(r) => return Ok(r),
                    StreamLine::Error(e) => return Err(ClientError::Api(e)),
                }
            }
        }
        Err(ClientError::Malformed(
            "the stream ended without a result (did the daemon stop?)".into(),
        ))
    }
}

pub async fn read_json<T: DeserializeOwned>(resp: http::Response<Incoming>) -> Result<T, ClientError> {
    let body = resp.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| ClientError::Malformed(format!("{e}")))
}

pub async fn error_from(resp: http::Response<Incoming>) -> ClientError {
    let status = resp.status();
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return ClientError::Http(e),
    };
    match serde_json::from_slice::<ApiError>(&body) {
        Ok(e) => ClientError::Api(e),
        Err(_) => ClientError::Malformed(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
    }
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
