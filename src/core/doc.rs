//! Documents: JSON held as an automerge document, so that concurrent
//! changes to different fields of one value both survive (design §3,
//! "Documents"; issue 16).
//!
//! Owns what a document is and what can be done to one, without I/O: made
//! from a JSON object, changed by a whole new JSON object (the changes are
//! computed against the current document, so fields the writer did not
//! touch are left to merge with other writers' changes) or by an RFC 7386
//! merge patch, rendered as JSON (now, or at earlier heads), merged with
//! another version of itself, and the field conflicts a merge leaves.
//!
//! A document travels and is stored as an entry like any value (its saved
//! bytes, [`Kind::Doc`](super::types::Kind::Doc)); how versions of one
//! key's document meet is decided in `sync::replica::documents`. Every
//! change is made by an automerge actor that is the stamp of the write
//! that made it ([`actor_of`]): unique per write, so no two changes ever
//! share an actor and a sequence number, and the actor names the write.

use automerge::transaction::{CommitOptions, Transactable};
pub use automerge::ChangeHash;
use automerge::{hydrate, ActorId, AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};
use serde_json::{Map, Number, Value as Json};
use thiserror::Error;

use super::types::Stamp;

/// Deepest nesting of objects and arrays a document may have.
pub const DOC_DEPTH_MAX: usize = 64;
/// Most heads `?at=` may name.
pub const DOC_HEADS_MAX: usize = 64;
/// Most field conflicts one merge reports (the rest are counted).
pub const DOC_CONFLICTS_REPORTED_MAX: usize = 64;

/// Why a document operation failed. Nothing was changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DocError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// A document is a JSON object at the top level.
    #[error("a document is a JSON object at the top level, not {found}")]
    NotObject {
        /// What the top level was (`array`, `string`, ...).
        found: &'static str,
    },
    /// Objects and arrays nest deeper than [`DOC_DEPTH_MAX`].
    #[error("the document nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The saved document is larger than the value limit.
    #[error("the document is {len} bytes saved, more than the value limit of {max} bytes")]
    TooLarge {
        /// Its saved size in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Stored or received bytes are not an automerge document.
    #[error("not a document: {0}")]
    Damaged(String),
    /// The key's document failed its check (damaged in memory or on
    /// disk) and is being repaired from a peer: a change made now could
    /// not be computed against it.
    #[error(
        "the key's document failed its check and is being repaired from a peer: try again shortly"
    )]
    Repairing,
    /// A merge patch was sent to a key that holds a plain value.
    #[error("the key holds a plain value, not a document: PUT a whole document to make it one")]
    NotDocument,
    /// A head given to `?at=` is not one of the document's changes.
    #[error("bad heads: {0}")]
    Heads(String),
}

/// The automerge actor of the write stamped `stamp`: its clock then its
/// node id, big-endian (so actors sort as stamps do).
pub fn actor_of(stamp: Stamp) -> ActorId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&stamp.hlc.0.to_be_bytes());
    b[8..].copy_from_slice(&stamp.node.0.to_be_bytes());
    ActorId::from(b)
}

/// A field whose value two writers set concurrently: automerge kept one
/// (`winner`) and the others lost (`losers`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldConflict {
    /// The field, as a JSON pointer (`/limits/rps`).
    pub path: String,
    /// The value kept.
    pub winner: Json,
    /// The values that lost.
    pub losers: Vec<Json>,
}

/// One key's document (see the module docs).
pub struct Document {
    doc: AutoCommit,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document").finish_non_exhaustive()
    }
}

impl Document {
    /// An empty document (no changes yet).
    pub fn new() -> Document {
        Document {
            doc: AutoCommit::new(),
        }
    }

    /// Loads saved bytes; automerge checks their checksums and that every
    /// change hashes to what its successors name.
    pub fn load(bytes: &[u8]) -> Result<Document, DocError> {
        AutoCommit::load(bytes)
            .map(|doc| Document { doc })
            .map_err(|e| DocError::Damaged(e.to_string()))
    }

    /// The saved form: what an entry holds.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes made after `heads`, encoded (what a peer holding the
    /// document at those heads would lack).
    pub fn changes_after(&mut self, heads: &[ChangeHash]) -> Vec<u8> {
        self.doc.save_after(heads)
    }

    /// The version a peer holds, rebuilt from this one: the document at
    /// `base` (heads this version contains) with `changes` (what
    /// [`Document::changes_after`] gave the peer for `base`) taken in. The
    /// caller checks the result against what the peer says it holds (its
    /// entry hash): this only fails where the changes cannot be taken in.
    pub fn rebuilt(&mut self, base: &[ChangeHash], changes: &[u8]) -> Result<Document, DocError> {
        let mut doc = if self.heads() == base {
            self.doc.clone()
        } else {
            self.doc
                .fork_at(base)
                .map_err(|e| DocError::Heads(e.to_string()))?
        };
        doc.load_incremental(changes)
            .map_err(|e| DocError::Damaged(e.to_string()))?;
        Ok(Document { doc })
    }

    /// The document's heads, sorted.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        let mut h = self.doc.get_heads();
        h.sort_unstable();
        h
    }

    /// The hash of the change that created the document (`None`: empty).
    /// Two versions of a key's document merge only if they share it: a
    /// document created again after a delete or an overwrite starts over.
    pub fn origin(&mut self) -> Option<ChangeHash> {
        self.doc
            .get_changes_meta(&[])
            .into_iter()
            .find(|c| c.deps.is_empty())
            .map(|c| c.hash)
    }

    /// Whether every change of `other` is in this document.
    pub fn contains(&mut self, other: &mut Document) -> bool {
        other
            .doc
            .get_heads()
            .iter()
            .all(|h| self.doc.get_change_meta_by_hash(h).is_some())
    }

    /// Whether every change that `heads` name is in this document.
    pub fn holds(&mut self, heads: &[ChangeHash]) -> bool {
        heads
            .iter()
            .all(|h| self.doc.get_change_meta_by_hash(h).is_some())
    }

    /// Takes every change of `other` in (automerge's merge: commutative,
    /// associative, idempotent).
    pub fn merge(&mut self, other: &mut Document) -> Result<(), DocError> {
        self.doc
            .merge(&mut other.doc)
            .map(|_| ())
            .map_err(|e| DocError::Damaged(e.to_string()))
    }

    /// Makes the document equal to `json` (an object) by the fewest field
    /// changes, as one change by the write stamped `stamp` (its automerge
    /// actor is [`actor_of`] the stamp). False if nothing differed (no
    /// change was made).
    pub fn update(&mut self, json: &Json, stamp: Stamp) -> Result<bool, DocError> {
        let root = match to_hydrate(json, 0)? {
            v @ hydrate::Value::Map(_) => v,
            _ => {
                return Err(DocError::NotObject {
                    found: json_kind(json),
                })
            }
        };
        self.doc.set_actor(actor_of(stamp));
        // automerge 0.12's list update deletes a shorter list's surplus
        // from its head, not its tail ([null, false] updated to [null]
        // became [false]): cut every list that shrinks from its tail first,
        // so the update only changes elements in place or appends.
        shrink_lists(&mut self.doc, &ROOT, json)?;
        self.doc
            .update_object(ROOT, &root)
            .map_err(|e| DocError::Damaged(e.to_string()))?;
        let time = i64::try_from(stamp.hlc.physical_ms() / 1000).unwrap_or(i64::MAX);
        Ok(self
            .doc
            .commit_with(CommitOptions::default().with_time(time))
            .is_some())
    }

    /// The document as JSON, now or as it was at `heads`.
    pub fn to_json(&mut self, heads: Option<&[ChangeHash]>) -> Result<Json, DocError> {
        if let Some(h) = heads {
            if let Some(missing) = h
                .iter()
                .find(|h| self.doc.get_change_meta_by_hash(h).is_none())
            {
                return Err(DocError::Heads(format!(
                    "{missing} is not a change of this document"
                )));
            }
        }
        let v = self
            .doc
            .hydrate(ROOT, heads)
            .map_err(|e| DocError::Damaged(e.to_string()))?;
        Ok(from_hydrate(&v))
    }

    /// Every field that holds more than one value (concurrent writers set
    /// it), at most [`DOC_CONFLICTS_REPORTED_MAX`].
    pub fn conflicts(&self) -> Vec<FieldConflict> {
        let mut out = Vec::new();
        self.walk_conflicts(&ROOT, &mut String::new(), &mut out);
        out
    }

    fn walk_conflicts(
        &self,
        obj: &automerge::ObjId,
        path: &mut String,
        out: &mut Vec<FieldConflict>,
    ) {
        let Ok(typ) = self.doc.object_type(obj) else {
            return;
        };
        let props: Vec<automerge::Prop> = match typ {
            ObjType::Map | ObjType::Table => self.doc.keys(obj).map(automerge::Prop::Map).collect(),
            ObjType::List => (0..self.doc.length(obj))
                .map(automerge::Prop::Seq)
                .collect(),
            ObjType::Text => return,
        };
        for prop in props {
            if out.len() >= DOC_CONFLICTS_REPORTED_MAX {
                return;
            }
            let at = path.len();
            path.push('/');
            match &prop {
                automerge::Prop::Map(k) => path.push_str(&k.replace('~', "~0").replace('/', "~1")),
                automerge::Prop::Seq(i) => path.push_str(&i.to_string()),
            }
            let Ok(all) = self.doc.get_all(obj, prop.clone()) else {
                path.truncate(at);
                continue;
            };
            // get() is the value automerge keeps: the last of get_all.
            if all.len() > 1 {
                let render = |(v, id): &(automerge::Value<'_>, automerge::ObjId)| match v {
                    automerge::Value::Scalar(s) => scalar_json(s),
                    automerge::Value::Object(_) => self
                        .doc
                        .hydrate(id, None)
                        .map_or(Json::Null, |h| from_hydrate(&h)),
                };
                let values: Vec<Json> = all.iter().map(render).collect();
                let (winner, losers) = values
                    .split_last()
                    .map_or((Json::Null, Vec::new()), |(w, l)| (w.clone(), l.to_vec()));
                out.push(FieldConflict {
                    path: path.clone(),
                    winner,
                    losers,
                });
            }
            if let Some((automerge::Value::Object(_), id)) = all.last() {
                self.walk_conflicts(id, path, out);
            }
            path.truncate(at);
        }
    }
}

impl Default for Document {
    fn default() -> Self {
        Document::new()
    }
}

/// Deletes, from the tail, the elements of each list under `obj` that
/// `new` (its JSON) no longer has, at every depth where both are objects
/// or both are lists.
fn shrink_lists(doc: &mut AutoCommit, obj: &automerge::ObjId, new: &Json) -> Result<(), DocError> {
    let damaged = |e: automerge::AutomergeError| DocError::Damaged(e.to_string());
    let typ = doc.object_type(obj).map_err(damaged)?;
    match (typ, new) {
        (ObjType::Map | ObjType::Table, Json::Object(fields)) => {
            for (k, v) in fields {
                if let Ok(Some((automerge::Value::Object(_), child))) = doc.get(obj, k.as_str()) {
                    shrink_lists(doc, &child, v)?;
                }
            }
        }
        (ObjType::List, Json::Array(items)) => {
            let len = doc.length(obj);
            for i in (items.len()..len).rev() {
                doc.delete(obj, i).map_err(damaged)?;
            }
            for (i, v) in items.iter().enumerate() {
                if let Ok(Some((automerge::Value::Object(_), child))) = doc.get(obj, i) {
                    shrink_lists(doc, &child, v)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parses a request body as a document's JSON: an object, nested at most
/// [`DOC_DEPTH_MAX`] deep.
pub fn parse_json(body: &[u8]) -> Result<Json, DocError> {
    let v: Json = serde_json::from_slice(body).map_err(|e| DocError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(DocError::NotObject {
            found: json_kind(&v),
        });
    }
    depth_ok(&v, 0)?;
    Ok(v)
}

/// Applies an RFC 7386 merge patch (an object) to `current`.
pub fn apply_merge_patch(current: &mut Json, patch: &Json) -> Result<(), DocError> {
    if !patch.is_object() {
        return Err(DocError::NotObject {
            found: json_kind(patch),
        });
    }
    json_patch::merge(current, patch);
    depth_ok(current, 0)
}

/// Parses heads as `?at=` names them: hex change hashes, comma-separated.
pub fn parse_heads(text: &str) -> Result<Vec<ChangeHash>, DocError> {
    let heads: Vec<&str> = text.split(',').filter(|s| !s.is_empty()).collect();
    if heads.is_empty() || heads.len() > DOC_HEADS_MAX {
        return Err(DocError::Heads(format!(
            "give 1 to {DOC_HEADS_MAX} comma-separated change hashes"
        )));
    }
    heads
        .iter()
        .map(|h| {
            h.parse::<ChangeHash>()
                .map_err(|e| DocError::Heads(format!("{h}: {e}")))
        })
        .collect()
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn depth_ok(v: &Json, depth: usize) -> Result<(), DocError> {
    if depth > DOC_DEPTH_MAX {
        return Err(DocError::TooDeep { max: DOC_DEPTH_MAX });
    }
    match v {
        Json::Array(a) => a.iter().try_for_each(|x| depth_ok(x, depth + 1)),
        Json::Object(o) => o.values().try_for_each(|x| depth_ok(x, depth + 1)),
        _ => Ok(()),
    }
}

/// JSON as automerge's hydrated form: strings are scalars (a field's
/// string is replaced whole, last writer wins, not merged by character).
fn to_hydrate(v: &Json, depth: usize) -> Result<hydrate::Value, DocError> {
    if depth > DOC_DEPTH_MAX {
        return Err(DocError::TooDeep { max: DOC_DEPTH_MAX });
    }
    Ok(match v {
        Json::Null => hydrate::Value::Scalar(ScalarValue::Null),
        Json::Bool(b) => hydrate::Value::Scalar(ScalarValue::Boolean(*b)),
        Json::Number(n) => hydrate::Value::Scalar(if let Some(i) = n.as_i64() {
            ScalarValue::Int(i)
        } else if let Some(u) = n.as_u64() {
            ScalarValue::Uint(u)
        } else {
            ScalarValue::F64(n.as_f64().unwrap_or(0.0))
        }),
        Json::String(s) => hydrate::Value::Scalar(ScalarValue::Str(s.as_str().into())),
        Json::Array(a) => {
            let items = a
                .iter()
                .map(|x| to_hydrate(x, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            hydrate::Value::from(items)
        }
        Json::Object(o) => {
            let fields = o
                .iter()
                .map(|(k, x)| Ok((k.clone(), to_hydrate(x, depth + 1)?)))
                .collect::<Result<std::collections::HashMap<String, hydrate::Value>, DocError>>()?;
            hydrate::Value::Map(hydrate::Map::from(fields))
        }
    })
}

fn from_hydrate(v: &hydrate::Value) -> Json {
    match v {
        hydrate::Value::Scalar(s) => scalar_json(s),
        hydrate::Value::Map(m) => {
            let mut out = Map::new();
            for (k, mv) in m.iter() {
                out.insert(k.clone(), from_hydrate(&mv.value));
            }
            Json::Object(out)
        }
        hydrate::Value::List(l) => Json::Array(l.iter().map(|x| from_hydrate(&x.value)).collect()),
        hydrate::Value::Text(t) => Json::String(String::from(t)),
    }
}

/// A scalar as JSON. Meridian's writers make only JSON's scalars; the
/// others render as numbers (counters, timestamps) or null (bytes).
fn scalar_json(s: &ScalarValue) -> Json {
    match s {
        ScalarValue::Null | ScalarValue::Bytes(_) | ScalarValue::Unknown { .. } => Json::Null,
        ScalarValue::Boolean(b) => Json::Bool(*b),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Json::Number((*i).into()),
        ScalarValue::Uint(u) => Json::Number((*u).into()),
        ScalarValue::Counter(c) => Json::Number(i64::from(c).into()),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        ScalarValue::Str(s) => Json::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hlc::Hlc;
    use crate::core::types::NodeId;
    use serde_json::json;

    fn stamp(t: u64, n: u64) -> Stamp {
        Stamp::new(Hlc::new(t, 0), NodeId(n))
    }

    /// Saved bytes of a version rebuilt from an older one and the changes
    /// after it, for each way a peer comes to hold a version.
    #[test]
    fn a_version_rebuilt_from_changes_saves_to_the_same_bytes() {
        let mut v1 = Document::new();
        v1.update(&json!({"a": 1, "b": {"c": "x"}, "l": [1, 2]}), stamp(1, 1))
            .unwrap();
        let s1 = v1.save();
        // One writer's next version, loaded and changed as a write does.
        let mut v2 = Document::load(&s1).unwrap();
        v2.update(
            &json!({"a": 2, "b": {"c": "x"}, "l": [1, 2, 3]}),
            stamp(2, 1),
        )
        .unwrap();
        let s2 = v2.save();
        let mut held = Document::load(&s1).unwrap();
        let base = held.heads();
        let changes = Document::load(&s2).unwrap().changes_after(&base);
        assert!(changes.len() < s2.len());
        let mut got = held.rebuilt(&base, &changes).unwrap();
        assert_eq!(got.save(), s2);
        // A merge of two writers' versions, rebuilt where one is held.
        let mut v3 = Document::load(&s1).unwrap();
        v3.update(&json!({"a": 1, "b": {"c": "y"}, "l": [1, 2]}), stamp(3, 2))
            .unwrap();
        let s3 = v3.save();
        let mut merged = Document::load(&s2).unwrap();
        merged.merge(&mut Document::load(&s3).unwrap()).unwrap();
        let sm = merged.save();
        let mut held = Document::load(&s2).unwrap();
        let base = held.heads();
        let changes = Document::load(&sm).unwrap().changes_after(&base);
        let mut got = held.rebuilt(&base, &changes).unwrap();
        assert_eq!(
            got.to_json(None).unwrap(),
            json!({"a": 2, "b": {"c": "y"}, "l": [1, 2, 3]})
        );
        assert_eq!(got.save(), sm);
        // Held further than the base (a change of its own since): the
        // version is rebuilt at the base, without that change.
        let mut held = Document::load(&s3).unwrap();
        let base = Document::load(&s1).unwrap().heads();
        let changes = Document::load(&s2).unwrap().changes_after(&base);
        let mut got = held.rebuilt(&base, &changes).unwrap();
        assert_eq!(got.heads(), Document::load(&s2).unwrap().heads());
        assert_eq!(got.save(), s2);
        // A base it does not hold: refused.
        let mut other = Document::new();
        other.update(&json!({"z": 1}), stamp(9, 9)).unwrap();
        let far = other.heads();
        assert!(Document::load(&s1)
            .unwrap()
            .rebuilt(&far, &changes)
            .is_err());
    }

    #[test]
    fn different_fields_changed_apart_both_survive() {
        let mut base = Document::new();
        base.update(&json!({"a": 1, "b": {"c": "x"}}), stamp(1, 1))
            .unwrap();
        let saved = base.save();
        let mut left = Document::load(&saved).unwrap();
        let mut right = Document::load(&saved).unwrap();
        left.update(&json!({"a": 2, "b": {"c": "x"}}), stamp(2, 1))
            .unwrap();
        right
            .update(&json!({"a": 1, "b": {"c": "y", "d": true}}), stamp(3, 2))
            .unwrap();
        assert!(!left.contains(&mut right));
        left.merge(&mut right).unwrap();
        assert!(left.contains(&mut right));
        assert_eq!(
            left.to_json(None).unwrap(),
            json!({"a": 2, "b": {"c": "y", "d": true}})
        );
        assert!(left.conflicts().is_empty());
        assert_eq!(left.origin(), base.origin());
        // Earlier heads still render.
        let h = base.heads();
        assert_eq!(
            left.to_json(Some(&h)).unwrap(),
            json!({"a": 1, "b": {"c": "x"}})
        );
    }

    #[test]
    fn the_same_field_changed_apart_is_a_conflict_with_its_path() {
        let mut base = Document::new();
        base.update(&json!({"limits": {"rps": 10}}), stamp(1, 1))
            .unwrap();
        let saved = base.save();
        let mut left = Document::load(&saved).unwrap();
        let mut right = Document::load(&saved).unwrap();
        left.update(&json!({"limits": {"rps": 20}}), stamp(2, 1))
            .unwrap();
        right
            .update(&json!({"limits": {"rps": 30}}), stamp(3, 2))
            .unwrap();
        let mut a = Document::load(&left.save()).unwrap();
        a.merge(&mut right).unwrap();
        let mut b = Document::load(&right.save()).unwrap();
        b.merge(&mut left).unwrap();
        assert_eq!(a.to_json(None).unwrap(), b.to_json(None).unwrap());
        assert_eq!(a.heads(), b.heads());
        let c = a.conflicts();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].path, "/limits/rps");
        assert_eq!(c[0].losers.len(), 1);
        // The later stamp's actor sorts last: its value is kept.
        assert_eq!(c[0].winner, json!(30));
    }

    #[test]
    fn an_unchanged_document_makes_no_change_and_refusals_change_nothing() {
        let mut d = Document::new();
        assert!(d
            .update(&json!({"a": [1, 2.5, null]}), stamp(1, 1))
            .unwrap());
        let heads = d.heads();
        assert!(!d
            .update(&json!({"a": [1, 2.5, null]}), stamp(2, 1))
            .unwrap());
        assert_eq!(d.heads(), heads);
        assert!(matches!(
            d.update(&json!([1]), stamp(3, 1)),
            Err(DocError::NotObject { .. })
        ));
        assert!(matches!(parse_json(b"{nope"), Err(DocError::NotJson(_))));
        assert!(matches!(parse_json(b"7"), Err(DocError::NotObject { .. })));
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(70),
            "1".to_string() + &"}".repeat(70)
        );
        assert!(matches!(
            parse_json(deep.as_bytes()),
            Err(DocError::TooDeep { .. })
        ));
        assert!(Document::load(b"not a document").is_err());
        assert_eq!(d.heads(), heads);
    }

    #[test]
    fn a_list_that_shrinks_loses_its_tail() {
        let mut d = Document::new();
        d.update(&json!({"l": [null, false, {"x": [1, 2, 3]}]}), stamp(1, 1))
            .unwrap();
        d.update(&json!({"l": [null, false, {"x": [1]}]}), stamp(2, 1))
            .unwrap();
        assert_eq!(
            d.to_json(None).unwrap(),
            json!({"l": [null, false, {"x": [1]}]})
        );
        d.update(&json!({"l": [null]}), stamp(3, 1)).unwrap();
        assert_eq!(d.to_json(None).unwrap(), json!({"l": [null]}));
    }

    #[test]
    fn a_merge_patch_sets_and_removes_fields() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}});
        apply_merge_patch(&mut v, &json!({"a": null, "b": {"c": 5}})).unwrap();
        assert_eq!(v, json!({"b": {"c": 5, "d": 3}}));
        assert!(apply_merge_patch(&mut v, &json!([1])).is_err());
    }

    #[test]
    fn heads_parse_and_unknown_heads_are_refused() {
        let mut d = Document::new();
        d.update(&json!({"a": 1}), stamp(1, 1)).unwrap();
        let h = d.heads();
        let text: Vec<String> = h.iter().map(|h| h.to_string()).collect();
        assert_eq!(parse_heads(&text.join(",")).unwrap(), h);
        assert!(parse_heads("zz").is_err());
        assert!(parse_heads("").is_err());
        let other = parse_heads(&"ab".repeat(32)).unwrap();
        assert!(matches!(d.to_json(Some(&other)), Err(DocError::Heads(_))));
    }
}
