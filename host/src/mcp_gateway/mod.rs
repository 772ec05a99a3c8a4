//! `arbiter mcp-gateway`: an MCP proxy (AARM's protocol-gateway
//! architecture) between MCP clients and one or more upstream MCP servers.
//!
//! Upstreams are child processes (stdio) or Streamable HTTP URLs; clients
//! reach the gateway on its stdio or, with a listener, over Streamable HTTP
//! (bearer token required). What crosses the gateway:
//!
//! - client → upstream: every request is forwarded to the upstream that owns
//!   it, except `tools/call`: the call is first sent to Arbiter (`POST
//!   /v1/hooks/mcp-gateway`, the `mcp-gateway` adapter plugin) and forwarded
//!   only on `allow`, or on `modify` with the rewritten arguments. Anything
//!   else (deny, defer, step-up, Arbiter unreachable, slow, an error status,
//!   a reply that cannot be read) answers the client with a `CallToolResult`
//!   whose `isError` is true and whose text is the reason: **fail closed**.
//!   After the upstream answers, its result is posted as an observation (the
//!   output is untrusted content the session's later decisions take into
//!   account); if that cannot be recorded, the result is withheld.
//!   Cancellations follow their request; `notifications/roots/list_changed`
//!   goes to every upstream.
//! - upstream → client: requests (`sampling/createMessage`,
//!   `elicitation/create`, `roots/list`) and notifications (progress,
//!   logging, `*/list_changed`, `resources/updated`) are forwarded to the
//!   client the upstream connection belongs to, and the answers go back.
//!
//! Each client session gets its own upstream connections (a child process
//! or an HTTP session per upstream) opened with the client's own
//! capabilities, so server-to-client traffic can only reach the client it
//! belongs to, and its own Arbiter session id, so receipts of different
//! clients are never mixed.
//!
//! Names: with one upstream, tool and prompt names are the upstream's own.
//! With several, they are `<server>__<name>`; server names cannot contain
//! `__`, so the split is unambiguous and two servers' tools cannot collide.
//! Arbiter always sees the upstream's own tool name: the resource is
//! `mcp://<server>/<tool>` either way.

mod arbiter;
mod http;
mod proxy;
mod upstream;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rmcp::ServiceExt as _;
use serde::Deserialize;

use self::arbiter::Arbiter;
use self::proxy::{Gateway, Shared};

/// The integration (`/v1/hooks/<integration>`) the gateway posts to.
pub const INTEGRATION: &str = "mcp-gateway";

/// Most upstreams one gateway fronts: each client session opens one
/// connection (a child process for stdio upstreams) to every one of them.
pub const MAX_UPSTREAMS: usize = 32;

/// Longest upstream name (the plugin's limit on `server`).
const MAX_NAME_LEN: usize = 64;

/// Largest upstream token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// What the gateway was told to do.
#[derive(Debug, Clone)]
pub struct GatewayArgs {
    /// The upstream MCP servers, in the order their tools are listed.
    pub upstreams: Vec<UpstreamSpec>,
    /// Arbiter's base URL.
    pub url: String,
    /// Ingress token.
    pub token: Option<String>,
    /// The session every call of the stdio client is recorded under (a
    /// listener gives each client session its own).
    pub session: String,
    /// Timeout of one call to Arbiter.
    pub timeout: Duration,
    /// Serve clients over Streamable HTTP instead of stdio.
    pub listen: Option<ListenArgs>,
}

/// The Streamable HTTP listener for clients.
#[derive(Clone)]
pub struct ListenArgs {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The bearer token every client request must carry.
    pub client_token: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most client sessions open at once; each holds its own upstream
    /// connections.
    pub max_sessions: usize,
    /// `Host` header values accepted besides the loopback names; see
    /// [`http`] for why they are checked.
    pub allowed_hosts: Vec<String>,
}

impl std::fmt::Debug for ListenArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenArgs")
            .field("addr", &self.addr)
            .field("client_token", &self.client_token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_sessions", &self.max_sessions)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// One upstream MCP server, as declared in an upstreams file
/// (`[[upstream]]` tables) or on the command line.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// The server's name in policies (`mcp://<name>/<tool>`).
    pub name: String,
    /// A stdio server: the program and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// A Streamable HTTP server: its endpoint URL.
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the bearer token sent to an HTTP upstream.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding that token.
    #[serde(default)]
    pub token_env: Option<String>,
}

impl std::fmt::Debug for UpstreamSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSpec")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("url", &self.url)
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .finish()
    }
}

impl UpstreamSpec {
    /// A stdio upstream run as `command`.
    #[must_use]
    pub fn stdio(name: impl Into<String>, command: Vec<String>) -> Self {
        Self { name: name.into(), command, url: None, token_file: None, token_env: None }
    }

    /// Parse `NAME=URL` (a Streamable HTTP upstream without a token).
    ///
    /// # Errors
    /// No `=`, an empty name or URL.
    pub fn parse_http(arg: &str) -> Result<Self, String> {
        let Some((name, url)) = arg.split_once('=') else {
            return Err(format!("`{arg}` is not NAME=URL"));
        };
        if name.is_empty() || url.is_empty() {
            return Err(format!("`{arg}` is not NAME=URL"));
        }
        Ok(Self {
            name: name.to_owned(),
            command: Vec::new(),
            url: Some(url.to_owned()),
            token_file: None,
            token_env: None,
        })
    }
}

/// The `[[upstream]]` tables of an upstreams file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamsFile {
    #[serde(default)]
    upstream: Vec<UpstreamSpec>,
}

/// Read an upstreams file (TOML, `[[upstream]]` tables).
///
/// # Errors
/// The file cannot be read or is not a valid upstreams file.
pub fn load_upstreams(path: &Path) -> anyhow::Result<Vec<UpstreamSpec>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let file: UpstreamsFile = toml::from_str(&text).with_context(|| format!("`{}`", path.display()))?;
    Ok(file.upstream)
}

/// How to reach one upstream, checked and with its token read.
#[derive(Clone)]
pub(crate) enum Endpoint {
    Stdio { program: String, args: Vec<String> },
    Http { url: String, token: Option<String> },
}

/// A checked upstream.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub(crate) name: String,
    pub(crate) endpoint: Endpoint,
}

/// A server name usable in `mcp://<server>/<tool>` and `mcp__<server>__<tool>`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.contains("__")
}

/// Check the upstream list and read the tokens, so that a mistake stops the
/// gateway at start rather than at a client's first session.
fn resolve(specs: &[UpstreamSpec]) -> anyhow::Result<Vec<Resolved>> {
    if specs.is_empty() {
        anyhow::bail!(
            "no upstream (give `--server-name NAME -- COMMAND`, `--upstream NAME=URL` or `--upstreams FILE`)"
        );
    }
    if specs.len() > MAX_UPSTREAMS {
        anyhow::bail!("{} upstreams; at most {MAX_UPSTREAMS}", specs.len());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = &spec.name;
        if !valid_name(name) {
            anyhow::bail!("upstream name `{name}` must be 1-{MAX_NAME_LEN} letters, digits, `-` or `_`, without `__`");
        }
        if !seen.insert(name.clone()) {
            anyhow::bail!("upstream name `{name}` is used twice");
        }
        let endpoint = match (spec.command.split_first(), &spec.url) {
            (Some((program, args)), None) => {
                if spec.token_file.is_some() || spec.token_env.is_some() {
                    anyhow::bail!("upstream `{name}`: a token is only sent to a `url` upstream");
                }
                Endpoint::Stdio { program: program.clone(), args: args.to_vec() }
            }
            (None, Some(url)) => {
                let lower = url.to_ascii_lowercase();
                if !lower.starts_with("http://") && !lower.starts_with("https://") {
                    anyhow::bail!("upstream `{name}`: `url` must be http:// or https://");
                }
                Endpoint::Http { url: url.clone(), token: upstream_token(spec)? }
            }
            _ => anyhow::bail!("upstream `{name}` needs exactly one of `command` and `url`"),
        };
        out.push(Resolved { name: name.clone(), endpoint });
    }
    Ok(out)
}

/// The bearer token of an HTTP upstream, from its file or variable.
fn upstream_token(spec: &UpstreamSpec) -> anyhow::Result<Option<String>> {
    let name = &spec.name;
    let token = match (&spec.token_file, &spec.token_env) {
        (Some(_), Some(_)) => anyhow::bail!("upstream `{name}`: give `token_file` or `token_env`, not both"),
        (Some(file), None) => {
            let len = std::fs::metadata(file)
                .with_context(|| format!("upstream `{name}`: cannot read `{}`", file.display()))?
                .len();
            if len > MAX_TOKEN_FILE {
                anyhow::bail!("upstream `{name}`: `{}` is over {MAX_TOKEN_FILE} bytes", file.display());
            }
            std::fs::read_to_string(file)
                .with_context(|| format!("upstream `{name}`: cannot read `{}`", file.display()))?
        }
        (None, Some(var)) => {
            std::env::var(var).map_err(|_| anyhow::anyhow!("upstream `{name}`: the variable `{var}` is not set"))?
        }
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    if token.is_empty() || token.contains(['\r', '\n']) {
        anyhow::bail!("upstream `{name}`: the token is empty or spans lines");
    }
    Ok(Some(token.to_owned()))
}

/// Run the gateway: until the stdio client closes stdin, or until SIGINT /
/// SIGTERM with a listener.
///
/// # Errors
/// The arguments are unusable, an upstream cannot be started or
/// initialised (stdio: at the client's `initialize`; listener: checked once
/// at start), or the listener cannot bind.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let upstreams = resolve(&args.upstreams)?;
    let token = args.token.clone().filter(|t| !t.trim().is_empty());
    let Some(token) = token else {
        anyhow::bail!("no ingress token (set ARBITER_TOKEN or --token-file)");
    };
    // reqwest 0.13 (rmcp's HTTP client) is built without a default TLS
    // provider; install the one the rest of the binary already uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let arbiter = Arbiter::new(&args.url, token, args.timeout)?;
    let shared = Shared::new(upstreams, arbiter);
    match args.listen {
        Some(listen) => http::serve(shared, listen).await,
        None => {
            let gateway = Gateway::new(Arc::new(shared), args.session.clone());
            let running = gateway.serve(rmcp::transport::stdio()).await.context("the MCP client did not initialise")?;
            let quit = running.waiting().await;
            quit.context("serving the MCP client")?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn http(name: &str, url: &str) -> UpstreamSpec {
        UpstreamSpec::parse_http(&format!("{name}={url}")).unwrap()
    }

    #[test]
    // Names must be usable in resources and unique; each upstream has one transport.
    fn upstream_lists_are_checked() {
        let ok = [UpstreamSpec::stdio("fs", vec!["node".into()]), http("web", "http://127.0.0.1:1/mcp")];
        assert_eq!(resolve(&ok).map(|r| r.len()).ok(), Some(2));
        let bad: [&[UpstreamSpec]; 6] = [
            &[],
            &[UpstreamSpec::stdio("a__b", vec!["x".into()])],
            &[UpstreamSpec::stdio("a/b", vec!["x".into()])],
            &[UpstreamSpec::stdio("a", vec!["x".into()]), http("a", "http://h/mcp")],
            &[UpstreamSpec::stdio("a", Vec::new())],
            &[http("a", "ftp://h/mcp")],
        ];
        for specs in bad {
            assert!(resolve(specs).is_err(), "{specs:?} accepted");
        }
        assert!(UpstreamSpec::parse_http("noequals").is_err());
        assert!(UpstreamSpec::parse_http("=http://x").is_err());
    }

    #[test]
    // An upstreams file names every field; unknown keys are refused, and a
    // token goes only to a URL upstream.
    fn upstreams_file_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("t");
        std::fs::write(&token, "s3cret\n").unwrap();
        let file = dir.path().join("u.toml");
        let text = format!(
            "[[upstream]]\nname = \"fs\"\ncommand = [\"node\", \"server.js\"]\n\n\
             [[upstream]]\nname = \"web\"\nurl = \"https://mcp.example/mcp\"\ntoken_file = {:?}\n",
            token.display().to_string()
        );
        std::fs::write(&file, text).unwrap();
        let specs = load_upstreams(&file).unwrap();
        let resolved = resolve(&specs).unwrap();
        assert!(
            matches!(&resolved.get(1).map(|r| &r.endpoint), Some(Endpoint::Http { token: Some(t), .. }) if t == "s3cret")
        );
        // The token never shows in debug output.
        assert!(!format!("{specs:?}").contains("s3cret"));
        std::fs::write(&file, "[[upstream]]\nname = \"x\"\nurl = \"http://h\"\nbogus = 1\n").unwrap();
        assert!(load_upstreams(&file).is_err());
        let stdio_with_token =
            UpstreamSpec { token_env: Some("HOME".into()), ..UpstreamSpec::stdio("a", vec!["x".into()]) };
        assert!(resolve(&[stdio_with_token]).is_err());
    }
}
