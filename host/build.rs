//! Builds the guest plugins (`plugins/`, a separate cargo workspace) for
//! `wasm32-wasip2`, so `cargo build`, `cargo test` and `cargo run` need no
//! manual step, then:
//! - signs each plugin shipped inside the binary into a bundle
//!   (`host/src/plugins/bundle.rs`, compiled into this script too) from its
//!   `plugins/<name>/bundle/manifest.json` and fixtures, with a key made for
//!   this build and never written anywhere;
//! - writes `$OUT_DIR/bundled_plugins.rs` with
//!   `pub static BUNDLED: &[(&str, &[u8])]` (name, signed bundle bytes) and
//!   `pub static PUBLISHER_KEY: [u8; 32]`, the public half of that key,
//!   which the host trusts as the `arbiter-bundled` publisher;
//! - sets `ARBITER_TEST_PLUGIN_FAULTY`, `ARBITER_TEST_PLUGIN_CAPS` and
//!   `ARBITER_TEST_PLUGIN_CAPS_TWIN` to the paths of the test-only plugins
//!   (`plugins/testing/`), which are never bundled, and
//!   `ARBITER_TEST_PLUGIN_CLAUDE_CODE` to the claude-code component (the
//!   plugin lifecycle tests sign it).
//!
//! Why a key per build rather than a project key: a private key in the
//! repository (or in CI) would let anyone who reads it sign plugins every
//! Arbiter trusts. The bundled plugins need no key that outlives the build:
//! the binary that embeds them also embeds the public key, so the signature
//! proves they are the bytes this build produced, and each build trusts only
//! its own. An operator who wants to re-publish a bundled plugin signs it
//! with their own publisher key.
//!
//! The guests always build in release (they are loaded, not debugged, and
//! small components compile faster in the host) into `<target>/wasm-guest`,
//! one directory shared by every host profile, so a `cargo test` after a
//! `cargo build` reuses the guest build.

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[allow(dead_code, reason = "the build script uses only the signing half of the bundle code")]
#[path = "src/plugins/bundle.rs"]
mod bundle;

const GUEST_TARGET: &str = "wasm32-wasip2";

/// Plugins embedded in the binary: (plugin name, cargo artifact stem). Each
/// has its bundle manifest and fixtures in `plugins/<name>/bundle/`.
const BUNDLED: &[(&str, &str)] = &[
    ("claude-code", "arbiter_plugin_claude_code"),
    ("codex-cli", "arbiter_plugin_codex_cli"),
    ("copilot-studio", "arbiter_plugin_copilot_studio"),
    ("cursor", "arbiter_plugin_cursor"),
    ("gemini-cli", "arbiter_plugin_gemini_cli"),
    ("github-copilot", "arbiter_plugin_github_copilot"),
    ("mcp-gateway", "arbiter_plugin_mcp_gateway"),
];

/// Test-only plugins: (env var set for the host's tests, artifact stem).
const TEST_PLUGINS: &[(&str, &str)] = &[
    ("ARBITER_TEST_PLUGIN_FAULTY", "arbiter_plugin_faulty"),
    ("ARBITER_TEST_PLUGIN_CAPS", "arbiter_plugin_caps"),
    ("ARBITER_TEST_PLUGIN_CAPS_TWIN", "arbiter_plugin_caps_twin"),
];

/// Variables cargo sets for this build script, or the user sets for the
/// host build, that would leak into the nested guest build: host rustflags
/// (e.g. `-C target-cpu=native`, coverage instrumentation) do not apply to
/// wasm, and a forced target or target dir would send the guests elsewhere.
const CLEARED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_RUSTDOCFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    // `cargo clippy` runs rustc through clippy-driver; the guests are linted
    // on their own, and CLIPPY_ARGS like `-D warnings` must not fail them here.
    "RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "RUSTC_LINKER",
    // Make's own flags; the jobserver cargo shares (CARGO_MAKEFLAGS) is kept
    // so the nested build takes its jobs from the outer build's pool instead
    // of oversubscribing the machine.
    "MAKEFLAGS",
    "MFLAGS",
];

/// Prefixes of further per-build variables cleared for the same reason
/// (`CARGO_PROFILE_*` would override the guests' size-tuned release profile).
const CLEARED_PREFIXES: &[&str] =
    &["CARGO_ENCODED_", "CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "CARGO_PROFILE_", "DEP_", "__CARGO_"];

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let repo = manifest_dir
        .parent()
        .ok_or_else(|| format!("`{}` has no parent directory", manifest_dir.display()))?
        .to_path_buf();
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let guest_dir = guest_target_dir(&out_dir);

    watch_inputs(&repo)?;
    check_guest_target()?;
    build_guests(&repo, &guest_dir)?;

    let artifacts = guest_dir.join(GUEST_TARGET).join("release");
    let artifact = |stem: &str| -> Result<PathBuf, String> {
        let path = artifacts.join(format!("{stem}.wasm"));
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("the guest build finished but `{}` is missing", path.display()))
        }
    };

    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let bundles = out_dir.join("bundles");
    fs::create_dir_all(&bundles).map_err(|e| format!("cannot create `{}`: {e}", bundles.display()))?;
    let mut bundled = String::from(
        "/// Plugins embedded in the binary: (plugin name, signed bundle bytes).\n\
         pub static BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for (name, stem) in BUNDLED {
        let component = artifact(stem)?;
        let signed = sign_bundled(&repo.join("plugins").join(name).join("bundle"), &component, &key)?;
        let path = bundles.join(format!("{name}.bundle"));
        fs::write(&path, signed).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
        let path = path.to_str().ok_or_else(|| format!("`{}` is not UTF-8", path.display()))?;
        // `{:?}` writes a Rust string literal with every character escaped.
        let _ = writeln!(bundled, "    ({name:?}, include_bytes!({path:?})),");
    }
    bundled.push_str("];\n");
    let _ = writeln!(
        bundled,
        "/// Public key of the `arbiter-bundled` publisher of this build.\n\
         pub static PUBLISHER_KEY: [u8; 32] = {:?};",
        key.verifying_key().to_bytes()
    );
    write_if_changed(&out_dir.join("bundled_plugins.rs"), &bundled)?;
    println!("cargo:rustc-env=ARBITER_TEST_PLUGIN_CLAUDE_CODE={}", artifact("arbiter_plugin_claude_code")?.display());

    for (env_name, stem) in TEST_PLUGINS {
        println!("cargo:rustc-env={env_name}={}", artifact(stem)?.display());
    }
    Ok(())
}

/// Sign one bundled plugin from `dir/manifest.json` (a source manifest whose
/// fixture paths are relative to `dir`) and its component.
fn sign_bundled(dir: &Path, component: &Path, key: &ed25519_dalek::SigningKey) -> Result<Vec<u8>, String> {
    let read = |path: &Path| fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()));
    let manifest_path = dir.join("manifest.json");
    let source: bundle::SourceManifest = serde_json::from_slice(&read(&manifest_path)?)
        .map_err(|e| format!("`{}` is invalid: {e}", manifest_path.display()))?;
    let mut fixtures = Vec::new();
    for relative in &source.fixtures {
        let path = dir.join(relative);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("fixture path `{}` has no file name", path.display()))?;
        fixtures.push((name.to_owned(), read(&path)?));
    }
    bundle::sign(&source, &read(component)?, &fixtures, bundle::BUNDLED_PUBLISHER, key)
        .map_err(|e| format!("cannot sign the bundle of `{}`: {e}", dir.display()))
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("environment variable `{name}`: {e}"))
}

/// `<target>/wasm-guest`, where `<target>` is the host's target directory:
/// OUT_DIR is `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`. Falls
/// back to a directory inside OUT_DIR if cargo ever lays it out differently.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    let profile_dir = out_dir
        .parent() // <pkg>-<hash>
        .and_then(Path::parent) // build
        .filter(|build| build.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent); // <profile>
    let target = profile_dir.and_then(Path::parent).map(|dir| {
        // With an explicit `--target`, the profile dir sits under the triple.
        match (dir.file_name(), env::var_os("TARGET"), dir.parent()) {
            (Some(name), Some(triple), Some(parent)) if name == triple => parent,
            _ => dir,
        }
    });
    match target {
        Some(target) => target.join("wasm-guest"),
        None => out_dir.join("wasm-guest"),
    }
}

/// Re-run when the contract, the SDK, a plugin or the bundled policies change. `plugins/` is
/// watched entry by entry, skipping `plugins/target`: a `cargo test` run
/// inside plugins/ writes there and must not rebuild the host (a directory
/// given to `rerun-if-changed` is scanned recursively). A new plugin folder
/// is picked up through `plugins/Cargo.toml`, which lists it.
fn watch_inputs(repo: &Path) -> Result<(), String> {
    let mut watched = vec![
        // The baseline pack is embedded by `include_dir!`, which cargo does
        // not track by itself.
        repo.join("policies"),
        repo.join("wit"),
        repo.join("sdk-guest").join("src"),
        repo.join("sdk-guest").join("Cargo.toml"),
    ];
    let plugins = repo.join("plugins");
    let entries = fs::read_dir(&plugins).map_err(|e| format!("cannot list `{}`: {e}", plugins.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list `{}`: {e}", plugins.display()))?;
        if entry.file_name() != "target" {
            watched.push(entry.path());
        }
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Ok(())
}

fn rustc() -> OsString {
    env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

/// Fails with instructions when the wasm32-wasip2 standard library is not
/// installed, instead of a wall of "can't find crate for `core`" errors.
fn check_guest_target() -> Result<(), String> {
    let output = Command::new(rustc())
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let installed = output.status.success()
        && fs::read_dir(&libdir).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        });
    if installed {
        Ok(())
    } else {
        Err(format!(
            "the `{GUEST_TARGET}` target is not installed for this toolchain; the bundled \
             plugins are built for it. Install it with:\n\n    rustup target add {GUEST_TARGET}\n"
        ))
    }
}

fn build_guests(repo: &Path, guest_dir: &Path) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = repo.join("plugins").join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    // Run from plugins/ so cargo config is found exactly as for a manual build there.
    cmd.current_dir(repo.join("plugins"))
        .arg("build")
        .args(["--release", "--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(guest_dir)
        // Anything on stdout would be read as build-script directives.
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for name in CLEARED_VARS {
        cmd.env_remove(name);
    }
    for (name, _) in env::vars_os() {
        let name_str = name.to_string_lossy();
        if CLEARED_PREFIXES.iter().any(|p| name_str.starts_with(p)) {
            cmd.env_remove(&name);
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo for the guest plugins: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the guest plugins failed ({status}); the compiler output is above. \
             To reproduce: cargo build --release --target {GUEST_TARGET} --manifest-path {}",
            manifest.display()
        ))
    }
}

fn write_if_changed(path: &Path, contents: &str) -> Result<(), String> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    fs::write(path, contents).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}
