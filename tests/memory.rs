//! What a node's memory holds, counted by a global allocator (in this test
//! binary only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use meridian::net::tls::Ca;
use meridian::node::Node;

struct Counting;

static HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP_BYTES.fetch_add(new_size, Ordering::Relaxed);
        HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let before = HEAP_BYTES.load(Ordering::Relaxed);
    for i in 0..200 {
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        node.put(&format!("k{i}"), buffer.slice(0..10))
            .await
            .unwrap();
    }
    let held = HEAP_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    // 200 buffers of 64 KiB would be 12.5 MiB.
    assert!(held < 2 << 20, "200 ten-byte values hold {held} heap bytes");
    assert_eq!(
        node.get("k7").await.unwrap().map(|e| e.value.len()),
        Some(10)
    );
    node.stop().await.unwrap();
}
