//! The gateway's client for Arbiter's hook endpoint
//! (`POST /v1/hooks/mcp-gateway`).

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Map, Value};

use super::INTEGRATION;

/// Largest reply accepted from Arbiter.
const MAX_REPLY: usize = 1024 * 1024;

/// Posts the gateway's requests to Arbiter.
pub(crate) struct Arbiter {
    http: reqwest::Client,
    endpoint: String,
    token: String,
    timeout: Duration,
}

impl Arbiter {
    /// A client for Arbiter at `url`.
    pub(crate) fn new(url: &str, token: String, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Self { http, endpoint: format!("{}/v1/hooks/{INTEGRATION}", url.trim_end_matches('/')), token, timeout })
    }

    /// Post one request; the reply's JSON object, or why there is none.
    pub(crate) async fn post(&self, body: &Value) -> Result<Map<String, Value>, String> {
        let sent = self.http.post(&self.endpoint).bearer_auth(&self.token).json(body).send().await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(format!("Arbiter did not answer within {:?}", self.timeout)),
            Err(e) => return Err(format!("Arbiter is unreachable ({})", e.without_url())),
        };
        let status = response.status();
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_REPLY => bytes.extend_from_slice(&chunk),
                Ok(Some(_)) => return Err(format!("Arbiter's reply exceeds {MAX_REPLY} bytes")),
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(format!("Arbiter did not answer within {:?}", self.timeout)),
                Err(e) => return Err(format!("reading Arbiter's reply failed ({})", e.without_url())),
            }
        }
        if !status.is_success() {
            return Err(format!("Arbiter answered HTTP {status}"));
        }
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(reply)) => Ok(reply),
            _ => Err("Arbiter's reply is not a JSON object".to_owned()),
        }
    }
}
