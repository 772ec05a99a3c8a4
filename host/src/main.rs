//! The `arbiter` command: `serve`, `verify`, `receipts`, `keygen`, `policy`, `plugin`, `token`, `hook`, `mcp-gateway`.

use std::path::{Path, PathBuf};

// glibc malloc was ~30% of CPU under load (many short-lived JSON values
// across threads); mimalloc's thread-local free lists remove most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use arbiter::config::Config;
use arbiter::credentials::ReceiptKey;
use arbiter::receipts::{parse_keys, verify_receipts};
use clap::{Parser, Subcommand};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "arbiter", version, about = "Runtime security host for AI-agent actions")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Config file (TOML).
        #[arg(long, env = "ARBITER_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory [default: ./arbiter-data].
        #[arg(long, env = "ARBITER_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Listen address [default: 127.0.0.1:8750].
        #[arg(long, env = "ARBITER_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Policy pack directory [default: the bundled baseline pack].
        #[arg(long, env = "ARBITER_POLICIES")]
        policies: Option<PathBuf>,
    },
    /// Verify receipts offline: every signature and the hash chain; or one
    /// receipt bundle: its signature, its inclusion proof and checkpoint.
    Verify {
        /// Receipts: JSON Lines, a JSON array, or a `/v1/receipts` response.
        #[arg(long, required_unless_present = "bundle", requires = "keys")]
        receipts: Option<PathBuf>,
        /// A receipt bundle (`GET /v1/receipts/{id}/bundle`, `arbiter
        /// receipts export`).
        #[arg(long, conflicts_with_all = ["receipts", "require_complete"])]
        bundle: Option<PathBuf>,
        /// Public keys as served by `/v1/keys`. With `--bundle`, the keys to
        /// trust; without it the bundle's own keys are used.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// The file must hold the whole log: seqs from 0 with no gaps, so a
        /// receipt deleted from an export is caught. Without it, gaps (as in
        /// a filtered export) are reported but allowed.
        #[arg(long)]
        require_complete: bool,
    },
    /// Command-hook shim: read a hook payload on stdin, ask Arbiter, print
    /// the vendor's reply; exit 2 (the vendors' "block") when it blocks, and
    /// also when Arbiter is unreachable, too slow or answers garbage.
    Hook {
        /// Integration (`/v1/hooks/<integration>`), e.g. `gemini-cli`.
        #[arg(long)]
        integration: String,
        /// Event segment (`/v1/hooks/<integration>/<event>`) for vendors
        /// whose payloads carry no event name.
        #[arg(long)]
        event: Option<String>,
        /// Arbiter's base URL.
        #[arg(long, env = "ARBITER_URL", default_value = "http://127.0.0.1:8750")]
        url: String,
        /// File holding the ingress token (else `ARBITER_TOKEN`).
        #[arg(long, env = "ARBITER_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Give up (and block) after this many milliseconds. Keep it under
        /// the vendor's hook timeout, and above Arbiter's hold times when
        /// approvals or deferrals should be waited for.
        #[arg(long, default_value_t = 12_000)]
        timeout_ms: u64,
    },
    /// MCP protocol gateway: serve MCP clients (stdio, or Streamable HTTP
    /// with `--listen`), proxy to one or more upstream MCP servers (stdio
    /// child processes, Streamable HTTP URLs), and send every `tools/call`
    /// through Arbiter first. Fails closed: a call Arbiter does not let
    /// through, or cannot be asked about, is answered with an `isError` tool
    /// result and never reaches the upstream.
    McpGateway(Box<McpGatewayArgs>),
    /// Work with receipts.
    Receipts {
        #[command(subcommand)]
        command: ReceiptsCommand,
    },
    /// Work with policy packs.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage API tokens of the running server (through its admin API, so a
    /// created token works and a revoked one fails at once, without a
    /// restart). Authenticates with `ARBITER_TOKEN`, else `--token-file`,
    /// else `<data-dir>/admin.token`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        /// Arbiter's base URL.
        #[arg(long, env = "ARBITER_URL", default_value = "http://127.0.0.1:8750", global = true)]
        url: String,
        /// File holding an admin credential.
        #[arg(long, env = "ARBITER_TOKEN_FILE", global = true)]
        token_file: Option<PathBuf>,
        /// Data directory whose `admin.token` is used by default.
        #[arg(long, env = "ARBITER_DATA_DIR", default_value = "./arbiter-data", global = true)]
        data_dir: PathBuf,
    },
    /// Publish signed plugin bundles: make a publisher key, sign, verify.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Generate an Ed25519 receipt signing key (PKCS#8 PEM, mode 0600) and
    /// print its public key as `/v1/keys` serves it. By default the key goes
    /// where `serve` looks for it, so it is used from the next start.
    Keygen {
        /// Where to write the key; must not exist
        /// [default: <data-dir>/keys/receipt-signing.pem].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Data directory [default: ./arbiter-data].
        #[arg(long, env = "ARBITER_DATA_DIR", default_value = "./arbiter-data")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct McpGatewayArgs {
    /// The name of the upstream given after `--` in policies
    /// (`mcp://<name>/<tool>`, `mcp__<name>__<tool>`).
    #[arg(long, requires = "command")]
    server_name: Option<String>,
    /// A Streamable HTTP upstream, `NAME=URL` (repeatable). Upstreams that
    /// need a bearer token go in `--upstreams`.
    #[arg(long = "upstream", value_name = "NAME=URL", value_parser = arbiter::mcp_gateway::UpstreamSpec::parse_http)]
    upstreams: Vec<arbiter::mcp_gateway::UpstreamSpec>,
    /// A TOML file of `[[upstream]]` tables (`name`, and `command` or `url`
    /// with optional `token_file` / `token_env`).
    #[arg(long = "upstreams", value_name = "FILE")]
    upstreams_file: Option<PathBuf>,
    /// Arbiter's base URL.
    #[arg(long, env = "ARBITER_URL", default_value = "http://127.0.0.1:8750")]
    url: String,
    /// File holding the ingress token (else `ARBITER_TOKEN`).
    #[arg(long, env = "ARBITER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Session id every call of the stdio client is recorded under
    /// [default: a new UUID]; with `--listen` each client session gets its own.
    #[arg(long, conflicts_with = "listen")]
    session: Option<String>,
    /// Give up on Arbiter (and refuse the call) after this many
    /// milliseconds; keep it above Arbiter's approval hold time.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Serve clients over Streamable HTTP at `http://ADDR/mcp` instead of
    /// stdio. Clients must send `Authorization: Bearer <client token>`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// File holding the token HTTP clients must present (else
    /// `ARBITER_MCP_CLIENT_TOKEN`).
    #[arg(long, env = "ARBITER_MCP_CLIENT_TOKEN_FILE")]
    client_token_file: Option<PathBuf>,
    /// Largest HTTP request body accepted from a client, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Most client sessions open at once (each has its own upstream
    /// connections; idle sessions close after 5 minutes).
    #[arg(long, default_value_t = 64)]
    max_sessions: usize,
    /// `Host` header value accepted besides the loopback names (repeatable).
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// The stdio upstream command and its arguments (with `--server-name`).
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum ReceiptsCommand {
    /// Write a receipt's offline bundle (receipt, inclusion proof, signed
    /// checkpoint, public keys), from a running server (`--url`) or from a
    /// stopped server's data directory (`--data-dir`).
    Export {
        /// The receipt id.
        #[arg(long)]
        id: String,
        /// Read the store in this data directory (the server must be stopped).
        #[arg(long, conflicts_with = "url", required_unless_present = "url")]
        data_dir: Option<PathBuf>,
        /// Ask this Arbiter (`GET /v1/receipts/{id}/bundle`).
        #[arg(long)]
        url: Option<String>,
        /// File holding an auditor (or admin) credential for `--url`; the
        /// `ARBITER_TOKEN` variable takes precedence.
        #[arg(long, env = "ARBITER_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Where to write the bundle [default: stdout].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load a pack as `serve` would: parse, check annotations and detectors,
    /// and validate every policy against the pack's Cedar schema.
    Validate {
        /// The pack directory.
        dir: PathBuf,
    },
    /// Run the pack's test cases (`tests/*.json`) through the real decision
    /// point and print a pass/fail table; exits 1 on any failure.
    Test {
        /// The pack directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; prints the secret once, on stdout (only its hash is
    /// kept), and its details on stderr.
    Create {
        /// `admin`, `approver`, `auditor` or `ingress`.
        #[arg(long)]
        role: String,
        /// Name, recorded as the resolver of what an approver token decides
        /// [default: `token:<id>`].
        #[arg(long)]
        name: Option<String>,
        /// Approver groups, comma separated (approver tokens only).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Expiry: a duration (`90m`, `12h`, `30d`) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// The tenant it acts in [default: the admin credential's own;
        /// `default` for the bootstrap admin token].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List tokens: id, name, role, state, created, expires, last used
    /// (since the server started); never a secret.
    List {
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; it fails from the next request on.
    Revoke {
        /// The token id (`arb_<id>_…`).
        id: String,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Generate an Ed25519 publisher key (PKCS#8 PEM, mode 0600) and print
    /// its public key, to be trusted as `[plugins.publishers] <name> = "<key>"`.
    Keygen {
        /// Where to write the private key; must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a signed bundle from a source manifest (JSON: name, version,
    /// vendor, wit, integrations, capabilities, fixtures as paths relative
    /// to the manifest) and a component.
    Sign {
        /// The publisher's private key (from `arbiter plugin keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The publisher name the bundle is signed as.
        #[arg(long)]
        publisher: String,
        /// The source manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// The WebAssembly component.
        #[arg(long)]
        component: PathBuf,
        /// Where to write the bundle; must not exist.
        #[arg(short = 'o', long)]
        out: PathBuf,
    },
    /// Check a bundle offline: archive, signature under the given key, and
    /// every hash; print its manifest summary. (The self-test runs when a
    /// server loads it.)
    Verify {
        /// The bundle.
        #[arg(long)]
        bundle: PathBuf,
        /// The publisher's public key: base64, or a file holding it.
        #[arg(long)]
        publisher_key: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, data_dir, listen, policies } => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .init();
            let result = (|| {
                let mut config = Config::load(config.as_deref())?;
                if let Some(d) = data_dir {
                    config.data_dir = d;
                }
                if let Some(l) = listen {
                    config.listen = l;
                }
                if let Some(p) = policies {
                    config.policies = Some(p);
                }
                let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
                runtime.block_on(arbiter::serve(config))
            })();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("arbiter: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Policy { command } => policy(command),
        Command::Token { command, url, token_file, data_dir } => {
            let admin = token_of(Some(token_file.unwrap_or_else(|| data_dir.join("admin.token"))));
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(token(command, &url, admin)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("arbiter token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin { command } => match plugin(command) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("arbiter plugin: {msg}");
                ExitCode::FAILURE
            }
        },
        Command::Hook { integration, event, url, token_file, timeout_ms } => {
            let token = token_of(token_file);
            let args = arbiter::shim::HookArgs {
                integration,
                event,
                url,
                token,
                timeout: std::time::Duration::from_millis(timeout_ms.max(1)),
            };
            let input = arbiter::shim::read_stdin().unwrap_or_default();
            let outcome = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(arbiter::shim::run(&args, &input)),
                Err(e) => arbiter::shim::Outcome {
                    stdout: String::new(),
                    stderr: format!("arbiter hook: cannot start: {e}"),
                    code: arbiter::shim::BLOCK,
                },
            };
            arbiter::shim::emit(&outcome);
            ExitCode::from(outcome.code)
        }
        Command::McpGateway(args) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
                )
                .init();
            let result = mcp_gateway_args(*args).and_then(|args| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| rt.block_on(arbiter::mcp_gateway::run(args)))
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("arbiter mcp-gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Receipts { command: ReceiptsCommand::Export { id, data_dir, url, token_file, out } } => {
            match export(&id, data_dir.as_deref(), url.as_deref(), token_file.as_deref(), out.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("export failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify { receipts, bundle, keys, require_complete } => match match (bundle, receipts, keys) {
            (Some(bundle), _, keys) => verify_bundle(&bundle, keys.as_deref()),
            (None, Some(receipts), Some(keys)) => verify(&receipts, &keys, require_complete),
            _ => Err("give --bundle, or --receipts with --keys".to_owned()),
        } {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("verify failed: {msg}");
                ExitCode::FAILURE
            }
        },
        Command::Keygen { out, data_dir } => {
            let out = out.unwrap_or_else(|| data_dir.join("keys").join(ReceiptKey::FILE_NAME));
            let key = ReceiptKey::generate();
            match key.write(&out) {
                Ok(()) => {
                    let doc = arbiter::receipts::keys_document(&key);
                    println!("{doc}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keygen failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The gateway's arguments from the command line: upstreams from the file,
/// then `--upstream`, then the command after `--`.
fn mcp_gateway_args(a: McpGatewayArgs) -> anyhow::Result<arbiter::mcp_gateway::GatewayArgs> {
    use arbiter::mcp_gateway::{ListenArgs, UpstreamSpec, load_upstreams};
    let mut upstreams = match &a.upstreams_file {
        Some(file) => load_upstreams(file)?,
        None => Vec::new(),
    };
    upstreams.extend(a.upstreams);
    match (a.server_name, a.command.is_empty()) {
        (Some(name), false) => upstreams.push(UpstreamSpec::stdio(name, a.command)),
        (None, false) => anyhow::bail!("give the upstream after `--` a name with --server-name"),
        (_, true) => {}
    }
    let listen = a.listen.map(|addr| ListenArgs {
        addr,
        client_token: std::env::var("ARBITER_MCP_CLIENT_TOKEN").ok().filter(|t| !t.trim().is_empty()).or_else(|| {
            a.client_token_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).map(|t| t.trim().to_owned())
        }),
        max_body_bytes: a.max_body_bytes.max(1024),
        max_sessions: a.max_sessions.max(1),
        allowed_hosts: a.allowed_hosts,
    });
    Ok(arbiter::mcp_gateway::GatewayArgs {
        upstreams,
        url: a.url,
        token: token_of(a.token_file),
        session: a.session.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        timeout: std::time::Duration::from_millis(a.timeout_ms.max(1)),
        listen,
    })
}

/// The ingress token: `ARBITER_TOKEN`, else the token file's content.
fn token_of(token_file: Option<PathBuf>) -> Option<String> {
    std::env::var("ARBITER_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| token_file.and_then(|f| std::fs::read_to_string(f).ok()).map(|t| t.trim().to_owned()))
}

/// `--expires`: a duration from now (`<n>s|m|h|d`) or an RFC 3339 time.
fn expiry(s: &str) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(arbiter::model::format_rfc3339(t));
    }
    let unit = s.chars().last().ok_or("an empty --expires")?;
    let n: i64 = s
        .strip_suffix(unit)
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("--expires `{s}`: give a duration like 90m, 12h, 30d, or an RFC 3339 time"))?;
    let d = match unit {
        's' => time::Duration::seconds(n),
        'm' => time::Duration::minutes(n),
        'h' => time::Duration::hours(n),
        'd' => time::Duration::days(n),
        _ => return Err(format!("--expires `{s}`: the unit is s, m, h or d")),
    };
    time::OffsetDateTime::now_utc()
        .checked_add(d)
        .map(arbiter::model::format_rfc3339)
        .ok_or_else(|| format!("--expires `{s}` is too far away"))
}

async fn token(command: TokenCommand, url: &str, admin: Option<String>) -> Result<(), String> {
    let admin =
        admin.ok_or("no admin credential: set ARBITER_TOKEN or --token-file (default <data-dir>/admin.token)")?;
    let http =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
    let base = url.trim_end_matches('/');
    let request = match &command {
        TokenCommand::Create { role, name, groups, expires, tenant } => {
            let expires_at = expires.as_deref().map(expiry).transpose()?;
            let body = serde_json::json!({"role": role, "name": name, "groups": groups, "expires_at": expires_at,
                                          "tenant": tenant});
            http.post(format!("{base}/v1/tokens")).json(&body)
        }
        TokenCommand::List { .. } => http.get(format!("{base}/v1/tokens")),
        TokenCommand::Revoke { id } => {
            // The whole token works too; only its id is sent.
            let id = id
                .strip_prefix(arbiter::tokens::PREFIX)
                .map_or(id.as_str(), |rest| rest.split('_').next().unwrap_or(rest));
            http.delete(format!("{base}/v1/tokens/{id}"))
        }
    };
    let response = request.bearer_auth(admin).send().await.map_err(|e| format!("cannot reach {base}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("HTTP {status}: unreadable answer: {e}"))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or(text.trim());
        return Err(format!("HTTP {status}: {message}"));
    }
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    match command {
        TokenCommand::Create { .. } => {
            eprintln!(
                "created token {} (role {}, tenant {}, expires {}); the secret below is shown only now",
                field(&body, "id"),
                field(&body, "role"),
                field(&body, "tenant"),
                field(&body, "expires_at")
            );
            println!("{}", field(&body, "token"));
        }
        TokenCommand::List { json: true } => println!("{body}"),
        TokenCommand::List { json: false } => {
            println!(
                "{:<12}  {:<20}  {:<8}  {:<12}  {:<7}  {:<24}  {:<24}  LAST USED",
                "ID", "NAME", "ROLE", "TENANT", "STATE", "CREATED", "EXPIRES"
            );
            for t in body.get("tokens").and_then(Value::as_array).into_iter().flatten() {
                println!(
                    "{:<12}  {:<20}  {:<8}  {:<12}  {:<7}  {:<24}  {:<24}  {}",
                    field(t, "id"),
                    field(t, "name"),
                    field(t, "role"),
                    field(t, "tenant"),
                    field(t, "state"),
                    field(t, "created_at"),
                    field(t, "expires_at"),
                    field(t, "last_used")
                );
            }
        }
        TokenCommand::Revoke { .. } => {
            println!("revoked {} at {}", field(&body, "id"), field(&body, "revoked_at"));
        }
    }
    Ok(())
}

/// Bundles the CLI reads: far above any real plugin (a Python adapter's is
/// ~19 MB); the server's own cap is `plugins.max_bundle_bytes`.
const CLI_MAX_BUNDLE_BYTES: usize = 1024 * 1024 * 1024;

fn plugin(command: PluginCommand) -> Result<Value, String> {
    use arbiter::plugins::bundle;
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()));
    match command {
        PluginCommand::Keygen { out } => {
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .map_err(|e| format!("cannot encode the key: {e}"))?;
            arbiter::credentials::write_private(&out, pem.as_bytes()).map_err(|e| e.to_string())?;
            let public =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.verifying_key().as_bytes());
            Ok(serde_json::json!({
                "key_id": bundle::key_id(&key.verifying_key()),
                "public_key": public,
                "private_key_file": out.display().to_string(),
            }))
        }
        PluginCommand::Sign { key, publisher, manifest, component, out } => {
            let pem = String::from_utf8(read(&key)?).map_err(|_| format!("`{}` is not a PEM file", key.display()))?;
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
                .map_err(|e| format!("`{}` is not a PKCS#8 Ed25519 private key: {e}", key.display()))?;
            let source: bundle::SourceManifest = serde_json::from_slice(&read(&manifest)?)
                .map_err(|e| format!("`{}` is not a valid source manifest: {e}", manifest.display()))?;
            let base = manifest.parent().unwrap_or_else(|| Path::new("."));
            let mut fixtures = Vec::new();
            for relative in &source.fixtures {
                let path = base.join(relative);
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| format!("fixture path `{relative}` has no file name"))?;
                fixtures.push((name.to_owned(), read(&path)?));
            }
            let bytes = bundle::sign(&source, &read(&component)?, &fixtures, &publisher, &key)
                .map_err(|e| format!("{e} ({})", e.code()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
            std::io::Write::write_all(&mut file, &bytes)
                .map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
            let signature = bundle::claimed_signature(&bytes, CLI_MAX_BUNDLE_BYTES).map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "bundle": out.display().to_string(), "name": source.name, "version": source.version,
                "digest": signature.digest, "publisher": signature.publisher, "key_id": signature.key_id,
                "bytes": bytes.len(),
            }))
        }
        PluginCommand::Verify { bundle: path, publisher_key } => {
            let text = match std::fs::read_to_string(&publisher_key) {
                Ok(t) => t,
                Err(_) => publisher_key.clone(),
            };
            let key = bundle::parse_public_key(&text).map_err(|e| format!("publisher key: {e}"))?;
            let bytes = read(&path)?;
            let fail = |e: bundle::BundleError| format!("`{}` refused ({}): {e}", path.display(), e.code());
            let claimed = bundle::claimed_signature(&bytes, CLI_MAX_BUNDLE_BYTES).map_err(fail)?;
            let mut trust = bundle::Trust::default();
            trust.add(&claimed.publisher, key);
            let b = bundle::open(&bytes, CLI_MAX_BUNDLE_BYTES, &trust).map_err(fail)?;
            let m = &b.manifest;
            Ok(serde_json::json!({
                "ok": true, "name": m.name, "version": m.version, "vendor": m.vendor, "wit": m.wit,
                "integrations": m.integrations, "capabilities": m.capability_names(),
                "digest": b.digest, "publisher": b.publisher, "key_id": b.key_id,
                "component": {"sha256": m.component.sha256, "size": m.component.size},
                "fixtures": m.fixtures.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
            }))
        }
    }
}

fn policy(command: PolicyCommand) -> ExitCode {
    use arbiter::policy::{Pdp, PolicyPack, testing};
    let dir = match &command {
        PolicyCommand::Validate { dir } | PolicyCommand::Test { dir } => dir,
    };
    let pack = match PolicyPack::load(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    match command {
        PolicyCommand::Validate { .. } => {
            let id = pack.identity();
            for w in pack.warnings() {
                println!("warning: {w}");
            }
            let schema = if pack.has_schema() {
                "validated against its Cedar schema"
            } else {
                "no Cedar schema (not type-checked)"
            };
            println!("ok: pack `{}` {} ({}): {} policies, {schema}", id.pack, id.version, id.hash, pack.len());
            ExitCode::SUCCESS
        }
        PolicyCommand::Test { .. } => {
            let files = pack.files().to_vec();
            let pdp = Pdp::new(pack, None);
            // Actions after an `intent` event are scored with the built-in
            // embedding, as `serve` scores them by default.
            match testing::run(&pdp, &files, Some(&arbiter::pipeline::builtin_scores)) {
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
                Ok(results) if results.is_empty() => {
                    eprintln!("{}: no test cases under tests/", dir.display());
                    ExitCode::FAILURE
                }
                Ok(results) => {
                    print!("{}", testing::table(&results));
                    if results.iter().all(|r| r.passed) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
            }
        }
    }
}

fn read_keys(keys: &Path) -> Result<std::collections::HashMap<String, ed25519_dalek::VerifyingKey>, String> {
    let keys_text = std::fs::read_to_string(keys).map_err(|e| format!("cannot read `{}`: {e}", keys.display()))?;
    let keys_json: Value =
        serde_json::from_str(&keys_text).map_err(|e| format!("`{}` is not JSON: {e}", keys.display()))?;
    parse_keys(&keys_json)
}

/// `verify --bundle`: everything offline, from the file (and the keys file).
fn verify_bundle(bundle: &Path, keys: Option<&Path>) -> Result<String, String> {
    use std::io::Read as _;
    let trusted = keys.map(read_keys).transpose()?;
    let file = std::fs::File::open(bundle).map_err(|e| format!("cannot read `{}`: {e}", bundle.display()))?;
    let mut bytes = Vec::new();
    file.take(arbiter::receipt_bundle::MAX_BUNDLE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{}`: {e}", bundle.display()))?;
    let v = arbiter::receipt_bundle::verify(&bytes, trusted.as_ref())
        .map_err(|e| format!("`{}`: {e}", bundle.display()))?;
    let mut msg = format!(
        "ok: receipt {} is leaf {} of log `{}` at tree size {} (root {}); receipt signed by {}, checkpoint by {}",
        v.receipt_id, v.leaf_index, v.origin, v.tree_size, v.root, v.receipt_key, v.checkpoint_key
    );
    if trusted.is_none() {
        msg.push_str("\nnote: checked with the keys inside the bundle; pass --keys with the log's published keys to check whose log this is");
    }
    Ok(msg)
}

/// `receipts export`: a bundle from the store or from a server, checked
/// before it is written.
fn export(
    id: &str,
    data_dir: Option<&Path>,
    url: Option<&str>,
    token_file: Option<&Path>,
    out: Option<&Path>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let bytes = match (data_dir, url) {
        (Some(dir), _) => runtime.block_on(export_local(dir, id))?,
        (None, Some(url)) => {
            let token = std::env::var("ARBITER_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .or_else(|| token_file.and_then(|f| std::fs::read_to_string(f).ok()))
                .map(|t| t.trim().to_owned())
                .ok_or("no auditor credential: set ARBITER_TOKEN or pass --token-file")?;
            runtime.block_on(export_remote(url, &token, id))?
        }
        (None, None) => return Err("give --data-dir or --url".to_owned()),
    };
    arbiter::receipt_bundle::verify(&bytes, None).map_err(|e| format!("the bundle does not verify: {e}"))?;
    match out {
        Some(path) => std::fs::write(path, &bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display())),
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(&bytes).map_err(|e| e.to_string())
        }
    }
}

async fn export_local(dir: &Path, id: &str) -> Result<Vec<u8>, String> {
    use arbiter::receipt_bundle::{BundleError, assemble};
    let key = ReceiptKey::load(&dir.join("keys").join(ReceiptKey::FILE_NAME)).map_err(|e| e.to_string())?;
    let keyring = [key.verifying_key()];
    let store = arbiter::store::Store::open_with(
        &dir.join("store"),
        std::sync::Arc::new(key),
        1,
        arbiter::store::LogOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let bundle = match assemble(&store, id, &keyring) {
        Err(BundleError::NotCheckpointed(_)) => {
            store.checkpoint_now().await.map_err(|e| e.to_string())?;
            assemble(&store, id, &keyring)
        }
        other => other,
    }
    .map_err(|e| e.to_string())?
    .ok_or_else(|| format!("no receipt `{id}`"))?;
    bundle.to_bytes().map_err(|e| e.to_string())
}

async fn export_remote(url: &str, token: &str, id: &str) -> Result<Vec<u8>, String> {
    let endpoint = format!("{}/v1/receipts/{}/bundle", url.trim_end_matches('/'), urlencode(id));
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?
        .get(&endpoint)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("GET {endpoint}: {e}"))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("GET {endpoint}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {endpoint}: {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(bytes.to_vec())
}

/// Percent-encode all but RFC 3986 unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn verify(receipts: &Path, keys: &Path, require_complete: bool) -> Result<String, String> {
    let keys = read_keys(keys)?;
    let text = std::fs::read_to_string(receipts).map_err(|e| format!("cannot read `{}`: {e}", receipts.display()))?;
    let list = parse_receipts(&text).map_err(|e| format!("`{}`: {e}", receipts.display()))?;
    if list.is_empty() {
        return Err("no receipts in the file".to_owned());
    }
    let report = verify_receipts(&list, &keys).map_err(|f| f.to_string())?;
    if require_complete {
        let first = list.iter().filter_map(|r| r.pointer("/chain/seq").and_then(Value::as_u64)).min();
        if first != Some(0) {
            return Err(format!(
                "incomplete log: the first receipt has seq {}, not 0",
                first.map_or("?".to_owned(), |s| s.to_string())
            ));
        }
        if report.gaps > 0 {
            return Err(format!("incomplete log: {} gaps where receipts are missing from the chain", report.gaps));
        }
    }
    let mut msg = format!("ok: {} receipts verified ({} chain links checked", report.receipts, report.links);
    if report.gaps > 0 {
        msg.push_str(&format!(", {} gaps where receipts are absent from the file", report.gaps));
    }
    msg.push(')');
    Ok(msg)
}

/// Accept a JSON array, a `{"receipts": [...]}` page, one receipt, or JSON Lines.
fn parse_receipts(text: &str) -> Result<Vec<Value>, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(match v {
            Value::Array(items) => items,
            Value::Object(mut o) if o.contains_key("receipts") => match o.remove("receipts") {
                Some(Value::Array(items)) => items,
                _ => return Err("`receipts` is not an array".to_owned()),
            },
            other => vec![other],
        });
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}
