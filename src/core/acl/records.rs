//! ACL state as it replicates: policies, tokens and the bootstrap marker
//! are entries of the LWW map under a reserved prefix ([`ACL_PREFIX`]),
//! so they reach every region as any write does and merge as any entry
//! does. A token's secret is kept only as its blake3 hash.
//!
//! [`AclState`] is what a node builds from those entries: every token's
//! [`Authorizer`], found by the hash of the secret a request presents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::authorizer::Authorizer;
use super::rules::{self, Access, Rules};
use crate::core::types::RESERVED_PREFIX;

/// Where ACL entries live (inside [`RESERVED_PREFIX`]).
pub const ACL_PREFIX: &str = "\u{1}meridian/acl/";
/// Policies: `ACL_PREFIX` + `policy/` + ID.
pub const POLICY_PREFIX: &str = "\u{1}meridian/acl/policy/";
/// Tokens: `ACL_PREFIX` + `token/` + AccessorID.
pub const TOKEN_PREFIX: &str = "\u{1}meridian/acl/token/";
/// Written by the first bootstrap.
pub const BOOTSTRAP_KEY: &str = "\u{1}meridian/acl/bootstrap";

/// The built-in policy that grants everything (Consul's ID and name).
pub const MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
/// Its name.
pub const MANAGEMENT_POLICY_NAME: &str = "global-management";
/// The anonymous token: what a request without a (known) token may do.
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
/// The anonymous token's secret (as Consul's).
pub const ANONYMOUS_SECRET: &str = "anonymous";

/// Most tokens and policies a cluster holds; creating more is refused.
pub const TOKENS_MAX: usize = 10_000;
/// Most policies.
pub const POLICIES_MAX: usize = 1_000;
/// Most policies linked to one token.
pub const TOKEN_POLICIES_MAX: usize = 64;
/// Longest name or description.
pub const TEXT_BYTES_MAX: usize = 1_024;

/// A policy as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Its ID (a UUID).
    pub id: String,
    /// Its name, unique when created.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The rules as written (HCL or JSON).
    pub rules: String,
    /// When it was created, ms since the epoch.
    pub create_ms: u64,
}

/// A token as stored: never its secret, only the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its public ID (a UUID).
    pub accessor_id: String,
    /// blake3 of the secret, hex.
    pub secret_hash: String,
    /// Free text.
    pub description: String,
    /// The IDs of its policies.
    pub policies: Vec<String>,
    /// When it was created, ms since the epoch.
    pub create_ms: u64,
}

/// The bootstrap marker: which token the bootstrap created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapRecord {
    /// The management token's accessor.
    pub accessor_id: String,
    /// When, ms since the epoch.
    pub create_ms: u64,
}

/// The hash a token's secret is stored and found by.
pub fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// The entry key of policy `id`.
pub fn policy_key(id: &str) -> String {
    format!("{POLICY_PREFIX}{id}")
}

/// The entry key of token `accessor`.
pub fn token_key(accessor: &str) -> String {
    format!("{TOKEN_PREFIX}{accessor}")
}

/// Who a request is, and what it may do.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The token's accessor ([`ANONYMOUS_ACCESSOR`] without a known token).
    pub accessor_id: String,
    /// What it may do.
    pub authz: Arc<Authorizer>,
}

/// Every policy and token, as the entries under [`ACL_PREFIX`] say.
#[derive(Debug, Clone)]
pub struct AclState {
    policies: BTreeMap<String, PolicyRecord>,
    tokens: BTreeMap<String, TokenRecord>,
    by_secret: HashMap<String, String>,
    authorizers: HashMap<String, Arc<Authorizer>>,
    anonymous: Arc<Authorizer>,
    bootstrap: Option<BootstrapRecord>,
    /// Entries that did not decode, and policies whose rules do not parse
    /// (they grant nothing).
    pub unreadable: usize,
}

impl AclState {
    /// The state of no entries: every request is anonymous.
    pub fn empty(default: Access) -> AclState {
        AclState::build(std::iter::empty::<(&str, &[u8])>(), default)
    }

    /// Builds the state from the live entries under [`ACL_PREFIX`] (others
    /// are skipped); `default` is the cluster's default policy.
    pub fn build<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        default: Access,
    ) -> AclState {
        let mut policies = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        let mut bootstrap = None;
        let mut unreadable = 0;
        for (key, value) in entries {
            if let Some(id) = key.strip_prefix(POLICY_PREFIX) {
                match serde_json::from_slice::<PolicyRecord>(value) {
                    Ok(p) if p.id == id => {
                        policies.insert(p.id.clone(), p);
                    }
                    _ => unreadable += 1,
                }
            } else if let Some(accessor) = key.strip_prefix(TOKEN_PREFIX) {
                match serde_json::from_slice::<TokenRecord>(value) {
                    Ok(t) if t.accessor_id == accessor => {
                        tokens.insert(t.accessor_id.clone(), t);
                    }
                    _ => unreadable += 1,
                }
            } else if key == BOOTSTRAP_KEY {
                match serde_json::from_slice::<BootstrapRecord>(value) {
                    Ok(b) => bootstrap = Some(b),
                    Err(_) => unreadable += 1,
                }
            }
        }
        let mut parsed: HashMap<&str, Rules> = HashMap::new();
        for p in policies.values() {
            match rules::parse(&p.rules) {
                Ok(r) => {
                    parsed.insert(p.id.as_str(), r);
                }
                Err(_) => unreadable += 1,
            }
        }
        let authorizer = |t: &TokenRecord| {
            if t.policies.iter().any(|p| p == MANAGEMENT_POLICY_ID) {
                return Authorizer::management();
            }
            Authorizer::new(
                t.policies.iter().filter_map(|p| parsed.get(p.as_str())),
                default,
            )
        };
        let anonymous = Arc::new(
            tokens
                .get(ANONYMOUS_ACCESSOR)
                .map_or_else(|| Authorizer::new([], default), &authorizer),
        );
        let mut by_secret = HashMap::new();
        let mut authorizers = HashMap::new();
        for t in tokens.values() {
            by_secret.insert(t.secret_hash.clone(), t.accessor_id.clone());
            authorizers.insert(t.accessor_id.clone(), Arc::new(authorizer(t)));
        }
        AclState {
            policies,
            tokens,
            by_secret,
            authorizers,
            anonymous,
            bootstrap,
            unreadable,
        }
    }

    /// Who presents `secret` (`None`, an unknown secret and
    /// [`ANONYMOUS_SECRET`] are the anonymous token).
    pub fn resolve(&self, secret: Option<&str>) -> Resolved {
        let found = secret
            .filter(|s| !s.is_empty() && *s != ANONYMOUS_SECRET)
            .and_then(|s| self.by_secret.get(&secret_hash(s)))
            .and_then(|a| Some((a, self.authorizers.get(a)?)));
        match found {
            Some((accessor, authz)) => Resolved {
                accessor_id: accessor.clone(),
                authz: authz.clone(),
            },
            None => Resolved {
                accessor_id: ANONYMOUS_ACCESSOR.to_string(),
                authz: self.anonymous.clone(),
            },
        }
    }

    /// Whether a secret belongs to a known token (not the anonymous one).
    pub fn knows_secret(&self, secret: &str) -> bool {
        self.by_secret.contains_key(&secret_hash(secret))
    }

    /// Policy `id`.
    pub fn policy(&self, id: &str) -> Option<&PolicyRecord> {
        self.policies.get(id)
    }

    /// The policy named `name`.
    pub fn policy_named(&self, name: &str) -> Option<&PolicyRecord> {
        self.policies.values().find(|p| p.name == name)
    }

    /// Every policy, by ID.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyRecord> {
        self.policies.values()
    }

    /// Token `accessor`.
    pub fn token(&self, accessor: &str) -> Option<&TokenRecord> {
        self.tokens.get(accessor)
    }

    /// Every token, by accessor.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// The bootstrap marker, once a bootstrap happened (anywhere).
    pub fn bootstrap(&self) -> Option<&BootstrapRecord> {
        self.bootstrap.as_ref()
    }
}

/// Whether `key` is in the reserved namespace (not a client's key).
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<T: Serialize>(key: String, v: &T) -> (String, Vec<u8>) {
        (key, serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn tokens_resolve_by_secret_to_their_policies() {
        let app = PolicyRecord {
            id: "p1".into(),
            name: "app".into(),
            description: String::new(),
            rules: "key_prefix \"app/\" { policy = \"write\" }".into(),
            create_ms: 1,
        };
        let t = TokenRecord {
            accessor_id: "a1".into(),
            secret_hash: secret_hash("s3cret"),
            description: String::new(),
            policies: vec!["p1".into(), "gone".into()],
            create_ms: 1,
        };
        let m = TokenRecord {
            accessor_id: "a2".into(),
            secret_hash: secret_hash("root"),
            description: String::new(),
            policies: vec![MANAGEMENT_POLICY_ID.into()],
            create_ms: 1,
        };
        let entries = [
            entry(policy_key("p1"), &app),
            entry(token_key("a1"), &t),
            entry(token_key("a2"), &m),
            (token_key("a3"), b"not json".to_vec()),
        ];
        let s = AclState::build(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            Access::Deny,
        );
        assert_eq!(s.unreadable, 1);
        let r = s.resolve(Some("s3cret"));
        assert_eq!(r.accessor_id, "a1");
        assert!(r.authz.key_write("app/x") && !r.authz.key_read("other"));
        assert!(s.resolve(Some("root")).authz.is_management());
        for unknown in [None, Some("nope"), Some(""), Some(ANONYMOUS_SECRET)] {
            let r = s.resolve(unknown);
            assert_eq!(r.accessor_id, ANONYMOUS_ACCESSOR);
            assert!(!r.authz.key_read("app/x"));
        }
        // The secret itself is nowhere in the stored record.
        assert!(!String::from_utf8_lossy(&entries[1].1).contains("s3cret"));
    }
}
