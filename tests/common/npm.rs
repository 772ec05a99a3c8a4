//! Real vendor clients and servers from npm for the end-to-end tests: one
//! install per package and version, cached in `$HOME/.cache/arbiter-e2e/`,
//! and child processes bounded in time and killed on every exit path.
//!
//! The tests skip (with a loud `SKIPPED:` line) only when npm cannot be
//! started or the registry cannot be reached; any other install failure fails
//! the test, so a broken package or platform never passes silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A cold install of a large client downloads ~100 MB; a hung registry
/// counts as unreachable.
pub const NPM_TIMEOUT: Duration = Duration::from_secs(300);

/// Kills and reaps the child when dropped (a panic, a timeout).
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child that exited by itself.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub enum RunError {
    /// The program could not be started (e.g. not installed).
    Spawn(std::io::Error),
    /// Still running at the deadline: killed. Holds what it had printed.
    TimedOut { stdout: String, stderr: String },
}

/// Runs `cmd` with stdin from `/dev/null` to completion or until `timeout`,
/// stdout and stderr going to `<logs>/<name>.stdout|.stderr` (so a chatty
/// child never blocks on a full pipe, and the logs stay for a post-mortem).
pub fn run_bounded(mut cmd: Command, timeout: Duration, logs: &Path, name: &str) -> Result<Finished, RunError> {
    let out_path = logs.join(format!("{name}.stdout"));
    let err_path = logs.join(format!("{name}.stderr"));
    let out = std::fs::File::create(&out_path).expect("creating stdout log");
    let err = std::fs::File::create(&err_path).expect("creating stderr log");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd.spawn().map_err(RunError::Spawn)?;
    let mut guard = ChildGuard(Some(child));
    let deadline = Instant::now() + timeout;
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    loop {
        let child = guard.0.as_mut().expect("child present");
        if let Some(status) = child.try_wait().expect("waiting for child") {
            guard.0 = None;
            return Ok(Finished { status, stdout: read(&out_path), stderr: read(&err_path) });
        }
        if Instant::now() >= deadline {
            drop(guard); // kills and reaps
            return Err(RunError::TimedOut { stdout: read(&out_path), stderr: read(&err_path) });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last 4000 bytes of `s` (on a character boundary), for failure messages.
pub fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[start..]
}

/// `$HOME/.cache/arbiter-e2e`.
pub fn cache_root() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("arbiter-e2e")
}

/// Prints the loud skip banner.
pub fn skipped(test: &str, why: &str) {
    eprintln!("\n{}\nSKIPPED: {test}: {why}\n{}\n", "!".repeat(78), "!".repeat(78));
}

/// True for npm failures that mean "the registry cannot be reached".
fn is_network_failure(npm_output: &str) -> bool {
    [
        "ENOTFOUND",
        "EAI_AGAIN",
        "ECONNREFUSED",
        "ECONNRESET",
        "ETIMEDOUT",
        "ENETUNREACH",
        "EHOSTUNREACH",
        "ERR_SOCKET_TIMEOUT",
        "network request",
        "request to https://",
    ]
    .iter()
    .any(|needle| npm_output.contains(needle))
}

/// Makes sure `package` (an npm spec, `name@version` when pinned) is
/// installed under `<cache_root>/<dir>` and returns what `ready` finds
/// there: `ready` checks an install (e.g. runs the client's `--version`)
/// and is asked before and after installing. `Err` with the reason when the
/// test must be skipped (npm missing, registry unreachable); panics on any
/// other install failure. `logs` receives npm's output.
pub fn ensure_installed<T>(
    dir: &str,
    package: &str,
    logs: &Path,
    ready: impl Fn(&Path) -> Option<T>,
) -> Result<T, String> {
    let root = cache_root();
    let prefix = root.join(dir);
    if let Some(found) = ready(&prefix) {
        eprintln!("e2e: using cached {package} in {}", prefix.display());
        return Ok(found);
    }
    std::fs::create_dir_all(&root).expect("creating the npm cache dir");
    // Install into a private directory, then rename it into place, so that a
    // concurrent run never sees (or reuses) a half-finished install.
    let partial = root.join(format!("{dir}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).expect("creating the install dir");
    let started = Instant::now();
    eprintln!("e2e: installing {package} with npm into {}", prefix.display());
    let mut npm = Command::new("npm");
    npm.arg("install")
        .arg("--prefix")
        .arg(&partial)
        .args(["--no-audit", "--no-fund", "--no-save", "--loglevel=error"])
        // Two retries, 2 s then 10 s apart (npm's default waits 10 s then 60 s),
        // so an unreachable registry is told within seconds.
        .args(["--fetch-retries=2", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=10000"])
        .arg(package);
    let log_name = format!("npm-install-{dir}");
    let done = match run_bounded(npm, NPM_TIMEOUT, logs, &log_name) {
        Err(RunError::Spawn(e)) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!("npm could not be started ({e})"));
        }
        Err(RunError::TimedOut { stderr, .. }) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!(
                "npm install hung for {NPM_TIMEOUT:?} (registry unreachable?); stderr:\n{}",
                tail(&stderr)
            ));
        }
        Ok(done) => done,
    };
    if !done.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        let output = format!("{}\n{}", done.stdout, done.stderr);
        if is_network_failure(&output) {
            return Err(format!("the npm registry is unreachable:\n{}", tail(&output)));
        }
        panic!("npm install {package} failed ({}), not a network error:\n{}", done.status, tail(&output));
    }
    // A stale install that `ready` refused is replaced; if another run
    // finished first, the rename fails and its install is used.
    if prefix.exists() && ready(&prefix).is_none() {
        let _ = std::fs::remove_dir_all(&prefix);
    }
    if std::fs::rename(&partial, &prefix).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    eprintln!("e2e: npm install of {package} took {:.1}s", started.elapsed().as_secs_f64());
    Ok(ready(&prefix).unwrap_or_else(|| {
        panic!(
            "npm installed {package} into {} but the install does not work (unsupported platform?)",
            prefix.display()
        )
    }))
}
