//! Installing, rolling back and removing plugins while traffic flows.
//!
//! Installing a bundle runs, in order: signature and hash checks against the
//! trusted publishers ([`bundle::open`], on a blocking thread), the name the
//! caller expects, the WIT version, the capabilities, compilation (on a
//! blocking thread, or from the artefact cache), the component's own name
//! and version, and the bundle's self-test fixtures on fresh instances of
//! the new plugin. Only then is the registry swapped, after the bundle is
//! durable in the plugin directory. A refusal at any step leaves the version
//! in service untouched.
//!
//! Files in the plugin directory mirror each name's slot: `<name>.bundle`
//! is the installed version in service (absent when the bundled or unsigned
//! base version serves), `.previous/<name>.bundle` the installed version a
//! rollback returns to. Each is written to a temporary name, synced and
//! renamed, previous first: a crash between the two leaves the old version
//! in service with the right rollback target.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::bundle::{self, BundleError};
use super::stats::StatsSnapshot;
#[cfg(test)]
use super::wit;
use super::{BundleInfo, LoadError, Plugin, PluginHost, Slot, bundled, selftest};

/// WIT packages this host links. A bundle naming another is refused before
/// it is compiled.
pub const SUPPORTED_WIT: &[&str] = &[super::WIT_V1, super::WIT_V2];

/// Extension of installed bundle files.
const BUNDLE_EXT: &str = "bundle";
/// Sub-directory of rollback targets.
const PREVIOUS_DIR: &str = ".previous";

/// Why a bundle was not installed. The version in service keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The bundle itself: size, format, signature, tampering.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle is for another plugin than the one named.
    #[error("name mismatch: {0}")]
    NameMismatch(String),
    /// The component implements a WIT version this host does not link.
    #[error("unsupported WIT version: the bundle implements `{wit}`; this host supports {supported}")]
    UnsupportedWit {
        /// The manifest's `wit`.
        wit: String,
        /// What the host supports.
        supported: String,
    },
    /// The component is built against another WIT version than its
    /// manifest declares.
    #[error("WIT version mismatch: {0}")]
    WitMismatch(String),
    /// The manifest asks for capabilities the configuration does not grant
    /// this plugin (or that its WIT version cannot call).
    #[error("capabilities not granted: {0}")]
    Capability(String),
    /// The component does not compile, link or describe itself.
    #[error("invalid component: {0}")]
    Component(LoadError),
    /// The manifest's version is not the component's.
    #[error("version mismatch: the manifest says `{manifest}`, the component's describe() says `{component}`")]
    VersionMismatch {
        /// The manifest's version.
        manifest: String,
        /// What `describe` returns.
        component: String,
    },
    /// A self-test fixture did not give what it expects.
    #[error("self-test failed: fixture `{fixture}`: {reason}")]
    SelfTest {
        /// The fixture's name.
        fixture: String,
        /// What differed.
        reason: String,
    },
    /// The bundle could not be made durable, so it was not swapped in.
    #[error("cannot store the bundle: {0}")]
    Persist(String),
}

impl InstallError {
    /// Stable machine-readable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Bundle(e) => e.code(),
            Self::NameMismatch(_) => "name_mismatch",
            Self::UnsupportedWit { .. } => "unsupported_wit",
            Self::WitMismatch(_) => "wit_mismatch",
            Self::Capability(_) => "capability_not_granted",
            Self::Component(_) => "invalid_component",
            Self::VersionMismatch { .. } => "version_mismatch",
            Self::SelfTest { .. } => "self_test_failed",
            Self::Persist(_) => "persist_failed",
        }
    }
}

/// Why a rollback or removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No plugin of that name.
    #[error("no plugin `{0}`")]
    NotFound(String),
    /// The slot is not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// The files could not be updated, so the registry was not changed.
    #[error("cannot update the plugin directory: {0}")]
    Persist(String),
}

/// One version of a plugin, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// Plugin name.
    pub name: String,
    /// `active`, `previous` (a rollback returns to it) or `fallback` (a
    /// DELETE returns to it).
    pub state: &'static str,
    /// The bundle's version (or `describe`'s for an unsigned file).
    pub version: String,
    /// `sha256:` of the component.
    pub digest: String,
    /// The signed bundle digest; null for an unsigned file.
    pub bundle_digest: Option<String>,
    /// The publisher that signed it; null for an unsigned file.
    pub publisher: Option<String>,
    /// The signing key's id.
    pub key_id: Option<String>,
    /// The vendor it serves.
    pub vendor: String,
    /// WIT package it was built against.
    pub wit: Option<String>,
    /// Integrations the publisher meant it for.
    pub integrations: Vec<String>,
    /// Capabilities it holds: for a bundle the ones its manifest requests,
    /// for an unsigned file the ones granted to its name.
    pub capabilities: Vec<String>,
    /// Self-test fixtures it passed.
    pub fixtures: usize,
    /// `bundled`, `api`, `file:<path>`, `watch:<path>`.
    pub origin: String,
    /// When it was loaded.
    pub loaded_at: String,
    /// Its calls since it was loaded.
    pub stats: StatsSnapshot,
}

impl Version {
    fn of(plugin: &Plugin, state: &'static str) -> Self {
        let b = plugin.bundle.as_ref();
        Self {
            name: plugin.name.clone(),
            state,
            version: plugin.version.clone(),
            digest: plugin.digest.clone(),
            bundle_digest: b.map(|b| b.digest.clone()),
            publisher: b.map(|b| b.publisher.clone()),
            key_id: b.map(|b| b.key_id.clone()),
            vendor: plugin.info.vendor.clone(),
            wit: Some(plugin.wit.to_owned()),
            integrations: b.map(|b| b.manifest.integrations.clone()).unwrap_or_default(),
            capabilities: plugin.capabilities.iter().map(|c| (*c).to_owned()).collect(),
            fixtures: b.map_or(0, |b| b.manifest.fixtures.len()),
            origin: plugin.origin.clone(),
            loaded_at: plugin.loaded_at.clone(),
            stats: plugin.stats(),
        }
    }
}

/// A name's versions, as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    /// The version serving.
    pub active: Version,
    /// The version a rollback returns to.
    pub previous: Option<Version>,
    /// The bundled or unsigned version a DELETE returns to, when it is not
    /// the active one.
    pub fallback: Option<Version>,
}

impl SlotView {
    fn of(slot: &Slot) -> Self {
        Self {
            active: Version::of(&slot.current, "active"),
            previous: slot.previous.as_deref().map(|p| Version::of(p, "previous")),
            fallback: slot.base.as_ref().filter(|b| !Arc::ptr_eq(b, &slot.current)).map(|b| Version::of(b, "fallback")),
        }
    }
}

/// What an install did.
#[derive(Debug)]
pub struct Installed {
    /// The version now serving.
    pub active: Arc<Plugin>,
    /// The version it replaced.
    pub previous: Option<Arc<Plugin>>,
    /// True when that exact bundle was already serving (nothing changed).
    pub unchanged: bool,
}

/// Size and modification time of a bundle file, to notice changes.
type Stamp = (u64, SystemTime);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

impl PluginHost {
    /// Every capability a manifest requests must be known, callable in its
    /// WIT version, and granted to its name in the configuration. The
    /// plugin then holds exactly what it requested.
    fn check_capabilities(&self, manifest: &bundle::Manifest) -> Result<(), InstallError> {
        let requested = manifest.capability_names();
        if requested.is_empty() {
            return Ok(());
        }
        let list = |names: &[&str]| names.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
        if let Some(unknown) = requested.iter().find(|c| !super::caps::NAMES.contains(c)) {
            return Err(InstallError::Capability(format!(
                "the bundle asks for `{unknown}`, which is not a capability (known: {})",
                list(super::caps::NAMES)
            )));
        }
        if manifest.wit != super::WIT_V2 {
            return Err(InstallError::Capability(format!(
                "the bundle asks for {} but implements `{}`, which has no capability imports",
                list(&requested),
                manifest.wit
            )));
        }
        let granted = self.granted(&manifest.name);
        let missing: Vec<&str> = requested.iter().copied().filter(|c| !granted.contains(c)).collect();
        if !missing.is_empty() {
            return Err(InstallError::Capability(format!(
                "the bundle asks for {}, which `[plugins.grants.{}]` does not grant",
                list(&missing),
                manifest.name
            )));
        }
        Ok(())
    }

    /// Verify, compile and self-test a bundle, then swap it in for its name.
    /// `expected` is the name it must carry (the `{name}` of the upload, the
    /// file name of a watched bundle).
    pub async fn install(
        &self,
        bytes: Arc<[u8]>,
        expected: Option<&str>,
        origin: &str,
    ) -> Result<Installed, InstallError> {
        self.install_if(bytes, expected, origin, || true).await
    }

    /// [`install`](Self::install), swapping only if `still_wanted` holds once
    /// the checks are done (under the registry's writer lock): the watch
    /// uses it so that a file the API rewrote meanwhile is not swapped in.
    async fn install_if(
        &self,
        bytes: Arc<[u8]>,
        expected: Option<&str>,
        origin: &str,
        still_wanted: impl FnOnce() -> bool,
    ) -> Result<Installed, InstallError> {
        let plugin = self.prepare(bytes, expected, origin).await?;
        let _writer = self.writer.lock().await;
        let registry = self.registry.load_full();
        if !still_wanted() {
            let current = registry.get(&plugin.name).map_or_else(|| plugin.clone(), |s| s.current.clone());
            return Ok(Installed { active: current, previous: None, unchanged: true });
        }
        let old = registry.get(&plugin.name);
        if let Some(current) = old.map(|s| &s.current)
            && current.bundle.as_ref().map(|b| &b.digest) == plugin.bundle.as_ref().map(|b| &b.digest)
        {
            return Ok(Installed { active: current.clone(), previous: None, unchanged: true });
        }
        let slot = Slot {
            current: plugin.clone(),
            previous: old.map(|s| s.current.clone()),
            base: old.and_then(|s| s.base.clone()),
        };
        // Durable first: the version in service must survive a restart.
        self.persist(&plugin.name, Some(&slot)).await.map_err(InstallError::Persist)?;
        self.publish(&plugin.name, Some(slot.clone()));
        tracing::info!(plugin = %plugin.name, version = %plugin.version, digest = ?plugin.bundle.as_ref().map(|b| &b.digest),
            publisher = ?plugin.bundle.as_ref().map(|b| &b.publisher), %origin, "plugin installed");
        Ok(Installed { active: plugin, previous: slot.previous, unchanged: false })
    }

    /// Every check of [`install`](Self::install) except the swap.
    async fn prepare(
        &self,
        bytes: Arc<[u8]>,
        expected: Option<&str>,
        origin: &str,
    ) -> Result<Arc<Plugin>, InstallError> {
        let max = self.limits.max_bundle_bytes;
        if bytes.len() > max {
            return Err(BundleError::TooLarge { size: bytes.len(), limit: max }.into());
        }
        // Hashing a large component and the signature check take
        // milliseconds: off the async runtime, like compilation.
        let (trust, raw) = (self.trust.clone(), bytes.clone());
        let opened = tokio::task::spawn_blocking(move || bundle::open(&raw, max, &trust))
            .await
            .map_err(|e| InstallError::Persist(format!("bundle check aborted: {e}")))??;
        let manifest = &opened.manifest;
        if let Some(expected) = expected
            && manifest.name != expected
        {
            return Err(InstallError::NameMismatch(format!(
                "the bundle is for plugin `{}`, not `{expected}`",
                manifest.name
            )));
        }
        if !SUPPORTED_WIT.contains(&manifest.wit.as_str()) {
            return Err(InstallError::UnsupportedWit {
                wit: manifest.wit.clone(),
                supported: SUPPORTED_WIT.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", "),
            });
        }
        self.check_capabilities(manifest)?;
        let info = BundleInfo {
            digest: opened.digest,
            publisher: opened.publisher,
            key_id: opened.key_id,
            manifest: opened.manifest,
            bytes,
        };
        let (name, version) = (info.manifest.name.clone(), info.manifest.version.clone());
        let plugin = self.compile(origin, Arc::from(opened.component), Some(info)).await.map_err(|e| match e {
            LoadError::WitMismatch { .. } => InstallError::WitMismatch(e.to_string()),
            e => InstallError::Component(e),
        })?;
        if plugin.info.name != name {
            return Err(InstallError::NameMismatch(format!(
                "the manifest names `{name}` but the component describes itself as `{}`",
                plugin.info.name
            )));
        }
        if bundle::version_core(&version) != plugin.info.version {
            return Err(InstallError::VersionMismatch { manifest: version, component: plugin.info.version.clone() });
        }
        selftest::run(self, &plugin, &opened.fixtures)
            .await
            .map_err(|(fixture, reason)| InstallError::SelfTest { fixture, reason })?;
        Ok(plugin)
    }

    /// Load the plugins compiled into the binary (signed by this build's
    /// `arbiter-bundled` key) as the base versions of their names. They go
    /// through the same checks as any bundle, self-test included.
    pub async fn load_bundled(&self) -> Result<Vec<Arc<Plugin>>, InstallError> {
        // Compiled concurrently: start-up time is mostly Cranelift.
        let loads = bundled::BUNDLED.iter().map(|(name, bytes)| async move {
            let plugin = self.prepare(Arc::from(*bytes), Some(name), "bundled").await?;
            self.register_base(plugin.clone()).await;
            Ok::<_, InstallError>(plugin)
        });
        futures::future::try_join_all(loads).await
    }

    /// Make `plugin` the base version of its name: the fallback of DELETE,
    /// serving unless an installed bundle does.
    pub(super) async fn register_base(&self, plugin: Arc<Plugin>) {
        let _writer = self.writer.lock().await;
        let registry = self.registry.load_full();
        let slot = match registry.get(&plugin.name) {
            Some(old) if old.current.is_installed() => Slot { base: Some(plugin.clone()), ..old.clone() },
            Some(old) => {
                tracing::warn!(plugin = %plugin.name, replaced = %old.current.origin, by = %plugin.origin, "plugin replaced");
                Slot { current: plugin.clone(), previous: old.previous.clone(), base: Some(plugin.clone()) }
            }
            None => Slot { current: plugin.clone(), previous: None, base: Some(plugin.clone()) },
        };
        self.publish(&plugin.name, Some(slot));
        tracing::info!(plugin = %plugin.name, version = %plugin.version, digest = %plugin.digest, origin = %plugin.origin, "plugin loaded");
    }

    /// Load the bundles installed before the last stop: `<dir>/*.bundle`
    /// (any failure stops the start: the operator chose that version) and
    /// the rollback targets under `.previous/` (a failure is logged and the
    /// rollback target dropped).
    pub async fn load_installed(&self) -> Result<Vec<Arc<Plugin>>, anyhow::Error> {
        let Some(dirs) = &self.dirs else { return Ok(Vec::new()) };
        let mut loaded = Vec::new();
        for path in bundle_files(&dirs.plugins)? {
            let plugin = self.load_file(&path).await.map_err(|e| {
                anyhow::anyhow!("installed plugin bundle `{}` is refused ({}): {e}", path.display(), e.code())
            })?;
            let _writer = self.writer.lock().await;
            let registry = self.registry.load_full();
            let old = registry.get(&plugin.name);
            let slot = Slot {
                current: plugin.clone(),
                previous: old.map(|s| s.current.clone()),
                base: old.and_then(|s| s.base.clone()),
            };
            self.publish(&plugin.name, Some(slot));
            tracing::info!(plugin = %plugin.name, version = %plugin.version, path = %path.display(), "installed plugin loaded");
            loaded.push(plugin);
        }
        for path in bundle_files(&dirs.plugins.join(PREVIOUS_DIR))? {
            let plugin = match self.load_file(&path).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(path = %path.display(), code = e.code(), error = %e, "rollback target refused; dropped");
                    continue;
                }
            };
            let _writer = self.writer.lock().await;
            let registry = self.registry.load_full();
            if let Some(old) = registry.get(&plugin.name) {
                let name = plugin.name.clone();
                self.publish(&name, Some(Slot { previous: Some(plugin), ..old.clone() }));
            }
        }
        Ok(loaded)
    }

    async fn load_file(&self, path: &Path) -> Result<Arc<Plugin>, InstallError> {
        let bytes = tokio::fs::read(path).await.map_err(|e| InstallError::Persist(format!("cannot read: {e}")))?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        self.remember(path);
        self.prepare(Arc::from(bytes), Some(name), &format!("file:{}", path.display())).await
    }

    /// Put the previous version back in service; the version it replaces
    /// becomes the previous one (so a second rollback undoes the first).
    pub async fn rollback(&self, name: &str) -> Result<SlotView, RegistryError> {
        let _writer = self.writer.lock().await;
        let registry = self.registry.load_full();
        let slot = registry.get(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        let previous = slot.previous.clone().ok_or_else(|| {
            RegistryError::Conflict(format!("plugin `{name}` has no previous version to roll back to"))
        })?;
        let slot = Slot { current: previous, previous: Some(slot.current.clone()), base: slot.base.clone() };
        self.persist(name, Some(&slot)).await.map_err(RegistryError::Persist)?;
        self.publish(name, Some(slot.clone()));
        tracing::info!(plugin = %name, version = %slot.current.version, "plugin rolled back");
        Ok(SlotView::of(&slot))
    }

    /// Remove the installed versions of `name`. With a bundled (or unsigned
    /// file) version to fall back to, that one serves again; without one,
    /// the plugin is removed only if no integration in `used_by` needs it.
    /// Returns the version serving afterwards, if any.
    pub async fn remove(&self, name: &str, used_by: &[String]) -> Result<Option<SlotView>, RegistryError> {
        let _writer = self.writer.lock().await;
        let registry = self.registry.load_full();
        let slot = registry.get(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        let installed = slot.current.is_installed() || slot.previous.as_ref().is_some_and(|p| p.is_installed());
        if !installed {
            return Err(RegistryError::Conflict(format!(
                "plugin `{name}` has no installed bundle to remove: it is compiled into the binary or loaded from an unsigned file"
            )));
        }
        let next = match &slot.base {
            Some(base) => Some(Slot { current: base.clone(), previous: None, base: Some(base.clone()) }),
            None if !used_by.is_empty() => {
                return Err(RegistryError::Conflict(format!(
                    "plugin `{name}` serves integration(s) {} and has no bundled version to fall back to; \
                     map them to another plugin first",
                    used_by.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
                )));
            }
            None => None,
        };
        self.persist(name, next.as_ref()).await.map_err(RegistryError::Persist)?;
        self.publish(name, next.clone());
        tracing::info!(plugin = %name, fallback = ?next.as_ref().map(|s| &s.current.origin), "installed plugin removed");
        Ok(next.as_ref().map(SlotView::of))
    }

    /// The versions of `name`.
    pub fn view(&self, name: &str) -> Option<SlotView> {
        self.registry.load().get(name).map(SlotView::of)
    }

    /// The versions of every name.
    pub fn views(&self) -> Vec<SlotView> {
        self.registry.load().values().map(SlotView::of).collect()
    }

    /// Replace (or remove) one name's slot; requests that already hold the
    /// old `Arc<Plugin>` finish on it.
    fn publish(&self, name: &str, slot: Option<Slot>) {
        let mut next = BTreeMap::clone(&self.registry.load_full());
        match slot {
            Some(slot) => next.insert(name.to_owned(), slot),
            None => next.remove(name),
        };
        self.registry.store(Arc::new(next));
    }

    /// Mirror a slot in the plugin directory (no-op without one).
    async fn persist(&self, name: &str, slot: Option<&Slot>) -> Result<(), String> {
        let Some(dirs) = &self.dirs else { return Ok(()) };
        let bytes_of = |p: Option<&Arc<Plugin>>| {
            p.filter(|p| p.is_installed()).and_then(|p| p.bundle.as_ref()).map(|b| b.bytes.clone())
        };
        let current = bytes_of(slot.map(|s| &s.current));
        let previous = bytes_of(slot.and_then(|s| s.previous.as_ref()));
        let file = format!("{name}.{BUNDLE_EXT}");
        let current_path = dirs.plugins.join(&file);
        let previous_path = dirs.plugins.join(PREVIOUS_DIR).join(&file);
        let seen = self.seen.clone();
        tokio::task::spawn_blocking(move || {
            write_or_remove(&previous_path, previous.as_deref(), |_| {})?;
            // The new file's stamp is noted before it takes its name, so the
            // watch never mistakes it for a bundle someone dropped there.
            write_or_remove(&current_path, current.as_deref(), |s| {
                seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(current_path.clone(), s);
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Note a bundle file's current stamp so the watch does not load it
    /// again.
    fn remember(&self, path: &Path) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match stamp(path) {
            Some(s) => seen.insert(path.to_owned(), s),
            None => seen.remove(path),
        };
    }

    /// Scan the plugin directory every `interval` for new or changed
    /// `*.bundle` files and install them (a file's name must be its
    /// plugin's). A refused file is logged and tried again once it changes.
    /// Ends when the host is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let host: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(host) = host.upgrade() else { return };
                host.scan().await;
            }
        });
    }

    async fn scan(&self) {
        let Some(dirs) = &self.dirs else { return };
        let files = match bundle_files(&dirs.plugins) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot scan the plugin directory");
                return;
            }
        };
        for path in files {
            let Some(now) = stamp(&path) else { continue };
            {
                let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if seen.get(&path) == Some(&now) {
                    continue;
                }
                seen.insert(path.clone(), now);
            }
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            let unchanged_since = || stamp(&path) == Some(now);
            let result = match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    let origin = format!("watch:{}", path.display());
                    self.install_if(Arc::from(bytes), Some(&name), &origin, unchanged_since).await
                }
                Err(e) => Err(InstallError::Persist(format!("cannot read: {e}"))),
            };
            match result {
                Ok(i) if i.unchanged => {}
                Ok(i) => {
                    tracing::info!(plugin = %name, version = %i.active.version, path = %path.display(), "bundle from the plugin directory installed")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), code = e.code(), error = %e, "bundle from the plugin directory refused");
                }
            }
        }
    }
}

/// `*.bundle` files directly in `dir`, sorted (none when it is missing).
fn bundle_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == BUNDLE_EXT))
        .collect();
    files.sort();
    Ok(files)
}

/// Make `path` hold `bytes` (temporary file, fsync, rename, fsync of the
/// directory), or remove it for `None`. Unchanged content is not rewritten.
/// `before_rename` gets the new file's stamp (a rename keeps it).
fn write_or_remove(path: &Path, bytes: Option<&[u8]>, before_rename: impl FnOnce(Stamp)) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let Some(bytes) = bytes else {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => std::fs::File::open(dir).and_then(|d| d.sync_all()).or(Ok(())),
        };
    };
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("bundle");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::now_v7()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| {
            if let Some(s) = stamp(&tmp) {
                before_rename(s);
            }
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use base64::Engine as _;

    use super::*;
    use crate::config::PluginLimits;

    /// A host trusting `acme`, and the bundled claude-code re-signed by
    /// `acme` as `version`.
    fn host_and_bundle(version: &str) -> (PluginHost, Vec<u8>) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut limits = PluginLimits::default();
        limits.publishers.insert(
            "acme".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes()),
        );
        let host = PluginHost::new(&limits).unwrap();
        let (_, bytes) = bundled::BUNDLED.iter().find(|(n, _)| *n == "claude-code").unwrap();
        let b = bundle::open(bytes, usize::MAX, &host.trust).unwrap();
        let m = b.manifest;
        let source = bundle::SourceManifest {
            name: m.name,
            version: version.to_owned(),
            vendor: m.vendor,
            wit: m.wit,
            integrations: m.integrations,
            capabilities: m.capabilities,
            fixtures: Vec::new(),
        };
        let signed = bundle::sign(&source, &b.component, &b.fixtures, "acme", &key).unwrap();
        (host, signed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // Without a bundled version to fall back to, a plugin an integration
    // uses cannot be removed; an unused one can.
    async fn remove_refuses_a_plugin_in_use_without_fallback() {
        let (host, signed) = host_and_bundle("0.1.0+acme");
        host.install(Arc::from(signed), Some("claude-code"), "test").await.unwrap();
        let err = host.remove("claude-code", &["cc".to_owned()]).await.unwrap_err();
        assert!(matches!(&err, RegistryError::Conflict(m) if m.contains("`cc`") && m.contains("fall back")), "{err}");
        assert_eq!(host.get("claude-code").unwrap().version, "0.1.0+acme");
        assert!(host.remove("claude-code", &[]).await.unwrap().is_none());
        assert!(host.get("claude-code").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // A request that loaded the old version keeps it across a swap.
    async fn a_swap_leaves_calls_in_flight_on_their_version() {
        let (host, first) = host_and_bundle("0.1.0+a");
        let (_, second) = host_and_bundle("0.1.0+b");
        host.install(Arc::from(first), Some("claude-code"), "test").await.unwrap();
        let held = host.get("claude-code").unwrap();
        let installed = host.install(Arc::from(second), Some("claude-code"), "test").await.unwrap();
        assert_eq!(installed.active.version, "0.1.0+b");
        assert_eq!(installed.previous.unwrap().version, "0.1.0+a");
        // The held plugin still runs: a call on it succeeds.
        let request = Arc::new(wit::HttpRequest {
            method: "POST".to_owned(),
            path: String::new(),
            headers: Vec::new(),
            body: br#"{"not": "a hook"}"#.to_vec(),
        });
        let result = host.decode(&held, Arc::new(BTreeMap::new()), request).await;
        assert!(matches!(result, Err(f) if f.kind == crate::model::FaultKind::Rejected));
        assert_eq!(held.version, "0.1.0+a");
        assert_eq!(held.stats().rejections, 1);
        assert_eq!(host.get("claude-code").unwrap().version, "0.1.0+b");
    }
}
