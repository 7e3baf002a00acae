//! Arbitrary frames from three peers into one replica: no panic, and every
//! message the replica sends encodes and decodes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meridian::core::codec::{self, ClusterId, Message};
use meridian::core::types::NodeId;
use meridian::sync::{Config, Output, Replica};

fuzz_target!(|data: &[u8]| {
    let cluster = ClusterId([3; 16]);
    let t0 = 1_750_000_000_000u64;
    let Ok(mut r) = Replica::new(Config::new(NodeId(1), "n1", "us-east", cluster), t0) else {
        return;
    };
    let peers = [NodeId(2), NodeId(3), NodeId(4)];
    for p in peers {
        r.add_member(p, "eu-west");
        r.connected(p, t0);
    }
    // The input is a sequence of [peer, len_lo, len_hi, frame...] records.
    let mut rest = data;
    let mut step = 0u64;
    while rest.len() >= 3 {
        let from = peers[rest[0] as usize % 3];
        let len = u16::from_le_bytes([rest[1], rest[2]]) as usize;
        rest = &rest[3..];
        let frame = &rest[..len.min(rest.len())];
        rest = &rest[frame.len()..];
        step += 1;
        let now = t0 + step * 41;
        if let Ok(mut msg) = codec::decode(frame) {
            if let Message::Hello(h) = &mut msg {
                // Let some hellos through, so later messages reach the handlers.
                if step % 2 == 0 {
                    h.node = from;
                    h.cluster = cluster;
                }
            }
            r.handle(from, msg, now);
        }
        r.tick(now);
        if step % 3 == 0 {
            let _ = r.put("k", Bytes::from_static(b"v"), 0, None, now);
        }
        while let Some(o) = r.poll_output() {
            if let Output::Send { msg, .. } = o {
                let f = codec::encode(&msg).expect("outputs encode");
                assert_eq!(codec::decode(&f).expect("outputs decode"), msg);
            }
        }
    }
});
