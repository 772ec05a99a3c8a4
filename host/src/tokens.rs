//! API tokens made at run time (`arbiter token create`, `POST /v1/tokens`),
//! next to the bootstrap tokens read from files at start.
//!
//! A token is `arb_<id>_<secret>`: the id (12 hex digits) is public and
//! names the record; the secret (32 random bytes, base64url) is shown once,
//! at creation, and only its SHA-256 digest is stored. Lookup is by id and the
//! digest is compared in constant time, so timing tells nothing about the
//! secret. A plain SHA-256 suffices (no slow password hash) because the
//! secret is 256 random bits, not something a person chose.
//!
//! Records live in the store's `tokens` partition (fsynced on every change)
//! and in memory; the server owns both, which is why the CLI manages tokens
//! through the running server's admin API: a created token works and a
//! revoked one fails from the next request, with no restart and no second
//! process opening the store.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::auth::{Caller, Role};
use crate::model::format_rfc3339;
use crate::store::{Store, StoreError};

/// Prefix of every API token; tells it apart from a bootstrap token or a JWT.
pub const PREFIX: &str = "arb_";

/// Length of a token id in hex digits (48 random bits: ids are not secret,
/// they only need to be unique, and creation checks that).
const ID_HEX: usize = 12;

/// Most tokens kept (revoked ones included), so the table stays small.
const MAX_TOKENS: usize = 10_000;

/// Errors of token management.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad input (name, groups, expiry).
    #[error("{0}")]
    Invalid(String),
    /// No token with that id.
    #[error("no token `{0}`")]
    NotFound(String),
    /// The table is full.
    #[error("at most {MAX_TOKENS} tokens may exist; revoke and prune old ones")]
    Full,
    /// The store refused the write; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token as stored and listed (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id (the `<id>` of `arb_<id>_<secret>`).
    pub id: String,
    /// Who or what holds it; the identity recorded when it resolves an
    /// approval (default `token:<id>`).
    pub name: Option<String>,
    /// Its role.
    pub role: Role,
    /// Approver groups (approver tokens only).
    #[serde(default)]
    pub groups: Vec<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 expiry, if any.
    pub expires_at: Option<String>,
    /// RFC 3339 revocation time, once revoked.
    pub revoked_at: Option<String>,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    /// The tenant it acts in (records made before tenants: `default`).
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

fn default_tenant() -> String {
    crate::tenants::DEFAULT.to_owned()
}

/// What to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Role of the token.
    pub role: Role,
    /// Optional name (`[A-Za-z0-9@._+-]`, at most 128).
    #[serde(default)]
    pub name: Option<String>,
    /// Approver groups (approver tokens only).
    #[serde(default)]
    pub groups: Vec<String>,
    /// RFC 3339 expiry; must be in the future.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The tenant it acts in (checked by the caller against config).
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

struct Entry {
    record: TokenRecord,
    digest: [u8; 32],
    expires: Option<OffsetDateTime>,
    /// Unix millis of the last accepted use since start (0: none).
    last_used: AtomicU64,
}

/// The API tokens, in memory and in the store.
pub struct TokenStore {
    store: Store,
    by_id: RwLock<HashMap<String, Entry>>,
}

fn parse_time(field: &str, s: &str) -> Result<OffsetDateTime, TokenError> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| TokenError::Invalid(format!("`{field}` must be an RFC 3339 time, not `{s}`")))
}

fn entry(record: TokenRecord) -> Result<Entry, TokenError> {
    let digest: [u8; 32] = hex::decode(&record.sha256)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| TokenError::Store(StoreError::Corrupt(format!("token `{}` has a bad digest", record.id))))?;
    let expires = record.expires_at.as_deref().map(|e| parse_time("expires_at", e)).transpose()?;
    Ok(Entry { record, digest, expires, last_used: AtomicU64::new(0) })
}

/// A name or group: what config allows for approver identities.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._-+".contains(&b))
}

impl TokenStore {
    /// Load every record from `store`.
    pub fn load(store: Store) -> Result<Self, TokenError> {
        let mut by_id = HashMap::new();
        for value in store.tokens()? {
            let record: TokenRecord =
                serde_json::from_value(value).map_err(|e| StoreError::Corrupt(format!("token record: {e}")))?;
            by_id.insert(record.id.clone(), entry(record)?);
        }
        Ok(Self { store, by_id: RwLock::new(by_id) })
    }

    /// The caller `presented` names, if it is a live API token (known id,
    /// matching secret, not revoked, not expired).
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let (id, secret) = presented.strip_prefix(PREFIX)?.split_once('_')?;
        let by_id = self.by_id.read().ok()?;
        let e = by_id.get(id)?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if !bool::from(e.digest.ct_eq(&digest)) {
            return None;
        }
        let now = OffsetDateTime::now_utc();
        if e.record.revoked_at.is_some() || e.expires.is_some_and(|t| t <= now) {
            return None;
        }
        let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        e.last_used.store(millis, Ordering::Relaxed);
        let identity = e.record.name.clone().unwrap_or_else(|| format!("token:{}", e.record.id));
        Some(Caller {
            identity,
            roles: vec![e.record.role],
            groups: e.record.groups.clone(),
            tenant: Some(e.record.tenant.clone()),
        })
    }

    /// Create a token: the record is durable before the secret is returned.
    /// Blocking (fsync): call off the async runtime.
    pub fn create(&self, new: NewToken) -> Result<(TokenRecord, String), TokenError> {
        if let Some(name) = &new.name
            && !valid_name(name)
        {
            return Err(TokenError::Invalid(format!("name `{name}` must be [A-Za-z0-9@._+-], at most 128")));
        }
        if !new.groups.is_empty() && new.role != Role::Approver {
            return Err(TokenError::Invalid("only approver tokens have groups".to_owned()));
        }
        if let Some(g) = new.groups.iter().find(|g| !valid_name(g)) {
            return Err(TokenError::Invalid(format!("group `{g}` must be [A-Za-z0-9@._+-], at most 128")));
        }
        if new.groups.len() > 64 {
            return Err(TokenError::Invalid("at most 64 groups".to_owned()));
        }
        let now = OffsetDateTime::now_utc();
        let expires_at = match &new.expires_at {
            Some(e) => {
                let t = parse_time("expires_at", e)?;
                if t <= now {
                    return Err(TokenError::Invalid(format!("`expires_at` {e} is in the past")));
                }
                Some(format_rfc3339(t))
            }
            None => None,
        };
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let id = loop {
            let mut bytes = [0u8; ID_HEX / 2];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let id = hex::encode(bytes);
            if !self.read()?.contains_key(&id) {
                break id;
            }
        };
        if self.read()?.len() >= MAX_TOKENS {
            return Err(TokenError::Full);
        }
        let record = TokenRecord {
            id: id.clone(),
            name: new.name,
            role: new.role,
            groups: new.groups,
            created_at: format_rfc3339(now),
            expires_at,
            revoked_at: None,
            sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            tenant: new.tenant,
        };
        self.store.put_token(&id, &to_value(&record)?)?;
        self.write()?.insert(id.clone(), entry(record.clone())?);
        Ok((record, format!("{PREFIX}{id}_{secret}")))
    }

    /// Revoke a token. It fails from the next request on (memory first), and
    /// the revocation is durable when this returns. Revoking twice keeps the
    /// first time. Only a token of `tenant` (any, when `None`) is found.
    /// Blocking (fsync): call off the async runtime.
    pub fn revoke(&self, id: &str, tenant: Option<&str>) -> Result<TokenRecord, TokenError> {
        let record = {
            let mut by_id = self.write()?;
            let e = by_id
                .get_mut(id)
                .filter(|e| tenant.is_none_or(|t| t == e.record.tenant))
                .ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
            if e.record.revoked_at.is_none() {
                e.record.revoked_at = Some(format_rfc3339(OffsetDateTime::now_utc()));
            }
            e.record.clone()
        };
        self.store.put_token(id, &to_value(&record)?)?;
        Ok(record)
    }

    /// Every token of `tenant` (any, when `None`), oldest first, with its
    /// state and last use since start; never a secret nor its digest.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Value>, TokenError> {
        let now = OffsetDateTime::now_utc();
        let by_id = self.read()?;
        let mut entries: Vec<&Entry> = by_id.values().filter(|e| tenant.is_none_or(|t| t == e.record.tenant)).collect();
        entries.sort_by(|a, b| (&a.record.created_at, &a.record.id).cmp(&(&b.record.created_at, &b.record.id)));
        entries
            .into_iter()
            .map(|e| {
                let mut v = to_value(&e.record)?;
                let state = if e.record.revoked_at.is_some() {
                    "revoked"
                } else if e.expires.is_some_and(|t| t <= now) {
                    "expired"
                } else {
                    "active"
                };
                let last = e.last_used.load(Ordering::Relaxed);
                let last_used = i128::from(last)
                    .checked_mul(1_000_000)
                    .filter(|_| last > 0)
                    .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok())
                    .map(format_rfc3339);
                if let Some(o) = v.as_object_mut() {
                    o.remove("sha256");
                    o.insert("state".to_owned(), Value::from(state));
                    o.insert("last_used".to_owned(), last_used.map_or(Value::Null, Value::from));
                }
                Ok(v)
            })
            .collect()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, HashMap<String, Entry>>, TokenError> {
        self.by_id.read().map_err(|_| TokenError::Store(StoreError::Unavailable("the token table is poisoned")))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>>, TokenError> {
        self.by_id.write().map_err(|_| TokenError::Store(StoreError::Unavailable("the token table is poisoned")))
    }
}

fn to_value(record: &TokenRecord) -> Result<Value, TokenError> {
    serde_json::to_value(record).map_err(|e| TokenError::Store(StoreError::Corrupt(e.to_string())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(dir, Arc::new(crate::credentials::ReceiptKey::generate()), 16).unwrap()
    }

    fn new(role: Role) -> NewToken {
        NewToken { role, name: Some("ci".to_owned()), groups: Vec::new(), expires_at: None, tenant: default_tenant() }
    }

    #[test]
    // A created token authenticates; a changed secret, a revoked or an
    // expired token does not; only the digest is stored.
    fn create_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = TokenStore::load(store(dir.path())).unwrap();
        let (record, secret) = tokens.create(new(Role::Auditor)).unwrap();
        assert!(secret.starts_with(&format!("arb_{}_", record.id)));
        let caller = tokens.authenticate(&secret).unwrap();
        assert_eq!((caller.identity.as_str(), caller.roles.as_slice()), ("ci", &[Role::Auditor][..]));
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push(if secret.ends_with('A') { 'B' } else { 'A' });
        assert!(tokens.authenticate(&wrong).is_none());
        assert!(tokens.authenticate(&format!("arb_000000000000_{}", &secret[17..])).is_none());
        let stored = serde_json::to_string(&tokens.store.tokens().unwrap()).unwrap();
        assert!(!stored.contains(&secret[17..]), "the secret itself is never stored");
        let listed = serde_json::to_string(&tokens.list(None).unwrap()).unwrap();
        assert!(!listed.contains(&record.sha256), "the digest is not listed");
        assert!(listed.contains("\"last_used\":\"20"), "{listed}");

        // Another tenant's token is not found, not revoked.
        assert!(matches!(tokens.revoke(&record.id, Some("acme")), Err(TokenError::NotFound(_))));
        assert!(tokens.list(Some("acme")).unwrap().is_empty());
        assert!(tokens.authenticate(&secret).is_some());
        tokens.revoke(&record.id, Some("default")).unwrap();
        assert!(tokens.authenticate(&secret).is_none());
        assert!(matches!(tokens.revoke("nope", None), Err(TokenError::NotFound(_))));
    }

    #[test]
    // Records survive a reopen, revocation included.
    fn records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (live, dead) = {
            let tokens = TokenStore::load(store(dir.path())).unwrap();
            let (_, live) = tokens.create(new(Role::Admin)).unwrap();
            let (dead_record, dead) = tokens.create(new(Role::Ingress)).unwrap();
            tokens.revoke(&dead_record.id, None).unwrap();
            (live, dead)
        };
        let tokens = TokenStore::load(store(dir.path())).unwrap();
        assert!(tokens.authenticate(&live).is_some());
        assert!(tokens.authenticate(&dead).is_none());
    }

    #[test]
    // Bad names, groups on a non-approver token and a past expiry are refused.
    fn bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = TokenStore::load(store(dir.path())).unwrap();
        let bad_name = NewToken { name: Some("a b".to_owned()), ..new(Role::Admin) };
        assert!(matches!(tokens.create(bad_name), Err(TokenError::Invalid(_))));
        let groups = NewToken { groups: vec!["ops".to_owned()], ..new(Role::Auditor) };
        assert!(matches!(tokens.create(groups), Err(TokenError::Invalid(_))));
        let past = NewToken { expires_at: Some("2001-01-01T00:00:00Z".to_owned()), ..new(Role::Admin) };
        assert!(matches!(tokens.create(past), Err(TokenError::Invalid(_))));
        let soon = NewToken { expires_at: Some("2999-01-01T00:00:00Z".to_owned()), ..new(Role::Approver) };
        let (record, secret) = tokens.create(soon).unwrap();
        assert_eq!(record.expires_at.as_deref(), Some("2999-01-01T00:00:00.000Z"));
        assert!(tokens.authenticate(&secret).is_some());
    }
}
