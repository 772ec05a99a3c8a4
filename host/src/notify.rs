//! Outgoing approval notifications: when policy answers STEP_UP, the
//! approver group it names is told over webhooks.
//!
//! # Delivery
//!
//! [`Notifier::notify`] is fire-and-forget: one task per webhook of the group,
//! each retrying connection errors, timeouts, 429 and 5xx with exponential
//! backoff ([`Retry`]), then giving up with a warning. Other statuses (4xx,
//! and 3xx, since redirects are not followed) are final. Delivery is
//! at-least-once: a receiver that answers after the client's timeout may get
//! the same notice again, so receivers should deduplicate on `approval_id`.
//!
//! A notification is only a message. Its failure never approves anything:
//! the approval request stays pending whatever happens here.
//!
//! # `generic` webhooks
//!
//! `POST` with `content-type: application/json` and the body
//! `{"type": "arbiter.approval.requested", "version": 1, "approval": {...}}`
//! (the `approval` member is an [`ApprovalNotice`]). Two headers authenticate
//! it:
//!
//! - `x-arbiter-timestamp`: the sending time, in Unix seconds;
//! - `x-arbiter-signature`: `v1=` and the lowercase hex
//!   HMAC-SHA256(secret, `"<timestamp>.<raw body>"`), see [`sign`].
//!
//! Receivers must check the signature over the raw body bytes (before any
//! JSON parsing) with a constant-time comparison ([`verify`] does both), and
//! should reject timestamps more than 5 minutes old
//! ([`RECOMMENDED_MAX_AGE`]) so that a captured request cannot be replayed
//! later. Each retry is signed afresh with a new timestamp.
//!
//! # `slack` webhooks
//!
//! `POST` of a Slack incoming-webhook message (`text` and `blocks`). The URL
//! itself is the credential, so it is never logged: logs and [`Delivery`]
//! name the host only.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::task::JoinHandle;

/// The `type` of a generic webhook body.
pub const EVENT_TYPE: &str = "arbiter.approval.requested";
/// The `version` of a generic webhook body.
pub const EVENT_VERSION: u32 = 1;
/// Header carrying the signing time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-arbiter-timestamp";
/// Header carrying the signature, `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-arbiter-signature";
/// Oldest timestamp a receiver should accept.
pub const RECOMMENDED_MAX_AGE: Duration = Duration::from_secs(300);
/// Shortest accepted HMAC secret: shorter ones are guessable offline from a
/// single captured request.
pub const MIN_SECRET_LEN: usize = 16;

/// A secret file larger than this is a wrong path (a log, a device), not a key.
const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Slack limits section text to 3000 characters; the parameters get half.
const SLACK_PARAMS_MAX: usize = 1500;
const SLACK_FIELD_MAX: usize = 200;
const SLACK_LONG_FIELD_MAX: usize = 500;
const TRUNCATED: &str = "… (truncated)";

type HmacSha256 = Hmac<Sha256>;

/// How one webhook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// Signed JSON envelope (see the module documentation).
    Generic,
    /// Slack incoming webhook.
    Slack,
}

impl WebhookKind {
    fn generic() -> Self {
        Self::Generic
    }
}

/// One webhook of an approver group, as written in the config file:
/// `{ url = "https://...", kind = "generic", secret_file = "/etc/arbiter/hook.secret" }`.
///
/// `Debug` shows the URL's host only and hides the secret.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to `POST` (http or https).
    pub url: String,
    /// Message format; `generic` when absent.
    #[serde(default = "WebhookKind::generic")]
    pub kind: WebhookKind,
    /// HMAC key of a `generic` webhook, read from this file (surrounding
    /// whitespace trimmed). Must be absent for `slack`, whose URL carries its
    /// own secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// HMAC key of a `generic` webhook given inline (prefer `secret_file`).
    /// Exactly one of `secret` and `secret_file` is required for `generic`.
    #[serde(default)]
    pub secret: Option<String>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = Url::parse(&self.url).map_or_else(|_| "<invalid>".to_owned(), |u| url_host(&u));
        f.debug_struct("WebhookConfig")
            .field("url_host", &host)
            .field("kind", &self.kind)
            .field("secret_file", &self.secret_file)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What approvers are told about one approval request.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalNotice {
    /// Id of the approval request.
    pub approval_id: String,
    /// Approver group, e.g. `data-owners`.
    pub group: String,
    /// Id of the STEP_UP receipt.
    pub receipt_id: String,
    /// The canonical action (`tool`, `operation`, `parameters`, `resource`,
    /// `original_tool`, `requester_context`...).
    pub action: Value,
    /// Why policy asked for approval.
    pub reason: String,
    /// Risk score.
    pub risk: f64,
    /// `sha256:<hex>` of the arguments the approval is bound to.
    pub args_hash: String,
    /// When the request was created (RFC 3339).
    pub created_at: String,
    /// When the request expires (RFC 3339).
    pub deadline: String,
    /// Where an API call approves, e.g.
    /// `http://127.0.0.1:8750/v1/approvals/<id>/approve`.
    pub approve_url: Option<String>,
}

/// A configuration problem of the webhooks. `index` is the webhook's
/// position (from 0) in its group's list.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL does not parse.
    #[error("approver group `{group}`, webhooks[{index}]: invalid URL: {reason}")]
    InvalidUrl {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
        /// Why it does not parse.
        reason: String,
    },
    /// The URL is neither http nor https.
    #[error("approver group `{group}`, webhooks[{index}]: URL scheme must be http or https, not `{scheme}`")]
    UnsupportedScheme {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
        /// The scheme given.
        scheme: String,
    },
    /// A generic webhook without a secret.
    #[error("approver group `{group}`, webhooks[{index}]: a generic webhook needs `secret_file` or `secret`")]
    MissingSecret {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
    },
    /// Both `secret` and `secret_file`.
    #[error("approver group `{group}`, webhooks[{index}]: give `secret_file` or `secret`, not both")]
    ConflictingSecrets {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
    },
    /// A secret for a Slack webhook, which would be silently unused.
    #[error("approver group `{group}`, webhooks[{index}]: slack webhooks take no secret (the URL carries it)")]
    SecretForSlack {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
    },
    /// The secret file cannot be read.
    #[error("approver group `{group}`, webhooks[{index}]: cannot read secret file {}: {source}", path.display())]
    SecretUnreadable {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret file is too large to be a key.
    #[error("approver group `{group}`, webhooks[{index}]: secret file {} exceeds {MAX_SECRET_FILE_LEN} bytes", path.display())]
    SecretFileTooLarge {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
        /// The file.
        path: PathBuf,
    },
    /// The secret is empty (after trimming, for a file).
    #[error("approver group `{group}`, webhooks[{index}]: the secret is empty")]
    EmptySecret {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
    },
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error(
        "approver group `{group}`, webhooks[{index}]: the secret is {len} bytes, at least {MIN_SECRET_LEN} are required"
    )]
    SecretTooShort {
        /// Approver group.
        group: String,
        /// Position in the group's list.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// The HTTP client cannot be built (TLS set-up).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Retry schedule of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in total, first included (0 counts as 1).
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one
    /// (capped at 30 s).
    pub initial_backoff: Duration,
}

impl Default for Retry {
    /// 5 attempts, waiting 0.5, 1, 2 and 4 s in between.
    fn default() -> Self {
        Self { attempts: 5, initial_backoff: Duration::from_millis(500) }
    }
}

impl Retry {
    /// Wait after failed attempt number `attempt` (from 1).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.initial_backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// Outcome of one webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook URL's host (and port, when explicit): never the full URL,
    /// which may carry a secret.
    pub host: String,
    /// The webhook's kind.
    pub kind: WebhookKind,
    /// Attempts made.
    pub attempts: u32,
    /// HTTP status of the last attempt, if one was answered.
    pub status: Option<u16>,
    /// Why the last attempt failed without an answer.
    pub error: Option<String>,
    /// Whether the webhook accepted the notice (2xx).
    pub delivered: bool,
}

/// A validated webhook.
struct Target {
    url: Url,
    host: String,
    signer: Signer,
}

enum Signer {
    /// Keyed once at start-up; cloned per request.
    Generic(HmacSha256),
    Slack,
}

impl Target {
    fn kind(&self) -> WebhookKind {
        match self.signer {
            Signer::Generic(_) => WebhookKind::Generic,
            Signer::Slack => WebhookKind::Slack,
        }
    }
}

/// Sends notices to the webhooks of each approver group.
#[derive(Clone)]
pub struct Notifier {
    groups: BTreeMap<String, Vec<Arc<Target>>>,
    /// `None` only for [`Notifier::disabled`], which has no webhooks.
    client: Option<reqwest::Client>,
    retry: Retry,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: BTreeMap<&str, Vec<(&str, WebhookKind)>> = self
            .groups
            .iter()
            .map(|(g, ts)| (g.as_str(), ts.iter().map(|t| (t.host.as_str(), t.kind())).collect()))
            .collect();
        f.debug_struct("Notifier").field("groups", &groups).field("retry", &self.retry).finish()
    }
}

impl Notifier {
    /// Validate the config (URLs parse as http or https; generic webhooks have
    /// exactly one readable secret of at least [`MIN_SECRET_LEN`] bytes; slack
    /// ones have none) and build the HTTP client (connect timeout 2 s, whole
    /// request 5 s, no redirects followed: a redirect could carry the signed
    /// notice to another host).
    pub fn new(groups: &BTreeMap<String, Vec<WebhookConfig>>) -> Result<Self, NotifyError> {
        let mut out = BTreeMap::new();
        for (group, hooks) in groups {
            let targets = hooks
                .iter()
                .enumerate()
                .map(|(index, hook)| target(group, index, hook).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(group.clone(), targets);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("arbiter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(NotifyError::Client)?;
        Ok(Self { groups: out, client: Some(client), retry: Retry::default() })
    }

    /// A notifier with no webhooks (notifications are then only logged).
    pub fn disabled() -> Self {
        Self { groups: BTreeMap::new(), client: None, retry: Retry::default() }
    }

    /// Replace the retry schedule (the default is [`Retry::default`]).
    #[must_use]
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Whether `group` has at least one webhook.
    pub fn has_group(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|t| !t.is_empty())
    }

    /// Fire-and-forget: spawn, on the current tokio runtime, one delivery task
    /// per webhook of `notice.group`. Failures are logged (host only). The
    /// handle resolves to the outcomes, in the group's webhook order, once all
    /// deliveries end; callers may drop it, the deliveries go on.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`tokio::spawn`].
    pub fn notify(&self, notice: ApprovalNotice) -> JoinHandle<Vec<Delivery>> {
        let targets = self.groups.get(&notice.group).filter(|t| !t.is_empty());
        let (Some(client), Some(targets)) = (&self.client, targets) else {
            if self.client.is_some() {
                // A policy names a group the config does not know: worth fixing.
                tracing::warn!(
                    approval_id = %notice.approval_id,
                    group = %notice.group,
                    receipt_id = %notice.receipt_id,
                    deadline = %notice.deadline,
                    "approval requested; the approver group has no webhook, nobody is notified"
                );
            } else {
                tracing::info!(
                    approval_id = %notice.approval_id,
                    group = %notice.group,
                    receipt_id = %notice.receipt_id,
                    deadline = %notice.deadline,
                    "approval requested; webhook notifications are disabled"
                );
            }
            return tokio::spawn(async { Vec::new() });
        };

        // Each body is rendered once and shared by the webhooks of its kind.
        let generic = targets.iter().any(|t| t.kind() == WebhookKind::Generic).then(|| generic_body(&notice));
        let slack = targets.iter().any(|t| t.kind() == WebhookKind::Slack).then(|| slack_body(&notice));
        let approval_id: Arc<str> = Arc::from(notice.approval_id.as_str());
        let group: Arc<str> = Arc::from(notice.group.as_str());

        let handles: Vec<_> = targets
            .iter()
            .map(|target| {
                let body = match target.kind() {
                    WebhookKind::Generic => generic.clone(),
                    WebhookKind::Slack => slack.clone(),
                };
                let body = body.unwrap_or_else(|| Err("no body rendered".to_owned()));
                let job = Job {
                    client: client.clone(),
                    target: Arc::clone(target),
                    retry: self.retry,
                    approval_id: Arc::clone(&approval_id),
                    group: Arc::clone(&group),
                };
                let meta = (target.host.clone(), target.kind());
                (meta, tokio::spawn(job.run(body)))
            })
            .collect();

        tokio::spawn(async move {
            let mut out = Vec::with_capacity(handles.len());
            for ((host, kind), handle) in handles {
                out.push(handle.await.unwrap_or_else(|e| Delivery {
                    host,
                    kind,
                    attempts: 0,
                    status: None,
                    error: Some(format!("delivery task ended abnormally: {e}")),
                    delivered: false,
                }));
            }
            out
        })
    }
}

/// Validate one configured webhook.
fn target(group: &str, index: usize, hook: &WebhookConfig) -> Result<Target, NotifyError> {
    let owned = || group.to_owned();
    // url's parse errors describe the problem without echoing the URL.
    let url =
        Url::parse(&hook.url).map_err(|e| NotifyError::InvalidUrl { group: owned(), index, reason: e.to_string() })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NotifyError::UnsupportedScheme { group: owned(), index, scheme: url.scheme().to_owned() });
    }
    let host = url_host(&url);
    let signer = match hook.kind {
        WebhookKind::Slack => {
            if hook.secret.is_some() || hook.secret_file.is_some() {
                return Err(NotifyError::SecretForSlack { group: owned(), index });
            }
            Signer::Slack
        }
        WebhookKind::Generic => {
            let secret = match (&hook.secret, &hook.secret_file) {
                (Some(_), Some(_)) => return Err(NotifyError::ConflictingSecrets { group: owned(), index }),
                (None, None) => return Err(NotifyError::MissingSecret { group: owned(), index }),
                (Some(inline), None) => inline.as_bytes().to_vec(),
                (None, Some(path)) => read_secret(path).map_err(|e| match e {
                    SecretFileError::Io(source) => {
                        NotifyError::SecretUnreadable { group: owned(), index, path: path.clone(), source }
                    }
                    SecretFileError::TooLarge => {
                        NotifyError::SecretFileTooLarge { group: owned(), index, path: path.clone() }
                    }
                })?,
            };
            if secret.is_empty() {
                return Err(NotifyError::EmptySecret { group: owned(), index });
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(NotifyError::SecretTooShort { group: owned(), index, len: secret.len() });
            }
            match HmacSha256::new_from_slice(&secret) {
                Ok(mac) => Signer::Generic(mac),
                // HMAC takes keys of any length; kept as an error, not a panic.
                Err(_) => return Err(NotifyError::EmptySecret { group: owned(), index }),
            }
        }
    };
    if url.scheme() == "http" && !is_loopback(&host_only(&url)) {
        tracing::warn!(
            group,
            index,
            host = %host,
            "webhook uses plain http: notices (action parameters included) travel unencrypted"
        );
    }
    Ok(Target { url, host, signer })
}

enum SecretFileError {
    Io(std::io::Error),
    TooLarge,
}

/// The file's bytes with surrounding ASCII whitespace (a trailing newline,
/// typically) removed.
fn read_secret(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let file = std::fs::File::open(path).map_err(SecretFileError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_LEN + 1).read_to_end(&mut bytes).map_err(SecretFileError::Io)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(SecretFileError::TooLarge);
    }
    Ok(bytes.trim_ascii().to_vec())
}

/// `host` or `host:port`: what logs may say about a webhook.
fn url_host(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "<no host>".to_owned(),
    }
}

fn host_only(url: &Url) -> String {
    url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned()
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `x-arbiter-signature` value for `body` sent at `timestamp`:
/// `v1=` and the lowercase hex HMAC-SHA256(secret, `"<timestamp>.<body>"`).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => sign_with(mac, timestamp, body),
        // Unreachable (HMAC takes keys of any length); an empty signature
        // never verifies.
        Err(_) => "v1=".to_owned(),
    }
}

/// Whether `header` (an `x-arbiter-signature` value) signs `body` sent at
/// `timestamp` with `secret`. Constant-time. Check the timestamp's age
/// separately (see [`RECOMMENDED_MAX_AGE`]).
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    let Some(tag) = header.trim().strip_prefix("v1=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    feed(&mut mac, timestamp, body);
    mac.verify_slice(&tag).is_ok()
}

fn sign_with(mut mac: HmacSha256, timestamp: u64, body: &[u8]) -> String {
    feed(&mut mac, timestamp, body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn feed(mac: &mut HmacSha256, timestamp: u64, body: &[u8]) {
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A rendered body, or why it could not be rendered.
type Body = Result<Arc<Vec<u8>>, String>;

fn generic_body(notice: &ApprovalNotice) -> Body {
    #[derive(Serialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        version: u32,
        approval: &'a ApprovalNotice,
    }
    serde_json::to_vec(&Envelope { kind: EVENT_TYPE, version: EVENT_VERSION, approval: notice })
        .map(Arc::new)
        .map_err(|e| format!("cannot serialise the notice: {e}"))
}

fn slack_body(notice: &ApprovalNotice) -> Body {
    serde_json::to_vec(&slack_message(notice)).map(Arc::new).map_err(|e| format!("cannot serialise the notice: {e}"))
}

/// One delivery: a webhook, the client and what to log.
struct Job {
    client: reqwest::Client,
    target: Arc<Target>,
    retry: Retry,
    approval_id: Arc<str>,
    group: Arc<str>,
}

impl Job {
    async fn run(self, body: Body) -> Delivery {
        let mut delivery = Delivery {
            host: self.target.host.clone(),
            kind: self.target.kind(),
            attempts: 0,
            status: None,
            error: None,
            delivered: false,
        };
        let body = match body {
            Ok(body) => body,
            Err(error) => {
                delivery.error = Some(error);
                self.give_up(&delivery);
                return delivery;
            }
        };
        let attempts = self.retry.attempts.max(1);
        loop {
            delivery.attempts += 1;
            let retryable = match self.send(&body).await {
                Ok(status) => {
                    delivery.status = Some(status.as_u16());
                    delivery.error = None;
                    if status.is_success() {
                        delivery.delivered = true;
                        tracing::info!(
                            approval_id = %self.approval_id,
                            group = %self.group,
                            host = %delivery.host,
                            attempts = delivery.attempts,
                            "approval notification delivered"
                        );
                        return delivery;
                    }
                    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
                }
                Err(e) => {
                    delivery.status = None;
                    // A builder error (bad header value) would fail again.
                    let retryable = !e.is_builder();
                    delivery.error = Some(error_text(e));
                    retryable
                }
            };
            if !retryable || delivery.attempts >= attempts {
                self.give_up(&delivery);
                return delivery;
            }
            let wait = self.retry.backoff(delivery.attempts);
            tracing::debug!(
                approval_id = %self.approval_id,
                host = %delivery.host,
                attempt = delivery.attempts,
                status = ?delivery.status,
                error = ?delivery.error,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "approval notification attempt failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn send(&self, body: &[u8]) -> Result<StatusCode, reqwest::Error> {
        let mut request = self
            .client
            .post(self.target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Signer::Generic(mac) = &self.target.signer {
            // Signed per attempt: a retry carries a fresh timestamp.
            let timestamp = unix_now();
            request = request
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, sign_with(mac.clone(), timestamp, body));
        }
        // The answer's body is not read: only the status matters.
        Ok(request.send().await?.status())
    }

    fn give_up(&self, delivery: &Delivery) {
        tracing::warn!(
            approval_id = %self.approval_id,
            group = %self.group,
            host = %delivery.host,
            kind = ?delivery.kind,
            attempts = delivery.attempts,
            status = ?delivery.status,
            error = ?delivery.error,
            "approval notification not delivered; the approval stays pending"
        );
    }
}

/// The error and its causes, without the URL (a Slack URL is a secret).
fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = if e.is_timeout() { format!("timed out: {e}") } else { e.to_string() };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The Slack incoming-webhook message for `notice`. User-provided text is
/// escaped (`&`, `<`, `>`: otherwise `<!channel>` would ping everyone and
/// `<https://..|text>` would disguise a link) and bounded in length.
fn slack_message(notice: &ApprovalNotice) -> Value {
    let action = &notice.action;
    let field = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let requester = action.get("requester_context").unwrap_or(&Value::Null);
    let tool = field(action, "tool").unwrap_or_else(|| "?".to_owned());
    let operation = field(action, "operation").unwrap_or_else(|| "?".to_owned());
    let name = format!("{tool}.{operation}");
    let resource = field(action, "resource");
    let original = field(action, "original_tool").filter(|o| *o != tool);

    let mut what = code(&name, SLACK_FIELD_MAX);
    if let Some(resource) = &resource {
        what.push_str(" on ");
        what.push_str(&code(resource, SLACK_LONG_FIELD_MAX));
    }
    if let Some(original) = &original {
        what.push_str(" (tool ");
        what.push_str(&code(original, SLACK_FIELD_MAX));
        what.push(')');
    }
    let who = |key: &str| field(requester, key).map_or_else(|| "-".to_owned(), |v| code(&v, SLACK_FIELD_MAX));
    let summary = [
        format!("*Approval requested* for approver group {}", code(&notice.group, SLACK_FIELD_MAX)),
        format!("*Action:* {what}"),
        format!("*Requester:* human {}, agent {}, session {}", who("human"), who("agent"), who("session")),
        format!("*Reason:* {}", escape(&notice.reason, SLACK_LONG_FIELD_MAX)),
        format!("*Risk:* {:.2}", notice.risk),
        format!("*Deadline:* {}", escape(&notice.deadline, SLACK_FIELD_MAX)),
        format!("*Approval id:* {}", code(&notice.approval_id, SLACK_FIELD_MAX)),
        format!("*Argument hash:* {}", code(&notice.args_hash, SLACK_FIELD_MAX)),
    ]
    .join("\n");

    let parameters = action.get("parameters").unwrap_or(&Value::Null);
    let parameters = serde_json::to_string(parameters).unwrap_or_else(|_| "(not renderable)".to_owned());
    // Break runs of backticks so that the parameters cannot close the code
    // block and add formatted text of their own to the message.
    let parameters = parameters.replace("``", "`\u{200b}`");
    let parameters = format!("*Parameters:*\n```\n{}\n```", escape(&parameters, SLACK_PARAMS_MAX));

    let how = match &notice.approve_url {
        Some(url) => format!("To approve before the deadline: `POST {}` with an Arbiter API token.", inline(url, 500)),
        None => format!(
            "To approve before the deadline, use the Arbiter API with approval id {}.",
            code(&notice.approval_id, SLACK_FIELD_MAX)
        ),
    };

    let mut text = format!("Approval requested: {name}");
    if let Some(resource) = &resource {
        text.push_str(" on ");
        text.push_str(resource);
    }
    text.push_str(&format!(" (group {}, risk {:.2})", notice.group, notice.risk));

    json!({
        "text": escape(&text, SLACK_LONG_FIELD_MAX),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": summary } },
            { "type": "section", "text": { "type": "mrkdwn", "text": parameters } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": how } ] },
        ],
    })
}

/// `s` as inline code.
fn code(s: &str, max: usize) -> String {
    format!("`{}`", inline(s, max))
}

/// `s` for inside inline code: a backtick would end the span, so it becomes
/// the look-alike U+02CB.
fn inline(s: &str, max: usize) -> String {
    escape(&s.replace('`', "\u{2cb}"), max)
}

/// `s` with Slack's three escapes, cut to at most `max` characters (escapes
/// counted as sent, never split) with a visible marker.
fn escape(s: &str, max: usize) -> String {
    let piece = |c: char| match c {
        '&' => "&amp;".to_owned(),
        '<' => "&lt;".to_owned(),
        '>' => "&gt;".to_owned(),
        c => c.to_string(),
    };
    let full_len: usize = s.chars().map(|c| piece(c).chars().count()).sum();
    let budget = if full_len <= max { max } else { max.saturating_sub(TRUNCATED.chars().count()) };
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut len = 0;
    for c in s.chars() {
        let p = piece(c);
        let n = p.chars().count();
        if len + n > budget {
            out.push_str(TRUNCATED);
            return out;
        }
        out.push_str(&p);
        len += n;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use std::sync::Mutex;

    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode as AxumStatus};

    use super::*;

    const SECRET: &str = "0123456789abcdef-test-secret";

    /// A loopback receiver answering `script` in turn (the last one forever)
    /// and recording every request.
    struct Receiver {
        url: String,
        hits: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    }

    async fn receiver(script: Vec<u16>) -> Receiver {
        let hits: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let recorded = Arc::clone(&hits);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let recorded = Arc::clone(&recorded);
                let script = script.clone();
                async move {
                    let mut hits = recorded.lock().unwrap();
                    hits.push((headers, body));
                    let code = script.get(hits.len() - 1).or(script.last()).copied().unwrap_or(200);
                    AxumStatus::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        // Ends with the test's runtime.
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, hits }
    }

    fn hook(url: &str, kind: WebhookKind, secret: Option<&str>) -> WebhookConfig {
        WebhookConfig { url: url.to_owned(), kind, secret_file: None, secret: secret.map(str::to_owned) }
    }

    fn notifier(hooks: Vec<WebhookConfig>, retry: Retry) -> Notifier {
        Notifier::new(&BTreeMap::from([("data-owners".to_owned(), hooks)])).unwrap().with_retry(retry)
    }

    fn fast(attempts: u32) -> Retry {
        Retry { attempts, initial_backoff: Duration::from_millis(1) }
    }

    fn notice() -> ApprovalNotice {
        ApprovalNotice {
            approval_id: "apr-1".to_owned(),
            group: "data-owners".to_owned(),
            receipt_id: "rcpt-1".to_owned(),
            action: json!({
                "tool": "fs",
                "operation": "write",
                "parameters": {"path": "/srv/data/report.csv", "content": "a,b\n1,2"},
                "resource": "/srv/data/report.csv",
                "original_tool": "Write",
                "requester_context": {"session": "s-1", "human": "alice", "agent": "claude-code"},
            }),
            reason: "writes under /srv/data need a data owner".to_owned(),
            risk: 0.8,
            args_hash: "sha256:abcd".to_owned(),
            created_at: "2025-01-01T00:00:00Z".to_owned(),
            deadline: "2025-01-01T00:15:00Z".to_owned(),
            approve_url: Some("http://127.0.0.1:8750/v1/approvals/apr-1/approve".to_owned()),
        }
    }

    fn err(hooks: Vec<WebhookConfig>) -> NotifyError {
        Notifier::new(&BTreeMap::from([("g".to_owned(), hooks)])).unwrap_err()
    }

    #[test]
    // The signature matches an independent HMAC-SHA256 (Python's hmac module).
    fn sign_matches_reference_vector() {
        let sig = sign(b"0123456789abcdef-secret", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(sig, "v1=6948a2dc6985c92d09b9edade5c97dce2ba201452d91a72e4a20d35abe4d3420");
        assert!(verify(b"0123456789abcdef-secret", 1_700_000_000, br#"{"a":1}"#, &sig));
        assert!(!verify(b"0123456789abcdef-secret", 1_700_000_000, br#"{"a":1}"#, "v1=zz"));
        assert!(!verify(b"0123456789abcdef-secret", 1_700_000_000, br#"{"a":1}"#, &sig[3..]));
        assert!(!verify(b"0123456789abcdef-secret", 1_700_000_000, br#"{"a":1}"#, "v1="));
    }

    #[tokio::test]
    // A generic webhook gets the signed envelope; the receiver's checks fail on
    // a tampered body, another timestamp or a wrong secret.
    async fn generic_webhook_receives_signed_notice() {
        let rx = receiver(vec![200]).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.secret");
        std::fs::write(&path, format!("  {SECRET}\n")).unwrap();
        let config =
            WebhookConfig { url: rx.url.clone(), kind: WebhookKind::Generic, secret_file: Some(path), secret: None };
        let deliveries = notifier(vec![config], fast(3)).notify(notice()).await.unwrap();
        assert_eq!(deliveries.len(), 1);
        let d = &deliveries[0];
        assert!(d.delivered, "{d:?}");
        assert_eq!((d.attempts, d.status, d.kind), (1, Some(200), WebhookKind::Generic));
        assert!(rx.url.contains(&d.host));

        let hits = rx.hits.lock().unwrap();
        assert_eq!(hits.len(), 1);
        let (headers, body) = &hits[0];
        assert_eq!(headers["content-type"], "application/json");
        let timestamp: u64 = headers[TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
        assert!(unix_now().abs_diff(timestamp) < 60);
        let signature = headers[SIGNATURE_HEADER].to_str().unwrap();
        assert!(signature.starts_with("v1=") && signature.len() == 3 + 64);
        assert!(verify(SECRET.as_bytes(), timestamp, body, signature));

        let mut tampered = body.to_vec();
        tampered[body.len() / 2] ^= 1;
        assert!(!verify(SECRET.as_bytes(), timestamp, &tampered, signature));
        assert!(!verify(SECRET.as_bytes(), timestamp + 1, body, signature));
        assert!(!verify(b"another-secret-of-some-length", timestamp, body, signature));

        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], EVENT_TYPE);
        assert_eq!(v["version"], 1);
        let a = &v["approval"];
        assert_eq!(a["approval_id"], "apr-1");
        assert_eq!(a["group"], "data-owners");
        assert_eq!(a["receipt_id"], "rcpt-1");
        assert_eq!(a["action"]["parameters"]["path"], "/srv/data/report.csv");
        assert_eq!(a["args_hash"], "sha256:abcd");
        assert_eq!(a["risk"], 0.8);
        assert_eq!(a["deadline"], "2025-01-01T00:15:00Z");
        assert_eq!(a["approve_url"], "http://127.0.0.1:8750/v1/approvals/apr-1/approve");
    }

    #[tokio::test]
    // 429 and 503 are retried until the 200: three attempts, delivered.
    async fn transient_failures_are_retried_until_delivered() {
        let rx = receiver(vec![429, 503, 200]).await;
        let n = notifier(vec![hook(&rx.url, WebhookKind::Generic, Some(SECRET))], fast(5));
        let d = n.notify(notice()).await.unwrap();
        assert_eq!((d[0].delivered, d[0].attempts, d[0].status), (true, 3, Some(200)));
        let hits = rx.hits.lock().unwrap();
        assert_eq!(hits.len(), 3);
        // Every attempt is signed.
        for (headers, body) in hits.iter() {
            let ts: u64 = headers[TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
            assert!(verify(SECRET.as_bytes(), ts, body, headers[SIGNATURE_HEADER].to_str().unwrap()));
        }
    }

    #[tokio::test]
    // A webhook that always fails with 500 gets exactly the configured attempts.
    async fn persistent_server_error_gives_up_after_configured_attempts() {
        let rx = receiver(vec![500]).await;
        let n = notifier(vec![hook(&rx.url, WebhookKind::Generic, Some(SECRET))], fast(4));
        let d = n.notify(notice()).await.unwrap();
        assert_eq!((d[0].delivered, d[0].attempts, d[0].status), (false, 4, Some(500)));
        assert_eq!(rx.hits.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    // A 400 is final: one attempt, not delivered.
    async fn client_error_is_not_retried() {
        let rx = receiver(vec![400, 200]).await;
        let n = notifier(vec![hook(&rx.url, WebhookKind::Generic, Some(SECRET))], fast(5));
        let d = n.notify(notice()).await.unwrap();
        assert_eq!((d[0].delivered, d[0].attempts, d[0].status), (false, 1, Some(400)));
        assert_eq!(rx.hits.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    // Connection errors are retried; neither the result nor Debug shows the
    // URL's path or query (a Slack URL's secret).
    async fn connection_errors_are_retried_and_never_show_the_url() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}/services/T000/B000/XSECRETX?token=QSECRETQ");
        let n = notifier(vec![hook(&url, WebhookKind::Slack, None)], fast(3));
        let d = n.notify(notice()).await.unwrap();
        assert_eq!((d[0].delivered, d[0].attempts, d[0].status), (false, 3, None));
        assert_eq!(d[0].host, addr.to_string());
        let shown = format!("{d:?} {n:?} {:?}", hook(&url, WebhookKind::Slack, None));
        assert!(d[0].error.is_some());
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    // Debug of a config hides the inline secret.
    fn debug_hides_secrets() {
        let shown = format!("{:?}", hook("https://h.example/x", WebhookKind::Generic, Some(SECRET)));
        assert!(!shown.contains(SECRET) && shown.contains("h.example"), "{shown}");
    }

    #[tokio::test]
    // The Slack message: text and blocks, user text escaped, parameters cut to
    // 1500 characters with a marker, no signature headers.
    async fn slack_message_shape() {
        let rx = receiver(vec![200]).await;
        let mut notice = notice();
        notice.reason = "asks <!channel> & <https://evil.example|click>".to_owned();
        notice.action["resource"] = json!("/srv/<b>&x");
        notice.action["parameters"] = json!({"cmd": "echo ```*approved*``` <!here>", "blob": "<&>".repeat(2000)});
        let n = notifier(vec![hook(&rx.url, WebhookKind::Slack, None)], fast(1));
        let d = n.notify(notice).await.unwrap();
        assert!(d[0].delivered, "{d:?}");

        let hits = rx.hits.lock().unwrap();
        let (headers, body) = &hits[0];
        assert!(headers.get(SIGNATURE_HEADER).is_none());
        let raw = std::str::from_utf8(body).unwrap();
        for bad in ["<!channel>", "<!here>", "<https:", "<b>", "```*approved*"] {
            assert!(!raw.contains(bad), "{bad} in {raw}");
        }
        let v: Value = serde_json::from_slice(body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("fs.write") && text.contains("/srv/&lt;b&gt;&amp;x"), "{text}");
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        let summary = blocks[0]["text"]["text"].as_str().unwrap();
        for want in [
            "`fs.write`",
            "`/srv/&lt;b&gt;&amp;x`",
            "(tool `Write`)",
            "human `alice`, agent `claude-code`, session `s-1`",
            "asks &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;",
            "0.80",
            "2025-01-01T00:15:00Z",
            "`apr-1`",
            "`sha256:abcd`",
        ] {
            assert!(summary.contains(want), "{want} not in {summary}");
        }
        let params = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(params.contains("&lt;&amp;&gt;") && params.contains(TRUNCATED), "{params}");
        let inner = params.trim_start_matches("*Parameters:*\n```\n").trim_end_matches("\n```");
        assert!(inner.chars().count() <= SLACK_PARAMS_MAX);
        // Only the block's own fences remain.
        assert_eq!(params.matches("```").count(), 2, "{params}");
        for block in blocks.iter().take(2) {
            assert!(block["text"]["text"].as_str().unwrap().chars().count() <= 3000);
        }
        let how = blocks[2]["elements"][0]["text"].as_str().unwrap();
        assert!(how.contains("`POST http://127.0.0.1:8750/v1/approvals/apr-1/approve`"), "{how}");
    }

    #[test]
    // Truncation counts escapes as sent and never splits one.
    fn escape_truncates_whole_entities() {
        assert_eq!(escape("a<b", 10), "a&lt;b");
        let out = escape(&"&".repeat(100), 30);
        assert!(out.chars().count() <= 30 && out.ends_with(TRUNCATED), "{out}");
        assert!(out.trim_end_matches(TRUNCATED).split("&amp;").all(str::is_empty), "{out}");
    }

    #[test]
    // Each configuration mistake is its own error.
    fn config_validation_errors() {
        let dir = tempfile::tempdir().unwrap();
        let g = |k| hook("https://hooks.example/x", k, None);
        assert!(matches!(
            err(vec![hook("ftp://hooks.example/x", WebhookKind::Slack, None)]),
            NotifyError::UnsupportedScheme { scheme, .. } if scheme == "ftp"
        ));
        assert!(matches!(err(vec![hook("not a url", WebhookKind::Slack, None)]), NotifyError::InvalidUrl { .. }));
        assert!(matches!(err(vec![g(WebhookKind::Generic)]), NotifyError::MissingSecret { .. }));
        assert!(matches!(
            err(vec![hook("https://hooks.example/x", WebhookKind::Slack, Some(SECRET))]),
            NotifyError::SecretForSlack { .. }
        ));
        let mut slack_file = g(WebhookKind::Slack);
        slack_file.secret_file = Some(dir.path().join("s"));
        assert!(matches!(err(vec![slack_file]), NotifyError::SecretForSlack { .. }));
        assert!(matches!(
            err(vec![hook("https://hooks.example/x", WebhookKind::Generic, Some("short"))]),
            NotifyError::SecretTooShort { len: 5, .. }
        ));
        let mut both = hook("https://hooks.example/x", WebhookKind::Generic, Some(SECRET));
        both.secret_file = Some(dir.path().join("s"));
        assert!(matches!(err(vec![both]), NotifyError::ConflictingSecrets { .. }));

        let mut missing = g(WebhookKind::Generic);
        missing.secret_file = Some(dir.path().join("absent.secret"));
        assert!(matches!(err(vec![missing]), NotifyError::SecretUnreadable { .. }));
        let blank = dir.path().join("blank.secret");
        std::fs::write(&blank, " \n").unwrap();
        let mut empty = g(WebhookKind::Generic);
        empty.secret_file = Some(blank);
        assert!(matches!(err(vec![empty]), NotifyError::EmptySecret { .. }));
        let big = dir.path().join("big.secret");
        std::fs::write(&big, vec![b'k'; 70 * 1024]).unwrap();
        let mut large = g(WebhookKind::Generic);
        large.secret_file = Some(big);
        assert!(matches!(err(vec![large]), NotifyError::SecretFileTooLarge { .. }));

        // The position in the list is reported; the secret is not.
        let e = err(vec![g(WebhookKind::Slack), hook("https://h.example/", WebhookKind::Generic, Some("0123456789"))]);
        let msg = e.to_string();
        assert!(msg.contains("`g`, webhooks[1]") && !msg.contains("0123456789"), "{msg}");
    }

    #[test]
    // The config file form: `kind` defaults to generic, unknown keys are refused.
    fn config_deserializes_from_toml() {
        #[derive(Deserialize)]
        struct File {
            groups: BTreeMap<String, Vec<WebhookConfig>>,
        }
        let f: File = toml::from_str(
            r#"[groups]
            data-owners = [
              { url = "https://hooks.example/a", secret = "0123456789abcdef" },
              { url = "https://hooks.slack.com/services/T/B/X", kind = "slack" },
            ]"#,
        )
        .unwrap();
        let hooks = &f.groups["data-owners"];
        assert_eq!((hooks[0].kind, hooks[1].kind), (WebhookKind::Generic, WebhookKind::Slack));
        let n = Notifier::new(&f.groups).unwrap();
        assert!(n.has_group("data-owners") && !n.has_group("ops"));
        assert!(toml::from_str::<File>(r#"groups = { g = [ { url = "https://x", sekret = "y" } ] }"#).is_err());
    }

    #[tokio::test]
    // No webhook for the group: nothing is sent and the handle resolves to no
    // deliveries, whether notifications are disabled or the group is unknown.
    async fn group_without_webhooks_notifies_nobody() {
        assert!(Notifier::disabled().notify(notice()).await.unwrap().is_empty());
        assert!(!Notifier::disabled().has_group("data-owners"));
        let empty = Notifier::new(&BTreeMap::from([("data-owners".to_owned(), Vec::new())])).unwrap();
        assert!(!empty.has_group("data-owners"));
        assert!(empty.notify(notice()).await.unwrap().is_empty());
        let rx = receiver(vec![200]).await;
        let other = notifier(vec![hook(&rx.url, WebhookKind::Generic, Some(SECRET))], fast(1));
        let mut n = notice();
        n.group = "ops".to_owned();
        assert!(other.notify(n).await.unwrap().is_empty());
        assert!(rx.hits.lock().unwrap().is_empty());
    }

    #[test]
    // Default schedule: 5 attempts, waits of 0.5, 1, 2, 4 s; capped for long ones.
    fn default_backoff_schedule() {
        let r = Retry::default();
        assert_eq!(r.attempts, 5);
        let waits: Vec<_> = (1..=4).map(|a| r.backoff(a).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000]);
        assert_eq!(r.backoff(40), MAX_BACKOFF);
    }
}
