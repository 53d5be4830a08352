//! The podfile parser never panics, whatever the bytes, in JSON and in YAML.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = podspec::parse(s, podspec::Format::Json);
        let _ = podspec::parse(s, podspec::Format::Yaml);
    }
});
