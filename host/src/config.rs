//! Service configuration: a TOML file plus command-line overrides.
//!
//! Every field is optional; the defaults are the secure ones (loopback bind,
//! generated tokens, bundled baseline pack, bounded plugins). Out-of-range
//! values are rejected when the file loads, never later on the hot path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::Posture;

/// Errors raised while loading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file `{path}`: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// A value is outside its allowed range.
    #[error("invalid config value `{field}`: {reason}")]
    Invalid {
        /// Dotted name of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Default = `127.0.0.1:8750` (loopback only).
    pub listen: SocketAddr,
    /// Data directory (store, keys, tokens, plugins). Default = `./arbiter-data`.
    pub data_dir: PathBuf,
    /// Policy pack directory. Default = the bundled `policies/baseline` pack.
    pub policies: Option<PathBuf>,
    /// Decision when no policy matches; overrides the pack's own setting.
    pub default_posture: Option<Posture>,
    /// Credentials for the HTTP API.
    pub auth: AuthConfig,
    /// Bounds on hook requests.
    pub ingress: IngressConfig,
    /// Plugin runtime limits.
    pub plugins: PluginLimits,
    /// Receipt store settings.
    pub store: StoreConfig,
    /// The Merkle log over the receipts: origin and checkpoint schedule.
    pub log: LogConfig,
    /// How actions are scored against the session's intent.
    pub alignment: AlignmentProviderConfig,
    /// Integrations by name (the `{integration}` of `/v1/hooks/{integration}`).
    /// Default = `claude-code` served by the bundled `claude-code` plugin.
    pub integrations: BTreeMap<String, IntegrationConfig>,
    /// STEP_UP: deadlines, how long a hook waits, who is notified.
    pub approvals: ApprovalsConfig,
    /// DEFER: deadlines and the cascade cap.
    pub deferrals: DeferralsConfig,
    /// Tenants by id (`[a-z0-9_-]`, at most 32). Default: none, and
    /// everything belongs to the tenant `default` (see `crate::tenants`).
    pub tenants: BTreeMap<String, TenantConfig>,
}

/// `[tenants.<id>]`: one tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Display name. Default = the id.
    pub name: Option<String>,
    /// The integrations it owns (each owned by at most one tenant; those no
    /// tenant lists belong to `default`).
    pub integrations: Vec<String>,
    /// Its policy pack directory. Default = the bundled baseline pack. An
    /// uploaded pack (`PUT /v1/policies` by the tenant's admin) replaces it.
    pub policies: Option<PathBuf>,
}

/// The integrations served without configuration: one per bundled adapter
/// whose vendor authenticates with the ingress token. (Copilot Studio needs
/// its Entra ID settings, so it is configured explicitly.) GitHub Copilot's
/// `ask` is a deny in headless and cloud runs, so its STEP_UP goes to
/// Arbiter's approvers; so does the MCP gateway's (`arbiter mcp-gateway`),
/// which has no one to ask. Cursor asks on its shell and MCP hooks, but a
/// file read has only allow or deny, and whether its generic `preToolUse`
/// takes `ask` is documented both ways, so those go to the approvers too.
fn default_integrations() -> BTreeMap<String, IntegrationConfig> {
    [
        ("claude-code", None, &[][..]),
        ("codex-cli", None, &[]),
        ("cursor", None, &["beforeReadFile", "beforeTabFileRead", "preToolUse"]),
        ("gemini-cli", None, &[]),
        ("github-copilot", Some(StepUpMode::Hold), &[]),
        ("mcp-gateway", Some(StepUpMode::Hold), &[]),
    ]
    .into_iter()
    .map(|(name, step_up, hold_events)| {
        let integration = IntegrationConfig {
            plugin: name.to_owned(),
            settings: BTreeMap::new(),
            step_up,
            step_up_hold_events: hold_events.iter().map(|e| (*e).to_owned()).collect(),
            auth: None,
            hold_ms: None,
            limits: crate::limits::LimitsConfig::default(),
        };
        (name.to_owned(), integration)
    })
    .collect()
}

/// `[approvals]`: the approval service behind STEP_UP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// Seconds an approval request stays open before it expires to DENY.
    /// Default = 300.
    pub deadline_secs: u64,
    /// How long a hook request in `hold` mode waits for an approver before it
    /// answers with a block naming the approval (the agent retries the
    /// identical action once approved). Must stay inside the vendor's hook
    /// timeout and under `ingress.request_timeout_ms`. Default = 8000.
    pub hold_ms: u64,
    /// Uses of one approval: how many identical actions it lets through.
    /// Default = 1.
    pub max_uses: u32,
    /// Base URL put in notifications for the approve call, e.g.
    /// `https://arbiter.internal.example`. Default: none.
    pub public_url: Option<String>,
    /// Approver groups (the `@approvers` of policies): who is notified.
    pub groups: BTreeMap<String, ApproverGroup>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self { deadline_secs: 300, hold_ms: 8000, max_uses: 1, public_url: None, groups: BTreeMap::new() }
    }
}

/// One approver group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApproverGroup {
    /// Webhooks notified of each new approval request for this group.
    pub webhooks: Vec<crate::notify::WebhookConfig>,
}

/// `[deferrals]`: the deferral service behind DEFER.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeferralsConfig {
    /// Seconds a deferred action waits for its evidence before it is
    /// denied. Default = 120.
    pub deadline_secs: u64,
    /// Deferred actions one session may have pending at once; one more
    /// deferral (a cascade deeper than this) is a DENY. Default = 3.
    pub max_pending_per_session: u32,
    /// How long a hook waits for a deferred action's evidence before it
    /// answers with a block naming the deferral (same bounds as
    /// `approvals.hold_ms`). Default = 8000.
    pub hold_ms: u64,
}

impl Default for DeferralsConfig {
    fn default() -> Self {
        Self { deadline_secs: 120, max_pending_per_session: 3, hold_ms: 8000 }
    }
}

impl Default for Config {
    fn default() -> Self {
        let integrations = default_integrations();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8750)),
            data_dir: PathBuf::from("./arbiter-data"),
            policies: None,
            default_posture: None,
            auth: AuthConfig::default(),
            ingress: IngressConfig::default(),
            plugins: PluginLimits::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            alignment: AlignmentProviderConfig::default(),
            integrations,
            approvals: ApprovalsConfig::default(),
            deferrals: DeferralsConfig::default(),
            tenants: BTreeMap::new(),
        }
    }
}

/// Bootstrap credentials and single sign-on. The ingress and admin tokens:
/// when neither a value nor a file is configured, a random token is generated
/// on first start under the data directory (mode 0600). More tokens, of any
/// role, are made with `arbiter token create` (see `crate::tokens`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Ingress bearer token given inline. Prefer `ingress_token_file`.
    pub ingress_token: Option<String>,
    /// File holding the ingress bearer token.
    pub ingress_token_file: Option<PathBuf>,
    /// Admin bearer token given inline. Prefer `admin_token_file`.
    pub admin_token: Option<String>,
    /// File holding the admin bearer token.
    pub admin_token_file: Option<PathBuf>,
    /// Approvers by identity (recorded as the resolver of what they
    /// approve or deny). Each gets a token (inline, a file, or by default
    /// `<data_dir>/approvers/<identity>.token`, generated on first start)
    /// and the groups they approve for.
    pub approvers: BTreeMap<String, ApproverAuth>,
    /// Single sign-on: OIDC bearer JWTs mapped to roles. Default: off.
    pub oidc: Option<crate::auth::OidcConfig>,
}

/// One approver's credentials and groups.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApproverAuth {
    /// Bearer token given inline. Prefer `token_file`.
    pub token: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// Approver groups (the `@approvers` of policies) this person decides for.
    pub groups: Vec<String>,
    /// The tenant whose approvals and deferrals they resolve. Default =
    /// `default`.
    pub tenant: Option<String>,
}

/// Bounds applied to every hook request before a plugin sees it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// Largest accepted body, in bytes. Default = 1 MiB: real hook payloads
    /// are a few KiB; a Write of a large file is the biggest we have seen.
    pub body_limit_bytes: usize,
    /// Requests served at once before new ones are refused. Default = 1024.
    /// Hooks over it get the vendor's blocking reply and a receipt; other
    /// routes (which have a separate pool of this size) get 503.
    pub max_concurrent_requests: usize,
    /// Whole-request timeout in milliseconds. Default = 10 000. A hook that
    /// times out gets the vendor's blocking reply and a receipt (per
    /// integration: `limits.timeout_ms`); other routes get 503. Never an
    /// ALLOW.
    pub request_timeout_ms: u64,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self { body_limit_bytes: 1024 * 1024, max_concurrent_requests: 1024, request_timeout_ms: 10_000 }
    }
}

/// Limits on every plugin call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Wall-clock deadline of one plugin call, in milliseconds, enforced by
    /// epoch interruption with 1 ms ticks. Default = 50.
    pub deadline_ms: u64,
    /// Linear-memory cap per instance, in MiB. Default = 32.
    pub memory_limit_mib: u64,
    /// Instances alive at once (pooling allocator slots). Calls beyond this
    /// wait for a slot. Default = 64.
    pub max_instances: u32,
    /// Plugin directory: unsigned `*.wasm` components loaded at start,
    /// signed `*.bundle` files loaded at start and watched, and the bundles
    /// uploaded through the API. Default = `<data_dir>/plugins`.
    pub dir: Option<PathBuf>,
    /// Trusted bundle publishers: name → standard base64 of the 32-byte
    /// Ed25519 public key (as `arbiter plugin keygen` prints it). Default =
    /// none; the bundled plugins' publisher `arbiter-bundled` is always
    /// trusted and cannot be configured.
    pub publishers: BTreeMap<String, String>,
    /// Largest bundle accepted (upload or file), in bytes. Default = 64 MiB:
    /// a Rust adapter bundle is ~200 KB, a Python one ~19 MB.
    pub max_bundle_bytes: usize,
    /// How often `dir` is scanned for new or changed `*.bundle` files, in
    /// milliseconds; 0 turns the watch off. Default = 2000.
    pub watch_interval_ms: u64,
    /// Keep compiled plugins in `<data_dir>/plugin-cache/` so a restart does
    /// not compile them again. Default = true.
    pub cache: bool,
    /// Capabilities granted per plugin name (`[plugins.grants.<name>]`).
    /// Deny by default: a plugin without an entry gets none.
    pub grants: BTreeMap<String, Grant>,
}

/// What one plugin may use beyond its sandbox. Each capability is granted
/// by its table being present.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Outbound HTTP to allow-listed hosts.
    pub http: Option<HttpGrant>,
    /// A key-value namespace of the plugin's own.
    pub kv: Option<KvGrant>,
    /// Configuration values the plugin reads by key.
    pub config: Option<BTreeMap<String, String>>,
    /// Secrets the plugin reads by name, each from a file or an environment
    /// variable, resolved at start. Never logged.
    pub secrets: Option<BTreeMap<String, SecretSource>>,
}

/// The `http` capability.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Allowed hosts, `host` (default port of the scheme) or `host:port`.
    /// Names are compared as written: `localhost` does not allow `127.0.0.1`.
    pub hosts: Vec<String>,
    /// Timeout of one request, in milliseconds; the plugin call's deadline
    /// caps it further. Default = 5000.
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body, in bytes. Default = 1 MiB.
    #[serde(default = "default_http_max_response_bytes")]
    pub max_response_bytes: usize,
}

fn default_http_timeout_ms() -> u64 {
    5000
}

fn default_http_max_response_bytes() -> usize {
    1024 * 1024
}

/// The `kv` capability.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvGrant {
    /// Bytes of keys plus values the namespace may hold. Default = 1 MiB.
    pub quota_bytes: u64,
    /// Largest value, in bytes. Default = 64 KiB.
    pub max_value_bytes: usize,
}

impl Default for KvGrant {
    fn default() -> Self {
        Self { quota_bytes: 1024 * 1024, max_value_bytes: 64 * 1024 }
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretSource {
    /// The contents of a file, without a trailing newline.
    File(PathBuf),
    /// The value of an environment variable.
    Env(String),
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            deadline_ms: 50,
            memory_limit_mib: 32,
            max_instances: 64,
            dir: None,
            publishers: BTreeMap::new(),
            max_bundle_bytes: 64 * 1024 * 1024,
            watch_interval_ms: 2000,
            cache: true,
            grants: BTreeMap::new(),
        }
    }
}

/// Receipt store settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Most receipts made durable by one fsync (group commit). Default = 512.
    pub max_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { max_batch: 512 }
    }
}

/// `[log]`: the transparency log over the receipts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The log's name in its checkpoints (C2SP `origin`, also the signing
    /// key's note name), e.g. `arbiter.example.com/prod`. Default = the
    /// stored one, or for a new store `arbiter.local/log/<key id>`. A log
    /// that has receipts keeps its origin; setting another one is refused.
    pub origin: Option<String>,
    /// Make a signed checkpoint after this many receipts. Default = 1000.
    pub checkpoint_every: u64,
    /// …or this many seconds after the last checkpoint when receipts wait
    /// for one. Default = 10: a receipt is provable within ~10 s.
    pub checkpoint_interval_secs: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { origin: None, checkpoint_every: 1000, checkpoint_interval_secs: 10 }
    }
}

impl LogConfig {
    /// The store's view of these settings.
    pub fn options(&self) -> crate::store::LogOptions {
        crate::store::LogOptions {
            origin: self.origin.clone(),
            checkpoint_every: self.checkpoint_every,
            checkpoint_interval: std::time::Duration::from_secs(self.checkpoint_interval_secs),
        }
    }
}

/// The embedding behind intent alignment (AARM R7).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignmentProviderConfig {
    /// `builtin` (default: an in-process hashed n-gram embedding, nothing
    /// downloaded) or `http` (an OpenAI-compatible `/v1/embeddings` service).
    pub provider: AlignmentProvider,
    /// Base URL of the embedding service (`http` only).
    pub url: Option<String>,
    /// Model name sent to the service (`http` only).
    pub model: Option<String>,
    /// Vector length the model returns (`http` only).
    pub dimensions: Option<usize>,
    /// File holding the service's API key (`http` only; never logged).
    pub api_key_file: Option<PathBuf>,
    /// Per-call timeout in milliseconds (`http` only). Default = 200: the
    /// call sits on the decision path; a slower answer leaves the score
    /// unknown, and policies that need it defer.
    pub timeout_ms: Option<u64>,
}

/// Which embedding provider to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlignmentProvider {
    /// The built-in hashed n-gram embedding.
    #[default]
    Builtin,
    /// An OpenAI-compatible HTTP service.
    Http,
}

/// One integration: which plugin serves it and the settings it may read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Plugin name (as reported by its `describe`).
    pub plugin: String,
    /// Values the plugin reads through the `config` import. Not secret.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// How STEP_UP reaches this vendor: `ask` (its own interactive prompt;
    /// the human at the console decides) or `hold` (Arbiter's approval
    /// service; the hook waits for an approver). Default: `ask` when the
    /// plugin says its vendor carries STEP_UP natively, else `hold`. Set
    /// `hold` for headless clients, which turn `ask` into a deny.
    #[serde(default)]
    pub step_up: Option<StepUpMode>,
    /// Hook events (the vendor's event name) whose STEP_UP goes to Arbiter's
    /// approval service even when `step_up` is `ask`, because the vendor
    /// cannot ask there (Cursor's `beforeReadFile` has only allow and deny).
    /// The hook then answers with a block naming the approval, and the agent
    /// retries once it is approved. Default: none (`cursor`'s default
    /// integration lists its file-read and `preToolUse` hooks).
    #[serde(default)]
    pub step_up_hold_events: Vec<String>,
    /// How this integration's callers authenticate, when they cannot send
    /// the ingress token (Copilot Studio: an Entra ID JWT). Default: the
    /// ingress token.
    #[serde(default)]
    pub auth: Option<crate::inbound::AuthConfig>,
    /// Longest a hook of this integration waits for an approver or
    /// evidence, in milliseconds, instead of `approvals.hold_ms` /
    /// `deferrals.hold_ms` (the shorter wins). Vendors with a short budget
    /// set it low: Copilot Studio allows the tool when no answer comes within
    /// one second, so its integration must answer at once (`hold_ms = 0`).
    #[serde(default)]
    pub hold_ms: Option<u64>,
    /// Rate, concurrency and deadline bounds on this integration's hooks;
    /// a refusal is the vendor's blocking reply. Default: only the server's
    /// `[ingress]` bounds.
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
}

/// See [`IntegrationConfig::step_up`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepUpMode {
    /// The vendor's own prompt.
    Ask,
    /// Arbiter's approval service.
    Hold,
}

impl Config {
    /// Load a file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let config = match path {
            None => Self::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                let mut config: Self = toml::from_str(&text)
                    .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
                // The default integrations stay unless the file redefines them.
                for (name, integration) in default_integrations() {
                    config.integrations.entry(name).or_insert(integration);
                }
                config
            }
        };
        Ok(config)
    }

    /// Check ranges. Called after command-line overrides are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.to_owned() });
        if !(1..=10_000).contains(&self.plugins.deadline_ms) {
            return bad("plugins.deadline_ms", "must be between 1 and 10000");
        }
        if !(1..=4096).contains(&self.plugins.memory_limit_mib) {
            return bad("plugins.memory_limit_mib", "must be between 1 and 4096");
        }
        if !(1..=10_000).contains(&self.plugins.max_instances) {
            return bad("plugins.max_instances", "must be between 1 and 10000");
        }
        if !(1024..=1024 * 1024 * 1024).contains(&self.plugins.max_bundle_bytes) {
            return bad("plugins.max_bundle_bytes", "must be between 1024 and 1073741824");
        }
        if self.plugins.watch_interval_ms != 0 && !(100..=3_600_000).contains(&self.plugins.watch_interval_ms) {
            return bad("plugins.watch_interval_ms", "must be 0 (off) or between 100 and 3600000");
        }
        for (name, grant) in &self.plugins.grants {
            if let Some(http) = &grant.http {
                if http.hosts.is_empty() {
                    return bad("plugins.grants", &format!("`{name}`: http.hosts must list at least one host"));
                }
                if !(1..=60_000).contains(&http.timeout_ms) {
                    return bad("plugins.grants", &format!("`{name}`: http.timeout_ms must be between 1 and 60000"));
                }
                if !(1..=64 * 1024 * 1024).contains(&http.max_response_bytes) {
                    return bad(
                        "plugins.grants",
                        &format!("`{name}`: http.max_response_bytes must be between 1 and 67108864"),
                    );
                }
            }
            if let Some(kv) = &grant.kv
                && (kv.quota_bytes == 0 || kv.max_value_bytes == 0 || kv.max_value_bytes > 16 * 1024 * 1024)
            {
                return bad(
                    "plugins.grants",
                    &format!("`{name}`: kv.quota_bytes must be positive, kv.max_value_bytes 1 .. 16777216"),
                );
            }
        }
        for (name, key) in &self.plugins.publishers {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if !valid_name || name == crate::plugins::bundle::BUNDLED_PUBLISHER {
                return Err(ConfigError::Invalid {
                    field: "plugins.publishers",
                    reason: format!(
                        "publisher name `{name}` must be 1 to 64 of [A-Za-z0-9_-] and not `arbiter-bundled`"
                    ),
                });
            }
            if let Err(e) = crate::plugins::bundle::parse_public_key(key) {
                return Err(ConfigError::Invalid {
                    field: "plugins.publishers",
                    reason: format!("publisher `{name}`: {e}"),
                });
            }
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.ingress.body_limit_bytes) {
            return bad("ingress.body_limit_bytes", "must be between 1 KiB and 64 MiB");
        }
        if self.ingress.max_concurrent_requests == 0 {
            return bad("ingress.max_concurrent_requests", "must be at least 1");
        }
        if self.ingress.request_timeout_ms == 0 {
            return bad("ingress.request_timeout_ms", "must be at least 1");
        }
        if !(1..=65_536).contains(&self.store.max_batch) {
            return bad("store.max_batch", "must be between 1 and 65536");
        }
        if !(1..=1_000_000).contains(&self.log.checkpoint_every) {
            return bad("log.checkpoint_every", "must be between 1 and 1000000");
        }
        if !(1..=86_400).contains(&self.log.checkpoint_interval_secs) {
            return bad("log.checkpoint_interval_secs", "must be between 1 and 86400");
        }
        if let Some(origin) = &self.log.origin
            && let Err(reason) = crate::checkpoint::check_origin(origin)
        {
            return Err(ConfigError::Invalid { field: "log.origin", reason });
        }
        if !(1..=86_400).contains(&self.approvals.deadline_secs) {
            return bad("approvals.deadline_secs", "must be between 1 and 86400");
        }
        if self.approvals.hold_ms.saturating_add(1000) > self.ingress.request_timeout_ms {
            return bad("approvals.hold_ms", "must be at least 1000 ms under ingress.request_timeout_ms");
        }
        if self.approvals.max_uses == 0 {
            return bad("approvals.max_uses", "must be at least 1");
        }
        if !(1..=86_400).contains(&self.deferrals.deadline_secs) {
            return bad("deferrals.deadline_secs", "must be between 1 and 86400");
        }
        if self.deferrals.hold_ms.saturating_add(1000) > self.ingress.request_timeout_ms {
            return bad("deferrals.hold_ms", "must be at least 1000 ms under ingress.request_timeout_ms");
        }
        if self.deferrals.max_pending_per_session == 0 {
            return bad("deferrals.max_pending_per_session", "must be at least 1");
        }
        for name in self.auth.approvers.keys() {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._-+".contains(&b));
            if !ok {
                return Err(ConfigError::Invalid {
                    field: "auth.approvers",
                    reason: format!("approver `{name}` must be [A-Za-z0-9@._+-], at most 128 characters"),
                });
            }
        }
        self.validate_tenants()?;
        for (name, integration) in &self.integrations {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(ConfigError::Invalid {
                    field: "integrations",
                    reason: format!("integration name `{name}` must be [A-Za-z0-9_-]+"),
                });
            }
            if integration.plugin.is_empty() {
                return Err(ConfigError::Invalid {
                    field: "integrations.plugin",
                    reason: format!("integration `{name}` names no plugin"),
                });
            }
            let limits = &integration.limits;
            limits.validate().map_err(|reason| ConfigError::Invalid {
                field: "integrations.limits",
                reason: format!("{name}: {reason}"),
            })?;
            // A held hook must answer with its pending reason before the
            // deadline refuses it.
            let hold = self.approvals.hold_ms.max(self.deferrals.hold_ms).min(integration.hold_ms.unwrap_or(u64::MAX));
            if let Some(t) = limits.timeout_ms
                && (t > self.ingress.request_timeout_ms || hold.saturating_add(1000) > t)
            {
                return Err(ConfigError::Invalid {
                    field: "integrations.limits.timeout_ms",
                    reason: format!(
                        "{name}: must be at most ingress.request_timeout_ms and at least 1000 ms over the hold time ({hold} ms)"
                    ),
                });
            }
        }
        Ok(())
    }

    fn validate_tenants(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (id, tenant) in &self.tenants {
            if id == crate::tenants::DEFAULT {
                return invalid(
                    "tenants",
                    "`default` is implicit: its integrations are those no tenant lists, its pack is `policies`"
                        .to_owned(),
                );
            }
            if !crate::tenants::valid_id(id) {
                return invalid("tenants", format!("tenant id `{id}` must be [a-z0-9_-], at most 32 characters"));
            }
            if tenant.name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 200 || n.chars().any(char::is_control)) {
                return invalid("tenants.name", format!("{id}: 1 to 200 printable characters"));
            }
            for integration in &tenant.integrations {
                if !self.integrations.contains_key(integration) {
                    return invalid("tenants.integrations", format!("{id}: no integration `{integration}`"));
                }
                if let Some(other) = owner.insert(integration, id) {
                    return invalid(
                        "tenants.integrations",
                        format!("integration `{integration}` is listed by tenants `{other}` and `{id}`"),
                    );
                }
            }
        }
        for (name, approver) in &self.auth.approvers {
            if let Some(t) = &approver.tenant
                && t != crate::tenants::DEFAULT
                && !self.tenants.contains_key(t)
            {
                return invalid("auth.approvers.tenant", format!("{name}: no tenant `{t}`"));
            }
        }
        Ok(())
    }

    /// Where extra plugins are loaded from.
    pub fn plugin_dir(&self) -> PathBuf {
        self.plugins.dir.clone().unwrap_or_else(|| self.data_dir.join("plugins"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    // The example config shipped in deploy/ loads and validates as is.
    fn shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/arbiter.example.toml");
        let config = Config::load(Some(&path)).unwrap();
        config.validate().unwrap();
        assert!(config.integrations.contains_key("claude-code"));
    }

    #[test]
    // Cursor is served by default, its no-ask events held; a file that
    // redefines it keeps its own list.
    fn cursor_default_and_hold_events() {
        let config = Config::load(None).unwrap();
        let cursor = &config.integrations["cursor"];
        assert_eq!((cursor.plugin.as_str(), cursor.step_up), ("cursor", None));
        assert_eq!(cursor.step_up_hold_events, ["beforeReadFile", "beforeTabFileRead", "preToolUse"]);
        assert!(config.integrations["gemini-cli"].step_up_hold_events.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[integrations.cursor]\nplugin = \"cursor\"\nstep_up_hold_events = [\"beforeReadFile\"]\n",
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.integrations["cursor"].step_up_hold_events, ["beforeReadFile"]);
    }

    #[test]
    // Tenants own existing integrations, one owner each; `default` is
    // implicit; an approver names a configured tenant.
    fn tenants_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let check = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(Some(&path)).unwrap().validate()
        };
        let acme = "[integrations.acme-cc]\nplugin = \"claude-code\"\n[tenants.acme]\nintegrations = [\"acme-cc\"]\n";
        check(acme).unwrap();
        assert!(check(&format!("{acme}[tenants.beta]\nintegrations = [\"acme-cc\"]\n")).is_err());
        assert!(check("[tenants.acme]\nintegrations = [\"nope\"]\n").is_err());
        assert!(check("[tenants.default]\n").is_err());
        assert!(check("[tenants.Acme]\n").is_err());
        assert!(check(&format!("{acme}[auth.approvers.bob]\ntenant = \"beta\"\n")).is_err());
        check(&format!("{acme}[auth.approvers.bob]\ntenant = \"acme\"\n")).unwrap();
    }

    #[test]
    // An unknown key is an error, not silently ignored.
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[plugins]\ndeadline = 5\n").unwrap();
        assert!(matches!(Config::load(Some(&path)), Err(ConfigError::Parse { .. })));
    }
}
