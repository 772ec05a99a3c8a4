//! Black-box harness: runs the real `arbiter` binary on 127.0.0.1 with its own
//! temporary data dir, and offers a small HTTP client and an independent
//! receipt verifier (JCS + Ed25519 + hash chain, written from the published
//! receipt format only, so it shows that a third party can verify receipts).
//!
//! Shared by the black-box tests and `host/benches/hot_path.rs`; each uses a
//! subset, hence the dead-code allowance. `npm` installs and runs the real
//! clients of the end-to-end tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a failed expectation must abort the test with a message"
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub mod bundles;
pub mod npm;

/// The server binary under test (built by cargo for tests and benches).
pub const ARBITER: &str = env!("CARGO_BIN_EXE_arbiter");

/// How long a start may take: the first start compiles the bundled plugins
/// with Cranelift, which on a busy 2-core machine can take tens of seconds.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Genesis `chain.prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Claude Code 2.1.330 fixture directory (real captured payloads).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/claude-code/2.1.330")
}

/// One Claude Code 2.1.330 fixture as JSON, e.g. `fixture("PreToolUse.json")`.
pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing fixture {name}: {e}"))
}

/// The real 2.1.330 `PreToolUse` (Bash) payload with `command` and
/// `session_id` swapped in; every other field keeps its captured shape.
pub fn pre_tool_use_bash(command: &str, session: &str) -> Value {
    let mut v = fixture("PreToolUse.json");
    v["tool_input"]["command"] = Value::from(command);
    v["session_id"] = Value::from(session);
    v
}

/// What to start the server with, besides a fresh data dir.
#[derive(Default, Clone)]
pub struct ServerOptions {
    /// TOML written to `<root>/arbiter.toml` and passed with `--config`.
    pub config: Option<String>,
    /// Extra plugins copied to `<data-dir>/plugins/<name>.wasm` before start.
    pub plugins: Vec<(String, PathBuf)>,
}

/// A running `arbiter serve` on its own temp data dir. Killed (SIGKILL) and
/// reaped on drop, so a failing test never leaks a server.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub base: String,
    pub data_dir: PathBuf,
    config_path: Option<PathBuf>,
    stderr_path: PathBuf,
    pub ingress_token: String,
    pub admin_token: String,
    pub http: reqwest::Client,
    // Declared last: dropped after `Drop::drop` killed the child.
    root: tempfile::TempDir,
}

impl Server {
    /// Starts a server with the default config.
    pub fn start() -> Server {
        Server::start_with(ServerOptions::default())
    }

    pub fn start_with(opts: ServerOptions) -> Server {
        let root = tempfile::Builder::new().prefix("arbiter-test-").tempdir().expect("creating temp dir");
        let data_dir = root.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("creating data dir");
        if !opts.plugins.is_empty() {
            let dir = data_dir.join("plugins");
            std::fs::create_dir_all(&dir).expect("creating plugins dir");
            for (name, src) in &opts.plugins {
                std::fs::copy(src, dir.join(format!("{name}.wasm")))
                    .unwrap_or_else(|e| panic!("copying plugin {}: {e}", src.display()));
            }
        }
        let config_path = opts.config.as_ref().map(|text| {
            let p = root.path().join("arbiter.toml");
            std::fs::write(&p, text).expect("writing config");
            p
        });
        let stderr_path = root.path().join("server.stderr.log");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("building http client");
        let mut server = Server {
            child: None,
            addr: String::new(),
            base: String::new(),
            data_dir,
            config_path,
            stderr_path,
            ingress_token: String::new(),
            admin_token: String::new(),
            http,
            root,
        };
        server.spawn();
        server
    }

    /// Spawns the binary on the data dir and waits for its `listening` line.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let stderr =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.stderr_path).expect("opening stderr log");
        let mut cmd = Command::new(ARBITER);
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(&self.data_dir);
        if let Some(cfg) = &self.config_path {
            cmd.arg("--config").arg(cfg);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawning arbiter");
        let stdout = child.stdout.take().expect("child stdout");
        // The child is owned by `self` from here on, so Drop reaps it even if
        // the wait below fails.
        self.child = Some(child);

        // Read stdout on a thread (it keeps draining, so the server can never
        // block on a full pipe) and wait for the first line with a timeout.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = true;
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if first {
                            first = false;
                            let _ = tx.send(line.clone());
                        }
                    }
                }
            }
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                panic!("no listening line from arbiter within {START_TIMEOUT:?} ({e}); stderr:\n{}", self.stderr_tail())
            }
        };
        let event: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            panic!("first stdout line is not JSON ({e}): {line:?}; stderr:\n{}", self.stderr_tail())
        });
        assert_eq!(event["event"], "listening", "unexpected first line {line:?}");
        let addr = event["addr"].as_str().expect("listening.addr is a string").to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "server must bind loopback, got {addr}");
        self.base = format!("http://{addr}");
        self.addr = addr;
        self.ingress_token = read_token(&self.data_dir.join("ingress.token"));
        self.admin_token = read_token(&self.data_dir.join("admin.token"));
    }

    /// SIGKILLs the server (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary again on the same data dir (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// True while the child process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Last few KiB of the server's stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        let start = s.len().saturating_sub(4096);
        let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
        s[start..].to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST a JSON body to `/v1/hooks/{integration}` with the ingress token.
    pub async fn hook(&self, integration: &str, body: &Value) -> Reply {
        self.post_raw(
            &format!("/v1/hooks/{integration}"),
            Some(&self.ingress_token),
            serde_json::to_vec(body).expect("serialising body"),
        )
        .await
    }

    /// POST raw bytes as `application/json`, with an optional bearer token.
    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Reply {
        let mut req = self.http.post(self.url(path)).header("content-type", "application/json").body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}; stderr:\n{}", self.stderr_tail()));
        Reply::read(resp).await
    }

    /// PUT JSON with an optional bearer token.
    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let mut req = self.http.put(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("PUT {path}: {e}; stderr:\n{}", self.stderr_tail()));
        Reply::read(resp).await
    }

    /// GET with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}; stderr:\n{}", self.stderr_tail()));
        Reply::read(resp).await
    }

    /// GET with the admin token; asserts 200 and returns the JSON body.
    pub async fn admin_json(&self, path: &str) -> Value {
        let r = self.get(path, Some(&self.admin_token)).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.json()
    }

    /// Every receipt matching `query` (e.g. `"session_id=x"`), paging with
    /// `limit` and the opaque cursor. Asserts each page respects the limit.
    pub async fn receipts_paged(&self, query: &str, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        // Bounded: no test writes more than a few thousand receipts.
        for _ in 0..10_000 {
            let mut path = format!("/v1/receipts?limit={limit}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(&urlencode(c));
            }
            let page = self.admin_json(&path).await;
            let items = page["receipts"].as_array().unwrap_or_else(|| panic!("GET {path}: no receipts array: {page}"));
            assert!(items.len() <= limit, "page of {} exceeds limit {limit}", items.len());
            out.extend(items.iter().cloned());
            match &page["next_cursor"] {
                Value::Null => return out,
                Value::String(c) => {
                    assert!(!items.is_empty(), "non-null next_cursor on an empty page");
                    cursor = Some(c.clone());
                }
                other => panic!("next_cursor must be string or null, got {other}"),
            }
        }
        panic!("receipt paging did not terminate");
    }

    /// Every receipt (limit 1000 pages).
    pub async fn all_receipts(&self) -> Vec<Value> {
        self.receipts_paged("", 1000).await
    }

    /// The `/v1/keys` body.
    pub async fn keys(&self) -> Value {
        self.admin_json("/v1/keys").await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_token(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading token {}: {e}", path.display()));
    let token = text.trim().to_owned();
    assert!(!token.is_empty(), "empty token in {}", path.display());
    token
}

/// Write a policy pack that allows everything except actions in which the
/// detector `detector` (a regex on the `field` parameter of `action`) matches:
/// those are `forbidden` by policy `policy_id`, with `reason`.
pub fn write_forbid_pack(
    dir: &Path,
    name: &str,
    action: &str,
    field: &str,
    pattern: &str,
    policy_id: &str,
    reason: &str,
) {
    let detector = format!("{policy_id}.signal");
    std::fs::create_dir_all(dir).expect("creating pack dir");
    let files = [
        ("pack.toml", format!("name = \"{name}\"\nversion = \"0.1.0\"\ndefault_posture = \"ALLOW\"\n")),
        (
            "detectors.toml",
            format!(
                "[[detector]]\nid = \"{detector}\"\nactions = [\"{action}\"]\nfields = [\"{field}\"]\npattern = '''{pattern}'''\n"
            ),
        ),
        (
            "forbid.cedar",
            format!(
                "@id(\"{policy_id}\")\n@classification(\"forbidden\")\n@reason(\"{reason}\")\n\
                 forbid (principal, action, resource)\nwhen {{ context.signals.contains(\"{detector}\") }};\n"
            ),
        ),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text).expect("writing pack file");
    }
}

/// Copy a directory tree (a policy pack: files, `tests/`, `schemas/`).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating target dir");
    for entry in std::fs::read_dir(from).expect("reading dir") {
        let path = entry.expect("dir entry").path();
        let target = to.join(path.file_name().expect("file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copying file");
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fully read HTTP reply.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("reading reply body");
        Reply { status, headers, text }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// The body as JSON; panics with the raw text if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("reply (status {}) is not JSON ({e}): {}", self.status, self.text))
    }

    pub fn receipt_id(&self) -> String {
        self.header("x-arbiter-receipt-id")
            .unwrap_or_else(|| panic!("no x-arbiter-receipt-id header (status {}): {}", self.status, self.text))
    }
}

/// RFC 8785 canonical bytes.
pub fn jcs(v: &Value) -> Vec<u8> {
    serde_jcs::to_vec(v).expect("JCS serialisation")
}

/// Hex sha256 of a receipt's canonical bytes, signature included: the next
/// receipt's `chain.prev_hash`.
pub fn receipt_hash(receipt: &Value) -> String {
    hex::encode(Sha256::digest(jcs(receipt)))
}

/// Independent verification of a run of receipts, from the documented format
/// only: each signature is Ed25519 over the JCS bytes of the receipt without
/// `signature`, by a key from `/v1/keys`; `chain.seq` is contiguous;
/// `prev_hash` is the sha256 of the previous receipt (genesis: 64 zeros).
/// Returns the first failure, naming the receipt.
pub fn verify_receipts(receipts: &[Value], keys: &Value) -> Result<(), String> {
    let mut by_id = std::collections::HashMap::new();
    for k in keys["keys"].as_array().ok_or("keys body has no `keys` array")? {
        if k["algorithm"] != "Ed25519" {
            return Err(format!("key {} has algorithm {}", k["key_id"], k["algorithm"]));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(k["public_key"].as_str().ok_or("public_key not a string")?)
            .map_err(|e| format!("public_key base64: {e}"))?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| "public_key is not 32 bytes".to_owned())?;
        let vk = VerifyingKey::from_bytes(&raw).map_err(|e| format!("public_key: {e}"))?;
        by_id.insert(k["key_id"].as_str().ok_or("key_id not a string")?.to_owned(), vk);
    }
    let mut prev: Option<&Value> = None;
    for r in receipts {
        let id = r["receipt_id"].as_str().unwrap_or("<no receipt_id>");
        let sig = &r["signature"];
        if sig["algorithm"] != "Ed25519" {
            return Err(format!("{id}: signature.algorithm is {}", sig["algorithm"]));
        }
        let key_id = sig["key_id"].as_str().ok_or(format!("{id}: no key_id"))?;
        let vk = by_id.get(key_id).ok_or(format!("{id}: unknown key_id {key_id}"))?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(sig["value"].as_str().ok_or(format!("{id}: no signature value"))?)
            .map_err(|e| format!("{id}: signature base64: {e}"))?;
        let value: [u8; 64] = value.try_into().map_err(|_| format!("{id}: signature is not 64 bytes"))?;
        let mut unsigned = r.clone();
        unsigned.as_object_mut().ok_or(format!("{id}: receipt is not an object"))?.remove("signature");
        vk.verify(&jcs(&unsigned), &Signature::from_bytes(&value))
            .map_err(|e| format!("{id}: signature does not verify: {e}"))?;

        let seq = r["chain"]["seq"].as_u64().ok_or(format!("{id}: chain.seq missing"))?;
        let prev_hash = r["chain"]["prev_hash"].as_str().ok_or(format!("{id}: chain.prev_hash missing"))?;
        match prev {
            None if seq == 0 && prev_hash != GENESIS => {
                return Err(format!("{id}: seq 0 but prev_hash {prev_hash} is not genesis"));
            }
            // A run may start mid-chain (a filtered page); its links start at
            // the next receipt.
            None => {}
            Some(p) => {
                let pseq = p["chain"]["seq"].as_u64().unwrap_or(u64::MAX);
                if seq != pseq.wrapping_add(1) {
                    return Err(format!("{id}: seq {seq} does not follow {pseq}"));
                }
                let want = receipt_hash(p);
                if prev_hash != want {
                    return Err(format!("{id}: prev_hash {prev_hash} != sha256 of previous {want}"));
                }
            }
        }
        prev = Some(r);
    }
    Ok(())
}

/// Output of `arbiter verify`.
pub struct VerifyOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl VerifyOutput {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Writes `receipts` (as the list response shape) and `keys` to files in
/// `dir` and runs `arbiter verify --receipts F --keys K`.
pub fn run_verify(dir: &Path, name: &str, receipts: &[Value], keys: &Value) -> VerifyOutput {
    run_verify_with(dir, name, receipts, keys, &[])
}

/// [`run_verify`] with extra `arbiter verify` flags.
pub fn run_verify_with(dir: &Path, name: &str, receipts: &[Value], keys: &Value, flags: &[&str]) -> VerifyOutput {
    let rpath = dir.join(format!("{name}.receipts.json"));
    let kpath = dir.join(format!("{name}.keys.json"));
    std::fs::write(&rpath, serde_json::to_vec(&Value::from(receipts.to_vec())).expect("json"))
        .expect("writing receipts file");
    std::fs::write(&kpath, serde_json::to_vec(keys).expect("json")).expect("writing keys file");
    let out = Command::new(ARBITER)
        .arg("verify")
        .arg("--receipts")
        .arg(&rpath)
        .arg("--keys")
        .arg(&kpath)
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("running arbiter verify");
    VerifyOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Replaces one character of `s` (the last one) with a different one.
pub fn flip_one_char(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let last = chars.last_mut().expect("non-empty string to flip");
    *last = match *last {
        '0' => '1',
        'a' => 'b',
        c if c.is_ascii_hexdigit() => '0',
        _ => 'a',
    };
    chars.into_iter().collect()
}
