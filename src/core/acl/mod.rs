//! `acl`: access control as decisions, with no IO: Consul's rule language
//! ([`rules`]), the authorizer one token's policies make ([`authorizer`]),
//! and the replicated policy and token records with the state a node
//! builds from them ([`records`]). The API resolves a request's token here
//! and asks the authorizer; IDs, secrets and times come in as arguments.

pub mod authorizer;
pub mod records;
pub mod rules;

pub use authorizer::Authorizer;
pub use records::{AclState, PolicyRecord, Resolved, TokenRecord};
pub use rules::{Access, RuleError, Rules};
