//! Signed plugin bundles, hot-loaded through the API while hooks flow.
//!
//! Bundles are built here with the real CLI (`arbiter plugin keygen` and
//! `arbiter plugin sign`) from the claude-code component that build.rs
//! compiled and the fixtures in `plugins/claude-code/bundle/`. Versions of
//! the same component differ by semver build metadata (`0.1.0+test.2`),
//! which the host accepts because `describe()` reports `0.1.0`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test: a failed expectation aborts the test"
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::bundles::{self, Publisher, keygen, put_bundle};
use common::{Server, ServerOptions, pre_tool_use_bash};
use serde_json::{Value, json};

/// The claude-code component build.rs compiled for the bundled plugin.
const COMPONENT: &str = env!("ARBITER_TEST_PLUGIN_CLAUDE_CODE");

fn bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/claude-code/bundle")
}

/// Sign a claude-code bundle with `change` applied to the source manifest
/// in `plugins/claude-code/bundle/`.
fn sign(dir: &Path, publisher: &Publisher, label: &str, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut manifest = bundles::claude_code_manifest();
    change(&mut manifest);
    bundles::sign(dir, publisher, label, COMPONENT, &manifest)
}

fn version(v: &str) -> impl FnOnce(&mut Value) + '_ {
    move |m| m["version"] = Value::from(v)
}

/// A bundle's archive entries, and the archive rebuilt from them.
fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_str().unwrap().to_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, data)
        })
        .collect()
}

fn rebuild(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

fn alter(bytes: &[u8], path: &str, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut e = entries(bytes);
    f(&mut e.iter_mut().find(|(p, _)| p == path).unwrap().1);
    rebuild(&e)
}

fn config(publisher: &Publisher, extra: &str) -> String {
    format!(
        "[plugins]\nwatch_interval_ms = 200\nmax_bundle_bytes = 1000000\n{extra}\n[plugins.publishers]\n{} = \"{}\"\n",
        publisher.name, publisher.public
    )
}

async fn admin(server: &Server, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = server.http.request(method, server.url(path)).bearer_auth(&server.admin_token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn active(server: &Server, name: &str) -> Value {
    server.admin_json(&format!("/v1/plugins/{name}")).await["active"].clone()
}

/// One hook through the plugin: `ls` must be allowed, `rm -rf /` denied.
async fn check_hook(server: &Server, session: &str) {
    let r = server.hook("claude-code", &pre_tool_use_bash("ls", session)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("ALLOW"), "{}", r.text);
    let r = server.hook("claude-code", &pre_tool_use_bash("rm -rf /", session)).await;
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("DENY"), "{}", r.text);
}

/// What one request of the load saw.
struct Sent {
    started: Instant,
    finished: Instant,
    command: &'static str,
    status: u16,
    decision: Option<String>,
    receipt: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_request_and_receipts_name_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let acme = keygen(dir.path(), "acme");
    let v2 = sign(dir.path(), &acme, "v2", version("0.1.0+test.2"));
    let v3 = sign(dir.path(), &acme, "v3", version("0.1.0+test.3"));
    let server = Arc::new(Server::start_with(ServerOptions { config: Some(config(&acme, "")), ..Default::default() }));
    let bundled = active(&server, "claude-code").await;
    assert_eq!(bundled["publisher"], "arbiter-bundled");
    assert_eq!(bundled["version"], "0.1.0");

    // Workers send hooks back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (server, stop) = (server.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let session = format!("load-{w}");
            let mut sent = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let command = if i % 4 == 3 { "rm -rf /" } else { "ls" };
                i += 1;
                let started = Instant::now();
                let r = server.hook("claude-code", &pre_tool_use_bash(command, &session)).await;
                sent.push(Sent {
                    started,
                    finished: Instant::now(),
                    command,
                    status: r.status,
                    decision: r.header("x-arbiter-decision"),
                    receipt: r.header("x-arbiter-receipt-id"),
                });
            }
            sent
        }));
    }
    let t0 = Instant::now();
    // (sent, returned, version in service after it)
    let mut swaps: Vec<(Instant, Instant, &str)> = Vec::new();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent_at = Instant::now();
    let (status, body) = put_bundle(&server, "claude-code", v2.clone()).await;
    assert_eq!(status, 200, "{body}");
    swaps.push((sent_at, Instant::now(), "0.1.0+test.2"));
    assert_eq!(body["active"]["version"], "0.1.0+test.2");
    assert_eq!(body["previous"]["version"], "0.1.0");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent_at = Instant::now();
    let (status, body) = put_bundle(&server, "claude-code", v3.clone()).await;
    assert_eq!(status, 200, "{body}");
    swaps.push((sent_at, Instant::now(), "0.1.0+test.3"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent_at = Instant::now();
    let (status, body) = admin(&server, reqwest::Method::POST, "/v1/plugins/claude-code/rollback").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"]["version"], "0.1.0+test.2");
    swaps.push((sent_at, Instant::now(), "0.1.0+test.2"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for w in workers {
        sent.extend(w.await.unwrap());
    }
    let elapsed = t0.elapsed();

    // Zero failed, zero fail-open.
    let failed: Vec<_> = sent.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed (first status {})",
        failed.len(),
        sent.len(),
        failed[0].status
    );
    for s in &sent {
        let want = if s.command == "ls" { "ALLOW" } else { "DENY" };
        assert_eq!(s.decision.as_deref(), Some(want), "`{}` was answered {:?}", s.command, s.decision);
    }
    let rate = sent.len() as f64 / elapsed.as_secs_f64();
    println!(
        "hot swap: {} hooks in {:.1} s ({rate:.0} req/s), 3 swaps, 0 failed, 0 fail-open",
        sent.len(),
        elapsed.as_secs_f64()
    );
    assert!(sent.len() > 400, "the load was too thin to show anything: {} requests", sent.len());

    // Every receipt names the version and bundle that served it; requests
    // started after a swap returned are served by the new version.
    let all = server.all_receipts().await;
    let receipts: HashMap<String, Value> =
        all.iter().map(|r| (r["receipt_id"].as_str().unwrap().to_owned(), r.clone())).collect();
    let digests: BTreeMap<&str, String> = [
        ("0.1.0", bundled["bundle_digest"].as_str().unwrap().to_owned()),
        ("0.1.0+test.2", digest_of(&v2)),
        ("0.1.0+test.3", digest_of(&v3)),
    ]
    .into_iter()
    .collect();
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sent {
        let id = s.receipt.as_ref().expect("every hook has a receipt");
        let vendor = &receipts.get(id).unwrap_or_else(|| panic!("receipt {id} not stored"))["vendor"];
        assert_eq!(vendor["plugin"], "claude-code");
        let v = vendor["plugin_version"].as_str().unwrap();
        assert_eq!(vendor["plugin_bundle_digest"].as_str(), digests.get(v).map(String::as_str), "{vendor}");
        assert_eq!(vendor["plugin_digest"], bundled["digest"], "one component throughout");
        // The version in service when the request started, and any a swap
        // overlapping the request put in service.
        let mut allowed: Vec<&str> =
            vec![swaps.iter().filter(|w| w.1 < s.started).map(|w| w.2).next_back().unwrap_or("0.1.0")];
        allowed.extend(swaps.iter().filter(|w| w.0 <= s.finished && w.1 >= s.started).map(|w| w.2));
        assert!(allowed.contains(&v), "a request was served by {v}, but only {allowed:?} were in service during it");
        *served.entry(v.to_owned()).or_default() += 1;
    }
    println!("served by version: {served:?}");
    assert_eq!(served.len(), 3, "each version served some requests: {served:?}");

    // The receipts still verify offline, with the new fields.
    common::verify_receipts(&all, &server.keys().await).unwrap();

    // Per-plugin stats count the calls of the version in service.
    let view = server.admin_json("/v1/plugins/claude-code").await;
    assert!(view["active"]["stats"]["calls"].as_u64().unwrap() > 0, "{view}");
    assert_eq!(view["active"]["stats"]["faults"], 0, "{view}");
    assert!(view["active"]["stats"]["latency_us"]["p99"].as_u64().unwrap() > 0, "{view}");
    assert_eq!(view["used_by"], json!(["claude-code"]));
}

fn digest_of(bundle: &[u8]) -> String {
    let manifest = &entries(bundle).into_iter().find(|(p, _)| p == "manifest.json").unwrap().1;
    let value: Value = serde_json::from_slice(manifest).unwrap();
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(common::jcs(&value))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bundles_are_refused_precisely_and_the_old_version_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let acme = keygen(dir.path(), "acme");
    let mallory = keygen(dir.path(), "mallory");
    let server = Server::start_with(ServerOptions { config: Some(config(&acme, "")), ..Default::default() });
    let good = sign(dir.path(), &acme, "good", version("0.1.0+good"));
    let (status, body) = put_bundle(&server, "claude-code", good.clone()).await;
    assert_eq!(status, 200, "{body}");

    // A fixture that expects the wrong reply.
    let bad_fixture = dir.path().join("expects-allow.json");
    let mut fixture: Value =
        serde_json::from_slice(&std::fs::read(bundle_dir().join("fixtures/deny-bash.json")).unwrap()).unwrap();
    fixture["replies"][0]["body"]["hookSpecificOutput"]["permissionDecision"] = Value::from("allow");
    std::fs::write(&bad_fixture, serde_json::to_vec(&fixture).unwrap()).unwrap();
    let mallory_as_acme = Publisher { name: "acme".to_owned(), key: mallory.key.clone(), public: String::new() };

    // (case, uploaded as, bundle, status, error code, words the message has)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "unsigned",
            "claude-code",
            rebuild(&entries(&good).into_iter().filter(|(p, _)| p != "signature.json").collect::<Vec<_>>()),
            422,
            "bundle_unsigned",
            "not signed",
        ),
        (
            "unknown publisher",
            "claude-code",
            sign(dir.path(), &mallory, "mallory", version("0.1.0+m")),
            422,
            "unknown_publisher",
            "`mallory`",
        ),
        (
            "wrong key",
            "claude-code",
            sign(dir.path(), &mallory_as_acme, "forged", version("0.1.0+f")),
            422,
            "bad_signature",
            "trusted with key",
        ),
        (
            "bad signature",
            "claude-code",
            alter(&good, "signature.json", |d| {
                let mut sig: Value = serde_json::from_slice(d).unwrap();
                let value = sig["value"].as_str().unwrap().to_owned();
                let flipped =
                    if value.starts_with('A') { value.replacen('A', "B", 1) } else { format!("A{}", &value[1..]) };
                sig["value"] = Value::from(flipped);
                *d = serde_json::to_vec(&sig).unwrap();
            }),
            422,
            "bad_signature",
            "does not verify",
        ),
        (
            "tampered component",
            "claude-code",
            alter(&good, "component.wasm", |d| {
                let last = d.len() - 1;
                d[last] ^= 0x01;
            }),
            422,
            "tampered_file",
            "tampered component",
        ),
        (
            "tampered manifest",
            "claude-code",
            alter(&good, "manifest.json", |d| {
                let mut m: Value = serde_json::from_slice(d).unwrap();
                m["version"] = Value::from("0.1.0+evil");
                *d = serde_json::to_vec(&m).unwrap();
            }),
            422,
            "tampered_manifest",
            "tampered manifest",
        ),
        (
            "wrong WIT version",
            "claude-code",
            sign(dir.path(), &acme, "wit", |m| m["wit"] = Value::from("arbiter:plugin@0.9.0")),
            422,
            "unsupported_wit",
            "arbiter:plugin@0.9.0",
        ),
        (
            "self-test failing",
            "claude-code",
            sign(dir.path(), &acme, "selftest", |m| m["fixtures"] = json!([bad_fixture.display().to_string()])),
            422,
            "self_test_failed",
            "permissionDecision` is \"deny\", expected \"allow\"",
        ),
        ("name mismatch", "codex-cli", good.clone(), 422, "name_mismatch", "not `codex-cli`"),
        (
            "version mismatch",
            "claude-code",
            sign(dir.path(), &acme, "ver", version("0.2.0")),
            422,
            "version_mismatch",
            "`0.2.0`",
        ),
        (
            "capability not granted",
            "claude-code",
            sign(dir.path(), &acme, "cap", |m| m["capabilities"] = json!([{"name": "http", "hosts": ["example.com"]}])),
            422,
            "capability_not_granted",
            "`http`",
        ),
        (
            "not a bundle",
            "claude-code",
            b"definitely not a tar archive".to_vec(),
            400,
            "bundle_malformed",
            "malformed bundle",
        ),
        ("too large", "claude-code", vec![0u8; 1_100_000], 413, "bundle_too_large", "1000000"),
    ];
    for (case, name, bytes, want_status, want_code, want_text) in cases {
        let (status, body) = put_bundle(&server, name, bytes).await;
        assert_eq!(status, want_status, "{case}: {body}");
        assert_eq!(body["error"]["code"], want_code, "{case}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(want_text), "{case}: `{message}` does not say `{want_text}`");
        // The version in service is untouched and answers.
        let now = active(&server, "claude-code").await;
        assert_eq!(now["version"], "0.1.0+good", "{case}");
        assert_eq!(active(&server, "codex-cli").await["publisher"], "arbiter-bundled", "{case}");
        check_hook(&server, &format!("refusal-{want_code}")).await;
    }

    // Only the admin may upload.
    let r = server.http.put(server.url("/v1/plugins/claude-code")).body(good.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .http
        .put(server.url("/v1/plugins/claude-code"))
        .bearer_auth(&server.ingress_token)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an ingress credential is not an admin one");
    let r = server.get("/v1/plugins", None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_delete_restart_cache_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let acme = keygen(dir.path(), "acme");
    let mut server = Server::start_with(ServerOptions { config: Some(config(&acme, "")), ..Default::default() });
    let plugins_dir = server.data_dir.join("plugins");
    let v2 = sign(dir.path(), &acme, "v2", version("0.1.0+test.2"));

    // Nothing to roll back to or remove yet.
    let (status, body) = admin(&server, reqwest::Method::POST, "/v1/plugins/claude-code/rollback").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body) = admin(&server, reqwest::Method::DELETE, "/v1/plugins/claude-code").await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = admin(&server, reqwest::Method::GET, "/v1/plugins/nope").await;
    assert_eq!(status, 404);

    let (status, body) = put_bundle(&server, "claude-code", v2.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unchanged"], false);
    assert_eq!(std::fs::read(plugins_dir.join("claude-code.bundle")).unwrap(), v2, "the upload is persisted");
    // The same bundle again changes nothing.
    let (status, body) = put_bundle(&server, "claude-code", v2.clone()).await;
    assert_eq!((status, &body["unchanged"]), (200, &Value::Bool(true)), "{body}");
    assert_eq!(body["previous"]["version"], "0.1.0", "{body}");

    // Rollback returns to the bundled version; a second one undoes it.
    let (status, body) = admin(&server, reqwest::Method::POST, "/v1/plugins/claude-code/rollback").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"]["publisher"], "arbiter-bundled");
    assert_eq!(body["previous"]["version"], "0.1.0+test.2");
    assert!(!plugins_dir.join("claude-code.bundle").exists());
    assert!(plugins_dir.join(".previous/claude-code.bundle").exists());
    check_hook(&server, "rolled-back").await;
    let (status, body) = admin(&server, reqwest::Method::POST, "/v1/plugins/claude-code/rollback").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"]["version"], "0.1.0+test.2");

    // A restart keeps the uploaded version, its rollback target, and uses
    // the compiled-artefact cache (no entry is rewritten).
    let cache = server.data_dir.join("plugin-cache");
    let stamps = |dir: &Path| -> BTreeMap<String, std::time::SystemTime> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().modified().unwrap()))
            .collect()
    };
    let before = stamps(&cache);
    let component = bundled_digest(&server).await;
    assert!(before.keys().any(|k| k.starts_with(digest_hex(&component))), "{before:?}");
    server.restart();
    let view = server.admin_json("/v1/plugins/claude-code").await;
    assert_eq!(view["active"]["version"], "0.1.0+test.2", "{view}");
    assert_eq!(view["active"]["publisher"], "acme");
    assert_eq!(view["previous"]["version"], "0.1.0", "{view}");
    assert_eq!(stamps(&cache), before, "the restart compiled again instead of loading the cache");
    let r = server.hook("claude-code", &pre_tool_use_bash("ls", "after-restart")).await;
    let receipt = server.admin_json(&format!("/v1/receipts/{}", r.receipt_id())).await;
    assert_eq!(receipt["vendor"]["plugin_version"], "0.1.0+test.2");
    assert_eq!(receipt["vendor"]["plugin_publisher"], "acme");

    // A bundle dropped into the plugin directory is picked up by the watch;
    // one that fails its checks is not, and the old version keeps serving.
    let v4 = sign(dir.path(), &acme, "v4", version("0.1.0+test.4"));
    let tmp = plugins_dir.join("incoming.tmp");
    std::fs::write(&tmp, &v4).unwrap();
    std::fs::rename(&tmp, plugins_dir.join("claude-code.bundle")).unwrap();
    let unsigned = rebuild(&entries(&v4).into_iter().filter(|(p, _)| p != "signature.json").collect::<Vec<_>>());
    std::fs::write(plugins_dir.join("codex-cli.bundle"), unsigned).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = active(&server, "claude-code").await;
        if a["version"] == "0.1.0+test.4" {
            assert!(a["origin"].as_str().unwrap().starts_with("watch:"), "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "the watch did not install the dropped bundle: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(active(&server, "codex-cli").await["publisher"], "arbiter-bundled");
    std::fs::remove_file(plugins_dir.join("codex-cli.bundle")).unwrap();
    check_hook(&server, "watched").await;

    // DELETE falls back to the bundled version (the integration keeps a
    // plugin) and removes the installed files.
    let (status, body) = admin(&server, reqwest::Method::DELETE, "/v1/plugins/claude-code").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["active"]["publisher"], "arbiter-bundled");
    assert_eq!(body["plugin"]["previous"], Value::Null);
    assert!(!plugins_dir.join("claude-code.bundle").exists());
    assert!(!plugins_dir.join(".previous/claude-code.bundle").exists());
    check_hook(&server, "deleted").await;
    server.restart();
    assert_eq!(active(&server, "claude-code").await["publisher"], "arbiter-bundled");
}

async fn bundled_digest(server: &Server) -> String {
    active(server, "claude-code").await["digest"].as_str().unwrap().to_owned()
}

fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}
