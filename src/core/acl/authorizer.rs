//! The authorizer: what one token may do, from the rules of all its
//! policies merged, and the cluster's default policy.
//!
//! For a key, an exact `key` rule decides; else the longest `key_prefix`
//! that the key starts with; else the default. Two rules for the same key
//! or prefix (from two policies) combine: `deny` wins, else the more
//! permissive one ([`Access::combine`]). A management token may do
//! everything.

use std::collections::BTreeMap;

use super::rules::{Access, Rules};

/// What one token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    management: bool,
    default: Access,
    exact: BTreeMap<String, Access>,
    /// Prefix rules, each prefix once, longest first.
    prefixes: Vec<(String, Access)>,
    operator: Option<Access>,
    acl: Option<Access>,
}

impl Authorizer {
    /// Everything allowed: a management token (or ACLs off).
    pub fn management() -> Authorizer {
        Authorizer {
            management: true,
            default: Access::Write,
            exact: BTreeMap::new(),
            prefixes: Vec::new(),
            operator: None,
            acl: None,
        }
    }

    /// The rules of a token's policies merged; `default` where none applies
    /// (`deny` or `write`, the cluster's `default_policy`).
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Rules>, default: Access) -> Authorizer {
        let mut exact: BTreeMap<String, Access> = BTreeMap::new();
        let mut prefixes: BTreeMap<String, Access> = BTreeMap::new();
        let (mut operator, mut acl) = (None, None);
        let merge = |slot: &mut Option<Access>, a: Option<Access>| {
            if let Some(a) = a {
                *slot = Some(slot.map_or(a, |s| s.combine(a)));
            }
        };
        for rules in policies {
            for r in &rules.keys {
                let map = if r.prefix { &mut prefixes } else { &mut exact };
                map.entry(r.segment.clone())
                    .and_modify(|a| *a = a.combine(r.access))
                    .or_insert(r.access);
            }
            merge(&mut operator, rules.operator);
            merge(&mut acl, rules.acl);
        }
        let mut prefixes: Vec<(String, Access)> = prefixes.into_iter().collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Authorizer {
            management: false,
            default,
            exact,
            prefixes,
            operator,
            acl,
        }
    }

    /// Whether this is a management token.
    pub fn is_management(&self) -> bool {
        self.management
    }

    /// What this token may do with `key`.
    pub fn key(&self, key: &str) -> Access {
        if self.management {
            return Access::Write;
        }
        if let Some(a) = self.exact.get(key) {
            return *a;
        }
        self.prefixes
            .iter()
            .find(|(p, _)| key.starts_with(p.as_str()))
            .map_or(self.default, |(_, a)| *a)
    }

    /// May read `key`'s value.
    pub fn key_read(&self, key: &str) -> bool {
        self.key(key) >= Access::Read
    }

    /// May see that `key` exists (`?keys`).
    pub fn key_list(&self, key: &str) -> bool {
        self.key(key) >= Access::List
    }

    /// May write or delete `key`.
    pub fn key_write(&self, key: &str) -> bool {
        self.key(key) == Access::Write
    }

    /// May write every key under `prefix`, also keys not written yet: write
    /// on the prefix itself, and no rule under it that grants less.
    pub fn key_write_prefix(&self, prefix: &str) -> bool {
        if self.management {
            return true;
        }
        // The prefix's own access: the longest prefix rule it starts with
        // (an exact rule for the prefix string covers that key alone).
        let own = self
            .prefixes
            .iter()
            .find(|(p, _)| prefix.starts_with(p.as_str()))
            .map_or(self.default, |(_, a)| *a);
        own == Access::Write
            && self
                .prefixes
                .iter()
                .all(|(p, a)| !p.starts_with(prefix) || *a == Access::Write)
            && self
                .exact
                .iter()
                .all(|(k, a)| !k.starts_with(prefix) || *a == Access::Write)
    }

    /// What this token may do with Meridian's operator endpoints.
    pub fn operator(&self) -> Access {
        if self.management {
            return Access::Write;
        }
        self.operator.unwrap_or(self.default)
    }

    /// What this token may do with the ACL endpoints.
    pub fn acl(&self) -> Access {
        if self.management {
            return Access::Write;
        }
        self.acl.unwrap_or(self.default)
    }
}
