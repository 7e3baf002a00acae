//! ACL rules: Consul's rule language, in its HCL and its JSON form, parsed
//! into [`Rules`].
//!
//! ```hcl
//! key_prefix "" { policy = "read" }
//! key_prefix "app/" { policy = "write" }
//! key "app/secret" { policy = "deny" }
//! operator = "read"
//! acl = "write"
//! ```
//!
//! is the same as `{"key_prefix": {"": {"policy": "read"}, "app/":
//! {"policy": "write"}}, "key": {"app/secret": {"policy": "deny"}},
//! "operator": "read", "acl": "write"}`. Meridian acts on `key`,
//! `key_prefix`, `operator` and `acl`; rules for the resources Consul has
//! and Meridian does not (`node`, `service`, `session`, ...) are accepted,
//! listed in [`Rules::ignored`], and grant nothing. Anything else is an
//! error that names it. Bounded: [`RULES_BYTES_MAX`] of text,
//! [`RULES_MAX`] rules.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest rules text.
pub const RULES_BYTES_MAX: usize = 64 * 1024;
/// Most rules in one policy.
pub const RULES_MAX: usize = 1_024;

/// What a rule grants, from least to most: `deny` < `list` (key names,
/// `?keys`) < `read` (values too) < `write` (and changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Nothing.
    Deny,
    /// Key names only.
    List,
    /// Read.
    Read,
    /// Read and write.
    Write,
}

impl Access {
    /// Two rules for the same resource (from two policies of one token):
    /// `deny` wins, else the more permissive one.
    pub fn combine(self, other: Access) -> Access {
        if self == Access::Deny || other == Access::Deny {
            Access::Deny
        } else {
            self.max(other)
        }
    }

    fn parse(s: &str) -> Option<Access> {
        Some(match s {
            "deny" => Access::Deny,
            "list" => Access::List,
            "read" => Access::Read,
            "write" => Access::Write,
            _ => return None,
        })
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Deny => "deny",
            Access::List => "list",
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// One `key` or `key_prefix` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    /// The key (exact) or the prefix.
    pub segment: String,
    /// `key_prefix` (true) or `key` (false).
    pub prefix: bool,
    /// What it grants.
    pub access: Access,
}

/// A policy's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `key` and `key_prefix` rules, in the order written.
    pub keys: Vec<KeyRule>,
    /// `operator = "..."`: Meridian's own endpoints (read: status,
    /// digests, metrics, events; write: also backups, restore, promote).
    pub operator: Option<Access>,
    /// `acl = "..."`: the ACL endpoints (read: list and read; write: change).
    pub acl: Option<Access>,
    /// Consul resources written here that Meridian does not have.
    pub ignored: Vec<String>,
}

/// Why rules text was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// Longer than [`RULES_BYTES_MAX`].
    #[error("the rules are {bytes} bytes, more than {max}")]
    TooLong {
        /// The text's length.
        bytes: usize,
        /// [`RULES_BYTES_MAX`].
        max: usize,
    },
    /// More than [`RULES_MAX`] rules.
    #[error("more than {max} rules")]
    TooMany {
        /// [`RULES_MAX`].
        max: usize,
    },
    /// Not HCL, or not JSON (text starting with `{`).
    #[error("the rules do not parse: {0}")]
    Syntax(String),
    /// A resource neither Meridian nor Consul has.
    #[error("unknown resource {0:?} (Meridian acts on key, key_prefix, operator and acl)")]
    UnknownResource(String),
    /// A policy other than deny, list, read or write (or a rule not shaped
    /// as Consul's).
    #[error("{resource}: {reason}")]
    Invalid {
        /// The resource (and segment).
        resource: String,
        /// What is wrong.
        reason: String,
    },
}

/// Consul's resources Meridian does not have: accepted, granting nothing.
const CONSUL_ONLY: &[&str] = &[
    "agent",
    "agent_prefix",
    "event",
    "event_prefix",
    "identity",
    "identity_prefix",
    "keyring",
    "mesh",
    "namespace",
    "namespace_prefix",
    "node",
    "node_prefix",
    "partition",
    "partition_prefix",
    "peering",
    "query",
    "query_prefix",
    "service",
    "service_prefix",
    "session",
    "session_prefix",
];

/// Parses rules in Consul's HCL, or in its JSON form (text whose first
/// non-blank character is `{`). Empty text is no rules.
pub fn parse(text: &str) -> Result<Rules, RuleError> {
    if text.len() > RULES_BYTES_MAX {
        return Err(RuleError::TooLong {
            bytes: text.len(),
            max: RULES_BYTES_MAX,
        });
    }
    let mut rules = Rules::default();
    if text.trim().is_empty() {
        return Ok(rules);
    }
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| RuleError::Syntax(e.to_string()))?
    } else {
        hcl::from_str(text).map_err(|e| RuleError::Syntax(e.to_string()))?
    };
    let serde_json::Value::Object(top) = value else {
        return Err(RuleError::Syntax("the rules are not an object".into()));
    };
    for (resource, body) in top {
        match resource.as_str() {
            "key" | "key_prefix" => {
                let prefix = resource == "key_prefix";
                let serde_json::Value::Object(segments) = body else {
                    return Err(invalid(
                        &resource,
                        "expected `key \"name\" { policy = ... }`",
                    ));
                };
                for (segment, rule) in segments {
                    // HCL gives a list when the same block is written twice.
                    let each = match rule {
                        serde_json::Value::Array(items) => items,
                        one => vec![one],
                    };
                    for rule in each {
                        let access = block_policy(&resource, &segment, &rule)?;
                        if rules.keys.len() == RULES_MAX {
                            return Err(RuleError::TooMany { max: RULES_MAX });
                        }
                        rules.keys.push(KeyRule {
                            segment: segment.clone(),
                            prefix,
                            access,
                        });
                    }
                }
            }
            "operator" | "acl" => {
                let access = body
                    .as_str()
                    .and_then(Access::parse)
                    .filter(|a| *a != Access::List)
                    .ok_or_else(|| {
                        invalid(&resource, "expected = \"read\", \"write\" or \"deny\"")
                    })?;
                let slot = if resource == "operator" {
                    &mut rules.operator
                } else {
                    &mut rules.acl
                };
                *slot = Some(slot.map_or(access, |a| a.combine(access)));
            }
            other if CONSUL_ONLY.contains(&other) => {
                if !rules.ignored.iter().any(|i| i == other) {
                    rules.ignored.push(other.to_string());
                }
            }
            other => return Err(RuleError::UnknownResource(other.to_string())),
        }
    }
    Ok(rules)
}

fn block_policy(
    resource: &str,
    segment: &str,
    rule: &serde_json::Value,
) -> Result<Access, RuleError> {
    let name = format!("{resource} {segment:?}");
    let serde_json::Value::Object(fields) = rule else {
        return Err(invalid(&name, "expected { policy = \"...\" }"));
    };
    if let Some(other) = fields.keys().find(|k| *k != "policy") {
        return Err(invalid(&name, &format!("unknown field {other:?}")));
    }
    let policy = fields
        .get("policy")
        .ok_or_else(|| invalid(&name, "no policy"))?;
    policy.as_str().and_then(Access::parse).ok_or_else(|| {
        invalid(
            &name,
            "policy must be \"read\", \"list\", \"write\" or \"deny\"",
        )
    })
}

fn invalid(resource: &str, reason: &str) -> RuleError {
    RuleError::Invalid {
        resource: resource.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_forms_parse_alike() {
        let hcl = r#"
            key_prefix "" { policy = "read" }
            key_prefix "app/" {
              policy = "write"
            }
            key "app/secret" { policy = "deny" }
            node_prefix "" { policy = "read" }
            operator = "read"
        "#;
        let json = r#"{"key_prefix": {"": {"policy": "read"}, "app/": {"policy": "write"}},
            "key": {"app/secret": {"policy": "deny"}}, "node_prefix": {"": {"policy": "read"}},
            "operator": "read"}"#;
        let (a, b) = (parse(hcl).unwrap(), parse(json).unwrap());
        let sorted = |r: &Rules| {
            let mut k: Vec<_> = r
                .keys
                .iter()
                .map(|k| (k.segment.clone(), k.prefix, k.access))
                .collect();
            k.sort();
            k
        };
        assert_eq!(sorted(&a), sorted(&b));
        assert_eq!(a.keys.len(), 3);
        assert_eq!((a.operator, a.acl), (Some(Access::Read), None));
        assert_eq!(a.ignored, ["node_prefix"]);
        assert_eq!(parse("").unwrap(), Rules::default());
    }

    #[test]
    fn the_same_block_twice_keeps_both() {
        let r = parse(
            "key_prefix \"a/\" { policy = \"write\" }\nkey_prefix \"a/\" { policy = \"deny\" }",
        )
        .unwrap();
        assert_eq!(r.keys.len(), 2);
    }

    #[test]
    fn bad_rules_name_what_is_wrong() {
        for (text, word) in [
            ("key \"a\" { policy = \"admin\" }", "policy must be"),
            ("kee \"a\" { policy = \"read\" }", "kee"),
            (
                "key \"a\" {\n policy = \"read\"\n colour = \"red\"\n}",
                "colour",
            ),
            ("operator = \"list\"", "operator"),
            ("key \"a\" {", "parse"),
            ("{\"key\": 3}", "key"),
            ("[1]", "parse"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(word), "{text}: {e}");
        }
        let long = "#".repeat(RULES_BYTES_MAX + 1);
        assert!(matches!(parse(&long), Err(RuleError::TooLong { .. })));
    }
}
