//! Documents in the simulation (issue 16): the workload that sets fields
//! of a few document keys and deletes them, and the oracle that checks
//! each document key at the end against automerge's merge of every
//! acknowledged version.
//!
//! What a key must end as, on every node: each acknowledged version that
//! no later write superseded (a delete, or a version of a document made
//! again, acknowledged or not) is held, in a document of its origin that
//! contains all of its changes; and whatever document a node holds
//! contains nothing no client wrote (every change of it is in some
//! version issued); and a key whose last write issued is an acknowledged
//! delete holds no document.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::workload::refusal_expected;
use super::Issued;
use super::Sim;
use crate::core::doc::{ChangeHash, Document};
use crate::core::types::Stamp;
use crate::sync::DocWrite;

/// Share of document writes that delete the document, per million.
const DOC_DELETE_PER_MILLION: u32 = 120_000;

/// A write of a document key as the oracle sees it: its stamp, what was
/// issued, and the version it wrote with its origin (`None`: a delete).
type Version = (Stamp, Issued, Option<(Document, Option<ChangeHash>)>);

/// Whether `key` is one of the workload's document keys.
pub(super) fn is_doc_key(key: &str) -> bool {
    key.starts_with('d')
}

impl Sim {
    /// A document write at a random server: one field set (or removed,
    /// as `null`) by a merge patch, or the key deleted.
    pub(super) fn doc_write(&mut self) {
        let servers: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].attached.is_none())
            .collect();
        let i = servers[self.rng.below(servers.len() as u64) as usize];
        let key = format!("d{}", self.rng.below(self.cfg.doc_keys.max(1) as u64));
        let delete = self.rng.chance(DOC_DELETE_PER_MILLION);
        let field = format!("f{}", self.rng.below(5));
        let value = match self.rng.below(5) {
            0 => Value::Null,
            v => json!(v),
        };
        let now = self.node_now(i);
        let ack = self.cfg.write_ack;
        let Some(r) = self.nodes[i].replica.as_mut() else {
            self.report.writes_refused += 1;
            return;
        };
        let res = if delete {
            r.delete_acked(key.as_str(), None, ack, now)
        } else {
            let patch = DocWrite::Patch(json!({ field: value }));
            r.put_doc(key.as_str(), patch, 0, None, ack, now)
        };
        match res {
            Ok(receipt) => {
                // The version written, as the oracle will merge it.
                let written = (!delete)
                    .then(|| r.get(&key).and_then(|rec| rec.entry.value.clone()))
                    .flatten();
                self.check_stamp_rises(i, receipt.stamp);
                if self.traced(&key) {
                    self.tr(|| format!("n{i} doc write {key} delete={delete} -> {receipt:?}"));
                }
                let incarnation = self.nodes[i].incarnation;
                self.issued.insert(
                    receipt.stamp,
                    Issued {
                        key,
                        value: written,
                        flags: 0,
                        node: i,
                        incarnation,
                        acknowledged: false,
                        answered: false,
                        forwarded: false,
                    },
                );
                self.report.doc_writes += 1;
            }
            Err(e) if refusal_expected(&e) => self.count_refusal(i, &e),
            Err(e) => return self.fail(format!("document write at node {i} refused: {e}")),
        }
        self.drain(i);
    }

    /// Whether node `i` durably holds the only copy of an acknowledged
    /// document version's changes: no other server's stored document of
    /// that key contains them (merges carry versions on under other stamps,
    /// so the plain oracle's stamp comparison does not see them).
    pub(super) fn holds_last_doc_changes(&self, i: usize) -> bool {
        !self.doc_versions_only_at(i).is_empty()
    }

    /// The acknowledged document versions whose changes node `i` holds
    /// durably and no other server (not away) does, by stamp.
    fn doc_versions_only_at(&self, i: usize) -> Vec<Stamp> {
        let load = |e: &crate::core::types::Entry| -> Option<Document> {
            e.is_doc()
                .then(|| Document::load(e.value.as_deref().unwrap_or_default()).ok())
                .flatten()
        };
        let mut only_here = Vec::new();
        for (stamp, w) in self.issued.iter() {
            let (true, Some(bytes)) = (w.acknowledged, w.value.as_ref()) else {
                continue;
            };
            if !is_doc_key(&w.key) {
                continue;
            }
            let (Ok(key), Ok(mut version)) =
                (crate::core::types::Key::new(&w.key), Document::load(bytes))
            else {
                continue;
            };
            let mut holds = |n: &super::Node| {
                n.durable
                    .records
                    .get(&key)
                    .and_then(|r| load(&r.entry))
                    .is_some_and(|mut d| d.contains(&mut version))
            };
            if !holds(&self.nodes[i]) {
                continue;
            }
            let elsewhere = self
                .nodes
                .iter()
                .enumerate()
                .any(|(j, n)| j != i && n.attached.is_none() && !n.away && holds(n));
            if !elsewhere {
                only_here.push(*stamp);
            }
        }
        only_here
    }

    /// Node `i` goes away for long (see `mark_away`): acknowledged
    /// document versions whose changes only it holds durably (no other
    /// server's stored document contains them) may go with it, as plain
    /// writes only it held do; the oracle stops counting them. (The plain
    /// rule compares stamps, and a merge or a later version elsewhere can
    /// hold a newer stamp without a version's changes.)
    pub(super) fn mark_doc_versions_away(&mut self, i: usize) {
        let only_here = self.doc_versions_only_at(i);
        for stamp in only_here {
            if let Some(w) = self.issued.get_mut(&stamp) {
                w.acknowledged = false;
                self.report.writes_held_only_by_the_absent += 1;
            }
        }
    }

    /// Checks every document key on every node that is not `skipped`
    /// (see the module docs).
    pub(super) fn check_documents(&mut self, skipped: &[usize]) -> Result<(), String> {
        let keys: Vec<String> = (0..self.cfg.doc_keys).map(|k| format!("d{k}")).collect();
        for key in keys {
            let mut versions: Vec<Version> = self
                .issued
                .iter()
                .filter(|(_, w)| w.key == key)
                .map(|(s, w)| {
                    let doc = w.value.as_ref().and_then(|v| {
                        let mut d = Document::load(v).ok()?;
                        let origin = d.origin();
                        Some((d, origin))
                    });
                    (*s, w.clone(), doc)
                })
                .collect();
            versions.sort_by_key(|(s, _, _)| *s);
            // Per origin, every version issued merged: all a document of
            // that origin may hold.
            let mut issued_union: HashMap<Option<ChangeHash>, Document> = HashMap::new();
            for (_, _, d) in versions.iter_mut() {
                if let Some((doc, origin)) = d.as_mut() {
                    let u = issued_union.entry(*origin).or_default();
                    u.merge(doc)
                        .map_err(|e| format!("{key}: versions do not merge: {e}"))?;
                }
            }
            for i in 0..self.nodes.len() {
                if skipped.contains(&i) {
                    continue;
                }
                let Some(r) = self.nodes[i].replica.as_ref() else {
                    continue;
                };
                let held = r
                    .get(&key)
                    .filter(|rec| !rec.entry.is_tombstone())
                    .map(|rec| rec.entry.clone());
                let mut held_doc = match &held {
                    None => None,
                    Some(e) if e.is_doc() => {
                        let mut d = Document::load(e.value.as_deref().unwrap_or_default())
                            .map_err(|e| format!("node {i}: {key} holds no document: {e}"))?;
                        let origin = d.origin();
                        Some((d, origin))
                    }
                    Some(e) => {
                        return Err(format!(
                            "node {i}: {key} holds a plain value at {:?}",
                            e.stamp
                        ))
                    }
                };
                // Nothing no client wrote.
                if let Some((doc, origin)) = held_doc.as_mut() {
                    let sound = issued_union
                        .get_mut(origin)
                        .is_some_and(|u| u.contains(doc));
                    if !sound {
                        return Err(format!(
                            "node {i}: {key} holds changes no client wrote (origin {origin:?})"
                        ));
                    }
                }
                // A delete newer than every other write issued wins.
                let newest = versions.iter().rev().find(|(_, w, _)| w.acknowledged);
                if let Some((stamp, w, _)) = newest {
                    let last = versions.last().map(|(s, _, _)| *s);
                    if w.value.is_none() && last == Some(*stamp) && held_doc.is_some() {
                        return Err(format!(
                            "node {i}: {key} was deleted last (acknowledged at {stamp:?}), \
                             yet it holds a document"
                        ));
                    }
                }
                // Every acknowledged version no later write superseded.
                for n in 0..versions.len() {
                    let (stamp, w, _) = &versions[n];
                    if !w.acknowledged || w.value.is_none() {
                        continue;
                    }
                    let origin = versions[n].2.as_ref().and_then(|(_, o)| *o);
                    let superseded = versions[n + 1..].iter().any(|(_, later, d)| {
                        later.value.is_none() || d.as_ref().map(|(_, o)| *o) != Some(origin)
                    });
                    if superseded {
                        continue;
                    }
                    let stamp = *stamp;
                    let Some((doc, held_origin)) = held_doc.as_mut() else {
                        return Err(format!(
                            "node {i}: {key} lost the acknowledged document version {stamp:?} \
                             (it holds none)"
                        ));
                    };
                    if *held_origin != origin {
                        return Err(format!(
                            "node {i}: {key} holds another document than the acknowledged \
                             version {stamp:?}'s"
                        ));
                    }
                    let Some((v, _)) = versions[n].2.as_mut() else {
                        continue;
                    };
                    if !doc.contains(v) {
                        return Err(format!(
                            "node {i}: {key} lost changes of the acknowledged version {stamp:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
