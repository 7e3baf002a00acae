//! `core`: the data model, with no IO at all.
//!
//! Owns the hybrid logical clock ([`hlc`]), keys, stamps and entries
//! ([`types`]), documents ([`doc`]), the LWW map CRDT with its change feed and conflict log
//! ([`map`]), the Merkle digest ([`digest`]), the wire codec ([`codec`]) and
//! the deterministic random generator ([`rng`]), and access control
//! ([`acl`]). Nothing here reads a clock,
//! touches a file or a socket, or draws on ambient randomness.

pub mod acl;
pub mod codec;
pub mod conflicts;
pub mod digest;
pub mod doc;
pub mod hlc;
pub mod map;
pub mod mutants;
pub mod rng;
pub mod types;

pub use hlc::{Clock, ClockError, Hlc};
pub use map::{LwwMap, Merged, Record};
pub use types::{Check, Entry, Hash, Key, KeyError, Kind, Limits, NodeId, Stamp, ValueError};
