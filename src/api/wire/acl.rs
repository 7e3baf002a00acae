//! `api::wire::acl`: the documents of Consul's ACL endpoints (`/v1/acl/*`)
//! in Consul's `PascalCase` shapes: policies, tokens and the links between
//! them, as the server answers and the CLI reads them, and the requests
//! that create or change them.

use serde::{Deserialize, Serialize};

/// A policy (`GET /v1/acl/policy/<id>`, and the answer to a create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclPolicy {
    /// Its ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The rules, in Consul's HCL or JSON.
    pub rules: String,
    /// When it was created (RFC 3339).
    pub create_time: String,
}

/// A policy in a list (`GET /v1/acl/policies`): without its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclPolicyStub {
    /// Its ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// `PUT /v1/acl/policy[/<id>]`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclPolicyRequest {
    /// Must match the path's ID when given on an update.
    #[serde(rename = "ID")]
    pub id: String,
    /// Required, unique.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The rules.
    pub rules: String,
}

/// A token's link to a policy: by ID, or by name in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclPolicyLink {
    /// The policy's ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// The policy's name.
    pub name: String,
}

/// A token (`GET /v1/acl/token/<accessor>`, the answer to a create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclToken {
    /// Its public ID.
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    /// The secret: only in the answer that created it; `<hidden>` after
    /// (Meridian keeps only its hash).
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    /// Free text.
    pub description: String,
    /// Its policies.
    pub policies: Vec<AclPolicyLink>,
    /// Always false: every token is valid in every region.
    pub local: bool,
    /// When it was created (RFC 3339).
    pub create_time: String,
}

/// `PUT /v1/acl/token[/<accessor>]`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclTokenRequest {
    /// Chosen by the client on a create (else generated); must match the
    /// path on an update.
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    /// Chosen by the client on a create (else generated).
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    /// Free text.
    pub description: String,
    /// Policies by ID or by name.
    pub policies: Vec<AclPolicyLink>,
    /// Refused when true: Meridian has no region-local tokens.
    pub local: bool,
}

/// The secret shown for a token after its creation.
pub const SECRET_HIDDEN: &str = "<hidden>";
