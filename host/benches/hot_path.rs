//! Load benchmark of the hook hot path: drives the real `arbiter serve`
//! (release build, default config: the bundled baseline pack, durable
//! receipts on) over loopback with Claude Code 2.1.330 `PreToolUse` payloads,
//! allowed and denied mixed.
//!
//! Phases:
//! 0. seeding: each of `SESSIONS` sessions gets a user intent and
//!    `PRIOR_ACTIONS` decided actions, so every measured decision runs on a
//!    long session (context accumulation, alignment scoring and drift
//!    included);
//! 1. closed loop: `--concurrency` clients on keep-alive HTTP/1.1 connections,
//!    each sending its next request as soon as the previous reply arrived;
//!    reports decisions/s and latency.
//! 2. open loop: a fixed timetable of `--rate` requests/s; latency is measured
//!    from each request's *scheduled* send time, so a stalled server is
//!    charged for the requests it delayed (no coordinated omission).
//! 3. held: `--held` hook requests wait for an approver (a production
//!    `terraform apply`, STEP_UP in `hold` mode) while the closed loop runs
//!    again; its throughput is compared with phase 1.
//! 4. Copilot Studio under load: its captured `analyze-tool-execution`
//!    request at 50/s while the closed loop runs; Copilot Studio allows the
//!    tool when no answer comes within 1000 ms, so the report counts those.
//! 5. Copilot Studio open loop: the same request alone at `--rate`
//!    requests/s (1000 by default), latency from the scheduled send time.
//! 6. hot swap: the phase 2 open loop again while two signed claude-code
//!    bundles (made with the real `arbiter plugin keygen` / `sign`) are
//!    uploaded and then rolled back; any failed request, or any ALLOW where
//!    the timetable expects a DENY (fail open), fails the run.
//!
//! Run: `cargo bench -p arbiter --bench hot_path -- [--quick] [--duration SECS]
//! [--concurrency N] [--rate R]`. Without cargo's `--bench` flag (e.g. under
//! `cargo test --benches`) it runs as a short smoke test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark driver: any failure aborts the run with a message"
)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::Value;

struct Args {
    warmup: Duration,
    duration: Duration,
    concurrency: usize,
    rate: u64,
    client_threads: usize,
    held: usize,
}

const USAGE: &str =
    "usage: hot_path [--quick] [--duration SECS] [--concurrency N] [--rate R] [--client-threads N] [--held N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(10),
        concurrency: 32,
        rate: 1000,
        // The load generator shares the 2 cores with the server; one thread
        // keeps it from taking more than it needs.
        client_threads: 1,
        held: 50,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let benching = raw.iter().any(|a| a == "--bench");
    let mut explicit_duration = false;
    let mut quick = !benching;
    let mut it = raw.into_iter();
    let num = |name: &str, v: Option<String>| -> Result<u64, String> {
        v.ok_or(format!("{name} needs a value"))?.parse::<u64>().map_err(|e| format!("{name}: {e}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--quick" => quick = true,
            "--duration" => {
                args.duration = Duration::from_secs(num("--duration", it.next())?.max(1));
                explicit_duration = true;
            }
            "--concurrency" => args.concurrency = num("--concurrency", it.next())?.clamp(1, 4096) as usize,
            "--rate" => args.rate = num("--rate", it.next())?.clamp(1, 1_000_000),
            "--client-threads" => args.client_threads = num("--client-threads", it.next())?.clamp(1, 64) as usize,
            "--held" => args.held = num("--held", it.next())?.clamp(0, 1000) as usize,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if quick && !explicit_duration {
        args.duration = Duration::from_secs(2);
        args.warmup = Duration::from_millis(500);
    }
    Ok(args)
}

/// Sessions the load is spread over.
const SESSIONS: u64 = 32;
/// Decided actions in each session before measuring starts.
const PRIOR_ACTIONS: u64 = 200;
/// What the user asked for in every bench session.
const INTENT: &str = "tidy up the project: check the git status, list the files and read the README";

fn session_id(n: u64) -> String {
    format!("bench-s{}", n % SESSIONS)
}

/// Request bodies with a `__SID__` slot for the session id (and `__N__`
/// for the request number), cycled in this order: 3 allowed, 2 denied.
fn templates() -> Vec<String> {
    let bash = |cmd: &str| common::pre_tool_use_bash(cmd, "__SID__");
    let mut read = common::fixture("PreToolUse.json");
    read["session_id"] = Value::from("__SID__");
    read["tool_name"] = Value::from("Read");
    read["tool_input"] = serde_json::json!({"file_path": "/home/dev/work/proj/README.md"});
    [bash("ls"), bash("git status"), read, bash("rm -rf /"), bash("mkfs.ext4 /dev/sda1")]
        .iter()
        .map(|v| serde_json::to_string(v).expect("json"))
        .collect()
}

/// What one request ended as.
enum Outcome {
    Allow,
    Deny,
    /// HTTP 200 without an ALLOW/DENY decision header.
    Other,
    /// Transport error or a non-200 status.
    Error,
}

#[derive(Default)]
struct Counts {
    allow: AtomicU64,
    deny: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    fn record(&self, o: &Outcome) {
        let c = match o {
            Outcome::Allow => &self.allow,
            Outcome::Deny => &self.deny,
            Outcome::Other => &self.other,
            Outcome::Error => &self.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    fn total(&self) -> u64 {
        self.allow.load(Ordering::Relaxed)
            + self.deny.load(Ordering::Relaxed)
            + self.other.load(Ordering::Relaxed)
            + self.errors.load(Ordering::Relaxed)
    }
}

struct Target {
    url: String,
    auth: String,
    templates: Vec<String>,
    /// Templates from this index on must be denied.
    denied_from: usize,
}

impl Target {
    /// True when request `n` must get a DENY.
    fn expects_deny(&self, n: u64) -> bool {
        (n % self.templates.len() as u64) as usize >= self.denied_from
    }

    async fn send(&self, client: &reqwest::Client, n: u64, session: &str) -> Outcome {
        let t = &self.templates[(n % self.templates.len() as u64) as usize];
        let body = t.replace("__SID__", session).replace("__N__", &n.to_string());
        let resp = client
            .post(&self.url)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let Ok(resp) = resp else {
            return Outcome::Error;
        };
        let outcome = if resp.status() != 200 {
            Outcome::Error
        } else {
            match resp.headers().get("x-arbiter-decision").map(|v| v.as_bytes()) {
                Some(b"ALLOW") => Outcome::Allow,
                Some(b"DENY") => Outcome::Deny,
                _ => Outcome::Other,
            }
        };
        // Read the reply in full so the keep-alive connection is reused.
        match resp.bytes().await {
            Ok(_) => outcome,
            Err(_) => Outcome::Error,
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50={}us p90={}us p99={}us max={}us (n={})",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.max(),
        h.len()
    )
}

fn new_hist() -> Histogram<u64> {
    // 1 us .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

struct ClosedResult {
    rate: f64,
    hist: Histogram<u64>,
    counts: Arc<Counts>,
}

async fn closed_loop(target: Arc<Target>, args: &Args) -> ClosedResult {
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let target = target.clone();
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            let client = client(1);
            let mut hist = new_hist();
            let mut n: u64 = w as u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = target.send(&client, n, &session_id(w as u64)).await;
                let t1 = Instant::now();
                if t0 >= measure_from {
                    counts.record(&r);
                    let us = t1.duration_since(t0).as_micros().max(1) as u64;
                    let _ = hist.record(us.min(60_000_000));
                }
                n += 1;
            }
            hist
        }));
    }
    let mut hist = new_hist();
    for t in tasks {
        let h = t.await.expect("client task");
        hist.add(&h).expect("merging histograms");
    }
    let measured = args.duration.as_secs_f64();
    ClosedResult { rate: counts.total() as f64 / measured, hist, counts }
}

struct OpenResult {
    hist: Histogram<u64>,
    counts: Arc<Counts>,
    scheduled: u64,
    late_starts: u64,
    /// Requests that must be denied and were allowed.
    fail_open: u64,
}

impl OpenResult {
    /// Failed requests and fail-open answers: either fails the run.
    fn failures(&self) -> u64 {
        self.counts.errors.load(Ordering::Relaxed) + self.fail_open
    }

    /// The phase's two report lines.
    fn print(&self, phase: &str, args: &Args) {
        let c = &self.counts;
        println!(
            "{phase}: {} req/s for {}s, {} scheduled (ALLOW {}, DENY {}, other {}, errors {}, late starts {}); \
             fail-open {}",
            args.rate,
            args.duration.as_secs(),
            self.scheduled,
            c.allow.load(Ordering::Relaxed),
            c.deny.load(Ordering::Relaxed),
            c.other.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
            self.late_starts,
            self.fail_open
        );
        println!("  latency from scheduled send: {}", percentiles(&self.hist));
    }
}

/// Fixed-rate sends on a timetable kept by a dedicated OS thread
/// (`thread::sleep` is precise to tens of microseconds; tokio's timer has
/// millisecond granularity, which would blur a 1 ms schedule).
async fn open_loop(target: Arc<Target>, rate: u64, duration: Duration, record: bool) -> OpenResult {
    let counts = Arc::new(Counts::default());
    let hist = Arc::new(std::sync::Mutex::new(new_hist()));
    let client = client(256);
    let total = rate * duration.as_secs().max(1);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let handle = tokio::runtime::Handle::current();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let late = Arc::new(AtomicU64::new(0));
    let fail_open = Arc::new(AtomicU64::new(0));
    let scheduler = {
        let counts = counts.clone();
        let hist = hist.clone();
        let late = late.clone();
        let fail_open = fail_open.clone();
        std::thread::spawn(move || {
            let start = Instant::now() + Duration::from_millis(5);
            for i in 0..total {
                let scheduled = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                } else if now - scheduled > Duration::from_millis(1) {
                    late.fetch_add(1, Ordering::Relaxed);
                }
                let target = target.clone();
                let client = client.clone();
                let counts = counts.clone();
                let hist = hist.clone();
                let done = done_tx.clone();
                let fail_open = fail_open.clone();
                handle.spawn(async move {
                    let r = target.send(&client, i, &session_id(i)).await;
                    if matches!(r, Outcome::Allow) && target.expects_deny(i) {
                        fail_open.fetch_add(1, Ordering::Relaxed);
                    }
                    let us = Instant::now().duration_since(scheduled).as_micros().max(1) as u64;
                    if record {
                        counts.record(&r);
                        if let Ok(mut h) = hist.lock() {
                            let _ = h.record(us.min(60_000_000));
                        }
                    }
                    let _ = done.send(());
                });
            }
        })
    };
    let mut finished = 0;
    while finished < total {
        match tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await {
            Ok(Some(())) => finished += 1,
            _ => break,
        }
    }
    let _ = scheduler.join();
    let hist = hist.lock().map(|h| h.clone()).unwrap_or_else(|_| new_hist());
    OpenResult {
        hist,
        counts,
        scheduled: total,
        late_starts: late.load(Ordering::Relaxed),
        fail_open: fail_open.load(Ordering::Relaxed),
    }
}

/// Give every session its intent and `PRIOR_ACTIONS` decided actions.
async fn seed(target: Arc<Target>) -> u64 {
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let client = client(1);
            let mut prompt = common::fixture("UserPromptSubmit.json");
            prompt["session_id"] = Value::from(session_id(s));
            prompt["prompt"] = Value::from(INTENT);
            let sent = client
                .post(&target.url)
                .header("authorization", &target.auth)
                .header("content-type", "application/json")
                .body(prompt.to_string())
                .send()
                .await;
            assert!(sent.is_ok_and(|r| r.status() == 200), "seeding the intent failed");
            let mut failed = 0;
            for n in 0..PRIOR_ACTIONS {
                if matches!(target.send(&client, n, &session_id(s)).await, Outcome::Error | Outcome::Other) {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.expect("seed task");
    }
    failed
}

/// Server config: the defaults, except that STEP_UP waits for an approver
/// (`hold`) long enough to outlast the held phase.
const CONFIG: &str = r#"
[ingress]
request_timeout_ms = 300000

[approvals]
hold_ms = 240000

[integrations.claude-code]
plugin = "claude-code"
step_up = "hold"

[integrations.copilot-studio]
plugin = "copilot-studio"
hold_ms = 0
[integrations.copilot-studio.auth]
kind = "bearer"
token = "bench-copilot-studio-token-0001"
"#;

/// Two claude-code bundles of distinct versions, signed by a bench
/// publisher, and the config lines that trust it.
struct SwapBundles {
    publishers: String,
    bundles: Vec<Vec<u8>>,
    _dir: tempfile::TempDir,
}

fn swap_bundles() -> SwapBundles {
    use common::bundles;
    let dir = tempfile::tempdir().expect("temp dir");
    let publisher = bundles::keygen(dir.path(), "bench");
    let mut manifest = bundles::claude_code_manifest();
    let base = manifest["version"].as_str().expect("version").split('+').next().unwrap_or_default().to_owned();
    let bundles = (1..=2)
        .map(|n| {
            manifest["version"] = Value::from(format!("{base}+bench.{n}"));
            let component = env!("ARBITER_TEST_PLUGIN_CLAUDE_CODE");
            bundles::sign(dir.path(), &publisher, &format!("bench-{n}"), component, &manifest)
        })
        .collect();
    let publishers = format!("\n[plugins.publishers]\n{} = \"{}\"\n", publisher.name, publisher.public);
    SwapBundles { publishers, bundles, _dir: dir }
}

/// Upload each bundle, then roll back once, spread over `duration`;
/// returns what was done, its HTTP status and how long it took.
async fn swaps(base: String, admin: String, bundles: Vec<Vec<u8>>, duration: Duration) -> Vec<(String, u16, Duration)> {
    let http = client(4);
    let step = duration / 4;
    let mut done = Vec::new();
    for (n, bundle) in bundles.into_iter().enumerate() {
        tokio::time::sleep(step).await;
        let t0 = Instant::now();
        let status = http
            .put(format!("{base}/v1/plugins/claude-code"))
            .bearer_auth(&admin)
            .header("content-type", "application/octet-stream")
            .body(bundle)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        done.push((format!("upload {}", n + 1), status, t0.elapsed()));
    }
    tokio::time::sleep(step).await;
    let t0 = Instant::now();
    let status = http
        .post(format!("{base}/v1/plugins/claude-code/rollback"))
        .bearer_auth(&admin)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    done.push(("rollback".to_owned(), status, t0.elapsed()));
    done
}

/// Copilot Studio's answer budget: later than this, the tool runs.
const STUDIO_BUDGET: Duration = Duration::from_millis(1000);
const STUDIO_TOKEN: &str = "bench-copilot-studio-token-0001";

fn studio_fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/copilot-studio/2025-05-01/analyze-send-email.json");
    serde_json::from_slice(&std::fs::read(path).expect("studio fixture")).expect("fixture JSON")
}

/// The captured `analyze-tool-execution` request as an open-loop target:
/// one conversation per bench session, a new plan step per request.
fn studio_target(base: &str) -> Target {
    let mut body = studio_fixture();
    body["conversationMetadata"]["conversationId"] = Value::from("studio-__SID__");
    body["conversationMetadata"]["planStepId"] = Value::from("step-__N__");
    Target {
        url: format!("{base}/v1/hooks/copilot-studio/analyze-tool-execution?api-version=2025-05-01"),
        auth: format!("Bearer {STUDIO_TOKEN}"),
        templates: vec![serde_json::to_string(&body).expect("json")],
        denied_from: usize::MAX,
    }
}

/// Copilot Studio requests at 50/s for `duration`, each in its own
/// conversation turn; returns their latency and how many missed the budget.
async fn studio_loop(base: String, duration: Duration) -> (Histogram<u64>, u64, u64) {
    let body = studio_fixture();
    let url = format!("{base}/v1/hooks/copilot-studio/analyze-tool-execution?api-version=2025-05-01");
    let http = client(64);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let mut body = body.clone();
        body["conversationMetadata"]["conversationId"] = Value::from(format!("bench-studio-{}", n % 16));
        body["conversationMetadata"]["planStepId"] = Value::from(format!("step-{n}"));
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let ok =
                http.post(&url).bearer_auth(STUDIO_TOKEN).json(&body).send().await.is_ok_and(|r| r.status() == 200);
            (t0.elapsed(), ok)
        }));
        n += 1;
    }
    let mut hist = new_hist();
    let (mut late, mut errors) = (0, 0);
    for t in tasks {
        let (took, ok) = t.await.expect("studio task");
        let _ = hist.record((took.as_micros().max(1) as u64).min(60_000_000));
        late += u64::from(took > STUDIO_BUDGET);
        errors += u64::from(!ok);
    }
    (hist, late, errors)
}

/// Start `n` hook requests that wait for an approval (each a distinct
/// production `terraform apply`), and return once all `n` are pending.
async fn hold_requests(
    target: Arc<Target>,
    server_admin: (String, String),
    n: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let body = common::pre_tool_use_bash(
                &format!("terraform -chdir=envs/prod apply -auto-approve -var build={i}"),
                &format!("bench-held-{i}"),
            );
            let _ = client(1)
                .post(&target.url)
                .header("authorization", &target.auth)
                .timeout(Duration::from_secs(600))
                .json(&body)
                .send()
                .await;
        }));
    }
    let (url, token) = server_admin;
    let http = client(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: Value = http
            .get(format!("{url}/v1/approvals?status=pending"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("listing approvals")
            .json()
            .await
            .expect("approvals JSON");
        let count = pending["approvals"].as_array().map_or(0, Vec::len);
        if count >= n {
            return tasks;
        }
        assert!(Instant::now() < deadline, "only {count} of {n} requests are held after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let swap = swap_bundles();
    eprintln!("hot_path: starting {} ...", common::ARBITER);
    let mut server = common::Server::start_with(common::ServerOptions {
        config: Some(format!("{CONFIG}{}", swap.publishers)),
        ..common::ServerOptions::default()
    });
    let target = Arc::new(Target {
        url: server.url("/v1/hooks/claude-code"),
        auth: format!("Bearer {}", server.ingress_token),
        templates: templates(),
        denied_from: 3,
    });
    let pid = server.pid();
    let pack = rt.block_on(server.admin_json("/v1/policies"));
    let pack = &pack["active"];

    eprintln!("hot_path: seeding {SESSIONS} sessions with an intent and {PRIOR_ACTIONS} actions each");
    let seeding = Instant::now();
    let seed_failures = rt.block_on(seed(target.clone()));
    let seeding = seeding.elapsed();

    eprintln!("hot_path: closed loop, {} clients, {:?} warm-up + {:?}", args.concurrency, args.warmup, args.duration);
    let closed = rt.block_on(closed_loop(target.clone(), &args));
    eprintln!("hot_path: open loop warm-up at {}/s", args.rate);
    rt.block_on(open_loop(target.clone(), args.rate, Duration::from_secs(1), false));
    eprintln!("hot_path: open loop at {}/s for {:?}", args.rate, args.duration);
    let open = rt.block_on(open_loop(target.clone(), args.rate, args.duration, true));
    let held = (args.held > 0).then(|| {
        eprintln!("hot_path: holding {} requests for approval, then the closed loop again", args.held);
        let admin = (server.base.clone(), server.admin_token.clone());
        let waiting = rt.block_on(hold_requests(target.clone(), admin, args.held));
        let result = rt.block_on(closed_loop(target.clone(), &args));
        waiting.iter().for_each(tokio::task::JoinHandle::abort);
        result
    });

    eprintln!("hot_path: Copilot Studio requests at 50/s during the closed loop");
    let studio = rt.block_on(async {
        let studio = tokio::spawn(studio_loop(server.base.clone(), args.duration));
        let load = closed_loop(target.clone(), &args).await;
        (studio.await.expect("studio loop"), load)
    });
    eprintln!("hot_path: Copilot Studio alone at {}/s for {:?}", args.rate, args.duration);
    let studio_target = Arc::new(studio_target(&server.base));
    let studio_open = rt.block_on(open_loop(studio_target, args.rate, args.duration, true));
    eprintln!("hot_path: hot swap during the open loop at {}/s for {:?}", args.rate, args.duration);
    let swapped = rt.block_on(async {
        let swaps =
            tokio::spawn(swaps(server.base.clone(), server.admin_token.clone(), swap.bundles.clone(), args.duration));
        let open = open_loop(target.clone(), args.rate, args.duration, true).await;
        (open, swaps.await.expect("swap task"))
    });
    let rss = peak_rss_kib(pid);
    let alive = server.is_running();
    server.kill();

    let c = &closed.counts;
    let held_errors = held.as_ref().map_or(0, |h| h.counts.errors.load(Ordering::Relaxed));
    let (swap_open, swap_steps) = &swapped;
    let errors = c.errors.load(Ordering::Relaxed)
        + seed_failures
        + held_errors
        + studio.0.2
        + studio.1.counts.errors.load(Ordering::Relaxed)
        + open.failures()
        + studio_open.failures()
        + swap_open.failures()
        // During a swap every request must still be decided.
        + swap_open.counts.other.load(Ordering::Relaxed)
        + swap_steps.iter().filter(|(_, status, _)| *status != 200).count() as u64;
    println!();
    println!("=== arbiter hot_path ===");
    println!(
        "machine: {} cpus; client threads {}; durable receipts on (default config, STEP_UP in hold mode)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        args.client_threads
    );
    println!(
        "policy pack: {} {} ({} policies); {SESSIONS} sessions, each with an intent and {PRIOR_ACTIONS} prior \
         actions before measuring (seeded in {:.1}s)",
        pack["pack"].as_str().unwrap_or("?"),
        pack["version"].as_str().unwrap_or("?"),
        pack["policies"],
        seeding.as_secs_f64()
    );
    println!(
        "closed loop: concurrency {} for {}s: {:.0} decisions/s (ALLOW {}, DENY {}, other {}, errors {})",
        args.concurrency,
        args.duration.as_secs(),
        closed.rate,
        c.allow.load(Ordering::Relaxed),
        c.deny.load(Ordering::Relaxed),
        c.other.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed)
    );
    println!("  latency: {}", percentiles(&closed.hist));
    open.print("open loop", &args);
    if let Some(h) = &held {
        println!(
            "held: {} hook requests waiting for approval; closed loop meanwhile: {:.0} decisions/s ({:.0}% of the \
             figure without), errors {}",
            args.held,
            h.rate,
            100.0 * h.rate / closed.rate.max(1.0),
            h.counts.errors.load(Ordering::Relaxed)
        );
        println!("  latency: {}", percentiles(&h.hist));
    }
    let ((studio_hist, studio_late, studio_errors), studio_load) = &studio;
    println!(
        "copilot-studio: {} analyze requests at 50/s under a {:.0} decisions/s closed loop: {}; over the 1000 ms \
         budget: {studio_late}; errors {studio_errors}",
        studio_hist.len(),
        studio_load.rate,
        percentiles(studio_hist)
    );
    studio_open.print("copilot-studio open loop (analyze-tool-execution)", &args);
    swap_open.print("hot swap (2 uploads and a rollback meanwhile)", &args);
    let steps: Vec<String> =
        swap_steps.iter().map(|(what, status, took)| format!("{what} {status} in {} ms", took.as_millis())).collect();
    println!("  swaps: {}", steps.join(", "));
    match rss {
        Some(kib) => println!("server peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS (VmHWM): unavailable"),
    }
    println!("server alive at end: {alive}");
    println!("========================");
    if errors > 0 || !alive {
        eprintln!("hot_path: {errors} failed requests; server alive: {alive}");
        std::process::exit(1);
    }
}
