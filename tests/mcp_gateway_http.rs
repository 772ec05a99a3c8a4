//! Black box: `arbiter mcp-gateway --listen` serving MCP clients over
//! Streamable HTTP, in front of two REAL upstreams from npm at once: the
//! stdio `@modelcontextprotocol/server-filesystem` and
//! `@modelcontextprotocol/server-everything` in its Streamable HTTP mode
//! (both installed once into `$HOME/.cache/arbiter-e2e/`; when node or the
//! registry is unavailable the test prints `SKIPPED:` and passes).
//!
//! The client is rmcp's, over Streamable HTTP with the client token; it
//! answers sampling and roots requests itself and records what reaches it.
//! The real Arbiter runs a small pack: DENY a `path` naming `denied-`, MODIFY
//! (redirect) a `path` naming `rewrite-me`, STEP_UP an echo of
//! `needs-approval`, DEFER an echo of `defer-me`. The test proves by side
//! effect (files written or not) and by the receipts of each client's own
//! Arbiter session that every decision reaches the upstreams as it should,
//! that server-to-client traffic (sampling, roots, progress, logging) is
//! forwarded, that clients without the token are refused, and that with
//! Arbiter unreachable no call reaches an upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    deprecated,
    reason = "tests: a failed expectation aborts the test; sampling, roots and logging are the 2025 protocol rmcp marks deprecated"
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, ServerOptions, npm};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, CreateMessageRequestParams,
    CreateMessageResult, ErrorData, Implementation, ListRootsResult, LoggingMessageNotificationParam,
    ProgressNotificationParam, Root, SamplingMessage,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ServiceExt as _};
use serde_json::{Value, json};

const FS_PACKAGE: &str = "@modelcontextprotocol/server-filesystem";
const EVERYTHING_PACKAGE: &str = "@modelcontextprotocol/server-everything";
const CLIENT_TOKEN: &str = "client-token-for-the-gateway-0001";
const UPSTREAM_TOKEN: &str = "upstream-token-for-everything-0001";
const OPS: &str = "ops-approver-token-00000001";
const MAX_BODY: usize = 256 * 1024;
/// One MCP round trip through the gateway, Arbiter and an upstream.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `server-everything` in Streamable HTTP mode on a free loopback port. It
/// listens on every interface by itself; the preload binds it to loopback.
fn start_everything(entry: &Path, scratch: &Path) -> (Proc, String) {
    let preload = scratch.join("loopback.cjs");
    std::fs::write(
        &preload,
        "// Tests serve on loopback only: a listen() given only a port binds 127.0.0.1.\n\
         const net = require('net');\n\
         const listen = net.Server.prototype.listen;\n\
         net.Server.prototype.listen = function (...args) {\n\
           if (/^[0-9]+$/.test(String(args[0])) && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');\n\
           return listen.apply(this, args);\n\
         };\n",
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("node")
        .arg("--require")
        .arg(&preload)
        .arg(entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting server-everything");
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server-everything did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (proc, format!("http://127.0.0.1:{port}/mcp"))
}

/// The pack: DENY, MODIFY, STEP_UP and DEFER on MCP call arguments.
fn write_pack(dir: &Path, root: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let redirected = root.join("redirected.txt");
    let files = [
        ("pack.toml", "name = \"mcp-gateway-http-test\"\nversion = \"0.1.0\"\ndefault_posture = \"ALLOW\"\n".to_owned()),
        (
            "detectors.toml",
            [("gw.denied", "path", "denied-"), ("gw.rewrite", "path", "rewrite-me"), ("gw.approval", "message", "needs-approval"), ("gw.defer", "message", "defer-me")]
                .iter()
                .map(|(id, field, pattern)| {
                    format!("[[detector]]\nid = \"{id}\"\nactions = [\"mcp.call\"]\nfields = [\"{field}\"]\npattern = '''{pattern}'''\n\n")
                })
                .collect(),
        ),
        (
            "policies.cedar",
            format!(
                "@id(\"gw.forbid.denied-path\")\n@classification(\"forbidden\")\n\
                 @reason(\"The gateway test forbids writing a path that names denied-.\")\n\
                 forbid (principal, action, resource) when {{ context.signals.contains(\"gw.denied\") }};\n\n\
                 @id(\"gw.modify.redirect\")\n@decision(\"MODIFY\")\n@priority(\"10\")\n\
                 @modify_replace(\"path={}\")\n\
                 @reason(\"Writes to rewrite-me files go to redirected.txt.\")\n\
                 permit (principal, action, resource) when {{ context.signals.contains(\"gw.rewrite\") }};\n\n\
                 @id(\"gw.stepup.echo\")\n@decision(\"STEP_UP\")\n@approvers(\"ops\")\n\
                 @reason(\"Echoing needs-approval needs an operator.\")\n\
                 forbid (principal, action, resource) when {{ context.signals.contains(\"gw.approval\") }};\n\n\
                 @id(\"gw.defer.echo\")\n@decision(\"DEFER\")\n\
                 @reason(\"Echoing defer-me waits for more context.\")\n\
                 forbid (principal, action, resource) when {{ context.signals.contains(\"gw.defer\") }};\n",
                redirected.display()
            ),
        ),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
}

/// `arbiter mcp-gateway --listen 127.0.0.1:0` with the given upstreams
/// file; its URL, and the file its stderr goes to.
fn start_gateway(arbiter_url: &str, ingress: &str, upstreams: &Path, log: &Path) -> (Proc, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .args(["mcp-gateway", "--listen", "127.0.0.1:0", "--url", arbiter_url, "--timeout-ms", "30000"])
        .args(["--max-body-bytes", &MAX_BODY.to_string()])
        .arg("--upstreams")
        .arg(upstreams)
        .env("ARBITER_TOKEN", ingress)
        .env("ARBITER_MCP_CLIENT_TOKEN", CLIENT_TOKEN)
        .env("EVERYTHING_TOKEN", UPSTREAM_TOKEN)
        .env("RUST_LOG", "debug")
        .env_remove("ARBITER_TOKEN_FILE")
        .env_remove("ARBITER_MCP_CLIENT_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("starting the gateway");
    let mut proc = Proc(child);
    let stdout = proc.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_default();
    let Ok(listening) = serde_json::from_str::<Value>(&line) else {
        panic!("the gateway did not start: {line:?}\n{}", std::fs::read_to_string(log).unwrap_or_default());
    };
    (proc, listening["url"].as_str().expect("listening url").to_owned())
}

/// What reached the test client from the upstreams, through the gateway.
#[derive(Default)]
struct Seen {
    sampling_prompts: Vec<String>,
    roots_asked: usize,
    progress: Vec<f64>,
    logs: Vec<String>,
}

/// The MCP client: declares roots and sampling, answers them itself.
#[derive(Clone)]
struct TestClient {
    root_uri: String,
    seen: Arc<Mutex<Seen>>,
}

impl ClientHandler for TestClient {
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let prompt = serde_json::to_string(&params.messages).unwrap();
        self.seen.lock().unwrap().sampling_prompts.push(prompt);
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text("sampled by the test client"),
            "test-model".to_owned(),
        ))
    }

    async fn list_roots(&self, _context: RequestContext<RoleClient>) -> Result<ListRootsResult, ErrorData> {
        self.seen.lock().unwrap().roots_asked += 1;
        Ok(ListRootsResult::new(vec![Root::new(self.root_uri.clone())]))
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.seen.lock().unwrap().progress.push(params.progress);
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen.lock().unwrap().logs.push(params.data.to_string());
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_roots().enable_sampling().build(),
            Implementation::new("gateway-http-test-client", "1.0.0"),
        )
    }
}

async fn connect(url: &str, token: &str, root: &Path) -> (RunningService<RoleClient, TestClient>, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let handler = TestClient { root_uri: format!("file://{}", root.display()), seen: Arc::clone(&seen) };
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(token),
    );
    let client = tokio::time::timeout(CALL_TIMEOUT, handler.serve(transport))
        .await
        .expect("the gateway did not initialise in time")
        .expect("initialising through the gateway");
    (client, seen)
}

/// The Arbiter session the gateway gave this client.
fn arbiter_session(client: &RunningService<RoleClient, TestClient>) -> String {
    let info = client.peer_info().expect("server info");
    let meta = serde_json::to_value(&info.meta).unwrap();
    meta["arbiter/session"].as_str().unwrap_or_else(|| panic!("no arbiter/session in {meta}")).to_owned()
}

async fn call(client: &RunningService<RoleClient, TestClient>, tool: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else { panic!("arguments must be an object") };
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
    tokio::time::timeout(CALL_TIMEOUT, client.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("tools/call {tool} timed out"))
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"))
}

fn text_of(result: &CallToolResult) -> String {
    let v = serde_json::to_value(result).unwrap();
    v["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n")
}

fn upstreams_file(path: &Path, fs_entry: &Path, root: &Path, everything_url: Option<&str>) {
    let mut text = format!(
        "[[upstream]]\nname = \"fs\"\ncommand = [\"node\", {:?}, {:?}]\n",
        fs_entry.display().to_string(),
        root.display().to_string()
    );
    if let Some(url) = everything_url {
        text.push_str(&format!(
            "\n[[upstream]]\nname = \"everything\"\nurl = {url:?}\ntoken_env = \"EVERYTHING_TOKEN\"\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn receipts_for<'a>(receipts: &'a [Value], resource: &str, needle: &str) -> Vec<&'a Value> {
    receipts
        .iter()
        .filter(|r| {
            r.to_string().contains(resource) && r.to_string().contains(needle) && r["decision"]["result"].is_string()
        })
        .collect()
}

async fn pending_approval(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = server.admin_json("/v1/approvals?status=pending").await;
        if let Some(id) = v["approvals"][0]["id"].as_str() {
            return id.to_owned();
        }
        assert!(Instant::now() < deadline, "no pending approval appeared: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The entry scripts of the two servers, installing them when needed;
/// `None` (after the loud skip notice) when node or the registry is missing.
fn installed(logs: &Path) -> Option<(PathBuf, PathBuf)> {
    if Command::new("node").arg("--version").output().is_err() {
        npm::skipped("mcp_gateway_http", "node is not installed");
        return None;
    }
    let entry = |package: &'static str| {
        move |prefix: &Path| {
            Some(prefix.join("node_modules").join(package).join("dist/index.js")).filter(|entry| entry.exists())
        }
    };
    let fs = npm::ensure_installed("mcp-server-filesystem", FS_PACKAGE, logs, entry(FS_PACKAGE));
    let everything =
        npm::ensure_installed("mcp-server-everything", EVERYTHING_PACKAGE, logs, entry(EVERYTHING_PACKAGE));
    match (fs, everything) {
        (Ok(fs), Ok(everything)) => Some((fs, everything)),
        (Err(why), _) | (_, Err(why)) => {
            npm::skipped("mcp_gateway_http", &why);
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_fronts_stdio_and_http_upstreams_for_http_clients() {
    let scratch = tempfile::Builder::new().prefix("arbiter-mcpgw-http-").tempdir().unwrap();
    let Some((fs_entry, everything_entry)) = installed(scratch.path()) else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = scratch.path().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let pack = scratch.path().join("pack");
    write_pack(&pack, &root);
    let server = Arc::new(Server::start_with(ServerOptions {
        config: Some(format!(
            "policies = {:?}\n\n[approvals]\nhold_ms = 8000\n\n[deferrals]\nhold_ms = 200\n\n\
             [auth.approvers.\"ops@example.test\"]\ntoken = \"{OPS}\"\ngroups = [\"ops\"]\n",
            pack.display().to_string()
        )),
        ..Default::default()
    }));
    let (_everything, everything_url) = start_everything(&everything_entry, scratch.path());
    let upstreams = scratch.path().join("upstreams.toml");
    upstreams_file(&upstreams, &fs_entry, &root, Some(&everything_url));
    let log = scratch.path().join("gateway.log");
    let started = Instant::now();
    let (_gateway, url) = start_gateway(&server.base, &server.ingress_token, &upstreams, &log);

    // Clients without the token, or with a wrong one, are refused; so are an
    // oversized body and a foreign Host.
    // No pooled connections: the 413 closes its connection unread.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    let accept = "application/json, text/event-stream";
    let r = http.post(&url).header("accept", accept).json(&init).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    assert_eq!(r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let r =
        http.post(&url).header("accept", accept).bearer_auth("not-the-client-token").json(&init).send().await.unwrap();
    assert_eq!(r.status(), 401, "wrong token");
    let r = http
        .post(&url)
        .header("accept", accept)
        .header("content-type", "application/json")
        .bearer_auth(CLIENT_TOKEN)
        .body(vec![b' '; MAX_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "oversized body");
    // A page that rebinds a DNS name to 127.0.0.1 sends its own Host.
    let r = http
        .post(&url)
        .header("accept", accept)
        .header("host", "rebound.example")
        .bearer_auth(CLIENT_TOKEN)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "foreign Host header");

    let (client, seen) = connect(&url, CLIENT_TOKEN, &root).await;
    let session = arbiter_session(&client);
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().map(|s| s.name.as_str()), Some("arbiter-mcp-gateway"));

    // One merged tool list, each tool under its server's name. The tools
    // everything offers only to clients that can sample or list roots show
    // that the client's capabilities reached the upstream.
    let deadline = Instant::now() + Duration::from_secs(15);
    let tools = loop {
        let tools: Vec<String> = tokio::time::timeout(CALL_TIMEOUT, client.list_all_tools())
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        if tools.iter().any(|t| t == "everything__trigger-sampling-request") || Instant::now() > deadline {
            break tools;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for expected in [
        "fs__write_file",
        "fs__read_text_file",
        "everything__echo",
        "everything__trigger-sampling-request",
        "everything__get-roots-list",
    ] {
        assert!(tools.iter().any(|t| t == expected), "{expected} missing from {tools:?}");
    }
    assert!(tools.iter().all(|t| t.starts_with("fs__") || t.starts_with("everything__")), "{tools:?}");

    // ALLOW on each upstream.
    let allowed = root.join("allowed.txt");
    let r = call(&client, "fs__write_file", json!({"path": allowed.display().to_string(), "content": "hello"})).await;
    assert_ne!(r.is_error, Some(true), "allowed write refused: {}", text_of(&r));
    assert_eq!(std::fs::read_to_string(&allowed).unwrap(), "hello");
    let r = call(&client, "everything__echo", json!({"message": "hi there"})).await;
    assert_ne!(r.is_error, Some(true), "allowed echo refused: {}", text_of(&r));
    assert!(text_of(&r).contains("Echo: hi there"), "{}", text_of(&r));

    // DENY: the upstream is not called; the client sees the policy's reason.
    let denied = root.join("denied-secret.txt");
    let r = call(&client, "fs__write_file", json!({"path": denied.display().to_string(), "content": "nope"})).await;
    assert_eq!(r.is_error, Some(true), "denied write let through: {}", text_of(&r));
    assert!(text_of(&r).contains("forbids writing a path that names denied-"), "{}", text_of(&r));
    assert!(!denied.exists(), "the denied write ran");

    // MODIFY: the rewritten arguments are what the upstream runs.
    let asked = root.join("rewrite-me.txt");
    let r = call(&client, "fs__write_file", json!({"path": asked.display().to_string(), "content": "moved"})).await;
    assert_ne!(r.is_error, Some(true), "modified write refused: {}", text_of(&r));
    assert!(!asked.exists(), "the original arguments ran");
    assert_eq!(std::fs::read_to_string(root.join("redirected.txt")).unwrap(), "moved");

    // DEFER: refused after the hold, naming the deferral.
    let r = call(&client, "everything__echo", json!({"message": "defer-me"})).await;
    assert_eq!(r.is_error, Some(true), "deferred echo let through: {}", text_of(&r));
    let deferred_text = text_of(&r);
    assert!(!deferred_text.contains("Echo:"), "{deferred_text}");

    // STEP_UP: the call is held until an approver decides, then runs.
    let waiting = {
        let peer = client.peer().clone();
        tokio::spawn(async move {
            let params = CallToolRequestParams::new("everything__echo")
                .with_arguments(json!({"message": "needs-approval"}).as_object().cloned().unwrap());
            tokio::time::timeout(CALL_TIMEOUT, peer.call_tool(params)).await
        })
    };
    let approval = pending_approval(&server).await;
    let r = server
        .post_raw(&format!("/v1/approvals/{approval}/approve"), Some(OPS), serde_json::to_vec(&json!({})).unwrap())
        .await;
    assert_eq!(r.status, 200, "approving: {}", r.text);
    let r = waiting.await.unwrap().expect("held call timed out").expect("held call");
    assert_ne!(r.is_error, Some(true), "approved echo refused: {}", text_of(&r));
    assert!(text_of(&r).contains("Echo: needs-approval"), "{}", text_of(&r));

    // Upstream → client: sampling and roots requests are answered by the
    // client; progress and logging notifications reach it.
    let r = call(&client, "everything__trigger-sampling-request", json!({"prompt": "say hi", "maxTokens": 10})).await;
    assert_ne!(r.is_error, Some(true), "sampling refused: {}", text_of(&r));
    assert!(text_of(&r).contains("sampled by the test client"), "{}", text_of(&r));
    assert!(seen.lock().unwrap().sampling_prompts.iter().any(|p| p.contains("say hi")));
    let r = call(&client, "everything__get-roots-list", json!({})).await;
    assert!(text_of(&r).contains(&root.display().to_string()), "roots not forwarded: {}", text_of(&r));
    assert!(seen.lock().unwrap().roots_asked > 0);
    let r = call(&client, "everything__trigger-long-running-operation", json!({"duration": 1, "steps": 2})).await;
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    assert_eq!(seen.lock().unwrap().progress, vec![1.0, 2.0], "progress notifications");
    let r = call(&client, "everything__toggle-simulated-logging", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().logs.is_empty() {
        assert!(Instant::now() < deadline, "no logging notification reached the client");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A second client gets its own Arbiter session.
    let (other, _) = connect(&url, CLIENT_TOKEN, &root).await;
    let other_session = arbiter_session(&other);
    assert_ne!(other_session, session);
    let r = call(&other, "everything__echo", json!({"message": "from the other client"})).await;
    assert!(text_of(&r).contains("Echo: from the other client"), "{}", text_of(&r));
    eprintln!("mcp_gateway_http: gateway start + two sessions + 12 calls took {:.2}s", started.elapsed().as_secs_f64());
    other.cancel().await.unwrap();
    client.cancel().await.unwrap();

    // The receipts of each session: ALLOW, DENY, MODIFY, DEFER, STEP_UP on
    // `mcp://<server>/<tool>`, by the pack's policies.
    let receipts = server.receipts_paged(&format!("session_id={}", common::urlencode(&session)), 200).await;
    let one = |resource: &str, needle: &str, result: &str| {
        let found = receipts_for(&receipts, resource, needle);
        assert!(
            found.iter().any(|r| r["decision"]["result"] == result),
            "no {result} receipt for {resource} with {needle}: {found:#?}"
        );
    };
    one("mcp://fs/write_file", "allowed.txt", "ALLOW");
    one("mcp://everything/echo", "hi there", "ALLOW");
    one("mcp://fs/write_file", "denied-secret.txt", "DENY");
    one("mcp://fs/write_file", "rewrite-me.txt", "MODIFY");
    one("mcp://everything/echo", "defer-me", "DEFER");
    one("mcp://everything/echo", "needs-approval", "STEP_UP");
    let deny = receipts_for(&receipts, "mcp://fs/write_file", "denied-secret.txt")[0];
    assert_eq!(deny["decision"]["policy"]["policy_ids"], json!(["gw.forbid.denied-path"]), "{deny:#}");
    let defer = receipts_for(&receipts, "mcp://everything/echo", "defer-me")
        .into_iter()
        .find(|r| r["decision"]["result"] == "DEFER")
        .unwrap();
    let deferral = defer["deferral"]["id"].as_str().expect("deferral id");
    assert!(deferred_text.contains(deferral), "the refusal does not name deferral {deferral}: {deferred_text}");
    assert!(
        receipts.iter().all(|r| !r.to_string().contains("from the other client")),
        "the other client's call is in this session's receipts"
    );
    let others = server.receipts_paged(&format!("session_id={}", common::urlencode(&other_session)), 50).await;
    assert!(others.iter().any(|r| r.to_string().contains("from the other client")), "{others:#?}");
    common::verify_receipts(&receipts, &server.keys().await).unwrap_or_else(|e| panic!("receipts do not verify: {e}"));

    // Neither token was written to the gateway's (debug) log.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(CLIENT_TOKEN) && !logged.contains(UPSTREAM_TOKEN), "a token is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Arbiter unreachable: an HTTP client's call is refused and never reaches
// the upstream (a single upstream keeps its own tool names).
async fn with_arbiter_down_no_http_call_reaches_an_upstream() {
    let scratch = tempfile::Builder::new().prefix("arbiter-mcpgw-down-").tempdir().unwrap();
    let Some((fs_entry, _)) = installed(scratch.path()) else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = scratch.path().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let upstreams = scratch.path().join("upstreams.toml");
    upstreams_file(&upstreams, &fs_entry, &root, None);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (_gateway, url) = start_gateway(&dead_url, "some-ingress-token", &upstreams, &scratch.path().join("gw.log"));
    let (client, _) = connect(&url, CLIENT_TOKEN, &root).await;
    let target = root.join("while-arbiter-down.txt");
    let r = call(&client, "write_file", json!({"path": target.display().to_string(), "content": "x"})).await;
    assert_eq!(r.is_error, Some(true), "call let through with Arbiter down: {}", text_of(&r));
    assert!(text_of(&r).contains("unreachable"), "no reason given: {}", text_of(&r));
    assert!(!target.exists(), "the call ran with Arbiter down");
    client.cancel().await.unwrap();
}

#[test]
// The listener never runs without a client token (on any address), and a
// bad upstream stops the gateway at start.
fn the_listener_refuses_to_start_without_a_client_token() {
    let run = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbiter"));
        cmd.args(["mcp-gateway", "--url", "http://127.0.0.1:9"]).args(args);
        cmd.env("ARBITER_TOKEN", "ingress").env_remove("ARBITER_MCP_CLIENT_TOKEN").env_remove("ARBITER_TOKEN_FILE");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&[], &["--listen", "0.0.0.0:0", "--upstream", "web=http://127.0.0.1:9/mcp"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("never listens without one"), "{err}");
    let (code, err) = run(&[], &["--listen", "127.0.0.1:0", "--upstream", "web=http://127.0.0.1:9/mcp"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("never listens without one"), "{err}");
    let (code, err) = run(
        &[("ARBITER_MCP_CLIENT_TOKEN", "short")],
        &["--listen", "127.0.0.1:0", "--upstream", "web=http://127.0.0.1:9/mcp"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("shorter than"), "{err}");
    // A token, but the upstream is not there: the start-up check fails.
    let (code, err) = run(
        &[("ARBITER_MCP_CLIENT_TOKEN", CLIENT_TOKEN)],
        &["--listen", "127.0.0.1:0", "--upstream", "web=http://127.0.0.1:9/mcp"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("upstream `web`"), "{err}");
    assert!(!err.contains(CLIENT_TOKEN), "{err}");
    // Two upstreams of one name.
    let (code, err) = run(&[], &["--upstream", "a=http://127.0.0.1:9/mcp", "--upstream", "a=http://127.0.0.1:9/x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("used twice"), "{err}");
}
