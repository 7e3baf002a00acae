//! Document requests from arbitrary bytes: a body as `PUT`/`PATCH
//! /v1/doc` takes it (parsed, applied to a document, rendered back), and
//! bytes as a peer's document. Errors are fine, panics are not; whatever
//! is written renders back as the JSON written, and a merge patch never
//! breaks the document it is applied to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian::core::doc::{apply_merge_patch, parse_json, Document};
use meridian::core::hlc::Hlc;
use meridian::core::types::{NodeId, Stamp};

fuzz_target!(|data: &[u8]| {
    // The bytes as a saved document (a peer's, or a damaged record).
    if let Ok(mut d) = Document::load(data) {
        let _ = d.to_json(None);
        let _ = d.conflicts();
    }
    // The bytes as a request body: a whole document, then as a patch.
    let Ok(json) = parse_json(data) else {
        return;
    };
    let mut d = Document::new();
    if d.update(&json, Stamp::new(Hlc(1), NodeId(1))).is_err() {
        return;
    }
    assert_eq!(d.to_json(None).expect("renders"), json);
    let saved = d.save();
    let mut again = Document::load(&saved).expect("what was saved loads");
    let mut patched = again.to_json(None).expect("renders");
    if apply_merge_patch(&mut patched, &json).is_ok() {
        let _ = again.update(&patched, Stamp::new(Hlc(2), NodeId(1)));
        assert_eq!(again.to_json(None).expect("renders"), patched);
    }
});
