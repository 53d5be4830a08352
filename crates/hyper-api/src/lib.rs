//! The hyperd API, version 1: JSON over HTTP/1.1 on a unix socket. See docs/api.md for the routes.
//!
//! Only plain data lives here: both `hyperd` and `hyper` depend on this crate, and it depends on nothing of
//! the engine.

pub mod image;
pub mod pod;
pub mod stream;
pub mod system;

use serde::{Deserialize, Serialize};

/// The API version this crate describes; every route is under `/v{API_VERSION}/`.
pub const API_VERSION: u32 = 1;
/// The prefix of every route.
pub const PREFIX: &str = "/v1";

/// A stable classification of errors, mapped to HTTP statuses; clients match on it, people read `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (400).
    InvalidArgument,
    /// Authentication with a registry failed (401).
    Unauthorized,
    /// Something named does not exist (404).
    NotFound,
    /// The path exists but not for this method (405).
    MethodNotAllowed,
    /// The object is not in a state that allows the operation (409).
    Conflict,
    /// The request is valid but names something that exists already (409).
    AlreadyExists,
    /// The request body is larger than the daemon takes (413).
    TooLarge,
    /// A remote party (registry) failed or sent bad data (502).
    Upstream,
    /// Anything else (500).
    Internal,
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Conflict | ErrorKind::AlreadyExists => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Upstream => 502,
            ErrorKind::Internal => 500,
        }
    }
}

/// The body of every error response, and the last line of a failed stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// The whole cause chain, flattened: `pulling x: layer sha256:..: digest mismatch: ...`.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// One line of a streamed (`application/x-ndjson`) response: progress lines, then a result or an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamLine<P, R> {
    Progress(P),
    Result(R),
    Error(ApiError),
}
