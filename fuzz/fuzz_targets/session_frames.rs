//! The CLI <-> daemon session frame decoder never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    while let Ok(Some(_)) = hyper_api::stream::decode(&mut buf) {}
});
