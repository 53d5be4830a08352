//! Mapping engine errors to API errors: a stable kind plus the flattened cause chain.

use hyper_api::{ApiError, ErrorKind};
use image_store::ImageError;
use image_store::registry::RegistryError;

use crate::web::chain;

pub fn image_error(e: &ImageError) -> ApiError {
    let kind = match e {
        ImageError::NotFound(_) => ErrorKind::NotFound,
        ImageError::Ambiguous(_) | ImageError::Reference(_) => ErrorKind::InvalidArgument,
        ImageError::MultipleTags { .. } => ErrorKind::Conflict,
        ImageError::Registry(r) => registry_kind(r),
        ImageError::WithMirrors { source, .. } => image_error(source).kind,
        ImageError::Manifest { .. }
        | ImageError::Config { .. }
        | ImageError::LyingRegistry { .. }
        | ImageError::NoPlatform { .. }
        | ImageError::Layer { .. }
        | ImageError::Unpack { .. } => ErrorKind::Upstream,
        ImageError::Content(image_store::content::ContentError::DigestMismatch { .. })
        | ImageError::Content(image_store::content::ContentError::SizeMismatch { .. }) => ErrorKind::Upstream,
        ImageError::Archive(_) => ErrorKind::InvalidArgument,
        ImageError::Content(_) | ImageError::Db(_) => ErrorKind::Internal,
    };
    ApiError {
        kind,
        message: chain(e),
    }
}

pub fn registry_kind(e: &RegistryError) -> ErrorKind {
    match e {
        RegistryError::NotFound(_) => ErrorKind::NotFound,
        RegistryError::Unauthorized { .. } | RegistryError::Denied { .. } | RegistryError::Token { .. } => {
            ErrorKind::Unauthorized
        }
        RegistryError::Credentials(_) => ErrorKind::Internal,
        _ => ErrorKind::Upstream,
    }
}

pub fn pod_error(e: &libpod::PodError) -> ApiError {
    use libpod::PodError as P;
    let kind = match e {
        P::InvalidArgument(_) | P::Spec(_) => ErrorKind::InvalidArgument,
        P::NotFound(_) => ErrorKind::NotFound,
        P::AlreadyExists(_) => ErrorKind::AlreadyExists,
        P::Conflict(_) => ErrorKind::Conflict,
        P::Image { source, .. } => image_error(source).kind,
        P::Sandbox(_) | P::Internal(_) => ErrorKind::Internal,
    };
    ApiError { kind, message: chain(e) }
}
