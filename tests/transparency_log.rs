//! The receipt transparency log, black-box: the real binary's checkpoints,
//! inclusion and consistency proofs and offline bundles, checked here with
//! an independent implementation of RFC 9162 §2.1.3.2 / §2.1.4.2 and C2SP
//! signed-note written from the specifications (not Arbiter's code), and
//! against crashes and tampering with the store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{ARBITER, Server, ServerOptions, jcs, pre_tool_use_bash};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

type Hash = [u8; 32];

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}

fn h(s: &str) -> Hash {
    b64(s).try_into().expect("32-byte hash")
}

fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new().chain_update([0u8]).chain_update(leaf).finalize().into()
}

fn node(l: &Hash, r: &Hash) -> Hash {
    Sha256::new().chain_update([1u8]).chain_update(l).chain_update(r).finalize().into()
}

/// RFC 9162 §2.1.3.2, step by step.
fn verify_inclusion(leaf: &[u8], index: u64, size: u64, root: &Hash, proof: &[Hash]) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(leaf);
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &r == root
}

/// RFC 9162 §2.1.4.2, step by step.
fn verify_consistency(first: u64, first_root: &Hash, second: u64, second_root: &Hash, proof: &[Hash]) -> bool {
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 || first > second || proof.is_empty() {
        return false;
    }
    let mut path = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_root);
    }
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node(c, &fr);
            sr = node(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    &fr == first_root && &sr == second_root && s == 0
}

/// A checkpoint opened per C2SP tlog-checkpoint + signed-note.
#[derive(Debug, Clone, PartialEq)]
struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
}

/// Parse the note and check the Ed25519 signature line whose key id is
/// SHA-256(origin ‖ 0x0A ‖ 0x01 ‖ key)[:4].
fn open_checkpoint(note: &str, key: &VerifyingKey) -> Result<Checkpoint, String> {
    let (text, sigs) = note.split_once("\n\n").ok_or("no blank line")?;
    let text = format!("{text}\n");
    let lines: Vec<&str> = text.lines().collect();
    let [origin, size, root] = lines[..] else { return Err(format!("checkpoint body has {} lines", lines.len())) };
    let mut id_input = origin.as_bytes().to_vec();
    id_input.extend_from_slice(&[0x0a, 0x01]);
    id_input.extend_from_slice(key.as_bytes());
    let key_id = &Sha256::digest(&id_input)[..4];
    for line in sigs.lines() {
        let rest = line.strip_prefix("\u{2014} ").ok_or("bad signature line")?;
        let (name, sig) = rest.split_once(' ').ok_or("bad signature line")?;
        let raw = b64(sig);
        if name == origin && &raw[..4] == key_id {
            let sig = Signature::from_slice(&raw[4..]).map_err(|e| e.to_string())?;
            key.verify(text.as_bytes(), &sig).map_err(|e| format!("checkpoint signature: {e}"))?;
            return Ok(Checkpoint {
                origin: origin.to_owned(),
                size: size.parse().map_err(|_| "size")?,
                root: h(root),
            });
        }
    }
    Err("no signature by the key".to_owned())
}

fn public_key(keys: &Value) -> VerifyingKey {
    let raw: [u8; 32] = b64(keys["keys"][0]["public_key"].as_str().unwrap()).try_into().unwrap();
    VerifyingKey::from_bytes(&raw).unwrap()
}

fn proof_of(v: &Value, member: &str) -> Vec<Hash> {
    v[member].as_array().unwrap_or_else(|| panic!("no {member}: {v}")).iter().map(|x| h(x.as_str().unwrap())).collect()
}

/// Checkpoints only when asked (a bundle) unless a test says otherwise.
fn config(every: u64, interval_secs: u64) -> ServerOptions {
    ServerOptions {
        config: Some(format!(
            "[log]\norigin = \"arbiter.test/log\"\ncheckpoint_every = {every}\ncheckpoint_interval_secs = {interval_secs}\n"
        )),
        ..ServerOptions::default()
    }
}

async fn decide(server: &Server, n: usize, session: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let cmd = if i % 3 == 0 { "rm -rf /" } else { "ls -la" };
        let r = server.hook("claude-code", &pre_tool_use_bash(cmd, session)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        ids.push(r.receipt_id());
    }
    ids
}

async fn checkpoint(server: &Server) -> Option<String> {
    let r = server.get("/v1/log/checkpoint", Some(&server.admin_token)).await;
    match r.status {
        200 => {
            assert_eq!(r.header("content-type").as_deref(), Some("text/plain; charset=utf-8"));
            Some(r.text)
        }
        404 => None,
        s => panic!("GET /v1/log/checkpoint: {s}: {}", r.text),
    }
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(ARBITER).args(args).stdin(Stdio::null()).output().expect("running arbiter");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_verify_offline_and_any_altered_byte_fails() {
    let server = Server::start_with(config(1000, 3600));
    let keys = server.keys().await;
    let key = public_key(&keys);
    assert_eq!(keys["log"]["origin"], "arbiter.test/log", "{keys}");
    assert!(checkpoint(&server).await.is_none(), "no checkpoint before any is due");
    let ids = decide(&server, 7, "bundle").await;

    // Not in a checkpoint yet: the proof route says so; the bundle route
    // makes one.
    let r = server.get(&format!("/v1/receipts/{}/proof", ids[2]), Some(&server.admin_token)).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = server.get(&format!("/v1/receipts/{}/bundle", ids[2]), Some(&server.admin_token)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let bundle_bytes = r.text.into_bytes();
    let note = checkpoint(&server).await.expect("the bundle made a checkpoint");
    let cp = open_checkpoint(&note, &key).unwrap();
    assert_eq!((cp.origin.as_str(), cp.size), ("arbiter.test/log", 7));

    // Every receipt's proof leads to the checkpoint's root (checked here,
    // independently), and the bundle holds exactly those facts.
    for (i, id) in ids.iter().enumerate() {
        let p = server.admin_json(&format!("/v1/receipts/{id}/proof")).await;
        assert_eq!((p["leaf_index"].as_u64(), p["tree_size"].as_u64()), (Some(i as u64), Some(7)), "{p}");
        assert_eq!(p["checkpoint"], note.as_str());
        let receipt = server.admin_json(&format!("/v1/receipts/{id}")).await;
        assert!(verify_inclusion(&jcs(&receipt), i as u64, 7, &cp.root, &proof_of(&p, "inclusion_proof")), "{id}");
        assert!(!verify_inclusion(&jcs(&receipt), (i as u64 + 1) % 7, 7, &cp.root, &proof_of(&p, "inclusion_proof")));
    }
    let bundle: Value = serde_json::from_slice(&bundle_bytes).unwrap();
    assert_eq!(bundle["format"], "arbiter.receipt-bundle/v1");
    assert_eq!(bundle["checkpoint"], note.as_str());
    assert_eq!(bundle["keys"], Value::from(vec![keys["keys"][0].clone()]));
    assert!(verify_inclusion(
        &jcs(&bundle["receipt"]),
        bundle["leaf_index"].as_u64().unwrap(),
        cp.size,
        &cp.root,
        &proof_of(&bundle, "inclusion_proof")
    ));
    let bad = server.get("/v1/receipts/nope/bundle", Some(&server.admin_token)).await;
    assert_eq!(bad.status, 404, "{}", bad.text);
    // An auditor route: no token is refused, and so is the ingress role.
    let r = server.get(&format!("/v1/receipts/{}/bundle", ids[0]), None).await;
    assert_eq!(r.status, 401);
    let r = server.get(&format!("/v1/receipts/{}/bundle", ids[0]), Some(&server.ingress_token)).await;
    assert_eq!(r.status, 403, "{}", r.text);

    // `arbiter verify --bundle` accepts it, with the published keys and alone.
    let dir = server.root().join("bundles");
    std::fs::create_dir_all(&dir).unwrap();
    let (bundle_path, keys_path) = (dir.join("b.json"), dir.join("keys.json"));
    std::fs::write(&bundle_path, &bundle_bytes).unwrap();
    std::fs::write(&keys_path, serde_json::to_vec(&keys).unwrap()).unwrap();
    let (bp, kp) = (bundle_path.to_str().unwrap(), keys_path.to_str().unwrap());
    let (code, out) = run(&["verify", "--bundle", bp, "--keys", kp]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("receipt {} is leaf 2 of log `arbiter.test/log` at tree size 7", ids[2])), "{out}");
    let (code, out) = run(&["verify", "--bundle", bp]);
    assert_eq!(code, Some(0), "{out}");
    // Another log's keys are refused.
    let other = arbiter::receipts::keys_document(&arbiter::credentials::ReceiptKey::generate());
    std::fs::write(&keys_path, serde_json::to_vec(&other).unwrap()).unwrap();
    let (code, out) = run(&["verify", "--bundle", bp, "--keys", kp]);
    assert_eq!(code, Some(1), "{out}");

    // Flipping a byte anywhere fails: a dense sample through the binary
    // (the unit test `receipt_bundle::tests::every_altered_byte_fails` does every byte).
    let altered = dir.join("altered.json");
    let ap = altered.to_str().unwrap();
    let started = Instant::now();
    let mut tried = 0;
    for i in (0..bundle_bytes.len()).step_by(11).chain([bundle_bytes.len() - 1]) {
        let mut b = bundle_bytes.clone();
        b[i] ^= 0x01;
        std::fs::write(&altered, &b).unwrap();
        let (code, out) = run(&["verify", "--bundle", ap]);
        assert_eq!(code, Some(1), "byte {i} ({:?}) altered still verifies: {out}", bundle_bytes[i] as char);
        tried += 1;
    }
    eprintln!("{tried} altered bundles refused in {:?}", started.elapsed());

    // `arbiter receipts export --url` gives a bundle that verifies too.
    let token_path = server.data_dir.join("admin.token");
    let out_path = dir.join("exported.json");
    let (code, out) = run(&[
        "receipts",
        "export",
        "--id",
        &ids[5],
        "--url",
        &server.base,
        "--token-file",
        token_path.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["verify", "--bundle", out_path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("is leaf 5 of log"), "{out}");
    // The data dir is locked while the server runs.
    let (code, out) = run(&["receipts", "export", "--id", &ids[5], "--data-dir", server.data_dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("in use"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_follow_the_schedule_and_stay_consistent() {
    let server = Server::start_with(config(3, 1));
    let key = public_key(&server.keys().await);
    decide(&server, 4, "schedule").await;
    // Three receipts reach `checkpoint_every`; the fourth waits at most the
    // interval.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(note) = checkpoint(&server).await {
            let cp = open_checkpoint(&note, &key).unwrap();
            if cp.size == 4 {
                break cp;
            }
            assert_eq!(cp.size, 3, "{note}");
        }
        assert!(Instant::now() < deadline, "no interval checkpoint");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    decide(&server, 9, "schedule").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let cp = open_checkpoint(&checkpoint(&server).await.unwrap(), &key).unwrap();
        if cp.size == 13 {
            break cp;
        }
        assert!(Instant::now() < deadline, "no checkpoint of 13");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let c = server.admin_json(&format!("/v1/log/consistency?first={}&second={}", first.size, second.size)).await;
    let proof = proof_of(&c, "consistency_proof");
    assert!(verify_consistency(first.size, &first.root, second.size, &second.root, &proof), "{c}");
    assert!(!verify_consistency(first.size, &second.root, second.size, &second.root, &proof));
    // `second` defaults to the latest checkpoint.
    let c2 = server.admin_json(&format!("/v1/log/consistency?first={}", first.size)).await;
    assert_eq!(c2["second"], 13);
    // Out-of-range sizes are client errors.
    for q in ["first=0&second=4", "first=5&second=4", "first=1&second=99", "first=x"] {
        let r = server.get(&format!("/v1/log/consistency?{q}"), Some(&server.admin_token)).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
    }
    let r = server.get("/v1/log/consistency?first=1", None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_receipts_stay_provable_after_sigkill() {
    let mut server = Server::start_with(config(7, 3600));
    let key = public_key(&server.keys().await);
    decide(&server, 3, "before").await;
    // ~40 concurrent decisions, then SIGKILL right after the replies.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (http, url, token) =
            (server.http.clone(), server.url("/v1/hooks/claude-code"), server.ingress_token.clone());
        let body = pre_tool_use_bash(if i % 4 == 0 { "rm -rf /" } else { "ls" }, &format!("kill-{}", i % 5));
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-arbiter-receipt-id"].to_str().unwrap().to_owned()
        }));
    }
    let mut acked = HashSet::new();
    for t in tasks {
        acked.insert(t.await.unwrap());
    }
    let before = open_checkpoint(&checkpoint(&server).await.expect("every 7 receipts"), &key).unwrap();
    server.kill();
    server.restart();

    // Every acknowledged receipt is in the log: its bundle verifies.
    let dir = server.root().join("after-kill");
    std::fs::create_dir_all(&dir).unwrap();
    for id in &acked {
        let r = server.get(&format!("/v1/receipts/{id}/bundle"), Some(&server.admin_token)).await;
        assert_eq!(r.status, 200, "acknowledged receipt {id} not provable after SIGKILL: {}", r.text);
        let bundle: Value = serde_json::from_str(&r.text).unwrap();
        let cp = open_checkpoint(bundle["checkpoint"].as_str().unwrap(), &key).unwrap();
        assert!(verify_inclusion(
            &jcs(&bundle["receipt"]),
            bundle["leaf_index"].as_u64().unwrap(),
            cp.size,
            &cp.root,
            &proof_of(&bundle, "inclusion_proof")
        ));
    }
    // The log after the crash extends the one before it, and keeps going.
    let later = decide(&server, 2, "after").await;
    let r = server.get(&format!("/v1/receipts/{}/bundle", later[1]), Some(&server.admin_token)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let after = open_checkpoint(&checkpoint(&server).await.unwrap(), &key).unwrap();
    assert_eq!(after.size, 45, "3 + 40 + 2 leaves");
    let c = server.admin_json(&format!("/v1/log/consistency?first={}&second={}", before.size, after.size)).await;
    assert!(verify_consistency(before.size, &before.root, after.size, &after.root, &proof_of(&c, "consistency_proof")));

    // With the server stopped, `receipts export --data-dir` reads the store.
    server.kill();
    let out_path = dir.join("offline.json");
    let id = acked.iter().next().unwrap();
    let (code, out) = run(&[
        "receipts",
        "export",
        "--id",
        id,
        "--data-dir",
        server.data_dir.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["verify", "--bundle", out_path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
}

/// Re-sign a receipt as an insider with the signing key would.
fn resign(receipt: &mut Value, data_dir: &std::path::Path) {
    let key = arbiter::credentials::ReceiptKey::load(&data_dir.join("keys/receipt-signing.pem")).unwrap();
    let mut unsigned = receipt.clone();
    unsigned.as_object_mut().unwrap().remove("signature");
    let sig = key.sign(&jcs(&unsigned));
    receipt["signature"]["value"] = Value::from(base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_receipts_and_rewritten_history_are_detected() {
    let mut server = Server::start_with(config(1000, 3600));
    let key = public_key(&server.keys().await);
    let ids = decide(&server, 6, "tamper").await;
    let r = server.get(&format!("/v1/receipts/{}/bundle", ids[5]), Some(&server.admin_token)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let old = open_checkpoint(&checkpoint(&server).await.unwrap(), &key).unwrap();
    assert_eq!(old.size, 6);
    let proof = server.admin_json(&format!("/v1/receipts/{}/proof", ids[0])).await;
    let original = server.admin_json(&format!("/v1/receipts/{}", ids[0])).await;
    assert!(verify_inclusion(&jcs(&original), 0, old.size, &old.root, &proof_of(&proof, "inclusion_proof")));

    // An insider with the key turns the DENY of receipt 0 into an ALLOW
    // (its signature valid again).
    server.kill();
    {
        let ks = fjall::Config::new(server.data_dir.join("store")).open().unwrap();
        let receipts = ks.open_partition("receipts", Default::default()).unwrap();
        let stored = receipts.get(0u64.to_be_bytes()).unwrap().unwrap();
        let mut receipt: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(receipt["decision"]["result"], "DENY");
        receipt["decision"]["result"] = Value::from("ALLOW");
        resign(&mut receipt, &server.data_dir);
        receipts.insert(0u64.to_be_bytes(), jcs(&receipt)).unwrap();
        ks.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    server.restart();
    let altered = server.admin_json(&format!("/v1/receipts/{}", ids[0])).await;
    assert_eq!(altered["decision"]["result"], "ALLOW");
    assert!(
        common::verify_receipts(std::slice::from_ref(&altered), &server.keys().await).is_ok(),
        "the forgery is well signed"
    );
    // …but its leaf is not the one the checkpoint committed to.
    assert!(!verify_inclusion(&jcs(&altered), 0, old.size, &old.root, &proof_of(&proof, "inclusion_proof")));
    let fresh = server.admin_json(&format!("/v1/receipts/{}/proof?tree_size=6", ids[0])).await;
    assert!(!verify_inclusion(&jcs(&altered), 0, old.size, &old.root, &proof_of(&fresh, "inclusion_proof")));
    // The server refuses to bundle a receipt its own log does not prove.
    let r = server.get(&format!("/v1/receipts/{}/bundle", ids[0]), Some(&server.admin_token)).await;
    assert_eq!(r.status, 500, "{}", r.text);

    // The insider also rebuilds the log from the rewritten receipts.
    server.kill();
    {
        let ks = fjall::Config::new(server.data_dir.join("store")).open().unwrap();
        for name in ["log_nodes", "checkpoints"] {
            let p = ks.open_partition(name, Default::default()).unwrap();
            let keys: Vec<_> = p.keys().map(|k| k.unwrap()).collect();
            for k in keys {
                p.remove(k).unwrap();
            }
        }
        ks.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    server.restart();
    decide(&server, 2, "tamper").await;
    let r = server.get(&format!("/v1/receipts/{}/bundle", ids[0]), Some(&server.admin_token)).await;
    assert_eq!(r.status, 200, "the rebuilt log is self-consistent: {}", r.text);
    let new = open_checkpoint(&checkpoint(&server).await.unwrap(), &key).unwrap();
    assert_eq!(new.size, 8);
    // An auditor holding the old checkpoint catches the rewrite.
    let c = server.admin_json(&format!("/v1/log/consistency?first=6&second={}", new.size)).await;
    assert!(!verify_consistency(old.size, &old.root, new.size, &new.root, &proof_of(&c, "consistency_proof")));
}
