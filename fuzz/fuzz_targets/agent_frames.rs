//! The agent protocol decoder never panics and never yields a frame it was not given; control payloads that
//! decode as frames are parsed as messages without panicking.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut d = agent_proto::Decoder::new();
    for chunk in data.chunks(7) {
        d.feed(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(agent_proto::Frame::Request(b))) => {
                    let _ = serde_json::from_slice::<agent_proto::RequestEnvelope>(&b);
                }
                Ok(Some(agent_proto::Frame::Response(b))) => {
                    let _ = serde_json::from_slice::<agent_proto::Response>(&b);
                }
                Ok(Some(agent_proto::Frame::Event(b))) => {
                    let _ = serde_json::from_slice::<agent_proto::Event>(&b);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
