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
    let Some(route) = Route::find(method, rest) else {
        let allowed: Vec<&str> = [Method::GET, Method::POST, Method::DELETE].iter().filter(|m| Route::find(m, rest).is_some()).map(|m| m.as_str()).collect();
        if allowed.is_empty() {
            return Err(api_error(ErrorKind::NotFound, format!("no route for {method} {path}")));
        }
        let e = api_error(ErrorKind::MethodNotAllowed, format!("{method} is not allowed on {path}: use {}", allowed.join(" or ")));
        log::debug!("{method} {path}: {}", e.message);
        let mut r = web::error(e);
        r.headers_mut().insert(::http::header::ALLOW, ::http::HeaderValue::from_str(&allowed.join(", ")).expect("method names are header values"));
        return Ok(r);
    };
    match route {
        Route::Version => Ok(web::ok(&system::version())),
        Route::Info => system::info(d).await,
        Route::Images => images::list(d).await,
        Route::ImageInspect => images::inspect(d, req).await,
        Route::Pull => images::pull(d, req).await,
        Route::Push => images::push(d, req).await,
        Route::Load => images::load(d, req).await,
        Route::Save => images::save(d, req).await,
        Route::Tag => images::tag(d, req).await,
        Route::ImageRemove => images::remove(d, req).await,
        Route::Login => images::login(d, req).await,
        Route::Logout => images::logout(d, req).await,
        Route::Pods => pods::list(d).await,
        Route::Create => pods::create(d, req).await,
        Route::PodRemove => pods::remove(d, req).await,
        Route::PodInspect => pods::inspect(d, req).await,
        Route::Start => pods::start(d, req).await,
        Route::Stop => pods::stop(d, req).await,
        Route::Replace => pods::replace(d, req).await,
        Route::Kill => pods::kill(d, req).await,
        Route::Logs => pods::logs(d, req).await,
        Route::Attach => pods::attach(d, req).await,
        Route::Exec => pods::exec(d, req).await,
        Route::Containers => pods::containers(d).await,
        Route::Ports => pods::ports(d, req).await,
        Route::ChangePorts => pods::change_ports(d, req).await,
    }
}

/// Every route, found apart from running it so that a known path asked with the wrong method gets 405 and the
/// methods it takes, not 404.
#[derive(Debug, Clone, Copy)]
enum Route {
    Version,
    Info,
    Images,
    ImageInspect,
    Pull,
    Push,
    Load,
    Save,
    Tag,
    ImageRemove,
    Login,
    Logout,
    Pods,
    Create,
    PodRemove,
    PodInspect,
    Start,
    Stop,
    Replace,
    Kill,
    Logs,
    Attach,
    Exec,
    Containers,
    Ports,
    ChangePorts,
}

impl Route {
    fn find(method: &Method, path: &str) -> Option<Route> {
        Some(match (method, path) {
            (&Method::GET, "/version") => Route::Version,
            (&Method::GET, "/info") => Route::Info,
            (&Method::GET, "/images") => Route::Images,
            (&Method::GET, "/images/inspect") => Route::ImageInspect,
            (&Method::POST, "/images/pull") => Route::Pull,
            (&Method::POST, "/images/push") => Route::Push,
            (&Method::POST, "/images/load") => Route::Load,
            (&Method::GET, "/images/save") => Route::Save,
            (&Method::POST, "/images/tag") => Route::Tag,
            (&Method::DELETE, "/images") => Route::ImageRemove,
            (&Method::POST, "/auth/login") => Route::Login,
            (&Method::POST, "/auth/logout") => Route::Logout,
            (&Method::GET, "/pods") => Route::Pods,
            (&Method::POST, "/pods") => Route::Create,
            (&Method::DELETE, "/pods") => Route::PodRemove,
            (&Method::GET, "/pods/inspect") => Route::PodInspect,
            (&Method::POST, "/pods/start") => Route::Start,
            (&Method::POST, "/pods/stop") => Route::Stop,
            (&Method::POST, "/pods/replace") => Route::Replace,
            (&Method::POST, "/pods/kill") => Route::Kill,
            (&Method::GET, "/pods/logs") => Route::Logs,
            (&Method::POST, "/pods/attach") => Route::Attach,
            (&Method::POST, "/pods/exec") => Route::Exec,
            (&Method::GET, "/containers") => Route::Containers,
            (&Method::GET, "/pods/ports") => Route::Ports,
            (&Method::POST, "/pods/ports") => Route::ChangePorts,
            _ => return None,
        })
    }
}
