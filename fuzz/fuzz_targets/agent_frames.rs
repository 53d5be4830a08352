//! The agent protocol decoder never panics and never yields a frame it was not given; control payloads that
//! decode as frames are parsed as messages without panicking. Looking for the hello's answer after stale
//! bytes never panics, and where it is found a response frame decodes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let first = |p: &[u8]| serde_json::from_slice::<agent_proto::Response>(p).is_ok_and(|r| r.id == 1);
    if let Some(at) = agent_proto::find_control_frame(data, agent_proto::FrameKind::Response, first) {
        let mut d = agent_proto::Decoder::new();
        d.feed(&data[at..]);
        assert!(matches!(d.next_frame(), Ok(Some(agent_proto::Frame::Response(_)))));
    }
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
