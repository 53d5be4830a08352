//! References, digests, manifests, indexes and configs from a registry never panic their parsers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<image_store::Reference>();
        let _ = s.parse::<image_store::Digest>();
        let _ = image_store::registry::auth::parse_challenge(s);
    }
    let _ = image_store::manifest::parse_manifest(data, None);
    let _ = image_store::manifest::parse_config(data, 1);
});
