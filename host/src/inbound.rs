//! Inbound authentication of vendors that do not send Arbiter's ingress
//! token, per integration: Microsoft Copilot Studio presents a Microsoft
//! Entra ID bearer JWT; webhook senders (Claude Enterprise inference hooks,
//! anything speaking Standard Webhooks, GitHub-style `sha256=` senders) sign
//! the body with a shared HMAC key; a static bearer token serves the rest.
//!
//! An integration with an `auth` table accepts only what that table says,
//! instead of the ingress token:
//! - `entra`: RS256 signature against the tenant's JWKS (cached, see
//!   [`crate::jwks`]), issuer, tenant, audience, expiry, and the calling
//!   app's id on an allow-list, as Microsoft tells partners to check;
//! - `hmac`: an HMAC-SHA256 of the signed string below, compared in constant
//!   time, with the sender's timestamp inside a replay window;
//! - `bearer`: a static token (compared as a SHA-256 digest, constant time).
//!
//! Signed strings (the bytes the HMAC covers):
//! - `standard-webhooks`: `<webhook-id>.<webhook-timestamp>.<body>`, key =
//!   the base64 after `whsec_`, header `webhook-signature: v1,<base64>`
//!   (several space-separated signatures are allowed, for key rotation);
//! - `sha256`: the raw body, or `<timestamp>.<body>` when a timestamp header
//!   is configured; key = the secret's bytes; header
//!   `<signature_header>: sha256=<hex>`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::Sha256;

use crate::credentials::Token;
use crate::jwks::{Jwks, JwtError};

/// Default replay window of signed webhooks: the Standard Webhooks
/// recommendation (5 minutes) — wide enough for clock skew and retries,
/// short enough that a captured request soon stops verifying.
const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Shortest accepted HMAC key, in bytes (128 bits).
const MIN_HMAC_KEY: usize = 16;

/// Most signatures read from one signature header (key rotation sends two).
const MAX_SIGNATURES: usize = 8;

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
    /// An HMAC-SHA256 signature of the request (see the module doc for the
    /// signed string of each scheme).
    Hmac {
        /// `standard-webhooks` (default) or `sha256`.
        #[serde(default)]
        scheme: HmacScheme,
        /// The shared secret, inline. Prefer `secret_file`.
        #[serde(default)]
        secret: Option<String>,
        /// File holding the shared secret.
        #[serde(default)]
        secret_file: Option<PathBuf>,
        /// Header carrying the signature. Default: `webhook-signature`
        /// (`standard-webhooks`), `x-signature-256` (`sha256`).
        #[serde(default)]
        signature_header: Option<String>,
        /// Header carrying the sender's Unix time in seconds. Default:
        /// `webhook-timestamp` (`standard-webhooks`, always required);
        /// none (`sha256`: then the body alone is signed and there is no
        /// replay window).
        #[serde(default)]
        timestamp_header: Option<String>,
        /// Replay window: a timestamp further than this from Arbiter's clock,
        /// either way, is refused. Seconds; default = 300.
        #[serde(default)]
        tolerance_secs: Option<u64>,
    },
}

/// Which signed string and signature encoding an `hmac` integration uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HmacScheme {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64>`).
    #[default]
    StandardWebhooks,
    /// `sha256=<hex>` of the body (GitHub style), optionally with a timestamp.
    Sha256,
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
    /// A signed request lacks a header the scheme needs.
    #[error("missing header `{0}`")]
    MissingHeader(String),
    /// The signature is malformed or does not match.
    #[error("bad signature: {0}")]
    Signature(&'static str),
    /// The timestamp is outside the replay window (or not a number).
    #[error("timestamp outside the replay window of {0} s")]
    Stale(u64),
}

impl From<JwtError> for AuthError {
    fn from(e: JwtError) -> Self {
        match e {
            JwtError::Invalid(m) => Self::Invalid(m),
            JwtError::Keys(m) => Self::Keys(m),
        }
    }
}

/// A configured verifier.
pub enum Verifier {
    /// Entra ID JWTs.
    Entra(Box<Entra>),
    /// A static token.
    Bearer(Token),
    /// A signed body.
    Hmac(Box<HmacVerifier>),
}

/// The Entra ID verifier and its key cache.
pub struct Entra {
    tenant_id: String,
    allowed_app_ids: Vec<String>,
    validation: Validation,
    jwks: Jwks,
}

/// The HMAC verifier of one integration.
pub struct HmacVerifier {
    scheme: HmacScheme,
    key: Vec<u8>,
    signature_header: String,
    timestamp_header: Option<String>,
    tolerance: u64,
}

impl std::fmt::Debug for HmacVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacVerifier").field("scheme", &self.scheme).finish_non_exhaustive()
    }
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
                Ok(Self::Entra(Box::new(Entra {
                    tenant_id: tenant_id.clone(),
                    allowed_app_ids: allowed_app_ids.clone(),
                    validation,
                    jwks: Jwks::new(&jwks_url)?,
                })))
            }
            AuthConfig::Hmac { scheme, secret, secret_file, signature_header, timestamp_header, tolerance_secs } => {
                let secret = match (secret, secret_file) {
                    (Some(s), None) => s.trim().to_owned(),
                    (None, Some(f)) => std::fs::read_to_string(f)
                        .map_err(|e| anyhow::anyhow!("cannot read secret_file `{}`: {e}", f.display()))?
                        .trim()
                        .to_owned(),
                    _ => anyhow::bail!("give exactly one of `secret` and `secret_file`"),
                };
                let key = match scheme {
                    // As the reference libraries do: the `whsec_` prefix is
                    // optional, the rest is base64.
                    HmacScheme::StandardWebhooks => base64::engine::general_purpose::STANDARD
                        .decode(secret.strip_prefix("whsec_").unwrap_or(&secret))
                        .map_err(|_| anyhow::anyhow!("a standard-webhooks secret is `whsec_` and base64"))?,
                    HmacScheme::Sha256 => secret.into_bytes(),
                };
                anyhow::ensure!(key.len() >= MIN_HMAC_KEY, "the HMAC key must be at least {MIN_HMAC_KEY} bytes");
                let (signature_default, timestamp_default) = match scheme {
                    HmacScheme::StandardWebhooks => ("webhook-signature", Some("webhook-timestamp")),
                    HmacScheme::Sha256 => ("x-signature-256", None),
                };
                let tolerance = tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS);
                anyhow::ensure!((1..=86_400).contains(&tolerance), "tolerance_secs must be between 1 and 86400");
                let timestamp_header =
                    timestamp_header.clone().or_else(|| timestamp_default.map(str::to_owned)).map(|h| h.to_lowercase());
                if timestamp_header.is_none() {
                    tracing::warn!("an hmac integration without a timestamp header has no replay window");
                }
                Ok(Self::Hmac(Box::new(HmacVerifier {
                    scheme: *scheme,
                    key,
                    signature_header: signature_header.as_deref().unwrap_or(signature_default).to_lowercase(),
                    timestamp_header,
                    tolerance,
                })))
            }
        }
    }

    /// Fetch keys ahead of the first call (a cold fetch could take longer
    /// than the vendor waits). A failure is logged; calls retry.
    pub async fn warm(&self) {
        if let Self::Entra(e) = self {
            e.jwks.warm().await;
        }
    }

    /// Whether [`Verifier::verify`] reads the body (the caller buffers it).
    pub fn needs_body(&self) -> bool {
        matches!(self, Self::Hmac(_))
    }

    /// Check a request's credentials; `Ok` names the caller. `body` is the
    /// whole request body when [`Verifier::needs_body`], else empty.
    pub async fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, AuthError> {
        match self {
            Self::Bearer(token) => match crate::auth::bearer(headers) {
                None => Err(AuthError::Missing),
                Some(b) if token.matches(b) => Ok("bearer".to_owned()),
                Some(_) => Err(AuthError::Invalid("wrong token".to_owned())),
            },
            Self::Entra(e) => e.verify(crate::auth::bearer(headers).ok_or(AuthError::Missing)?).await,
            Self::Hmac(h) => h.verify(headers, body, unix_now()),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

#[derive(Debug, Deserialize)]
struct Claims {
    tid: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
}

impl Entra {
    async fn verify(&self, token: &str) -> Result<String, AuthError> {
        let claims: Claims = self.jwks.decode(token, &self.validation).await?;
        if claims.tid.as_deref() != Some(self.tenant_id.as_str()) {
            return Err(AuthError::Invalid("wrong tenant".to_owned()));
        }
        let app = claims.appid.or(claims.azp).ok_or_else(|| AuthError::App(String::new()))?;
        if !self.allowed_app_ids.contains(&app) {
            return Err(AuthError::App(app));
        }
        Ok(format!("entra:{app}"))
    }
}

impl HmacVerifier {
    fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, AuthError> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AuthError::MissingHeader(name.to_owned()))
    }

    /// Verify at Unix time `now` (seconds).
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<String, AuthError> {
        let timestamp = match &self.timestamp_header {
            Some(name) => {
                let value = Self::header(headers, name)?;
                let ts: u64 = value.parse().map_err(|_| AuthError::Stale(self.tolerance))?;
                if ts.abs_diff(now) > self.tolerance {
                    return Err(AuthError::Stale(self.tolerance));
                }
                Some(value)
            }
            None => None,
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).map_err(|_| AuthError::Signature("bad key"))?;
        let presented = Self::header(headers, &self.signature_header)?;
        let candidates: Vec<Vec<u8>> = match self.scheme {
            HmacScheme::StandardWebhooks => {
                let id = Self::header(headers, "webhook-id")?;
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.unwrap_or_default().as_bytes());
                mac.update(b".");
                presented
                    .split(' ')
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .take(MAX_SIGNATURES)
                    .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .collect()
            }
            HmacScheme::Sha256 => {
                if let Some(ts) = timestamp {
                    mac.update(ts.as_bytes());
                    mac.update(b".");
                }
                let hex_sig = presented.strip_prefix("sha256=").ok_or(AuthError::Signature("not `sha256=<hex>`"))?;
                hex::decode(hex_sig).map(|s| vec![s]).map_err(|_| AuthError::Signature("not hex"))?
            }
        };
        mac.update(body);
        // `verify_slice` compares in constant time.
        if candidates.iter().any(|c| mac.clone().verify_slice(c).is_ok()) {
            Ok("hmac".to_owned())
        } else if candidates.is_empty() {
            Err(AuthError::Signature("no signature in the expected form"))
        } else {
            Err(AuthError::Signature("no signature matches"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn standard(secret: &str) -> HmacVerifier {
        let config = AuthConfig::Hmac {
            scheme: HmacScheme::StandardWebhooks,
            secret: Some(secret.to_owned()),
            secret_file: None,
            signature_header: None,
            timestamp_header: None,
            tolerance_secs: None,
        };
        match Verifier::new(&config, std::path::Path::new("/nonexistent")).unwrap() {
            Verifier::Hmac(h) => *h,
            _ => unreachable!("an hmac config builds an hmac verifier"),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    // The published Standard Webhooks test vector verifies, alone or among
    // other signatures (key rotation), and without the `whsec_` prefix.
    fn standard_webhooks_vector_verifies() {
        let v = standard(SECRET);
        let h = headers(&[("webhook-id", ID), ("webhook-timestamp", "1614265330"), ("webhook-signature", SIG)]);
        assert!(v.verify(&h, BODY, TS).is_ok());
        let rotated = format!("v1,bm9wZQ== {SIG}");
        let h = headers(&[("webhook-id", ID), ("webhook-timestamp", "1614265330"), ("webhook-signature", &rotated)]);
        assert!(v.verify(&h, BODY, TS + 10).is_ok());
        assert!(standard(SECRET.trim_start_matches("whsec_")).verify(&h, BODY, TS).is_ok());
    }

    #[test]
    // A changed body, id or timestamp, a stale timestamp, or a missing header
    // is refused.
    fn standard_webhooks_refusals() {
        let v = standard(SECRET);
        let ok = [("webhook-id", ID), ("webhook-timestamp", "1614265330"), ("webhook-signature", SIG)];
        assert!(matches!(v.verify(&headers(&ok), b"{}", TS), Err(AuthError::Signature(_))));
        let other_id = [("webhook-id", "msg_other"), ok[1], ok[2]];
        assert!(matches!(v.verify(&headers(&other_id), BODY, TS), Err(AuthError::Signature(_))));
        let other_ts = [ok[0], ("webhook-timestamp", "1614265331"), ok[2]];
        assert!(matches!(v.verify(&headers(&other_ts), BODY, TS), Err(AuthError::Signature(_))));
        assert!(matches!(v.verify(&headers(&ok), BODY, TS + 301), Err(AuthError::Stale(300))));
        assert!(matches!(v.verify(&headers(&ok), BODY, TS - 301), Err(AuthError::Stale(300))));
        assert!(matches!(v.verify(&headers(&ok[1..]), BODY, TS), Err(AuthError::MissingHeader(_))));
        let v1_missing = [ok[0], ok[1], ("webhook-signature", "v2,abc")];
        assert!(matches!(v.verify(&headers(&v1_missing), BODY, TS), Err(AuthError::Signature(_))));
    }

    #[test]
    // The generic form: `sha256=<hex>` over `<timestamp>.<body>`.
    fn sha256_form_verifies_with_timestamp() {
        let config = AuthConfig::Hmac {
            scheme: HmacScheme::Sha256,
            secret: Some("generic-secret-0123456789".to_owned()),
            secret_file: None,
            signature_header: Some("X-Hub-Signature-256".to_owned()),
            timestamp_header: Some("X-Timestamp".to_owned()),
            tolerance_secs: Some(60),
        };
        let Verifier::Hmac(v) = Verifier::new(&config, std::path::Path::new("/nonexistent")).unwrap() else {
            unreachable!("an hmac config builds an hmac verifier")
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(b"generic-secret-0123456789").unwrap();
        mac.update(b"1000.{\"a\":1}");
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let h = headers(&[("x-hub-signature-256", &sig), ("x-timestamp", "1000")]);
        assert!(v.verify(&h, b"{\"a\":1}", 1030).is_ok());
        assert!(v.verify(&h, b"{\"a\":2}", 1030).is_err());
        assert!(matches!(v.verify(&h, b"{\"a\":1}", 1061), Err(AuthError::Stale(60))));
        let h = headers(&[("x-hub-signature-256", &sig.replace("sha256=", "")), ("x-timestamp", "1000")]);
        assert!(v.verify(&h, b"{\"a\":1}", 1030).is_err());
    }

    #[test]
    // Short keys and a missing secret are configuration errors.
    fn weak_or_missing_secrets_are_refused() {
        let mk = |secret: Option<&str>| AuthConfig::Hmac {
            scheme: HmacScheme::Sha256,
            secret: secret.map(str::to_owned),
            secret_file: None,
            signature_header: None,
            timestamp_header: None,
            tolerance_secs: None,
        };
        assert!(Verifier::new(&mk(Some("short")), std::path::Path::new("/x")).is_err());
        assert!(Verifier::new(&mk(None), std::path::Path::new("/x")).is_err());
    }
}
