//! Who calls the HTTP API, and in which role.
//!
//! Roles (see `api::routes` for which route needs which):
//! - `ingress`: an agent platform sending hooks and `/v1/evaluate`;
//! - `auditor`: reads receipts, keys and sessions, and verifies sessions;
//! - `approver`: resolves approvals (of their groups) and deferrals, and
//!   supplies session evidence;
//! - `admin`: everything an auditor and an approver may do, plus policies,
//!   tokens and plugins. Admin does not imply ingress: decisions are asked
//!   for by agent platforms only, so a receipt's caller is never a person.
//!
//! A bearer credential is, in the order tried: an API token (`arb_…`, see
//! [`crate::tokens`]), a bootstrap token read from a file at start
//! (`admin.token`, `ingress.token`, `approvers/<identity>.token`), or, when
//! `[auth.oidc]` is configured, an OIDC JWT whose role claim maps to roles.
//!
//! Every credential is scoped to one tenant (see [`crate::tenants`]), except
//! the bootstrap `admin.token` and `ingress.token`, which are deployment-wide:
//! the operator's own credentials, that create the tenants' tokens.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::credentials::Token;
use crate::jwks::Jwks;
use crate::tokens::TokenStore;

/// A role of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Agent platforms: hooks and evaluate.
    Ingress,
    /// Read-only review: receipts, keys, sessions, verification.
    Auditor,
    /// Approvals, deferrals and session evidence.
    Approver,
    /// Everything but ingress.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 4] = [Role::Ingress, Role::Auditor, Role::Approver, Role::Admin];

    /// Whether holding `self` is enough for a route that needs `required`.
    pub fn grants(self, required: Role) -> bool {
        self == required || (self == Role::Admin && matches!(required, Role::Auditor | Role::Approver))
    }

    /// Lower-case name, as in config and token records.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Auditor => "auditor",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (ingress, auditor, approver, admin)"))
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Recorded as the resolver of what they approve, deny or supply.
    pub identity: String,
    /// Their roles (OIDC may map one person to several).
    pub roles: Vec<Role>,
    /// Approver groups (the `@approvers` of policies) they decide for.
    pub groups: Vec<String>,
    /// The tenant they act in; `None`: every tenant (the bootstrap admin and
    /// ingress tokens only).
    pub tenant: Option<String>,
}

impl Caller {
    /// Whether the caller may see what belongs to `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// Whether one of the caller's roles grants `required`.
    pub fn may(&self, required: Role) -> bool {
        self.roles.iter().any(|r| r.grants(required))
    }

    /// Admins resolve any approval; approvers only those of their groups.
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    Some(token.trim()).filter(|t| scheme.eq_ignore_ascii_case("bearer") && !t.is_empty())
}

/// `[auth.oidc]`: single sign-on with bearer JWTs from an OpenID Connect
/// provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Expected `iss`, exactly.
    pub issuer: String,
    /// Expected `aud` (one of the token's audiences).
    pub audience: String,
    /// The provider's JWKS URL (https; http only to a loopback address).
    pub jwks_url: String,
    /// Accepted signature algorithms (public-key only). Default = `["RS256"]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim naming the person, recorded as the resolver in receipts.
    /// Default = `sub`. Dotted paths reach into objects.
    #[serde(default = "default_identity_claim")]
    pub identity_claim: String,
    /// Claim holding role values (a string or an array of strings).
    /// Default = `roles`. Dotted paths reach into objects
    /// (`realm_access.roles`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim value → Arbiter role (`admin`, `approver` or `auditor`). Values
    /// not listed give no role; a token with no mapped role gets 403.
    pub roles: BTreeMap<String, Role>,
    /// Claim whose values are the approver groups (the `@approvers` of
    /// policies) of an approver. Default: none (such approvers resolve only
    /// approvals that name no group).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Claim naming the caller's tenant (a configured tenant id, or
    /// `default`); a token without a known tenant is refused. Default: none,
    /// and every SSO caller acts in the tenant `default`.
    #[serde(default)]
    pub tenant_claim: Option<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}
fn default_identity_claim() -> String {
    "sub".to_owned()
}
fn default_role_claim() -> String {
    "roles".to_owned()
}

/// Longest identity taken from a JWT claim.
const MAX_IDENTITY: usize = 256;

/// Most approver groups taken from a JWT claim.
const MAX_GROUPS: usize = 64;

/// The OIDC verifier.
pub struct Oidc {
    config: OidcConfig,
    tenants: crate::tenants::Tenancy,
    validation: Validation,
    jwks: Jwks,
}

impl Oidc {
    /// Check the config and prepare the key cache (nothing fetched yet).
    pub fn new(config: &OidcConfig, tenants: &crate::tenants::Tenancy) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.issuer.is_empty() && !config.audience.is_empty(), "issuer and audience are required");
        anyhow::ensure!(!config.roles.is_empty(), "`roles` must map at least one claim value to a role");
        if let Some((value, _)) = config.roles.iter().find(|(_, r)| **r == Role::Ingress) {
            anyhow::bail!("claim value `{value}` maps to `ingress`; SSO grants admin, approver or auditor only");
        }
        let algorithms = crate::jwks::asymmetric(&config.algorithms)?;
        let mut validation = Validation::new(algorithms.first().copied().unwrap_or(jsonwebtoken::Algorithm::RS256));
        validation.algorithms = algorithms;
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 60;
        Ok(Self { config: config.clone(), tenants: tenants.clone(), validation, jwks: Jwks::new(&config.jwks_url)? })
    }

    /// Verify a JWT and map it to a caller. `Err` is logged, never shown.
    async fn caller(&self, token: &str) -> Result<Caller, String> {
        let claims: Map<String, Value> = self.jwks.decode(token, &self.validation).await.map_err(|e| e.to_string())?;
        let identity = claim(&claims, &self.config.identity_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= MAX_IDENTITY && !s.chars().any(char::is_control))
            .ok_or_else(|| format!("no usable `{}` claim", self.config.identity_claim))?
            .to_owned();
        let mut roles: Vec<Role> = strings(claim(&claims, &self.config.role_claim))
            .filter_map(|v| self.config.roles.get(v))
            .copied()
            .collect();
        roles.sort();
        roles.dedup();
        let groups = match &self.config.groups_claim {
            Some(c) => strings(claim(&claims, c))
                .filter(|g| crate::tokens::valid_name(g))
                .take(MAX_GROUPS)
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        let tenant = match &self.config.tenant_claim {
            None => crate::tenants::DEFAULT.to_owned(),
            Some(c) => claim(&claims, c)
                .and_then(Value::as_str)
                .filter(|t| self.tenants.exists(t))
                .ok_or_else(|| format!("no `{c}` claim naming a tenant of this deployment"))?
                .to_owned(),
        };
        Ok(Caller { identity, roles, groups, tenant: Some(tenant) })
    }
}

fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, p| v.get(p))
}

/// A claim's string values: a string, or the strings of an array.
fn strings(v: Option<&Value>) -> impl Iterator<Item = &str> {
    let items: Vec<&str> = match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    items.into_iter()
}

/// One bootstrap approver from config.
#[derive(Debug)]
pub struct BootstrapApprover {
    /// Their identity.
    pub identity: String,
    /// Their token.
    pub token: Token,
    /// Their approver groups.
    pub groups: Vec<String>,
    /// Their tenant.
    pub tenant: String,
}

/// Why a request has no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No bearer token.
    Missing,
    /// A bearer token no credential source accepts.
    Invalid,
}

/// Every credential source of the API.
pub struct Authenticator {
    ingress: Token,
    admin: Token,
    approvers: Vec<BootstrapApprover>,
    tokens: Arc<TokenStore>,
    oidc: Option<Oidc>,
}

impl Authenticator {
    /// The sources: bootstrap tokens, API tokens, and optionally OIDC.
    pub fn new(
        ingress: Token,
        admin: Token,
        approvers: Vec<BootstrapApprover>,
        tokens: Arc<TokenStore>,
        oidc: Option<Oidc>,
    ) -> Self {
        Self { ingress, admin, approvers, tokens, oidc }
    }

    /// The API tokens (for the token routes).
    pub fn tokens(&self) -> &Arc<TokenStore> {
        &self.tokens
    }

    /// Fetch the OIDC keys ahead of the first call.
    pub async fn warm(&self) {
        if let Some(o) = &self.oidc {
            o.jwks.warm().await;
        }
    }

    /// The caller of a request.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, Unauthenticated> {
        let presented = bearer(headers).ok_or(Unauthenticated::Missing)?;
        if presented.starts_with(crate::tokens::PREFIX)
            && let Some(caller) = self.tokens.authenticate(presented)
        {
            return Ok(caller);
        }
        let bootstrap = |identity: &str, role| Caller {
            identity: identity.to_owned(),
            roles: vec![role],
            groups: vec![],
            tenant: None,
        };
        // Every bootstrap token is compared (constant time each), so which
        // one matched does not show in the timing.
        let admin = self.admin.matches(presented);
        let ingress = self.ingress.matches(presented);
        let approver =
            self.approvers.iter().fold(None, |found, a| if a.token.matches(presented) { Some(a) } else { found });
        if admin {
            return Ok(bootstrap("admin", Role::Admin));
        }
        if ingress {
            return Ok(bootstrap("ingress", Role::Ingress));
        }
        if let Some(a) = approver {
            return Ok(Caller {
                identity: a.identity.clone(),
                roles: vec![Role::Approver],
                groups: a.groups.clone(),
                tenant: Some(a.tenant.clone()),
            });
        }
        if let Some(oidc) = &self.oidc
            && presented.bytes().filter(|b| *b == b'.').count() == 2
        {
            return oidc.caller(presented).await.map_err(|e| {
                tracing::warn!(error = %e, "OIDC token refused");
                Unauthenticated::Invalid
            });
        }
        Err(Unauthenticated::Invalid)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    // Admin implies auditor and approver, never ingress; nothing else implies.
    fn role_matrix() {
        use Role::*;
        let granted: Vec<(Role, Role)> = Role::ALL
            .into_iter()
            .flat_map(|held| Role::ALL.into_iter().map(move |req| (held, req)))
            .filter(|(held, req)| held.grants(*req))
            .collect();
        assert_eq!(
            granted,
            vec![
                (Ingress, Ingress),
                (Auditor, Auditor),
                (Approver, Approver),
                (Admin, Auditor),
                (Admin, Approver),
                (Admin, Admin)
            ]
        );
    }

    #[test]
    // Claims are read by dotted path; a role claim may be a string or a list.
    fn claims_by_path() {
        let c = json!({"sub": "u1", "realm_access": {"roles": ["a", "b", 3]}, "role": "x"});
        let c = c.as_object().unwrap();
        assert_eq!(claim(c, "sub"), Some(&json!("u1")));
        assert_eq!(strings(claim(c, "realm_access.roles")).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(strings(claim(c, "role")).collect::<Vec<_>>(), ["x"]);
        assert_eq!(strings(claim(c, "missing.path")).count(), 0);
    }

    #[test]
    // SSO cannot grant ingress, and needs a mapping.
    fn oidc_config_is_checked() {
        let mut config = OidcConfig {
            issuer: "https://idp.example/".to_owned(),
            audience: "arbiter".to_owned(),
            jwks_url: "https://idp.example/jwks".to_owned(),
            algorithms: default_algorithms(),
            identity_claim: default_identity_claim(),
            role_claim: default_role_claim(),
            roles: BTreeMap::from([("arbiter-admins".to_owned(), Role::Admin)]),
            groups_claim: None,
            tenant_claim: None,
        };
        let tenants = crate::tenants::Tenancy::single();
        assert!(Oidc::new(&config, &tenants).is_ok());
        config.roles.insert("bots".to_owned(), Role::Ingress);
        assert!(Oidc::new(&config, &tenants).is_err());
        config.roles.clear();
        assert!(Oidc::new(&config, &tenants).is_err());
    }
}
