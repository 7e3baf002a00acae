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
//! [`api`] serves a node over HTTP (its JSON documents are [`wire`]'s
//! types, which [`client`] reads back), and [`daemon`] runs a node with its
//! config file, health loop, snapshots and webhooks.
//!
//! What embedders and users' tests need is re-exported here: the node, its
//! builder and answers, the core types, the API's documents and client, and
//! the simulation's entry points. The modules stay public for the
//! integration tests and the binary; every public item is documented.

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

pub use api::wire;
pub use client::{Client, ClientError};
pub use core::types::{Entry, IntoKey, Key, KeyError, Limits, NodeId, Stamp};
pub use node::{
    Change, DigestReport, KvEntry, Node, NodeBuilder, NodeError, NodeStatus, Watch, WriteOptions,
};
pub use sim::{run_seed, Sim, SimConfig, SimFailure, SimReport};
pub use sync::{PartitionPolicy, WriteAck, WriteError, WriteReceipt};
