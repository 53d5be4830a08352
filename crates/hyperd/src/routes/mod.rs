//! The API router: (method, path) to handler. Every route is under `/v1`.

pub mod images;
pub mod pods;
pub mod system;

use std::sync::Arc;

use ::http::Method;
use hyper_api::{ApiError, ErrorKind};

use crate::daemon::Daemon;
use crate::web::{self, Req, Resp, api_error};

pub async fn route(d: Arc<Daemon>, req: Req) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = dispatch(d, req, &method, &path).await;
    match result {
        Ok(r) => r,
        Err(e) => {
            log::debug!("{method} {path}: {}", e.message);
            web::error(e)
        }
    }
}

async fn dispatch(d: Arc<Daemon>, req: Req, method: &Method, path: &str) -> Result<Resp, ApiError> {
    if path == "/_ping" {
        return Ok(web::ok(&"OK"));
    }
    let Some(rest) = path.strip_prefix(hyper_api::PREFIX) else {
        return Err(api_error(
            ErrorKind::NotFound,
            format!(
                "unknown API path {path}: this daemon serves API version {} under {}",
                hyper_api::API_VERSION,
                hyper_api::PREFIX
            ),
        ));
    };
    match (method, rest) {
        (&Method::GET, "/version") => Ok(web::ok(&system::version())),
        (&Method::GET, "/info") => system::info(d).await,
        (&Method::GET, "/images") => images::list(d).await,
        (&Method::GET, "/images/inspect") => images::inspect(d, req).await,
        (&Method::POST, "/images/pull") => images::pull(d, req).await,
        (&Method::POST, "/images/push") => images::push(d, req).await,
        (&Method::POST, "/images/load") => images::load(d, req).await,
        (&Method::GET, "/images/save") => images::save(d, req).await,
        (&Method::POST, "/images/tag") => images::tag(d, req).await,
        (&Method::DELETE, "/images") => images::remove(d, req).await,
        (&Method::POST, "/auth/login") => images::login(d, req).await,
        (&Method::POST, "/auth/logout") => images::logout(d, req).await,
        (&Method::GET, "/pods") => pods::list(d).await,
        (&Method::POST, "/pods") => pods::create(d, req).await,
        (&Method::DELETE, "/pods") => pods::remove(d, req).await,
        (&Method::GET, "/pods/inspect") => pods::inspect(d, req).await,
        (&Method::POST, "/pods/start") => pods::start(d, req).await,
        (&Method::POST, "/pods/stop") => pods::stop(d, req).await,
        (&Method::POST, "/pods/replace") => pods::replace(d, req).await,
        (&Method::POST, "/pods/kill") => pods::kill(d, req).await,
        (&Method::GET, "/pods/logs") => pods::logs(d, req).await,
        (&Method::POST, "/pods/attach") => pods::attach(d, req).await,
        (&Method::POST, "/pods/exec") => pods::exec(d, req).await,
        (&Method::GET, "/containers") => pods::containers(d).await,
        (&Method::GET, "/pods/ports") => pods::ports(d, req).await,
        (&Method::POST, "/pods/ports") => pods::change_ports(d, req).await,

        _ => Err(api_error(
            ErrorKind::NotFound,
            format!("no route for {method} {path}"),
        )),
    }
}
