//! Arbitrary bytes into the frame decoder: errors are fine, panics are not,
//! and whatever decodes must encode back to a frame that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian::core::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = codec::decode(data) {
        let frame = codec::encode(&msg).expect("a decoded message encodes");
        assert_eq!(codec::decode(&frame).expect("and decodes again"), msg);
    }
});
