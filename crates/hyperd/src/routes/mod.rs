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
        let allowed = Route::methods_for(rest);
        if allowed.is_empty() {
            return Err(api_error(ErrorKind::NotFound, format!("no route for {method} {path}")));
        }
        let e = api_error(ErrorKind::MethodNotAllowed, format!("{method} is not allowed on {path}: use {}", allowed.join(" or ")));
        log::debug!("{method} {path}: {}", e.message);
        let mut r = web::error(e);
        r.headers_mut().insert(::http::header::ALLOW, ::http::HeaderValue::from_str(&allowed.join(", ")).expect("method names are header values"));
        return Ok(r);
    };
    route.run(d, req).await
}

/// The routes: each one's method, path, name and handler, once. A route is found apart from running it, so that
/// a known path asked with the wrong method gets 405 and the methods it takes, not 404.
macro_rules! routes {
    ($d:ident, $req:ident; $($method:ident $path:literal $name:ident => $run:expr;)*) => {
        #[derive(Debug, Clone, Copy)]
        enum Route {
            $($name,)*
        }

        impl Route {
            fn find(method: &Method, path: &str) -> Option<Route> {
                match (method, path) {
                    $((&Method::$method, $path) => Some(Route::$name),)*
                    _ => None,
                }
            }

            /// The methods `path` takes, in the table's order.
            fn methods_for(path: &str) -> Vec<&'static str> {
                let mut v: Vec<&'static str> = Vec::new();
                $(if path == $path && !v.contains(&stringify!($method)) {
                    v.push(stringify!($method));
                })*
                v
            }

            async fn run(self, $d: Arc<Daemon>, $req: Req) -> Result<Resp, ApiError> {
                match self {
                    $(Route::$name => $run,)*
                }
            }
        }
    };
}

routes! { d, req;
    GET "/version" Version => Ok(web::ok(&system::version()));
    GET "/info" Info => system::info(d).await;
    GET "/images" Images => images::list(d).await;
    GET "/images/inspect" ImageInspect => images::inspect(d, req).await;
    POST "/images/pull" Pull => images::pull(d, req).await;
    POST "/images/push" Push => images::push(d, req).await;
    POST "/images/load" Load => images::load(d, req).await;
    GET "/images/save" Save => images::save(d, req).await;
    POST "/images/tag" Tag => images::tag(d, req).await;
    DELETE "/images" ImageRemove => images::remove(d, req).await;
    POST "/auth/login" Login => images::login(d, req).await;
    POST "/auth/logout" Logout => images::logout(d, req).await;
    GET "/pods" Pods => pods::list(d).await;
    POST "/pods" Create => pods::create(d, req).await;
    DELETE "/pods" PodRemove => pods::remove(d, req).await;
    GET "/pods/inspect" PodInspect => pods::inspect(d, req).await;
    POST "/pods/start" Start => pods::start(d, req).await;
    POST "/pods/stop" Stop => pods::stop(d, req).await;
    POST "/pods/replace" Replace => pods::replace(d, req).await;
    POST "/pods/kill" Kill => pods::kill(d, req).await;
    GET "/pods/logs" Logs => pods::logs(d, req).await;
    POST "/pods/attach" Attach => pods::attach(d, req).await;
    POST "/pods/exec" Exec => pods::exec(d, req).await;
    GET "/containers" Containers => pods::containers(d).await;
    GET "/pods/ports" Ports => pods::ports(d, req).await;
    POST "/pods/ports" ChangePorts => pods::change_ports(d, req).await;
}
