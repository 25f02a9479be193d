//! Frame framing: whatever bytes a client or broker sends, reading frames ends in frames, a clean close or a
//! `FrameError`, never a panic, and every frame is exactly its length prefix long. The connections' buffered
//! `reader::FrameReader` must split the same bytes into the same frames and end the same way as `read_frame`.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kproxy_sidecar::buffer::Pool;
use kproxy_sidecar::protocol::reader::{FrameReader, Limits};
use kproxy_sidecar::protocol::{self, MIN_REQUEST};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let pool: Arc<Pool> = Pool::new(1 << 20);
    runtime().block_on(async {
        let t = Duration::from_secs(1);
        let mut input = data;
        let mut simple = Vec::new();
        // Each read consumes at least one byte, so this ends.
        let simple_end = loop {
            match protocol::read_frame(&mut input, &pool, 1 << 16, MIN_REQUEST, t, t).await {
                Ok(Some(frame)) => {
                    let len = i32::from_be_bytes(frame[..4].try_into().unwrap());
                    assert_eq!(frame.len(), len as usize + 4);
                    assert!(frame.len() >= 4 + MIN_REQUEST && frame.len() <= 4 + (1 << 16));
                    simple.push(frame.to_vec());
                }
                end => break format!("{:?}", end.map(|_| ())),
            }
        };
        let limits = Limits { max: 1 << 16, min: MIN_REQUEST, idle: t, partial: t };
        let mut reader = FrameReader::new(data, pool.clone(), limits);
        let mut buffered = Vec::new();
        let buffered_end = loop {
            match reader.next().await {
                Ok(Some(frame)) => buffered.push(frame.to_vec()),
                end => break format!("{:?}", end.map(|_| ())),
            }
        };
        assert_eq!(simple, buffered, "FrameReader splits frames differently from read_frame");
        assert_eq!(simple_end, buffered_end, "FrameReader ends differently from read_frame");
    });
});
