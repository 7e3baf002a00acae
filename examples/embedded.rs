//! Embedding Meridian: two nodes in one process, in two regions, replicating.
//!
//! Run with `cargo run --example embedded`.

use std::time::Duration;

use meridian::net::tls::Ca;
use meridian::Node;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In production the CA is created once with `meridian ca init` and each
    // node gets its certificate from `meridian ca issue`.
    let ca = Ca::generate("example")?;
    let east = Node::builder("east-1", "us-east", ca.issue("east-1", "us-east")?)
        .start()
        .await?;
    let west = Node::builder("west-1", "eu-west", ca.issue("west-1", "eu-west")?)
        .seeds([east.local_addr()])
        .start()
        .await?;

    let mut watch = west.watch("feature/", 0);
    let receipt = east.put("feature/dark-mode", "on").await?;
    println!(
        "written in us-east at index {} ({:?})",
        receipt.index, receipt.stamp
    );

    let change = tokio::time::timeout(Duration::from_secs(10), watch.next()).await?;
    if let Some(c) = change {
        println!("seen in eu-west: {} = {:?}", c.key, c.value);
    }
    println!(
        "roots agree: {}",
        east.digest("").await? == west.digest("").await?
    );
    east.shutdown().await?;
    west.shutdown().await?;
    Ok(())
}
