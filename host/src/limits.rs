//! Bounds on one integration's hooks: a rate for the whole integration, a
//! rate per session, requests in flight, and a deadline for the answer.
//!
//! These sit inside the pipeline rather than in tower layers because a
//! refusal must be the vendor's *blocking* reply (with a receipt saying which
//! limit refused): most vendors treat an HTTP error or no answer as an allow
//! (Claude Code, Codex, Gemini CLI on errors; Copilot Studio when no answer
//! comes within a second). A refusal is a [`Fault`] of component `ingress`,
//! which the pipeline turns into a block like any other fault.
//!
//! Rates are token buckets (`governor`, GCRA): `requests_per_minute`
//! replenish evenly over the minute, up to `burst` at once.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::model::{Fault, FaultComponent, FaultKind};

/// Sessions whose bucket is tracked at once. A bucket is a key (the session
/// id, ≤ a few hundred bytes) plus 8 bytes of state in a sharded map: about
/// 100 B each, so 100 000 sessions are ~10 MiB. Buckets back at full are
/// dropped when the map reaches this size; if it is still full, hooks of this
/// integration are refused (fail closed) until buckets refill. The
/// integration rate bounds how fast sessions can be minted to get there.
const MAX_TRACKED_SESSIONS: usize = 100_000;

/// `[integrations.<name>.limits]`. Every limit is off unless set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Hooks per minute for the whole integration (all sessions).
    pub requests_per_minute: Option<u32>,
    /// Hooks the integration may send at once before the rate applies.
    /// Default = `requests_per_minute`.
    pub burst: Option<u32>,
    /// Hooks per minute for one session (the vendor's session id).
    pub session_requests_per_minute: Option<u32>,
    /// Hooks one session may send at once. Default =
    /// `session_requests_per_minute`.
    pub session_burst: Option<u32>,
    /// Hooks of this integration in flight at once; one more is refused at
    /// once rather than queued (a queued hook would only time out later).
    pub max_concurrent: Option<u32>,
    /// Deadline of one hook's answer, in milliseconds. Default =
    /// `ingress.request_timeout_ms`. Must leave at least 1000 ms over the
    /// integration's hold time (`hold_ms`), so a held hook answers with its
    /// pending reason before the deadline refuses it.
    pub timeout_ms: Option<u64>,
}

impl LimitsConfig {
    /// Check ranges; `field` prefixes the error.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |v: Option<u32>, name: &str| match v {
            Some(0) => Err(format!("`{name}` must be at least 1")),
            _ => Ok(()),
        };
        positive(self.requests_per_minute, "requests_per_minute")?;
        positive(self.burst, "burst")?;
        positive(self.session_requests_per_minute, "session_requests_per_minute")?;
        positive(self.session_burst, "session_burst")?;
        positive(self.max_concurrent, "max_concurrent")?;
        if self.burst.is_some() && self.requests_per_minute.is_none() {
            return Err("`burst` needs `requests_per_minute`".to_owned());
        }
        if self.session_burst.is_some() && self.session_requests_per_minute.is_none() {
            return Err("`session_burst` needs `session_requests_per_minute`".to_owned());
        }
        if self.timeout_ms == Some(0) {
            return Err("`timeout_ms` must be at least 1".to_owned());
        }
        Ok(())
    }
}

fn quota(per_minute: u32, burst: Option<u32>) -> Option<Quota> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(Quota::per_minute(rate).allow_burst(burst))
}

/// The live limits of one integration.
pub struct Limits {
    integration: String,
    config: LimitsConfig,
    rate: Option<DefaultDirectRateLimiter>,
    sessions: Option<DefaultKeyedRateLimiter<String>>,
    /// Session checks since the last sweep of full buckets.
    checks: AtomicU64,
    own: Option<Arc<Semaphore>>,
    /// Shared by every integration: `ingress.max_concurrent_requests`.
    global: Arc<Semaphore>,
    timeout: Duration,
}

/// Held while a hook is served; frees its slots when dropped.
#[derive(Debug)]
pub struct Admission {
    _global: OwnedSemaphorePermit,
    _own: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("integration", &self.integration).field("config", &self.config).finish()
    }
}

impl Limits {
    /// Limits of `integration`; `global` bounds hooks of all integrations
    /// together, `default_timeout` applies unless `config.timeout_ms` is set.
    pub fn new(integration: &str, config: &LimitsConfig, global: Arc<Semaphore>, default_timeout: Duration) -> Self {
        Self {
            integration: integration.to_owned(),
            rate: config.requests_per_minute.and_then(|r| quota(r, config.burst)).map(RateLimiter::direct),
            sessions: config
                .session_requests_per_minute
                .and_then(|r| quota(r, config.session_burst))
                .map(RateLimiter::keyed),
            checks: AtomicU64::new(0),
            own: config.max_concurrent.map(|n| Arc::new(Semaphore::new(n as usize))),
            global,
            timeout: config.timeout_ms.map_or(default_timeout, Duration::from_millis),
            config: config.clone(),
        }
    }

    /// Deadline of one hook's answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn refusal(&self, kind: FaultKind, what: String) -> Fault {
        Fault::new(FaultComponent::Ingress, kind, format!("{what} of integration `{}`", self.integration))
    }

    /// Admit one hook before any work: the integration's rate and the
    /// concurrency slots (its own and the server's).
    pub fn admit(&self) -> Result<Admission, Fault> {
        if let Some(rate) = &self.rate
            && rate.check().is_err()
        {
            let per_minute = self.config.requests_per_minute.unwrap_or_default();
            return Err(self.refusal(
                FaultKind::RateLimited,
                format!("rate limit exceeded: the integration rate limit ({per_minute} requests per minute)"),
            ));
        }
        let global = self.global.clone().try_acquire_owned().map_err(|_| {
            Fault::new(
                FaultComponent::Ingress,
                FaultKind::Overloaded,
                "concurrency limit reached: the server's limit of hooks in flight (ingress.max_concurrent_requests)",
            )
        })?;
        let own = match &self.own {
            Some(s) => Some(s.clone().try_acquire_owned().map_err(|_| {
                let n = self.config.max_concurrent.unwrap_or_default();
                self.refusal(
                    FaultKind::Overloaded,
                    format!("concurrency limit reached: the limit of {n} hooks in flight"),
                )
            })?),
            None => None,
        };
        Ok(Admission { _global: global, _own: own })
    }

    /// Admit one hook of `session` (after the plugin named the session).
    pub fn admit_session(&self, session: &str) -> Result<(), Fault> {
        let Some(sessions) = &self.sessions else { return Ok(()) };
        let per_minute = self.config.session_requests_per_minute.unwrap_or_default();
        if sessions.len() >= MAX_TRACKED_SESSIONS || self.checks.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            sessions.retain_recent();
            sessions.shrink_to_fit();
        }
        if sessions.len() >= MAX_TRACKED_SESSIONS {
            return Err(self.refusal(
                FaultKind::Overloaded,
                format!("session rate limit table full: {MAX_TRACKED_SESSIONS} sessions are being limited"),
            ));
        }
        sessions.check_key(&session.to_owned()).map_err(|_| {
            self.refusal(
                FaultKind::RateLimited,
                format!("rate limit exceeded: the session rate limit ({per_minute} requests per minute)"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn limits(config: LimitsConfig, global: usize) -> Limits {
        Limits::new("it", &config, Arc::new(Semaphore::new(global)), Duration::from_secs(1))
    }

    #[test]
    // A session over its burst is refused; another session is not.
    fn session_rate_is_per_session() {
        let l = limits(LimitsConfig { session_requests_per_minute: Some(2), ..LimitsConfig::default() }, 10);
        assert!(l.admit_session("a").is_ok());
        assert!(l.admit_session("a").is_ok());
        let refused = l.admit_session("a").unwrap_err();
        assert_eq!((refused.component, refused.kind), (FaultComponent::Ingress, FaultKind::RateLimited));
        assert!(refused.message.contains("session rate limit (2 requests per minute)"), "{}", refused.message);
        assert!(l.admit_session("b").is_ok());
    }

    #[test]
    // The integration rate and both concurrency bounds refuse at once.
    fn integration_rate_and_concurrency() {
        let l = limits(LimitsConfig { requests_per_minute: Some(1), ..LimitsConfig::default() }, 10);
        let first = l.admit().unwrap();
        assert_eq!(l.admit().unwrap_err().kind, FaultKind::RateLimited);
        drop(first);

        let l = limits(LimitsConfig { max_concurrent: Some(1), ..LimitsConfig::default() }, 10);
        let held = l.admit().unwrap();
        assert_eq!(l.admit().unwrap_err().kind, FaultKind::Overloaded);
        drop(held);
        assert!(l.admit().is_ok(), "a finished hook frees its slot");

        let l = limits(LimitsConfig::default(), 1);
        let _held = l.admit().unwrap();
        assert!(l.admit().unwrap_err().message.contains("ingress.max_concurrent_requests"));
    }

    #[test]
    // Zero rates and a burst without a rate are configuration errors.
    fn config_is_checked() {
        assert!(LimitsConfig { requests_per_minute: Some(0), ..LimitsConfig::default() }.validate().is_err());
        assert!(LimitsConfig { burst: Some(3), ..LimitsConfig::default() }.validate().is_err());
        assert!(LimitsConfig { timeout_ms: Some(0), ..LimitsConfig::default() }.validate().is_err());
        assert!(LimitsConfig::default().validate().is_ok());
    }
}
