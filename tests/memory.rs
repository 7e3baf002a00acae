//! What a node's memory holds, counted by a global allocator (in this test
//! binary only).

use bytes::Bytes;
use meridian::net::tls::Ca;
use meridian::node::Node;

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static GLOBAL: heap::Counting = heap::Counting;

/// An HTTP request's body arrives as a slice of the connection's read
/// buffer; kept as it is, each stored value would keep that whole buffer
/// alive for as long as the key holds it.
#[tokio::test]
async fn a_value_sliced_from_a_large_buffer_does_not_keep_the_buffer() {
    let ca = Ca::generate("memory").unwrap();
    let node = Node::builder("m", "us-east", ca.issue("m", "us-east").unwrap())
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    node.put("warm-up", Bytes::from_static(b"x")).await.unwrap();
    let before = heap::heap_bytes();
    for i in 0..200 {
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        node.put(&format!("k{i}"), buffer.slice(0..10))
            .await
            .unwrap();
    }
    let held = heap::heap_bytes().saturating_sub(before);
    // 200 buffers of 64 KiB would be 12.5 MiB.
    assert!(held < 2 << 20, "200 ten-byte values hold {held} heap bytes");
    assert_eq!(
        node.get("k7").await.unwrap().map(|e| e.value.len()),
        Some(10)
    );
    node.stop().await.unwrap();
}
