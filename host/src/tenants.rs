//! Tenants: who owns integrations, policies, sessions, receipts, approvals,
//! deferrals and credentials.
//!
//! Without `[tenants.*]` in config everything belongs to the single tenant
//! `default` and nothing changes: session ids are stored as the vendor sent
//! them. With tenants configured:
//! - an integration belongs to exactly one tenant (those no tenant lists
//!   belong to `default`), and a hook's tenant is its integration's, never
//!   anything the payload says;
//! - every session id is stored namespaced, `<tenant>:<session>`, so the same
//!   vendor session id in two tenants is two sessions that never share
//!   context, holds or approvals. Receipts, the review API and the session
//!   routes use that stored form;
//! - each tenant decides with its own policy pack;
//! - credentials are scoped to one tenant; only the bootstrap `admin.token`
//!   and `ingress.token` are deployment-wide.
//!
//! The receipt chain (and the key that signs it) stays one per deployment:
//! every receipt names its tenant in a signed member, and isolation is in
//! who may read, not in separate logs, so one append-only log (and one
//! transparency tree over it) covers every tenant.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

/// The tenant of everything when none is configured, and of integrations,
/// credentials and old records that name none.
pub const DEFAULT: &str = "default";

/// Longest tenant id.
pub const MAX_ID: usize = 32;

/// Longest stored session id (the canonical action schema's bound).
const MAX_SESSION: usize = 256;

/// Whether `id` is a valid tenant id: `[a-z0-9_-]`, 1 to 32 characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The tenants of a deployment, from config.
#[derive(Debug, Clone)]
pub struct Tenancy {
    /// Tenant id → display name; always holds `default`.
    names: BTreeMap<String, String>,
    /// Integration → tenant, for integrations a tenant lists.
    integrations: HashMap<String, String>,
}

impl Default for Tenancy {
    fn default() -> Self {
        Self::single()
    }
}

impl Tenancy {
    /// Only the default tenant.
    pub fn single() -> Self {
        Self { names: BTreeMap::from([(DEFAULT.to_owned(), DEFAULT.to_owned())]), integrations: HashMap::new() }
    }

    /// The tenants of a (validated) config.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let mut tenancy = Self::single();
        for (id, tenant) in &config.tenants {
            tenancy.names.insert(id.clone(), tenant.name.clone().unwrap_or_else(|| id.clone()));
            for integration in &tenant.integrations {
                tenancy.integrations.insert(integration.clone(), id.clone());
            }
        }
        tenancy
    }

    /// Whether tenants other than `default` are configured.
    pub fn is_multi(&self) -> bool {
        self.names.len() > 1
    }

    /// Whether `id` is a tenant of this deployment.
    pub fn exists(&self, id: &str) -> bool {
        self.names.contains_key(id)
    }

    /// Every tenant id, `default` included, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// The display name of a tenant.
    pub fn name(&self, id: &str) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// The tenant an integration belongs to.
    pub fn of_integration(&self, integration: &str) -> &str {
        self.integrations.get(integration).map_or(DEFAULT, String::as_str)
    }

    /// The stored id of a vendor's session in `tenant`: unchanged with a
    /// single tenant, else `<tenant>:<session>` (a session id too long for
    /// that is replaced by its digest, so the stored id stays within the
    /// schema's 256 bytes and still names one session).
    pub fn session_key(&self, tenant: &str, session: &str) -> String {
        if !self.is_multi() {
            return session.to_owned();
        }
        let key = format!("{tenant}:{session}");
        if key.len() <= MAX_SESSION {
            key
        } else {
            format!("{tenant}:sha256-{}", hex::encode(Sha256::digest(session.as_bytes())))
        }
    }

    /// The tenant a stored session id belongs to. A stored id without a
    /// tenant prefix (written before tenants were configured) is `default`'s.
    pub fn of_session<'a>(&'a self, key: &str) -> &'a str {
        if !self.is_multi() {
            return DEFAULT;
        }
        key.split_once(':')
            .and_then(|(prefix, _)| self.names.get_key_value(prefix))
            .map_or(DEFAULT, |(id, _)| id.as_str())
    }
}

/// The tenant a stored record (a receipt, a pack, a hold) names; records
/// written before tenants existed name none and are `default`'s.
pub fn of_record(record: &serde_json::Value) -> &str {
    record.get("tenant").and_then(serde_json::Value::as_str).unwrap_or(DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Tenancy {
        let mut t = Tenancy::single();
        t.names.insert("acme".to_owned(), "Acme".to_owned());
        t.integrations.insert("acme-claude".to_owned(), "acme".to_owned());
        t
    }

    #[test]
    // A single tenant stores sessions as sent; several namespace them, and
    // the namespace is read back, a legacy id being `default`'s.
    fn session_keys() {
        let single = Tenancy::single();
        assert_eq!(single.session_key(DEFAULT, "s1"), "s1");
        assert_eq!(single.of_session("acme:s1"), DEFAULT);
        let t = two();
        assert_eq!(t.session_key("acme", "s1"), "acme:s1");
        assert_eq!(t.session_key(DEFAULT, "s1"), "default:s1");
        assert_ne!(t.session_key("acme", "s1"), t.session_key(DEFAULT, "s1"));
        assert_eq!(t.of_session("acme:s1"), "acme");
        assert_eq!(t.of_session("default:acme:s1"), DEFAULT);
        assert_eq!(t.of_session("legacy"), DEFAULT);
        assert_eq!(t.of_session("other:s1"), DEFAULT);
        let long = "x".repeat(256);
        let key = t.session_key("acme", &long);
        assert!(key.len() <= MAX_SESSION && key.starts_with("acme:sha256-"));
        assert_eq!(t.of_session(&key), "acme");
    }

    #[test]
    // Integrations no tenant lists are `default`'s; ids are checked.
    fn integrations_and_ids() {
        let t = two();
        assert_eq!(t.of_integration("acme-claude"), "acme");
        assert_eq!(t.of_integration("claude-code"), DEFAULT);
        assert!(valid_id("acme-1_x") && !valid_id("Acme") && !valid_id("") && !valid_id("a:b"));
        assert!(!valid_id(&"a".repeat(33)));
        assert_eq!(of_record(&serde_json::json!({})), DEFAULT);
        assert_eq!(of_record(&serde_json::json!({"tenant": "acme"})), "acme");
    }
}
