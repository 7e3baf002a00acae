//! Property tests (design §8): the CRDT laws, the digest, the codec, the clock.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use meridian::core::codec::{
    self, ClusterId, Feed, FeedEnd, ForgetNotice, ForwardOp, ForwardOutcome, Hello, Message,
    RefusalClass, Summary,
};
use meridian::core::digest::{differing_leaves, leaf_of};
use meridian::core::hlc::{Clock, Hlc};
use meridian::core::types::{key_hash, Entry, Key, Kind, NodeId, Stamp};
use meridian::core::LwwMap;
use proptest::prelude::*;

fn stamp() -> impl Strategy<Value = Stamp> {
    (1u64..40, 1u64..4).prop_map(|(h, n)| Stamp::new(Hlc(h), NodeId(n)))
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        stamp(),
        prop_oneof![Just(Stamp::ZERO), stamp()],
        0u64..3,
        prop::option::weighted(0.7, prop::collection::vec(any::<u8>(), 0..6)),
        prop_oneof![3 => Just(Kind::Value), 1 => Just(Kind::Doc)],
    )
        .prop_map(|(stamp, prev, flags, value, kind)| Entry {
            stamp,
            prev,
            flags,
            // A tombstone has no kind (it decodes as a value's).
            kind: if value.is_some() { kind } else { Kind::Value },
            value: value.map(Bytes::from),
        })
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        4 => (0u8..8).prop_map(|i| Key::new(&format!("k{i}")).unwrap()),
        1 => "[a-z/]{1,12}".prop_map(|s| Key::new(&s).unwrap()),
    ]
}

/// A replica state, as the list of entries merged into it.
fn state() -> impl Strategy<Value = Vec<(Key, Entry)>> {
    prop::collection::vec((key(), entry()), 0..24)
}

fn build(parts: &[&[(Key, Entry)]]) -> LwwMap {
    let mut m = LwwMap::default();
    for part in parts {
        for (k, e) in part.iter() {
            m.merge(k, e.clone(), Hlc::ZERO);
        }
    }
    m
}

/// The replicated content of a map, without the local indices.
fn content(m: &LwwMap) -> BTreeMap<String, Entry> {
    m.iter()
        .map(|(k, r)| (k.to_string(), r.entry.clone()))
        .collect()
}

/// The live entries only: what the root covers (tombstones are not in the
/// digest, since replicas collect them at different moments).
fn live(m: &LwwMap) -> BTreeMap<String, Entry> {
    m.iter()
        .filter(|(_, r)| !r.entry.is_tombstone())
        .map(|(k, r)| (k.to_string(), r.entry.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative(a in state(), b in state()) {
        let mut ab = build(&[&a, &b]);
        let mut ba = build(&[&b, &a]);
        prop_assert_eq!(content(&ab), content(&ba));
        prop_assert_eq!(ab.root(), ba.root());
    }

    #[test]
    fn merge_is_associative(a in state(), b in state(), c in state()) {
        // (a ⊔ b) ⊔ c against a ⊔ (b ⊔ c), each side merging whole states.
        let ab = build(&[&a, &b]);
        let left: Vec<(Key, Entry)> = ab.iter().map(|(k, r)| (k.clone(), r.entry.clone())).collect();
        let mut l = build(&[&left, &c]);
        let bc = build(&[&b, &c]);
        let right: Vec<(Key, Entry)> = bc.iter().map(|(k, r)| (k.clone(), r.entry.clone())).collect();
        let mut r = build(&[&a, &right]);
        prop_assert_eq!(content(&l), content(&r));
        prop_assert_eq!(l.root(), r.root());
    }

    #[test]
    fn merge_is_idempotent_and_order_free(a in state(), seed in any::<u64>()) {
        let once = build(&[&a]);
        let twice = build(&[&a, &a]);
        prop_assert_eq!(content(&once), content(&twice));
        // Any permutation, with duplicates, gives the same state.
        let mut shuffled = a.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut dup = shuffled.clone();
        dup.extend(a.iter().take(3).cloned());
        let mut s = build(&[&dup]);
        let mut o = build(&[&a]);
        prop_assert_eq!(content(&s), content(&o));
        prop_assert_eq!(s.root(), o.root());
    }

    #[test]
    fn equal_live_state_iff_equal_root(a in state(), b in state()) {
        let mut x = build(&[&a]);
        let mut y = build(&[&b]);
        prop_assert_eq!(live(&x) == live(&y), x.root() == y.root());
    }

    #[test]
    fn diff_finds_exactly_the_keys_whose_live_state_differs(base in state(), a in state(), b in state()) {
        let mut x = build(&[&base, &a]);
        let mut y = build(&[&base, &b]);
        let (cx, cy) = (live(&x), live(&y));
        let keys: BTreeSet<&String> = cx.keys().chain(cy.keys()).collect();
        let differing: BTreeSet<u32> = keys
            .into_iter()
            .filter(|k| cx.get(*k) != cy.get(*k))
            .map(|k| leaf_of(key_hash(k)))
            .collect();
        let found: BTreeSet<u32> = differing_leaves(x.digest(), y.digest()).into_iter().collect();
        prop_assert_eq!(found, differing);
    }

    #[test]
    fn clock_is_monotonic_and_bounded(ops in prop::collection::vec((any::<bool>(), 0u64..5_000, 0u64..6_000), 1..200)) {
        let offset = 500;
        let mut c = Clock::new(offset);
        let mut last = Hlc::ZERO;
        let mut now_max = 0;
        for (tick, now, remote) in ops {
            now_max = now_max.max(now);
            if tick {
                if let Ok(t) = c.tick(now) {
                    prop_assert!(t > last);
                    prop_assert!(t.physical_ms() <= now_max + offset);
                    last = t;
                }
            } else {
                let before = c.last();
                match c.observe(Hlc::new(remote, 0), now) {
                    Ok(()) => {
                        prop_assert!(c.last() >= before);
                        last = last.max(c.last());
                    }
                    Err(_) => {
                        prop_assert!(remote > now + offset);
                        prop_assert_eq!(c.last(), before);
                    }
                }
            }
            prop_assert!(c.last().physical_ms() <= now_max + offset);
        }
    }

    #[test]
    fn codec_round_trips(msg in message()) {
        let frame = codec::encode(&msg).unwrap();
        prop_assert_eq!(codec::decode(&frame).unwrap(), msg);
    }

    #[test]
    fn codec_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode(&bytes);
        // The same bytes behind a valid envelope reach the payload decoder.
        let mut framed = Vec::from(&codec::MAGIC[..]);
        framed.extend_from_slice(&codec::PROTOCOL_VERSION.to_le_bytes());
        framed.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        framed.extend_from_slice(&bytes);
        let _ = codec::decode(&framed);
    }

    #[test]
    fn codec_survives_corrupted_frames(msg in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut frame = codec::encode(&msg).unwrap();
        let i = at.index(frame.len());
        frame[i] = byte;
        let _ = codec::decode(&frame);
        frame.truncate(i);
        let _ = codec::decode(&frame);
    }
}

fn message() -> impl Strategy<Value = Message> {
    let entries = || prop::collection::vec((key(), entry()), 0..5);
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<bool>(), "[a-z-]{0,10}").prop_map(
            |(index, applied, want_full, region)| {
                Message::Hello(Hello {
                    protocol: codec::PROTOCOL_VERSION,
                    cluster: ClusterId([3; 16]),
                    node: NodeId(index ^ 1),
                    name: "n".into(),
                    region,
                    api: "127.0.0.1:8500".into(),
                    index,
                    applied,
                    want_full,
                    frontier: Hlc(applied),
                    received: Hlc(index / 2),
                    gc_floor: Hlc(index / 3),
                    edge: index % 7 == 0,
                    tail: applied % 5 == 0,
                    rejoined: Hlc(index % 4),
                })
            }
        ),
        (
            0u64..1000,
            0u64..1000,
            prop_oneof![
                Just(FeedEnd::Partial),
                Just(FeedEnd::Recovering),
                any::<u64>().prop_map(|c| FeedEnd::Claim(Hlc(c))),
            ],
            entries(),
            prop::collection::vec(
                (
                    key(),
                    1u64..,
                    prop::collection::vec(any::<u8>(), 0..40),
                    any::<bool>()
                ),
                0..3
            )
        )
            .prop_map(|(a, b, end, entries, docs)| {
                Message::Feed(Feed {
                    from: a.min(b),
                    to: a.max(b),
                    end,
                    frontier: Hlc(a),
                    entries,
                    docs: docs
                        .into_iter()
                        .map(|(key, t, changes, merge)| codec::DocChanges {
                            key,
                            stamp: Stamp::new(Hlc(t), NodeId(t % 5)),
                            prev: Stamp::ZERO,
                            flags: t / 3,
                            merge,
                            base: vec![[t as u8; 32]; (t % 3) as usize],
                            changes: changes.into(),
                            hash: [t as u8; 32],
                        })
                        .collect(),
                })
            }),
        (any::<u64>(), any::<bool>()).prop_map(|(from, full)| Message::Resume { from, full }),
        (any::<u64>(), any::<u64>()).prop_map(|(applied, f)| Message::Ack {
            applied,
            frontier: Hlc(f)
        }),
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(session, root)| Message::AeRoot { session, root }),
        (any::<u64>(), 0u32..16).prop_map(|(session, p)| Message::AeLevel {
            session,
            level: 2,
            parents: vec![p],
            hashes: vec![[7; 6]; 16],
        }),
        (
            any::<u64>(),
            prop::collection::vec((any::<[u8; 8]>(), stamp(), any::<[u8; 4]>()), 0..5)
        )
            .prop_map(|(session, s)| Message::AeLeaves {
                session,
                leaves: s
                    .iter()
                    .map(|(k, _, _)| leaf_of(u64::from_be_bytes(*k)))
                    .collect(),
                summaries: s
                    .into_iter()
                    .map(|(key_hash, stamp, check)| Summary {
                        key_hash,
                        stamp,
                        check
                    })
                    .collect(),
            }),
        (
            any::<u64>(),
            entries(),
            prop::collection::vec(any::<[u8; 8]>(), 0..4)
        )
            .prop_map(|(session, entries, want)| Message::AeEntries {
                session,
                entries,
                want
            }),
        any::<u64>().prop_map(|f| Message::Stale { floor: Hlc(f) }),
        any::<u64>().prop_map(|session| Message::AeDone { session }),
        (
            any::<u64>(),
            key(),
            prop::option::of(any::<bool>()),
            any::<u8>()
        )
            .prop_map(|(id, k, quorum, n)| Message::Forward {
                id,
                ops: vec![
                    ForwardOp::Expect {
                        key: k.clone(),
                        stamp: Stamp::ZERO,
                    },
                    ForwardOp::Set {
                        key: k.clone(),
                        value: Bytes::from(vec![n; usize::from(n)]),
                        flags: u64::from(n),
                    },
                    ForwardOp::Delete { key: k.clone() },
                    ForwardOp::Doc {
                        key: k.clone(),
                        json: Bytes::from(format!("{{\"n\": {n}}}")),
                        patch: n % 2 == 0,
                        flags: u64::from(n),
                    },
                    ForwardOp::DeleteTree {
                        prefix: "k".into(),
                        keys_max: u32::from(n),
                    },
                    ForwardOp::HandOver {
                        key: k,
                        stamp: Stamp::new(Hlc(u64::from(n) << 20), NodeId(u64::from(n))),
                        value: (n % 2 == 0).then(|| Bytes::from(vec![n; usize::from(n)])),
                        flags: u64::from(n),
                    },
                ],
                quorum,
            }),
        (any::<u64>(), key(), stamp(), any::<u8>()).prop_map(|(id, k, s, n)| Message::Forward {
            id: id | (1 << 63),
            ops: vec![ForwardOp::HandOver {
                key: k,
                stamp: s,
                value: (n % 3 != 0).then(|| Bytes::from(vec![n; 3])),
                flags: 0,
            }],
            quorum: None,
        }),
        (
            any::<u64>(),
            prop::collection::vec((key(), stamp()), 0..4),
            any::<u8>()
        )
            .prop_map(|(id, written, n)| Message::Forwarded {
                id,
                outcome: match n % 4 {
                    0 => ForwardOutcome::Done {
                        count: written.len() as u64,
                        written,
                    },
                    1 => ForwardOutcome::Changed {
                        key: written
                            .first()
                            .map(|w| w.0.clone())
                            .unwrap_or_else(|| Key::new("k").unwrap())
                    },
                    2 => ForwardOutcome::Refused {
                        class: RefusalClass::Unavailable,
                        message: "no".into(),
                    },
                    _ => ForwardOutcome::NotAcknowledged("late".into()),
                },
            }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec((any::<[u8; 8]>(), stamp(), any::<[u8; 4]>()), 0..4)
        )
            .prop_map(|(session, floor, s)| Message::Collected {
                session,
                floor: Hlc(floor),
                records: s
                    .into_iter()
                    .map(|(key_hash, stamp, check)| Summary {
                        key_hash,
                        stamp,
                        check
                    })
                    .collect(),
            }),
        (any::<u8>(), any::<u64>(), any::<bool>()).prop_map(|(who, at, left)| {
            Message::Forget {
                members: vec![ForgetNotice {
                    node: NodeId(u64::from(who % 4)),
                    at: Hlc(at),
                    name: "gone".into(),
                    region: "r".into(),
                    left,
                }],
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(at, floor)| Message::Forgotten {
            at: Hlc(at),
            floor: Hlc(floor),
        }),
    ]
}

/// Arbitrary message sequences from three peers: the replica never panics,
/// and everything it sends encodes and decodes again.
fn replica_survives(steps: Vec<(usize, bool, Message)>) -> Result<(), TestCaseError> {
    use meridian::sync::{Config, Output, Replica};
    let cluster = ClusterId([3; 16]);
    let t0 = 1_750_000_000_000;
    let mut r = Replica::new(Config::new(NodeId(1), "n1", "us-east", cluster), t0).unwrap();
    let peers = [NodeId(2), NodeId(3), NodeId(4)];
    for p in peers {
        r.add_member(p, "eu-west");
        r.connected(p, t0);
    }
    // And an edge (its hellos, forwards and rounds reach the server's side).
    r.connected_as(NodeId(5), meridian::sync::Role::Edge, t0);
    for (i, (peer, fix_hello, mut msg)) in steps.into_iter().enumerate() {
        let from = peers[peer % 3];
        if let (Message::Hello(h), true) = (&mut msg, fix_hello) {
            h.node = from;
            h.cluster = cluster;
        }
        let now = t0 + i as u64 * 37;
        r.handle(from, msg, now);
        if i % 5 == 0 {
            r.tick(now);
        }
        if i % 7 == 0 {
            let _ = r.put(
                format!("k{}", i % 5),
                Bytes::from_static(b"v"),
                0,
                None,
                now,
            );
        }
        while let Some(o) = r.poll_output() {
            if let Output::Send { msg, .. } = o {
                let frame = codec::encode(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    codec::decode(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?,
                    msg
                );
            }
        }
    }
    let _ = r.status();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn replica_survives_arbitrary_message_sequences(
        steps in prop::collection::vec((0usize..3, any::<bool>(), message()), 1..40)
    ) {
        replica_survives(steps)?;
    }
}

// ------------------------------------------------------------------- ACLs

mod acl {
    use meridian::core::acl::rules::{self, KeyRule};
    use meridian::core::acl::{Access, AclState, Authorizer, Rules};
    use proptest::prelude::*;

    fn access() -> impl Strategy<Value = Access> {
        prop_oneof![
            Just(Access::Deny),
            Just(Access::List),
            Just(Access::Read),
            Just(Access::Write)
        ]
    }

    fn rules() -> impl Strategy<Value = Rules> {
        let rule =
            ("[ab/]{0,4}", any::<bool>(), access()).prop_map(|(segment, prefix, access)| KeyRule {
                segment,
                prefix,
                access,
            });
        (
            prop::collection::vec(rule, 0..6),
            prop::option::of(access()),
        )
            .prop_map(|(keys, operator)| Rules {
                keys,
                operator: operator.filter(|a| *a != Access::List),
                acl: None,
                ignored: Vec::new(),
            })
    }

    /// The rule for `key` found the slow way: an exact rule, else every
    /// prefix of the key from the longest down, else the default; rules
    /// for the same segment combined.
    fn model(policies: &[Rules], default: Access, key: &str) -> Access {
        let combined = |prefix: bool, segment: &str| {
            policies
                .iter()
                .flat_map(|r| &r.keys)
                .filter(|r| r.prefix == prefix && r.segment == segment)
                .map(|r| r.access)
                .reduce(Access::combine)
        };
        if let Some(a) = combined(false, key) {
            return a;
        }
        (0..=key.len())
            .rev()
            .filter(|n| key.is_char_boundary(*n))
            .find_map(|n| combined(true, &key[..n]))
            .unwrap_or(default)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The longest-prefix model agrees with the authorizer, and a
        /// token allowed to write a prefix may write every key under it.
        #[test]
        fn the_authorizer_agrees_with_the_longest_prefix_model(
            policies in prop::collection::vec(rules(), 1..4),
            deny_by_default in any::<bool>(),
            keys in prop::collection::vec("[ab/]{0,6}", 1..12),
        ) {
            let default = if deny_by_default { Access::Deny } else { Access::Write };
            let authz = Authorizer::new(&policies, default);
            for k in &keys {
                prop_assert_eq!(authz.key(k), model(&policies, default, k), "key {:?}", k);
                prop_assert_eq!(authz.key_read(k), authz.key(k) >= Access::Read);
            }
            for p in &keys {
                if authz.key_write_prefix(p) {
                    for k in keys.iter().filter(|k| k.starts_with(p.as_str())) {
                        prop_assert!(authz.key_write(k), "prefix {:?} writable, {:?} not", p, k);
                    }
                }
            }
        }

        /// Arbitrary text, and text made of the rule language's own
        /// pieces, never panics the parser.
        #[test]
        fn the_rule_parser_never_panics(
            text in prop_oneof![
                ".{0,200}",
                prop::collection::vec(prop_oneof![
                    Just("key"), Just("key_prefix"), Just("operator"), Just("acl"), Just("node"),
                    Just("\""), Just("{"), Just("}"), Just("["), Just("]"), Just("="), Just(":"),
                    Just("policy"), Just("read"), Just("write"), Just("deny"), Just("list"),
                    Just("\n"), Just(" "), Just("a/"), Just(","), Just("${x}"), Just("#"),
                ], 0..40).prop_map(|v| v.concat()),
            ],
        ) {
            let _ = rules::parse(&text);
        }

        /// Token lookup never panics and never grants more than the
        /// anonymous token to a secret it does not know.
        #[test]
        fn unknown_secrets_are_anonymous(secret in ".{0,64}") {
            let s = AclState::empty(Access::Deny);
            let r = s.resolve(Some(&secret));
            prop_assert!(!r.authz.key_read("anything"));
            prop_assert!(!r.authz.is_management());
        }
    }

    #[test]
    fn deny_wins_a_tie_and_the_longest_prefix_wins() {
        let p = |t: &str| rules::parse(t).unwrap();
        let a = p("key_prefix \"app/\" { policy = \"write\" }\nkey_prefix \"app/secret/\" { policy = \"deny\" }\nkey \"app/secret/open\" { policy = \"read\" }");
        let b =
            p("key_prefix \"app/\" { policy = \"deny\" }\nkey_prefix \"\" { policy = \"list\" }");
        let authz = Authorizer::new([&a], Access::Deny);
        assert!(authz.key_write("app/x"));
        assert!(!authz.key_read("app/secret/x"));
        assert!(authz.key_read("app/secret/open") && !authz.key_write("app/secret/open"));
        assert!(!authz.key_write_prefix("app/"), "a deny under app/");
        assert!(authz.key_write_prefix("app/public/"));
        assert_eq!(authz.key("other"), Access::Deny);
        // Two policies with the same prefix: deny wins.
        let both = Authorizer::new([&a, &b], Access::Deny);
        assert_eq!(both.key("app/x"), Access::Deny);
        assert_eq!(both.key("zzz"), Access::List);
        assert!(both.key_list("zzz") && !both.key_read("zzz"));
    }
}

/// Documents (issue 16): automerge's merge of versions of one document,
/// each changed apart by a few writers, is commutative, associative and
/// idempotent, and equal heads mean equal JSON.
mod documents {
    use meridian::core::doc::Document;
    use meridian::core::hlc::Hlc;
    use meridian::core::types::{NodeId, Stamp};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// One writer's edits: (field, value) patches; a value of -1 removes
    /// the field, and fields under `n/` go into a nested object.
    fn edits() -> impl Strategy<Value = Vec<(u8, i64)>> {
        prop::collection::vec((0u8..6, -1i64..4), 0..6)
    }

    /// A base document, then each writer's edits applied to its own copy
    /// (whole-document writes, as `PUT /v1/doc` makes them).
    fn versions(writers: &[Vec<(u8, i64)>]) -> Vec<Document> {
        let mut base = Document::new();
        base.update(
            &json!({"f0": 0, "n": {"f1": 1}}),
            Stamp::new(Hlc(1), NodeId(1)),
        )
        .unwrap();
        let saved = base.save();
        let mut out = Vec::new();
        for (w, edits) in writers.iter().enumerate() {
            let mut d = Document::load(&saved).unwrap();
            for (i, (field, value)) in edits.iter().enumerate() {
                let mut json = d.to_json(None).unwrap();
                let target = if field % 2 == 0 {
                    json.as_object_mut().unwrap()
                } else {
                    json["n"].as_object_mut().unwrap()
                };
                let name = format!("f{field}");
                if *value < 0 {
                    target.remove(&name);
                } else {
                    target.insert(name, json!(value));
                }
                let stamp = Stamp::new(Hlc(10 + i as u64), NodeId(10 + w as u64));
                d.update(&json, stamp).unwrap();
            }
            out.push(d);
        }
        out
    }

    fn copy(d: &mut Document) -> Document {
        Document::load(&d.save()).unwrap()
    }

    fn merged(a: &mut Document, b: &mut Document) -> Document {
        let mut m = copy(a);
        m.merge(b).unwrap();
        m
    }

    fn state(d: &mut Document) -> (Value, Vec<String>) {
        let heads = d.heads().iter().map(ToString::to_string).collect();
        (d.to_json(None).unwrap(), heads)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn document_merge_is_commutative_associative_and_idempotent(
            a in edits(), b in edits(), c in edits()
        ) {
            let mut v = versions(&[a, b, c]);
            let (mut c, mut b, mut a) = (v.pop().unwrap(), v.pop().unwrap(), v.pop().unwrap());
            let mut ab = merged(&mut a, &mut b);
            let mut ba = merged(&mut b, &mut a);
            prop_assert_eq!(state(&mut ab), state(&mut ba));
            prop_assert!(ab.contains(&mut a) && ab.contains(&mut b));
            let mut ab_c = merged(&mut ab, &mut c);
            let mut bc = merged(&mut b, &mut c);
            let mut a_bc = merged(&mut a, &mut bc);
            prop_assert_eq!(state(&mut ab_c), state(&mut a_bc));
            let mut again = copy(&mut a);
            let mut aa = merged(&mut a, &mut again);
            prop_assert_eq!(state(&mut aa), state(&mut a));
            let mut abab = merged(&mut ab, &mut ba);
            prop_assert_eq!(state(&mut abab), state(&mut ab));
        }

        #[test]
        fn equal_heads_mean_equal_json(a in edits(), b in edits()) {
            let mut v = versions(&[a, b]);
            let (mut b, mut a) = (v.pop().unwrap(), v.pop().unwrap());
            let mut all = [copy(&mut a), copy(&mut b), merged(&mut a, &mut b), merged(&mut b, &mut a)];
            let states: Vec<(Value, Vec<String>)> = all.iter_mut().map(state).collect();
            for x in &states {
                for y in &states {
                    if x.1 == y.1 {
                        prop_assert_eq!(&x.0, &y.0);
                    }
                }
            }
        }
    }
}

/// Document requests from arbitrary input (as `fuzz/fuzz_targets/doc.rs`,
/// in every `cargo test`): no panic, and what is written renders back.
mod document_requests {
    use meridian::core::doc::{apply_merge_patch, parse_json, Document};
    use meridian::core::hlc::Hlc;
    use meridian::core::types::{NodeId, Stamp};
    use proptest::prelude::*;
    use serde_json::Value;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-z~/ ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z/~]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-z/~]{0,4}", json(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(mut d) = Document::load(&bytes) {
                let _ = d.to_json(None);
            }
            if let Ok(v) = parse_json(&bytes) {
                let mut d = Document::new();
                let _ = d.update(&v, Stamp::new(Hlc(1), NodeId(1)));
            }
        }

        #[test]
        fn a_written_document_renders_back_and_a_patch_applies(a in object(), b in object()) {
            let mut d = Document::new();
            d.update(&a, Stamp::new(Hlc(1), NodeId(1))).unwrap();
            prop_assert_eq!(d.to_json(None).unwrap(), a.clone());
            let mut d = Document::load(&d.save()).unwrap();
            let mut patched = a.clone();
            apply_merge_patch(&mut patched, &b).unwrap();
            d.update(&patched, Stamp::new(Hlc(2), NodeId(1))).unwrap();
            prop_assert_eq!(d.to_json(None).unwrap(), patched.clone());
            // A whole write of the same JSON changes nothing.
            let heads = d.heads();
            prop_assert!(!d.update(&patched, Stamp::new(Hlc(3), NodeId(1))).unwrap());
            prop_assert_eq!(d.heads(), heads);
        }
    }
}
