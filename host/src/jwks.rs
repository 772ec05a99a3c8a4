//! A cached JSON Web Key Set and the checks every bearer JWT shares: the
//! Entra ID callers of an integration (`inbound`) and the OIDC single sign-on
//! of the review API (`auth`) both verify through one [`Jwks`].
//!
//! The set is fetched once at start ([`Jwks::warm`]) and kept for
//! [`JWKS_TTL`]; an unknown key id refetches it, at most once per
//! [`REFETCH_GAP`], so a flood of forged tokens cannot turn into a flood of
//! fetches, and a warm cache keeps a check inside Copilot Studio's
//! one-second budget.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;

/// Keys are refetched at least this often (key rollover).
const JWKS_TTL: Duration = Duration::from_secs(3600);

/// Least time between two fetches caused by unknown key ids.
const REFETCH_GAP: Duration = Duration::from_secs(30);

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why a JWT is refused (answered 401 without detail; logged).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The token does not verify (form, algorithm, signature, claims, expiry).
    #[error("token rejected: {0}")]
    Invalid(String),
    /// The signing keys could not be fetched.
    #[error("signing keys unavailable: {0}")]
    Keys(String),
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// One issuer's key set, fetched over HTTPS and cached.
pub struct Jwks {
    url: String,
    keys: tokio::sync::RwLock<Keys>,
    http: reqwest::Client,
}

impl Jwks {
    /// A cache of the set at `url`: https, or http to a loopback address
    /// (tests). Nothing is fetched yet.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("jwks_url `{url}`: {e}"))?;
        let loopback = parsed
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        anyhow::ensure!(
            parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback),
            "jwks_url must be https (or http to a loopback address, for tests)"
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            url: url.to_owned(),
            keys: tokio::sync::RwLock::new(Keys { by_kid: HashMap::new(), fetched: None, last_attempt: None }),
            http,
        })
    }

    /// Fetch the keys ahead of the first call (a cold fetch could take longer
    /// than the caller waits). A failure is logged; calls retry.
    pub async fn warm(&self) {
        if let Err(err) = self.refresh(true).await {
            tracing::warn!(error = %err, "fetching the JWKS failed; will retry on first use");
        }
    }

    /// Verify `token` (signature by a key of this set, algorithm among
    /// `validation.algorithms`, and the claims `validation` names) and
    /// return its claims.
    pub async fn decode<C: DeserializeOwned>(&self, token: &str, validation: &Validation) -> Result<C, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        // Symmetric algorithms are never in `validation.algorithms` (see
        // `asymmetric`), so a token cannot pick HS256 with a public key.
        if !validation.algorithms.contains(&header.alg) {
            return Err(JwtError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| JwtError::Invalid("no key id".to_owned()))?;
        let key = match self.key(&kid).await {
            Some(k) => k,
            None => {
                self.refresh(false).await?;
                self.key(&kid).await.ok_or_else(|| JwtError::Invalid(format!("unknown key id `{kid}`")))?
            }
        };
        jsonwebtoken::decode::<C>(token, &key, validation)
            .map(|data| data.claims)
            .map_err(|e| JwtError::Invalid(e.to_string()))
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        let fresh = keys.fetched.is_some_and(|t| t.elapsed() < JWKS_TTL);
        fresh.then(|| keys.by_kid.get(kid).cloned()).flatten()
    }

    /// Refetch the set, unless one was tried within [`REFETCH_GAP`]
    /// (`force` ignores the gap, for the start-up fetch).
    async fn refresh(&self, force: bool) -> Result<(), JwtError> {
        let mut keys = self.keys.write().await;
        let stale = keys.fetched.is_none_or(|t| t.elapsed() >= JWKS_TTL);
        if !force && !stale && keys.last_attempt.is_some_and(|t| t.elapsed() < REFETCH_GAP) {
            return Ok(());
        }
        keys.last_attempt = Some(Instant::now());
        let response =
            self.http.get(&self.url).send().await.map_err(|e| JwtError::Keys(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(JwtError::Keys(format!("HTTP {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| JwtError::Keys(e.without_url().to_string()))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwtError::Keys("the JWKS document is too large".to_owned()));
        }
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| JwtError::Keys(e.to_string()))?;
        let by_kid: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        if by_kid.is_empty() {
            return Err(JwtError::Keys("the JWKS holds no usable key".to_owned()));
        }
        keys.by_kid = by_kid;
        keys.fetched = Some(Instant::now());
        Ok(())
    }
}

/// Parse algorithm names, accepting only asymmetric ones: with a shared
/// secret the JWKS (public) would be the key, so HS* is never allowed.
pub fn asymmetric(names: &[String]) -> anyhow::Result<Vec<Algorithm>> {
    let mut out = Vec::new();
    for name in names {
        let alg: Algorithm = name.parse().map_err(|_| anyhow::anyhow!("unknown JWT algorithm `{name}`"))?;
        anyhow::ensure!(
            !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512),
            "JWT algorithm `{name}` is symmetric; only public-key algorithms are accepted"
        );
        out.push(alg);
    }
    anyhow::ensure!(!out.is_empty(), "at least one JWT algorithm is required");
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    // Only https, or http to a loopback address, may serve keys.
    fn key_urls_must_be_https_or_loopback() {
        assert!(Jwks::new("https://login.example/keys").is_ok());
        assert!(Jwks::new("http://127.0.0.1:9/keys").is_ok());
        assert!(Jwks::new("http://[::1]:9/keys").is_ok());
        assert!(Jwks::new("http://127.0.0.1.evil.example/keys").is_err());
        assert!(Jwks::new("http://login.example/keys").is_err());
        assert!(Jwks::new("not a url").is_err());
    }

    #[test]
    // HS256 would let a token be signed with the public key as the secret.
    fn symmetric_algorithms_are_refused() {
        assert_eq!(asymmetric(&["RS256".to_owned(), "ES256".to_owned()]).unwrap().len(), 2);
        assert!(asymmetric(&["HS256".to_owned()]).is_err());
        assert!(asymmetric(&["none".to_owned()]).is_err());
        assert!(asymmetric(&[]).is_err());
    }
}
