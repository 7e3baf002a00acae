//! `mutants`: deliberately broken safety mechanisms, one at a time, to
//! check that the simulation (and the tests) catch each of them.
//!
//! A mutant is switched on for the current thread by [`set`] and read at
//! its switch point by [`on`]. The switches exist only with the `mutants`
//! cargo feature, which no release enables: without it [`on`] is a
//! constant `false` and the compiler removes every switch. The simulation
//! runs one replica cluster per thread, so a mutant applies to exactly the
//! run that asked for it.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

/// A safety mechanism, disabled or weakened.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    EnumString,
    IntoStaticStr,
    VariantArray,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Mutant {
    /// Merge takes a value at or below the collection floor for a key it
    /// does not hold: a delete whose tombstone was collected can be undone
    /// by an old write arriving late.
    CollectionFloor,
    /// Tombstones are judged stable by the most advanced frontier among the
    /// peers instead of the least: collected while a peer may still lack
    /// the delete.
    GreatestFrontier,
    /// Writes are acknowledged before the persist that makes them durable:
    /// a crash in between loses an acknowledged write.
    AckBeforePersist,
    /// Merge lets an entry with an older stamp replace a newer one (the
    /// last to arrive wins), so replicas that saw writes in different
    /// orders disagree.
    StampOrder,
    /// Records read back from the store are not checked against their
    /// stored checks: damaged records are served, replicated and counted
    /// in the root.
    RecordChecks,
    /// A restarted replica's clock starts from zero instead of the stored
    /// clock: after its physical clock went back it stamps new writes below
    /// the ones it acknowledged before.
    ClockRestart,
    /// A feed frame after a gap is taken as contiguous: the entries in the
    /// gap are never asked for, and the receiver claims writes it lacks.
    FeedGap,
    /// A rebuilding replica applies its collection floor to its source's
    /// full transfer, refusing live values older than the floor.
    RebuildFloor,
    /// A remote stamp ahead of this node's clock by more than the offset
    /// bound is taken (and observed): one node with a fast clock drags
    /// every correct clock into the future, and the correct nodes refuse
    /// their clients' writes until real time catches up.
    ClockOffsetBound,
    /// A member away longer than the tombstone horizon is taken back as it
    /// is, not told to resync: it keeps values whose deletes the others
    /// collected by age while it was away.
    HorizonRule,
    /// The anti-entropy leaf comparison passes over keys that only one side
    /// holds: a record lost from one replica's store is never restored.
    AeLeafComparison,
    /// A read barrier counts its peers' answers without merging what they
    /// hold: a consistent read misses what no feed has brought.
    BarrierMerge,
    /// A replica that adopted its certificate's id with an empty store
    /// takes the id as new whatever its peers know of it: a wiped node
    /// claims the writes of its own it lost.
    AdoptedId,
    /// A standby takes over as soon as the regions before it are out of
    /// reach, without waiting `[failover] after_ms`: a short cut makes it
    /// active while they are alive.
    FailoverWait,
    /// An edge ignores its server's word that records it holds were
    /// deleted and collected while it was away: it keeps them live.
    EdgeCollected,
    /// A forgotten member that comes back is taken back as it is: not told
    /// to resync, nor suspected; it keeps values whose deletes were
    /// collected without it, and gives them back.
    ForgottenResync,
    /// A member taken back after a forget vouches like any other: what it
    /// sends below the floor is exempt when asked for, and it is never
    /// told what was collected without it.
    SuspectFloor,
    /// A member's frontier passes a forgotten member's writes at once:
    /// it claims writes of it that reached other members but not it.
    ForgottenFrontier,
    /// A server makes an edge's handed-over local write whatever version
    /// of the key it holds: an older local write replaces a newer write.
    HandoverWins,
    /// Versions of a document that meet are not merged: the one that
    /// loses by stamp is dropped whole, with the fields only it changed.
    DocMergeSkipped,
    /// A merge of documents is ordered by its own stamp, not by the newest
    /// write it merged: one made late wins over a delete it never saw.
    MergeOrder,
}

impl Mutant {
    /// The mutant's name (`collection-floor`, ...).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(feature = "mutants")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Whether `m` is switched on for this thread (always `false` without the
/// `mutants` feature).
#[inline(always)]
pub fn on(m: Mutant) -> bool {
    #[cfg(feature = "mutants")]
    {
        ACTIVE.with(|a| a.get() == Some(m))
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = m;
        false
    }
}

/// Whether this build has the switches (the `mutants` feature).
pub const ENABLED: bool = cfg!(feature = "mutants");

/// Switches `m` on for this thread (`None`: every mechanism intact).
/// Without the `mutants` feature this does nothing: see [`ENABLED`].
pub fn set(m: Option<Mutant>) {
    #[cfg(feature = "mutants")]
    ACTIVE.with(|a| a.set(m));
    #[cfg(not(feature = "mutants"))]
    let _ = m;
}
