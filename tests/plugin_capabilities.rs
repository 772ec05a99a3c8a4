//! Plugin capabilities and WIT versions, black-box: the `caps` test plugin
//! (built against `arbiter:plugin@0.2.0`) and its twin `caps-twin` run in the
//! real binary next to the bundled 0.1.0 adapters, against loopback HTTP
//! servers that count the requests they see.
//!
//! The plugin performs the capability call named in the hook body during
//! `encode` and puts the result in its reply, so each check reads what the
//! plugin got back from the host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test: a failed expectation aborts the test"
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::bundles::{self, Publisher, put_bundle};
use common::{Server, ServerOptions, pre_tool_use_bash};
use serde_json::{Value, json};

const CAPS: &str = env!("ARBITER_TEST_PLUGIN_CAPS");
const CAPS_TWIN: &str = env!("ARBITER_TEST_PLUGIN_CAPS_TWIN");
const CLAUDE_CODE: &str = env!("ARBITER_TEST_PLUGIN_CLAUDE_CODE");

/// A loopback HTTP server that counts its requests. `/` answers `hello`,
/// `/redirect?to=URL` redirects, `/big` sends 64 KiB, `/slow` answers after
/// 10 s. It stops with the test's runtime.
struct Upstream {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Self {
        use axum::extract::{Query, State};
        use axum::response::{IntoResponse, Redirect};
        use axum::routing::get;
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app =
            axum::Router::new()
                .route("/", get(|| async { "hello" }))
                .route(
                    "/redirect",
                    get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                        Redirect::temporary(q.get("to").map_or("/", String::as_str)).into_response()
                    }),
                )
                .route("/big", get(|| async { "x".repeat(64 * 1024) }))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        "late"
                    }),
                )
                .layer(axum::middleware::from_fn_with_state(
                    counted,
                    |State(hits): State<Arc<AtomicUsize>>,
                     req: axum::extract::Request,
                     next: axum::middleware::Next| async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        next.run(req).await
                    },
                ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// One capability call through `plugin`'s hook; returns the plugin's
/// `result`: `{"ok": ...}` or `{"err": {"kind", "message"}}`.
async fn call(server: &Server, plugin: &str, op: Value) -> Value {
    let mut body = op;
    body["session_id"] = Value::from(format!("caps-{plugin}"));
    let r = server.hook(plugin, &body).await;
    assert_eq!(r.status, 200, "{plugin} {body}: {}", r.text);
    let reply = r.json();
    assert!(reply.get("blocked").is_none(), "{plugin} {body}: the plugin faulted: {}", r.text);
    reply["result"].clone()
}

/// 64-bit FNV-1a, as the plugin reports a secret it read.
fn fnv1a(s: &str) -> String {
    let hash = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

fn err_kind(result: &Value) -> &str {
    result["err"]["kind"].as_str().unwrap_or_else(|| panic!("expected an error result, got {result}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_denied_by_default_and_granted_per_plugin() {
    let allowed = Upstream::start().await;
    let other = Upstream::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret = format!("s3cr3t-{}", std::process::id());
    let secret_file = secrets.path().join("api-token");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let config = format!(
        r#"
[plugins]
deadline_ms = 2000

[plugins.grants.caps.http]
hosts = ["127.0.0.1:{port}"]
timeout_ms = 300
max_response_bytes = 1000

[plugins.grants.caps.kv]
quota_bytes = 200
max_value_bytes = 100

[plugins.grants.caps.config]
region = "eu-west"

[plugins.grants.caps.secrets]
api_token = {{ file = "{file}" }}

[plugins.grants.caps-twin.kv]

[integrations.caps]
plugin = "caps"

[integrations.caps-twin]
plugin = "caps-twin"

[integrations.claude-code]
plugin = "claude-code"
"#,
        port = allowed.port,
        file = secret_file.display()
    );
    let server = Server::start_with(ServerOptions {
        config: Some(config),
        plugins: vec![("caps".to_owned(), CAPS.into()), ("caps-twin".to_owned(), CAPS_TWIN.into())],
    });
    let url = |port: u16, host: &str, path: &str| format!("http://{host}:{port}{path}");

    // The plugins report their WIT versions and what they hold.
    let caps = server.admin_json("/v1/plugins/caps").await["active"].clone();
    assert_eq!(caps["wit"], "arbiter:plugin@0.2.0", "{caps}");
    assert_eq!(caps["capabilities"], json!(["http", "kv", "config", "secrets"]), "{caps}");
    let twin = server.admin_json("/v1/plugins/caps-twin").await["active"].clone();
    assert_eq!(twin["capabilities"], json!(["kv"]), "{twin}");
    let claude = server.admin_json("/v1/plugins/claude-code").await["active"].clone();
    assert_eq!(claude["wit"], "arbiter:plugin@0.1.0", "{claude}");

    // Without the HTTP grant: an error result, and nothing reaches the network.
    let r = call(&server, "caps-twin", json!({"op": "http", "url": url(allowed.port, "127.0.0.1", "/")})).await;
    assert_eq!(err_kind(&r), "not-granted", "{r}");
    assert_eq!(allowed.hits(), 0, "a plugin without the grant reached the server");

    // With it: the allowed host answers.
    let r = call(&server, "caps", json!({"op": "http", "url": url(allowed.port, "127.0.0.1", "/")})).await;
    assert_eq!(r["ok"], json!({"status": 200, "body": "hello"}), "{r}");
    assert_eq!(allowed.hits(), 1);

    // Another host (a second server, or the same port under another name) is
    // refused before any connection.
    for target in
        [url(other.port, "localhost", "/"), url(other.port, "127.0.0.1", "/"), url(allowed.port, "localhost", "/")]
    {
        let r = call(&server, "caps", json!({"op": "http", "url": target})).await;
        assert_eq!(err_kind(&r), "denied", "{target}: {r}");
    }
    assert_eq!(other.hits(), 0, "the plugin reached a host that is not allowed");
    assert_eq!(allowed.hits(), 1, "`localhost` reached the server allowed as `127.0.0.1`");

    // A redirect to a host that is not allowed is not followed.
    let to = url(other.port, "127.0.0.1", "/");
    let r = call(
        &server,
        "caps",
        json!({"op": "http", "url": format!("{}?to={to}", url(allowed.port, "127.0.0.1", "/redirect"))}),
    )
    .await;
    assert_eq!(err_kind(&r), "failed", "{r}");
    assert!(r["err"]["message"].as_str().unwrap().contains("not on the allow-list"), "{r}");
    assert_eq!(other.hits(), 0, "a redirect led the plugin to a host that is not allowed");

    // The response-size cap and the timeout give error results, promptly.
    let r = call(&server, "caps", json!({"op": "http", "url": url(allowed.port, "127.0.0.1", "/big")})).await;
    assert_eq!(err_kind(&r), "limit", "{r}");
    let started = Instant::now();
    let r = call(&server, "caps", json!({"op": "http", "url": url(allowed.port, "127.0.0.1", "/slow")})).await;
    assert_eq!(err_kind(&r), "failed", "{r}");
    assert!(started.elapsed() < Duration::from_secs(3), "the 300 ms timeout took {:?}", started.elapsed());

    // Each plugin has its own key-value namespace.
    assert_eq!(
        call(&server, "caps", json!({"op": "kv-set", "key": "k", "value": "from-caps"})).await["ok"],
        Value::Null
    );
    let r = call(&server, "caps-twin", json!({"op": "kv-get", "key": "k"})).await;
    assert_eq!(r, json!({"ok": null}), "the twin sees the other plugin's key");
    call(&server, "caps-twin", json!({"op": "kv-set", "key": "k", "value": "from-twin"})).await;
    assert_eq!(call(&server, "caps", json!({"op": "kv-get", "key": "k"})).await, json!({"ok": "from-caps"}));
    assert_eq!(call(&server, "caps-twin", json!({"op": "kv-get", "key": "k"})).await, json!({"ok": "from-twin"}));
    assert_eq!(call(&server, "caps", json!({"op": "kv-list", "prefix": ""})).await, json!({"ok": ["k"]}));
    // Caps: value size, then the namespace quota.
    let r = call(&server, "caps", json!({"op": "kv-set", "key": "big", "value": "v".repeat(101)})).await;
    assert_eq!(err_kind(&r), "limit", "{r}");
    let mut quota_hit = false;
    for i in 0..10 {
        let r = call(&server, "caps", json!({"op": "kv-set", "key": format!("q{i}"), "value": "v".repeat(60)})).await;
        if r.get("err").is_some() {
            assert_eq!(err_kind(&r), "limit", "{r}");
            quota_hit = true;
            break;
        }
    }
    assert!(quota_hit, "a 200 byte quota held ten 62 byte entries");
    call(&server, "caps", json!({"op": "kv-delete", "key": "k"})).await;
    assert_eq!(call(&server, "caps", json!({"op": "kv-get", "key": "k"})).await, json!({"ok": null}));
    assert_eq!(call(&server, "caps-twin", json!({"op": "kv-get", "key": "k"})).await, json!({"ok": "from-twin"}));

    // Configuration values and secrets, by name, only for the granted plugin.
    assert_eq!(call(&server, "caps", json!({"op": "config", "key": "region"})).await, json!({"ok": "eu-west"}));
    assert_eq!(err_kind(&call(&server, "caps-twin", json!({"op": "config", "key": "region"})).await), "not-granted");
    let r = call(&server, "caps", json!({"op": "secret", "name": "api_token"})).await;
    assert_eq!(r, json!({"ok": {"fnv1a": fnv1a(&secret), "len": secret.len()}}), "the plugin read another value");
    assert_eq!(err_kind(&call(&server, "caps", json!({"op": "secret", "name": "other"})).await), "not-granted");
    assert_eq!(
        err_kind(&call(&server, "caps-twin", json!({"op": "secret", "name": "api_token"})).await),
        "not-granted"
    );

    // The secret is in no receipt and no log line.
    let receipts = server.receipts_paged("", 100).await;
    assert!(receipts.len() >= 20, "expected a receipt per call, got {}", receipts.len());
    assert!(!serde_json::to_string(&receipts).unwrap().contains(&secret), "a receipt holds the secret");
    let log = std::fs::read_to_string(server.root().join("server.stderr.log")).unwrap();
    assert!(!log.contains(&secret), "the server log holds the secret");

    // A 0.1.0 plugin still serves next to them (its fixtures passed at load).
    let r = server.hook("claude-code", &pre_tool_use_bash("ls", "caps-v1")).await;
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("ALLOW"), "{}", r.text);
    let r = server.hook("claude-code", &pre_tool_use_bash("rm -rf /", "caps-v1")).await;
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("DENY"), "{}", r.text);
}

/// Sign `component` as plugin `name` with `wit` and `capabilities`.
fn sign(dir: &Path, publisher: &Publisher, label: &str, component: &str, manifest: Value) -> Vec<u8> {
    let fixture = dir.join("malformed.json");
    std::fs::write(
        &fixture,
        serde_json::to_vec(&json!({
            "description": "A body without a session is malformed.",
            "request": {"body": {"hello": "world"}},
            "decode": {"result": "malformed"}
        }))
        .unwrap(),
    )
    .unwrap();
    let mut manifest = manifest;
    manifest["vendor"] = Value::from("Arbiter tests");
    manifest["version"] = Value::from("0.1.0");
    manifest["integrations"] = json!([manifest["name"].clone()]);
    manifest["fixtures"] = json!([fixture.display().to_string()]);
    bundles::sign(dir, publisher, label, component, &manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_holds_what_it_requests_within_the_grant_and_its_wit_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let acme = bundles::keygen(dir.path(), "acme");
    let public = &acme.public;
    let config = format!(
        r#"
[plugins]
deadline_ms = 2000
watch_interval_ms = 0

[plugins.publishers]
acme = "{public}"

[plugins.grants.caps.kv]

[plugins.grants.caps.config]
region = "eu-west"

[integrations.caps]
plugin = "caps"
"#
    );
    // The unsigned file serves first, holding every capability granted.
    let server =
        Server::start_with(ServerOptions { config: Some(config), plugins: vec![("caps".to_owned(), CAPS.into())] });
    let v2 = "arbiter:plugin@0.2.0";
    let active = server.admin_json("/v1/plugins/caps").await["active"].clone();
    assert_eq!(active["capabilities"], json!(["kv", "config"]), "{active}");
    assert_eq!(call(&server, "caps", json!({"op": "config", "key": "region"})).await, json!({"ok": "eu-west"}));

    // Refusals, each with its precise reason; the file keeps serving.
    let cases = [
        (
            "a capability that is not granted",
            "caps",
            sign(
                dir.path(),
                &acme,
                "http",
                CAPS,
                json!({"name": "caps", "wit": v2, "capabilities": [{"name": "http"}]}),
            ),
            "capability_not_granted",
            "`http`, which `[plugins.grants.caps]` does not grant",
        ),
        (
            "an unknown capability",
            "caps",
            sign(dir.path(), &acme, "fs", CAPS, json!({"name": "caps", "wit": v2, "capabilities": [{"name": "fs"}]})),
            "capability_not_granted",
            "`fs`, which is not a capability",
        ),
        (
            "a 0.2.0 component declared as 0.1.0",
            "caps",
            sign(
                dir.path(),
                &acme,
                "old",
                CAPS,
                json!({"name": "caps", "wit": "arbiter:plugin@0.1.0", "capabilities": []}),
            ),
            "wit_mismatch",
            "built against `arbiter:plugin@0.2.0`",
        ),
        (
            "a 0.1.0 component declared as 0.2.0",
            "claude-code",
            sign(dir.path(), &acme, "new", CLAUDE_CODE, json!({"name": "claude-code", "wit": v2, "capabilities": []})),
            "wit_mismatch",
            "built against `arbiter:plugin@0.1.0`",
        ),
        (
            "a 0.1.0 component requesting a capability",
            "claude-code",
            sign(
                dir.path(),
                &acme,
                "v1cap",
                CLAUDE_CODE,
                json!({"name": "claude-code", "wit": "arbiter:plugin@0.1.0", "capabilities": [{"name": "kv"}]}),
            ),
            "capability_not_granted",
            "which has no capability imports",
        ),
    ];
    for (case, name, bytes, code, text) in cases {
        let (status, body) = put_bundle(&server, name, bytes).await;
        assert_eq!(status, 422, "{case}: {body}");
        assert_eq!(body["error"]["code"], code, "{case}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(text), "{case}: `{message}` does not say `{text}`");
        let active = server.admin_json("/v1/plugins/caps").await["active"].clone();
        assert_eq!(active["origin"].as_str().map(|o| o.starts_with("file:")), Some(true), "{case}: {active}");
    }

    // A bundle requesting only `kv` of the granted `kv` and `config` holds
    // `kv` alone: what the plugin gets is what it requested.
    let bundle =
        sign(dir.path(), &acme, "kv", CAPS, json!({"name": "caps", "wit": v2, "capabilities": [{"name": "kv"}]}));
    let (status, body) = put_bundle(&server, "caps", bundle).await;
    assert_eq!(status, 200, "{body}");
    let active = server.admin_json("/v1/plugins/caps").await["active"].clone();
    assert_eq!(active["capabilities"], json!(["kv"]), "{active}");
    assert_eq!(active["wit"], v2, "{active}");
    assert_eq!(active["publisher"], "acme", "{active}");
    let r = call(&server, "caps", json!({"op": "config", "key": "region"})).await;
    assert_eq!(err_kind(&r), "not-granted", "{r}");
    assert_eq!(call(&server, "caps", json!({"op": "kv-set", "key": "a", "value": "1"})).await, json!({"ok": null}));
    assert_eq!(call(&server, "caps", json!({"op": "kv-get", "key": "a"})).await, json!({"ok": "1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_never_outlasts_the_plugin_call_deadline() {
    let upstream = Upstream::start().await;
    // The grant allows 10 s per request, the plugin call only 300 ms.
    let config = format!(
        r#"
[plugins]
deadline_ms = 300

[plugins.grants.caps.http]
hosts = ["127.0.0.1:{port}"]
timeout_ms = 10000

[integrations.caps]
plugin = "caps"
"#,
        port = upstream.port
    );
    let server =
        Server::start_with(ServerOptions { config: Some(config), plugins: vec![("caps".to_owned(), CAPS.into())] });
    let started = Instant::now();
    let body =
        json!({"session_id": "caps-deadline", "op": "http", "url": format!("http://127.0.0.1:{}/slow", upstream.port)});
    let r = server.hook("caps", &body).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(elapsed < Duration::from_secs(3), "the call took {elapsed:?}; the deadline is 300 ms");
    // Either the fetch gave up when the call's time ran out (an error result)
    // or the plugin was stopped at its deadline (the blocking reply): never
    // the upstream's late answer.
    let reply = r.json();
    let timed_out = reply["result"]["err"]["kind"] == "failed";
    let stopped = reply["blocked"] == true;
    assert!(timed_out || stopped, "{reply}");
    assert_eq!(upstream.hits(), 1, "the request was sent once");
}
