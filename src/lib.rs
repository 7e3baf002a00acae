#![warn(missing_docs)]
//! Meridian keeps a key/value configuration space in sync across regions.
//!
//! Layers, lowest first (see `DESIGN.md`): [`core`] (clock, CRDT, digest,
//! codec) and [`sync`] (the replica state machine) are sans-IO: time and
//! randomness are arguments and effects are returned, never performed.
//! [`sim`] drives whole clusters of replicas over a simulated network in
//! virtual time, deterministically from a seed. [`store`] keeps a node's
//! state on disk (redb) or in memory, [`net`] carries messages over QUIC
//! with mutual TLS, and [`node`] composes them into a running [`Node`].

pub mod api;
pub mod backup;
pub mod client;
pub mod core;
pub mod daemon;
pub mod net;
pub mod node;
pub mod sim;
pub mod store;
pub mod sync;

pub use node::{Node, NodeBuilder, NodeError};
