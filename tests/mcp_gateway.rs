//! Black box: `arbiter mcp-gateway` between a real MCP client (rmcp, over the
//! gateway's stdio) and the REAL `@modelcontextprotocol/server-filesystem`
//! from npm (installed once into `$HOME/.cache/arbiter-e2e/`; when npm or the
//! registry is unavailable the test prints `SKIPPED:` and passes).
//!
//! The real Arbiter runs with a small pack: a detector on a `path` argument
//! that names `denied-` on any MCP call, a `forbid` on it, everything else
//! allowed. The test proves by side effect that an allowed `write_file`
//! creates its file and a denied one does not (the client gets `isError`
//! with the policy's reason), that the receipts of the gateway's session
//! show ALLOW and DENY by the pack's policy, and that with Arbiter
//! unreachable the call is refused and never reaches the upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, ServerOptions, npm};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

const PACKAGE: &str = "@modelcontextprotocol/server-filesystem";
const FORBID_POLICY: &str = "mcpgw.forbid.denied-path";
/// One MCP round trip through the gateway, Arbiter and the upstream.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's entry script, installing the package when needed; `Err`
/// with the reason when the test must be skipped.
fn ensure_fs_server(logs: &Path) -> Result<PathBuf, String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is not installed".to_owned());
    }
    npm::ensure_installed("mcp-server-filesystem", PACKAGE, logs, |prefix| {
        Some(prefix.join("node_modules").join(PACKAGE).join("dist/index.js")).filter(|entry| entry.exists())
    })
}

fn write_pack(dir: &Path) {
    common::write_forbid_pack(
        dir,
        "mcp-gateway-test",
        "mcp.call",
        "path",
        "denied-",
        FORBID_POLICY,
        "The MCP gateway test forbids writing a path that names denied-.",
    );
}

/// Starts `arbiter mcp-gateway` in front of the filesystem server and
/// connects an MCP client to its stdio.
async fn gateway(url: &str, token: &str, session: &str, entry: &Path, root: &Path) -> RunningService<RoleClient, ()> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_arbiter"));
    cmd.args(["mcp-gateway", "--server-name", "fs", "--url", url, "--session", session, "--timeout-ms", "20000", "--"])
        .arg("node")
        .arg(entry)
        .arg(root)
        .env("ARBITER_TOKEN", token)
        .env_remove("ARBITER_TOKEN_FILE");
    let transport = TokioChildProcess::new(cmd).expect("spawning the gateway");
    tokio::time::timeout(CALL_TIMEOUT, ().serve(transport))
        .await
        .expect("the gateway did not initialise in time")
        .expect("initialising through the gateway")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, arguments: Value) -> CallToolResult {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_enforces_policy_on_tool_calls() {
    let scratch = tempfile::Builder::new().prefix("arbiter-mcpgw-").tempdir().unwrap();
    let entry = match ensure_fs_server(scratch.path()) {
        Ok(e) => e,
        Err(why) => {
            npm::skipped("mcp_gateway", &why);
            return;
        }
    };
    let pack = scratch.path().join("pack");
    write_pack(&pack);
    // The filesystem server resolves its roots; give it the canonical path.
    let root = scratch.path().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let server = Server::start_with(ServerOptions {
        config: Some(format!("policies = {:?}\n", pack.display().to_string())),
        ..Default::default()
    });
    let session = format!("mcpgw-test-{}", std::process::id());
    let started = Instant::now();
    let client = gateway(&server.base, &server.ingress_token, &session, &entry, &root).await;

    // initialize and tools/list are the upstream's, passed through.
    let info = client.peer_info().expect("server info");
    let name = info.server_info.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    assert!(name.contains("filesystem"), "serverInfo not forwarded: {:?}", info.server_info);
    let tools = tokio::time::timeout(CALL_TIMEOUT, client.list_all_tools()).await.unwrap().unwrap();
    assert!(tools.iter().any(|t| t.name == "write_file"), "tools/list not forwarded: {tools:?}");

    // Allowed: the file is written.
    let allowed = root.join("allowed.txt");
    let r = call(&client, "write_file", json!({"path": allowed.display().to_string(), "content": "hello"})).await;
    assert_ne!(r.is_error, Some(true), "allowed write refused: {}", text_of(&r));
    assert_eq!(std::fs::read_to_string(&allowed).unwrap(), "hello");

    // Denied: never reaches the upstream; the client sees the policy's reason.
    let denied = root.join("denied-secret.txt");
    let r = call(&client, "write_file", json!({"path": denied.display().to_string(), "content": "nope"})).await;
    assert_eq!(r.is_error, Some(true), "denied write let through: {}", text_of(&r));
    assert!(text_of(&r).contains("forbids writing a path that names denied-"), "reason missing: {}", text_of(&r));
    assert!(!denied.exists(), "the denied write ran: {} exists", denied.display());

    // An allowed read returns the upstream's content (and is observed).
    let r = call(&client, "read_text_file", json!({"path": allowed.display().to_string()})).await;
    assert_ne!(r.is_error, Some(true), "allowed read refused: {}", text_of(&r));
    assert!(text_of(&r).contains("hello"), "read result not forwarded: {}", text_of(&r));
    eprintln!("mcp_gateway: gateway start + 4 round trips took {:.2}s", started.elapsed().as_secs_f64());
    client.cancel().await.unwrap();

    // The receipts of the gateway's session: ALLOW, DENY by the pack's policy.
    let receipts = server.receipts_paged(&format!("session_id={}", common::urlencode(&session)), 100).await;
    let write_receipts: Vec<&Value> =
        receipts.iter().filter(|r| r.to_string().contains("mcp://fs/write_file")).collect();
    assert_eq!(write_receipts.len(), 2, "expected two write_file receipts: {receipts:#?}");
    let allow = write_receipts.iter().find(|r| r.to_string().contains("allowed.txt")).expect("allow receipt");
    let deny = write_receipts.iter().find(|r| r.to_string().contains("denied-secret.txt")).expect("deny receipt");
    assert_eq!(allow["decision"]["result"], "ALLOW", "allowed write: {allow:#}");
    assert_eq!(deny["decision"]["result"], "DENY", "denied write: {deny:#}");
    assert_eq!(deny["decision"]["policy"]["policy_ids"], json!([FORBID_POLICY]), "deciding policy: {deny:#}");
    assert_eq!(deny["decision"]["policy"]["pack"], "mcp-gateway-test", "pack: {deny:#}");
    let keys = server.keys().await;
    common::verify_receipts(&receipts, &keys).unwrap_or_else(|e| panic!("receipts do not verify: {e}"));

    // Arbiter unreachable: the call is refused and never reaches the upstream.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = gateway(&dead_url, &server.ingress_token, &session, &entry, &root).await;
    let unreachable = root.join("while-arbiter-down.txt");
    let r = call(&client, "write_file", json!({"path": unreachable.display().to_string(), "content": "x"})).await;
    assert_eq!(r.is_error, Some(true), "call let through with Arbiter down: {}", text_of(&r));
    assert!(text_of(&r).contains("unreachable"), "no reason given: {}", text_of(&r));
    assert!(!unreachable.exists(), "the call ran with Arbiter down");
    client.cancel().await.unwrap();

    // A wrong token is refused the same way.
    let client = gateway(&server.base, "not-the-token", &session, &entry, &root).await;
    let r = call(&client, "write_file", json!({"path": unreachable.display().to_string(), "content": "x"})).await;
    assert_eq!(r.is_error, Some(true), "call let through with a bad token: {}", text_of(&r));
    assert!(!unreachable.exists(), "the call ran with a bad token");
    client.cancel().await.unwrap();
}
