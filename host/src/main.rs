//! The `arbiter` command: `serve`, `verify`, `keygen`, `policy`, `token`, `hook`, `mcp-gateway`.

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
    /// Verify receipts offline: every signature and the hash chain.
    Verify {
        /// Receipts: JSON Lines, a JSON array, or a `/v1/receipts` response.
        #[arg(long)]
        receipts: PathBuf,
        /// Public keys as served by `/v1/keys`.
        #[arg(long)]
        keys: PathBuf,
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
    /// MCP protocol gateway: serve MCP on stdio, proxy to the upstream MCP
    /// server given after `--` (run as a child process), and send every
    /// `tools/call` through Arbiter first. Fails closed: a call Arbiter does
    /// not let through, or cannot be asked about, is answered with an
    /// `isError` tool result and never reaches the upstream.
    McpGateway {
        /// The upstream's name in policies (`mcp://<name>/<tool>`,
        /// `mcp__<name>__<tool>`).
        #[arg(long)]
        server_name: String,
        /// Arbiter's base URL.
        #[arg(long, env = "ARBITER_URL", default_value = "http://127.0.0.1:8750")]
        url: String,
        /// File holding the ingress token (else `ARBITER_TOKEN`).
        #[arg(long, env = "ARBITER_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Session id every call is recorded under [default: a new UUID].
        #[arg(long)]
        session: Option<String>,
        /// Give up on Arbiter (and refuse the call) after this many
        /// milliseconds; keep it above Arbiter's approval hold time.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// The upstream MCP server command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
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
        Command::McpGateway { server_name, url, token_file, session, timeout_ms, command } => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
                )
                .init();
            let args = arbiter::mcp_gateway::GatewayArgs {
                server_name,
                url,
                token: token_of(token_file),
                session: session.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                timeout: std::time::Duration::from_millis(timeout_ms.max(1)),
                command,
            };
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(arbiter::mcp_gateway::run(args)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("arbiter mcp-gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify { receipts, keys, require_complete } => match verify(&receipts, &keys, require_complete) {
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

fn verify(receipts: &Path, keys: &Path, require_complete: bool) -> Result<String, String> {
    let keys_text = std::fs::read_to_string(keys).map_err(|e| format!("cannot read `{}`: {e}", keys.display()))?;
    let keys_json: Value =
        serde_json::from_str(&keys_text).map_err(|e| format!("`{}` is not JSON: {e}", keys.display()))?;
    let keys = parse_keys(&keys_json)?;
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
