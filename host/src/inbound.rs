//! Inbound authentication of vendors that cannot send Arbiter's ingress
//! token: Microsoft Copilot Studio presents a Microsoft Entra ID bearer JWT.
//!
//! An integration with an `auth` table accepts only what that table says,
//! instead of the ingress token: an Entra JWT (RS256 signature against the
//! tenant's JWKS, issuer, tenant, audience, expiry, and the calling app's id
//! on an allow-list, as Microsoft tells partners to check) or a static
//! bearer token (for testing). The JWKS is fetched once at start and cached;
//! an unknown key id refetches it, at most once per [`REFETCH_GAP`], so a
//! flood of forged tokens cannot turn into a flood of fetches, and a warm
//! cache keeps the check inside Copilot Studio's one-second budget.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::credentials::Token;

/// Keys are refetched at least this often (key rollover).
const JWKS_TTL: Duration = Duration::from_secs(3600);

/// Least time between two fetches caused by unknown key ids.
const REFETCH_GAP: Duration = Duration::from_secs(30);

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// `[integrations.<name>.auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthConfig {
    /// A Microsoft Entra ID JWT.
    Entra {
        /// The customer's tenant (`tid`).
        tenant_id: String,
        /// The audience the app registration exposes (`aud`).
        audience: String,
        /// Application ids allowed to call (`appid` in v1 tokens, `azp` in v2).
        allowed_app_ids: Vec<String>,
        /// JWKS URL. Default:
        /// `https://login.microsoftonline.com/<tenant_id>/discovery/v2.0/keys`.
        #[serde(default)]
        jwks_url: Option<String>,
        /// Accepted issuers. Default: the v2 and v1 issuers of the tenant.
        #[serde(default)]
        issuers: Option<Vec<String>>,
    },
    /// A static bearer token (testing, or vendors with a shared secret).
    Bearer {
        /// The token, inline. Prefer `token_file`.
        #[serde(default)]
        token: Option<String>,
        /// File holding the token.
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
}

/// Why a caller is refused (answered 401 without detail; logged).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable bearer token.
    #[error("no bearer token")]
    Missing,
    /// The token does not verify (signature, claims, expiry).
    #[error("token rejected: {0}")]
    Invalid(String),
    /// The calling app is not on the allow-list.
    #[error("application `{0}` is not allowed")]
    App(String),
    /// The signing keys could not be fetched.
    #[error("signing keys unavailable: {0}")]
    Keys(String),
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// A configured verifier.
pub enum Verifier {
    /// Entra ID JWTs.
    Entra(Box<Entra>),
    /// A static token.
    Bearer(Token),
}

/// The Entra ID verifier and its key cache.
pub struct Entra {
    tenant_id: String,
    allowed_app_ids: Vec<String>,
    jwks_url: String,
    validation: Validation,
    keys: tokio::sync::RwLock<Keys>,
    http: reqwest::Client,
}

impl Verifier {
    /// Build from config; `default_token_file` is where a bearer token is
    /// read (or created) when the config names none.
    pub fn new(config: &AuthConfig, default_token_file: &std::path::Path) -> anyhow::Result<Self> {
        match config {
            AuthConfig::Bearer { token, token_file } => {
                Ok(Self::Bearer(Token::resolve(token.as_deref(), token_file.as_deref(), default_token_file)?))
            }
            AuthConfig::Entra { tenant_id, audience, allowed_app_ids, jwks_url, issuers } => {
                anyhow::ensure!(!tenant_id.is_empty() && !audience.is_empty(), "tenant_id and audience are required");
                anyhow::ensure!(!allowed_app_ids.is_empty(), "allowed_app_ids must name at least one application");
                let jwks_url = jwks_url
                    .clone()
                    .unwrap_or_else(|| format!("https://login.microsoftonline.com/{tenant_id}/discovery/v2.0/keys"));
                anyhow::ensure!(
                    jwks_url.starts_with("https://") || jwks_url.starts_with("http://127.0.0.1"),
                    "jwks_url must be https (or loopback http for tests)"
                );
                let issuers = issuers.clone().unwrap_or_else(|| {
                    vec![
                        format!("https://login.microsoftonline.com/{tenant_id}/v2.0"),
                        format!("https://sts.windows.net/{tenant_id}/"),
                    ]
                });
                let mut validation = Validation::new(Algorithm::RS256);
                validation.set_audience(&[audience]);
                validation.set_issuer(&issuers);
                validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
                validation.leeway = 60;
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(3))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?;
                Ok(Self::Entra(Box::new(Entra {
                    tenant_id: tenant_id.clone(),
                    allowed_app_ids: allowed_app_ids.clone(),
                    jwks_url,
                    validation,
                    keys: tokio::sync::RwLock::new(Keys { by_kid: HashMap::new(), fetched: None, last_attempt: None }),
                    http,
                })))
            }
        }
    }

    /// Fetch keys ahead of the first call (a cold fetch could take longer
    /// than the vendor waits). A failure is logged; calls retry.
    pub async fn warm(&self) {
        if let Self::Entra(e) = self
            && let Err(err) = e.refresh(true).await
        {
            tracing::warn!(error = %err, "fetching the Entra signing keys failed; will retry on first use");
        }
    }

    /// Check a presented bearer token; `Ok` names the caller.
    pub async fn verify(&self, bearer: Option<&str>) -> Result<String, AuthError> {
        let bearer = bearer.filter(|b| !b.is_empty()).ok_or(AuthError::Missing)?;
        match self {
            Self::Bearer(token) if token.matches(bearer) => Ok("bearer".to_owned()),
            Self::Bearer(_) => Err(AuthError::Invalid("wrong token".to_owned())),
            Self::Entra(e) => e.verify(bearer).await,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    tid: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
}

impl Entra {
    async fn verify(&self, token: &str) -> Result<String, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("no key id".to_owned()))?;
        let key = match self.key(&kid).await {
            Some(k) => k,
            None => {
                self.refresh(false).await?;
                self.key(&kid).await.ok_or_else(|| AuthError::Invalid(format!("unknown key id `{kid}`")))?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        if data.claims.tid.as_deref() != Some(self.tenant_id.as_str()) {
            return Err(AuthError::Invalid("wrong tenant".to_owned()));
        }
        let app = data.claims.appid.or(data.claims.azp).ok_or_else(|| AuthError::App(String::new()))?;
        if !self.allowed_app_ids.contains(&app) {
            return Err(AuthError::App(app));
        }
        Ok(format!("entra:{app}"))
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        let fresh = keys.fetched.is_some_and(|t| t.elapsed() < JWKS_TTL);
        fresh.then(|| keys.by_kid.get(kid).cloned()).flatten()
    }

    /// Refetch the JWKS, unless one was tried within [`REFETCH_GAP`]
    /// (`force` ignores the gap, for the start-up fetch).
    async fn refresh(&self, force: bool) -> Result<(), AuthError> {
        let mut keys = self.keys.write().await;
        let stale = keys.fetched.is_none_or(|t| t.elapsed() >= JWKS_TTL);
        if !force && !stale && keys.last_attempt.is_some_and(|t| t.elapsed() < REFETCH_GAP) {
            return Ok(());
        }
        keys.last_attempt = Some(Instant::now());
        let response =
            self.http.get(&self.jwks_url).send().await.map_err(|e| AuthError::Keys(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(AuthError::Keys(format!("HTTP {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| AuthError::Keys(e.without_url().to_string()))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(AuthError::Keys("the JWKS document is too large".to_owned()));
        }
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| AuthError::Keys(e.to_string()))?;
        let by_kid: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        if by_kid.is_empty() {
            return Err(AuthError::Keys("the JWKS holds no usable key".to_owned()));
        }
        keys.by_kid = by_kid;
        keys.fetched = Some(Instant::now());
        Ok(())
    }
}
