//! Compiled-artefact cache: components compiled by Cranelift, serialised to
//! `<data-dir>/plugin-cache/`, so a restart loads them instead of compiling
//! every plugin again.
//!
//! An entry is named `<component sha256>-<engine key>.cwasm`, where the
//! engine key hashes wasmtime's [`Engine::precompile_compatibility_hash`]
//! (wasmtime version, compiler and every setting that changes the code). A
//! new wasmtime or a changed `[plugins]` limit therefore misses the cache
//! instead of loading code built for another engine; wasmtime checks the
//! same again when it deserialises. An entry's last 32 bytes are the SHA-256
//! of the rest, checked before use, so a torn or corrupted file is compiled
//! again rather than loaded.
//!
//! Soundness of [`Component::deserialize`] (an `unsafe` function: it runs
//! machine code from the bytes without validating it): the bytes come only
//! from this directory, which Arbiter creates owner-only inside its data
//! dir and fills only with what [`Component::serialize`] produced in this
//! process or an earlier one; entries are written to a temporary name and
//! renamed, read whole into memory (not mapped, so a later change to the
//! file cannot reach code in use) and checksummed. Anyone able to write
//! there can already replace Arbiter's keys, tokens and store, so the cache
//! gives them nothing new. Nothing from a request or a bundle reaches this
//! function: a bundle's component is always compiled from its WebAssembly.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Length of the trailing checksum.
const CHECKSUM: usize = 32;

/// The cache directory and the key of the engine it serves.
#[derive(Debug, Clone)]
pub struct ArtefactCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, so the engine key is stable across
/// processes (`DefaultHasher` is only stable within one).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ArtefactCache {
    /// A cache in `dir` for components compiled by `engine`.
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key = hex::encode(hasher.0.finalize().get(..8).unwrap_or_default());
        Self { dir: dir.to_owned(), engine_key }
    }

    fn path(&self, component_sha256: &str) -> PathBuf {
        self.dir.join(format!("{component_sha256}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of the component whose hex SHA-256 is given,
    /// or `None` (a miss, or an entry that fails its checks and is removed).
    /// Blocking: call off the async runtime.
    pub fn load(&self, engine: &Engine, component_sha256: &str) -> Option<Component> {
        let path = self.path(component_sha256);
        let bytes = std::fs::read(&path).ok()?;
        let split = bytes.len().checked_sub(CHECKSUM)?;
        let (code, sum) = bytes.split_at(split);
        if Sha256::digest(code).as_slice() != sum {
            tracing::warn!(path = %path.display(), "compiled plugin cache entry is corrupt; compiling again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: see the module doc: the bytes were produced by
        // `Component::serialize` into Arbiter's own owner-only cache dir,
        // were read whole into memory, and match their checksum; wasmtime
        // also refuses bytes made by an incompatible engine.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "compiled plugin cache entry refused; compiling again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Save a compilation. Best effort: a failure only costs a compile at
    /// the next start, so it is logged, not returned. Blocking.
    pub fn store(&self, component_sha256: &str, component: &Component) {
        if let Err(e) = self.try_store(component_sha256, component) {
            tracing::warn!(error = %e, "cannot write the compiled plugin cache");
        }
    }

    fn try_store(&self, component_sha256: &str, component: &Component) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let path = self.path(component_sha256);
        let mut code = component.serialize()?;
        let sum = Sha256::digest(&code);
        code.extend_from_slice(&sum);
        let tmp = self.dir.join(format!(".{}.{}.tmp", component_sha256, uuid::Uuid::now_v7()));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let written = file.write_all(&code).and_then(|()| file.sync_all());
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(())
    }
}
