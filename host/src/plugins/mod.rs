//! Plugin runtime: adapter components on wasmtime.
//!
//! One process-wide [`Engine`] with the pooling allocator and epoch
//! interruption. Each plugin is compiled once at load into an
//! [`bindings::AdapterPre`] (imports resolved and type-checked off the hot
//! path); every call gets a fresh [`Store`] and instance from the pool, a
//! memory cap enforced by a [`ResourceLimiter`], and an epoch deadline. A
//! semaphore with as many permits as pool slots makes a full pool a wait, not
//! an instantiation error.
//!
//! Guest code runs on the request's own task, on a fiber (wasmtime's async
//! support), not on a blocking thread: a call costs no thread hand-off, and a
//! guest that spins yields to the other tasks of its worker every epoch tick
//! until its deadline traps it.
//!
//! Sandbox: the guest gets the `arbiter:plugin` imports (log, config, clock;
//! from 0.2.0 also the capability imports of [`caps`], which answer
//! `not-granted` unless the operator granted them) and an empty WASI
//! context — `WasiCtxBuilder::new()` defaults: no preopened
//! directories, no environment, no arguments, stdin closed, stdout/stderr
//! discarded, every socket address denied. Rust's `wasm32-wasip2` standard
//! library imports WASI interfaces, so they are linked, but nothing reachable
//! through them leaves the sandbox.
//!
//! Every failure of a call (trap, deadline, memory cap, output that breaks
//! the contract) comes back as a [`Fault`], which the pipeline turns into a
//! blocking reply and a receipt.
//!
//! Plugins arrive as signed bundles ([`bundle`]): the ones compiled into the
//! binary, ones uploaded through the API, and ones dropped into the plugin
//! directory. `lifecycle` verifies, compiles, self-tests (`selftest`) and
//! swaps them in while calls flow; `cache` keeps compiled components
//! across restarts; [`stats`] counts each version's calls.

#[allow(missing_docs, reason = "generated from the WIT, whose docs they carry")]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/plugin/v0.1.0",
        world: "adapter",
        // Exports run on a fiber so that a guest yields at epoch ticks; the
        // imports (log, config, clock) never block and stay synchronous.
        exports: { default: async },
    });
}

/// `arbiter:plugin@0.2.0`: the 0.1.0 world plus the capability imports.
/// Its `types` are the same records as 0.1.0's, mapped onto the 0.1.0
/// bindings so both versions share one set of host types.
#[allow(missing_docs, reason = "generated from the WIT, whose docs they carry")]
mod bindings_v2 {
    wasmtime::component::bindgen!({
        path: "../wit/plugin/v0.2.0",
        world: "adapter",
        exports: { default: async },
        // A fetch waits on the network: it runs async on the call's fiber,
        // so the worker thread is never blocked.
        imports: { "arbiter:plugin/http/fetch": async },
        with: { "arbiter:plugin/types@0.2.0": super::bindings::arbiter::plugin::types },
    });
}

pub mod bundle;
mod cache;
pub mod caps;
mod lifecycle;
mod selftest;
pub mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::PluginLimits;
use crate::model::{Fault, FaultComponent, FaultKind};
use stats::{CallStats, Outcome};

pub use lifecycle::{InstallError, Installed, RegistryError, SUPPORTED_WIT, SlotView, Version};

pub use bindings::arbiter::plugin::types as wit;
use bindings::arbiter::plugin::{clock, config as wit_config, log as wit_log};
use bindings_v2::arbiter::plugin as v2;
use caps::{Granted, Kv};

/// The WIT versions of the adapter world this host serves.
const WIT_V1: &str = "arbiter:plugin@0.1.0";
const WIT_V2: &str = "arbiter:plugin@0.2.0";

/// Epoch tick length. Deadlines are whole ticks, so this is their
/// resolution; a 1 ms ticker costs one atomic increment per millisecond.
const TICK: Duration = Duration::from_millis(1);

/// Events one decode may return. A hook carries one event; a few hundred is
/// already abuse.
const MAX_EVENTS: usize = 64;

/// Largest reply body a plugin may produce: the vendor never needs more.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Log messages a plugin may emit per call, and their longest length.
const MAX_LOGS_PER_CALL: u32 = 32;
const MAX_LOG_BYTES: usize = 4096;

/// Freed instance slots whose memory is reset together. Slots waiting in a
/// batch are not reusable, so this stays well under the pool size.
const DECOMMIT_BATCH: usize = 16;

/// Bytes of each fiber stack zeroed in place rather than decommitted when a
/// call ends (same reason as [`KEEP_RESIDENT`]); adapters use a few KiB.
const STACK_KEEP_RESIDENT: usize = 64 * 1024;

/// Bytes of each linear memory zeroed in place (not decommitted) when its
/// slot is freed. Covers a bundled adapter's whole memory (256 KiB stack,
/// data, heap for a hook payload); larger plugins pay an madvise for the rest.
const KEEP_RESIDENT: usize = 1024 * 1024;

/// Settings of one integration, readable by its plugin.
pub type Settings = Arc<BTreeMap<String, String>>;

/// Errors while loading a plugin. A plugin that fails to load is not served.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine could not be configured.
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component, or it does not implement an
    /// `arbiter:plugin` adapter world this host serves (0.1.0, 0.2.0).
    #[error("plugin `{origin}` is not a valid arbiter:plugin adapter component: {reason}")]
    Invalid {
        /// File or bundled name.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The bundle's manifest names another WIT version than the one the
    /// component is built against.
    #[error("the manifest declares `{manifest}`, but the component is built against `{component}`")]
    WitMismatch {
        /// The manifest's `wit`.
        manifest: String,
        /// The version the component imports.
        component: &'static str,
    },
    /// `describe` failed or returned something unusable.
    #[error("plugin `{origin}` failed its self-description: {reason}")]
    Describe {
        /// File or bundled name.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The plugin directory could not be read.
    #[error("cannot read plugin directory `{path}`: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A loaded plugin: compiled, linked, described.
pub struct Plugin {
    /// Name from `describe` (and the bundle's manifest).
    pub name: String,
    /// The bundle's version, else the one `describe` returns.
    pub version: String,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// Where it came from: `bundled`, `api`, `file:<path>`, `watch:<path>`.
    pub origin: String,
    /// Its self-description.
    pub info: wit::PluginInfo,
    /// The signed bundle it came from; `None` for an unsigned `.wasm` file.
    pub bundle: Option<BundleInfo>,
    /// RFC 3339 time it was loaded.
    pub loaded_at: String,
    /// The `arbiter:plugin` version the component was built against.
    pub wit: &'static str,
    /// The capabilities it holds (always none for a 0.1.0 plugin).
    pub capabilities: Vec<&'static str>,
    granted: Arc<Granted>,
    stats: CallStats,
    pre: Pre,
}

/// A linked component of either WIT version.
enum Pre {
    V1(bindings::AdapterPre<PluginState>),
    V2(bindings_v2::AdapterPre<PluginState>),
}

/// An instance of either WIT version; both export the same functions over
/// the same types.
enum Adapter {
    V1(bindings::Adapter),
    V2(bindings_v2::Adapter),
}

impl Pre {
    async fn instantiate(&self, store: &mut Store<PluginState>) -> anyhow::Result<Adapter> {
        Ok(match self {
            Self::V1(pre) => Adapter::V1(pre.instantiate_async(store).await?),
            Self::V2(pre) => Adapter::V2(pre.instantiate_async(store).await?),
        })
    }
}

impl Adapter {
    async fn describe(&self, store: &mut Store<PluginState>) -> anyhow::Result<wit::PluginInfo> {
        match self {
            Self::V1(a) => a.call_describe(store).await,
            Self::V2(a) => a.call_describe(store).await,
        }
    }

    async fn decode(
        &self,
        store: &mut Store<PluginState>,
        request: &wit::HttpRequest,
    ) -> anyhow::Result<Result<wit::Decoded, wit::DecodeError>> {
        match self {
            Self::V1(a) => a.call_decode(store, request).await,
            Self::V2(a) => a.call_decode(store, request).await,
        }
    }

    async fn encode(
        &self,
        store: &mut Store<PluginState>,
        request: &wit::HttpRequest,
        verdict: &wit::Verdict,
    ) -> anyhow::Result<wit::HttpResponse> {
        match self {
            Self::V1(a) => a.call_encode(store, request, verdict).await,
            Self::V2(a) => a.call_encode(store, request, verdict).await,
        }
    }
}

/// What a plugin's signed bundle says about it.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// The bundle digest (`sha256:<hex>` of the manifest's JCS bytes).
    pub digest: String,
    /// The publisher that signed it.
    pub publisher: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The manifest.
    pub manifest: bundle::Manifest,
    /// The bundle file, kept so it can be persisted and rolled back to.
    bytes: Arc<[u8]>,
}

impl Plugin {
    /// Counters of this version's calls.
    pub fn stats(&self) -> stats::StatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether it came from a signed bundle the operator installed (API,
    /// file or watch), as opposed to the binary or an unsigned file.
    pub fn is_installed(&self) -> bool {
        self.bundle.as_ref().is_some_and(|b| b.publisher != bundle::BUNDLED_PUBLISHER)
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The reply that blocks the action when the plugin itself cannot
    /// produce one; `{{reason}}` strings in its JSON body become `reason`.
    pub fn blocking_reply(&self, reason: &str) -> wit::HttpResponse {
        let template = &self.info.blocking_reply;
        let body = match serde_json::from_slice::<Value>(&template.body) {
            Ok(mut v) => {
                fill_reason(&mut v, reason);
                serde_json::to_vec(&v).unwrap_or_default()
            }
            Err(_) => template.body.clone(),
        };
        wit::HttpResponse { status: template.status, headers: template.headers.clone(), body }
    }
}

fn fill_reason(v: &mut Value, reason: &str) {
    match v {
        Value::String(s) if s.contains("{{reason}}") => *s = s.replace("{{reason}}", reason),
        Value::Array(items) => items.iter_mut().for_each(|i| fill_reason(i, reason)),
        Value::Object(map) => map.values_mut().for_each(|i| fill_reason(i, reason)),
        _ => {}
    }
}

/// Per-call store data.
struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    settings: Settings,
    plugin: Arc<str>,
    logs: u32,
    /// Epoch ticks this call has run; past the deadline it traps.
    ticks: u64,
    /// Capabilities of this plugin, and the store behind `kv`.
    granted: Arc<Granted>,
    kv: Option<Kv>,
    /// Milliseconds spent waiting in capability calls, during which no
    /// epoch tick reaches the guest; they count against the deadline.
    waited_ms: u64,
    deadline_ms: u64,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps linear memory (and tables) of one instance, and remembers whether
/// the cap was hit so the fault can be named.
///
/// Does not bound CPU (the epoch deadline does) or host-side allocations
/// made on the guest's behalf (the imports bound their own sizes).
struct MemoryCap {
    max_bytes: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> anyhow::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> anyhow::Result<bool> {
        // Adapters need a handful of function-table slots; 64 Ki is generous.
        Ok(desired <= 65_536)
    }
}

impl wit::Host for PluginState {}

impl wit_log::Host for PluginState {
    fn log(&mut self, level: wit_log::Level, message: String) {
        self.logs += 1;
        if self.logs > MAX_LOGS_PER_CALL {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_BYTES {
            let end = (0..=MAX_LOG_BYTES).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
            message.truncate(end);
        }
        let plugin = &*self.plugin;
        match level {
            wit_log::Level::Trace => tracing::trace!(plugin, "{message}"),
            wit_log::Level::Debug => tracing::debug!(plugin, "{message}"),
            wit_log::Level::Info => tracing::info!(plugin, "{message}"),
            wit_log::Level::Warn => tracing::warn!(plugin, "{message}"),
            wit_log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl wit_config::Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }
}

impl clock::Host for PluginState {
    fn now_millis(&mut self) -> u64 {
        u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }
}

// 0.2.0: the unchanged interfaces answer as in 0.1.0.
impl v2::log::Host for PluginState {
    fn log(&mut self, level: v2::log::Level, message: String) {
        let level = match level {
            v2::log::Level::Trace => wit_log::Level::Trace,
            v2::log::Level::Debug => wit_log::Level::Debug,
            v2::log::Level::Info => wit_log::Level::Info,
            v2::log::Level::Warn => wit_log::Level::Warn,
            v2::log::Level::Error => wit_log::Level::Error,
        };
        wit_log::Host::log(self, level, message);
    }
}

impl v2::config::Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        wit_config::Host::get(self, key)
    }
}

impl v2::clock::Host for PluginState {
    fn now_millis(&mut self) -> u64 {
        clock::Host::now_millis(self)
    }
}

impl v2::capabilities::Host for PluginState {}

impl v2::http::Host for PluginState {
    async fn fetch(
        &mut self,
        request: v2::http::Request,
    ) -> Result<v2::http::Response, v2::capabilities::CapabilityError> {
        let used = self.ticks + self.waited_ms;
        let budget = Duration::from_millis(self.deadline_ms.saturating_sub(used));
        let start = Instant::now();
        let result = caps::fetch(&self.granted, request, budget).await;
        self.waited_ms += u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = &result {
            tracing::debug!(plugin = &*self.plugin, error = ?e, "plugin http fetch failed");
        }
        result
    }
}

impl v2::kv::Host for PluginState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, v2::capabilities::CapabilityError> {
        Kv::get(self.kv.as_ref(), &self.granted, &self.plugin, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), v2::capabilities::CapabilityError> {
        Kv::set(self.kv.as_ref(), &self.granted, &self.plugin, &key, &value)
    }

    fn delete(&mut self, key: String) -> Result<(), v2::capabilities::CapabilityError> {
        Kv::delete(self.kv.as_ref(), &self.granted, &self.plugin, &key)
    }

    fn list_prefix(&mut self, prefix: String) -> Result<Vec<String>, v2::capabilities::CapabilityError> {
        Kv::list(self.kv.as_ref(), &self.granted, &self.plugin, &prefix)
    }
}

impl v2::plugin_config::Host for PluginState {
    fn get(&mut self, key: String) -> Result<Option<String>, v2::capabilities::CapabilityError> {
        caps::config(&self.granted, &key)
    }
}

impl v2::secrets::Host for PluginState {
    fn get(&mut self, name: String) -> Result<String, v2::capabilities::CapabilityError> {
        caps::secret(&self.granted, &name)
    }
}

/// Advances the engine's epoch every [`TICK`]. Holds only a weak reference,
/// so it ends by itself when the engine is dropped.
struct EpochTicker;

impl EpochTicker {
    fn start(engine: &Engine) -> Result<Self, LoadError> {
        let engine = engine.weak();
        std::thread::Builder::new()
            .name("arbiter-epoch".to_owned())
            .spawn(move || {
                while let Some(engine) = engine.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Self)
    }
}

/// The plugins of one name: the version serving, the one a rollback
/// returns to, and the one compiled into the binary or loaded from an
/// unsigned file, which a DELETE falls back to.
#[derive(Clone)]
struct Slot {
    current: Arc<Plugin>,
    previous: Option<Arc<Plugin>>,
    base: Option<Arc<Plugin>>,
}

/// Where installed bundles and compiled artefacts are kept.
#[derive(Debug, Clone)]
pub struct PluginDirs {
    /// `plugins.dir`: installed bundles (`<name>.bundle`, previous versions
    /// under `.previous/`), unsigned `*.wasm`.
    pub plugins: PathBuf,
    /// The compiled-artefact cache, if enabled.
    pub cache: Option<PathBuf>,
}

/// The plugin host: engine, linker, loaded plugins.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<PluginState>,
    /// The 0.2.0 world's linker: the same WASI plus the capability imports.
    linker_v2: Linker<PluginState>,
    /// Capabilities granted per plugin name, resolved at start.
    grants: BTreeMap<String, Arc<Granted>>,
    kv: Option<Kv>,
    /// Every name's slot. A request loads the map once and keeps the
    /// `Arc<Plugin>` it found, so a swap never changes the plugin under a
    /// call in flight: it finishes on the version it started with.
    registry: ArcSwap<BTreeMap<String, Slot>>,
    /// Serialises changes of the registry and of the files that mirror it.
    writer: tokio::sync::Mutex<()>,
    /// Size and mtime of the bundle files loaded or written, so the watch of
    /// the plugin directory picks up only new or changed ones.
    seen: Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, (u64, std::time::SystemTime)>>>,
    trust: bundle::Trust,
    dirs: Option<PluginDirs>,
    cache: Option<cache::ArtefactCache>,
    limits: PluginLimits,
    slots: Arc<tokio::sync::Semaphore>,
    _ticker: EpochTicker,
}

impl PluginHost {
    /// Build the engine and linker for `limits`.
    pub fn new(limits: &PluginLimits) -> Result<Self, LoadError> {
        let engine_err = |e: anyhow::Error| LoadError::Engine(format!("{e:#}"));
        let memory_bytes = usize::try_from(limits.memory_limit_mib * 1024 * 1024).unwrap_or(usize::MAX);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasm32-wasip2 component holds a few core instances (the
        // program, the WASI adapter, shims), two memories and a few tables.
        // Per-component caps leave headroom; totals scale with the slots.
        pool.total_component_instances(limits.max_instances)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .total_core_instances(limits.max_instances.saturating_mul(16))
            .total_memories(limits.max_instances.saturating_mul(4))
            .total_tables(limits.max_instances.saturating_mul(8))
            .max_memory_size(memory_bytes)
            // Resetting a slot is an madvise, and every madvise of a mapping
            // touched on another CPU costs a TLB-shootdown IPI. Batching the
            // decommits of freed slots pays that once per batch instead of
            // once per call (measured: the IPIs were ~10% of CPU under load).
            .decommit_batch_size(DECOMMIT_BATCH)
            // Reset freed slots by zeroing in place rather than madvise: a
            // madvise costs a TLB-shootdown IPI on every other CPU running
            // the process (measured: 13% of CPU under load). Adapters touch a
            // few hundred KiB, and zeroing that is cheaper.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 * 1024)
            .total_stacks(limits.max_instances)
            .async_stack_keep_resident(STACK_KEEP_RESIDENT);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .async_support(true)
            .epoch_interruption(true)
            // Copy-on-write data images must be restored with madvise on every
            // reset; copying an adapter's few KiB of data at instantiation is
            // cheaper than that.
            .memory_init_cow(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        bindings::Adapter::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(engine_err)?;
        let mut linker_v2 = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker_v2).map_err(engine_err)?;
        bindings_v2::Adapter::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker_v2, |s| s)
            .map_err(engine_err)?;
        let mut grants = BTreeMap::new();
        for (name, grant) in &limits.grants {
            grants.insert(name.clone(), Arc::new(Granted::resolve(name, grant).map_err(LoadError::Engine)?));
        }
        let ticker = EpochTicker::start(&engine)?;
        let mut trust = bundle::Trust::default();
        for (name, key) in &limits.publishers {
            let key = bundle::parse_public_key(key)
                .map_err(|e| LoadError::Engine(format!("plugins.publishers: publisher `{name}`: {e}")))?;
            trust.add(name, key);
        }
        let bundled_key = ed25519_dalek::VerifyingKey::from_bytes(&bundled::PUBLISHER_KEY)
            .map_err(|e| LoadError::Engine(format!("the bundled publisher key is invalid: {e}")))?;
        trust.add(bundle::BUNDLED_PUBLISHER, bundled_key);
        Ok(Self {
            engine,
            linker,
            linker_v2,
            grants,
            kv: None,
            registry: ArcSwap::from_pointee(BTreeMap::new()),
            writer: tokio::sync::Mutex::new(()),
            seen: Arc::new(std::sync::Mutex::new(std::collections::HashMap::new())),
            trust,
            dirs: None,
            cache: None,
            limits: limits.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(usize::try_from(limits.max_instances).unwrap_or(1))),
            _ticker: ticker,
        })
    }

    /// Largest bundle accepted, in bytes (`plugins.max_bundle_bytes`).
    pub fn max_bundle_bytes(&self) -> usize {
        self.limits.max_bundle_bytes
    }

    /// Keep installed bundles in `dirs.plugins` (so they survive a restart)
    /// and compiled artefacts in `dirs.cache`.
    pub fn with_dirs(mut self, dirs: PluginDirs) -> Self {
        self.cache = dirs.cache.as_deref().map(|d| cache::ArtefactCache::new(d, &self.engine));
        self.dirs = Some(dirs);
        self
    }

    /// Serve the `kv` capability from `partition`.
    pub fn with_kv(mut self, partition: fjall::PartitionHandle) -> Self {
        self.kv = Some(Kv::new(partition));
        self
    }

    /// Capability names granted to plugin `name` in the configuration.
    pub fn granted(&self, name: &str) -> Vec<&'static str> {
        self.grants.get(name).map(|g| g.names()).unwrap_or_default()
    }

    /// Compile (or load from the cache) on a blocking thread, link and
    /// describe a component. The result serves nothing until registered.
    async fn compile(
        &self,
        origin: &str,
        bytes: Arc<[u8]>,
        bundle: Option<BundleInfo>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let invalid = |reason: String| LoadError::Invalid { origin: origin.to_owned(), reason };
        // Parse the whole binary before compiling so malformed bytes are an
        // error here, not a surprise deeper in the compiler.
        check_header(&bytes).map_err(invalid)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (engine, code, cache, key) = (self.engine.clone(), bytes.clone(), self.cache.clone(), sha256.clone());
        let component = tokio::task::spawn_blocking(move || {
            if let Some(component) = cache.as_ref().and_then(|c| c.load(&engine, &key)) {
                return Ok(component);
            }
            let component = Component::new(&engine, &code)?;
            if let Some(cache) = &cache {
                cache.store(&key, &component);
            }
            Ok::<_, anyhow::Error>(component)
        })
        .await
        .map_err(|e| invalid(e.to_string()))?
        .map_err(|e| invalid(format!("{e:#}")))?;
        // A component that imports no `arbiter:plugin` interface links
        // against either world: it takes its manifest's version.
        let wit = match (wit_version(&self.engine, &component).map_err(invalid)?, &bundle) {
            (Some(wit), Some(b)) if b.manifest.wit != wit => {
                return Err(LoadError::WitMismatch { manifest: b.manifest.wit.clone(), component: wit });
            }
            (Some(wit), _) => wit,
            (None, Some(b)) if b.manifest.wit == WIT_V2 => WIT_V2,
            (None, _) => WIT_V1,
        };
        let pre = if wit == WIT_V2 {
            let pre = self.linker_v2.instantiate_pre(&component).map_err(|e| invalid(format!("{e:#}")))?;
            Pre::V2(bindings_v2::AdapterPre::new(pre).map_err(|e| invalid(format!("{e:#}")))?)
        } else {
            let pre = self.linker.instantiate_pre(&component).map_err(|e| invalid(format!("{e:#}")))?;
            Pre::V1(bindings::AdapterPre::new(pre).map_err(|e| invalid(format!("{e:#}")))?)
        };
        let digest = format!("sha256:{sha256}");
        let describe_err = |reason: String| LoadError::Describe { origin: origin.to_owned(), reason };
        // `describe` runs without capabilities: it only says what the plugin is.
        let mut store = self.store(origin, Arc::new(BTreeMap::new()), Arc::default());
        let instance = pre.instantiate(&mut store).await.map_err(|e| describe_err(format!("{e:#}")))?;
        let info = instance.describe(&mut store).await.map_err(|e| describe_err(classify(&e, &store).message))?;
        if info.name.is_empty() || !info.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(describe_err(format!("plugin name `{}` must be [A-Za-z0-9_-]+", info.name)));
        }
        // A bundle gets what its manifest requests (the install checked that
        // each is granted); an unsigned file every capability granted to its
        // name; a 0.1.0 component cannot call any.
        let granted = match (wit, self.grants.get(&info.name)) {
            (WIT_V2, Some(g)) => match &bundle {
                Some(b) => Arc::new(g.restricted_to(&b.manifest.capability_names())),
                None => g.clone(),
            },
            _ => Arc::default(),
        };
        if serde_json::from_slice::<Value>(&info.blocking_reply.body).is_err() {
            return Err(describe_err("blocking-reply body is not JSON".to_owned()));
        }
        let version = bundle.as_ref().map_or_else(|| info.version.clone(), |b| b.manifest.version.clone());
        Ok(Arc::new(Plugin {
            name: info.name.clone(),
            version,
            digest,
            origin: origin.to_owned(),
            info,
            bundle,
            loaded_at: crate::model::now_rfc3339(),
            wit,
            capabilities: granted.names(),
            granted,
            stats: CallStats::default(),
            pre,
        }))
    }

    /// Compile an unsigned component and register it as the base version
    /// of its name (replacing an earlier base; an installed bundle keeps
    /// serving).
    pub async fn load(&self, origin: &str, bytes: Arc<[u8]>) -> Result<Arc<Plugin>, LoadError> {
        let plugin = self.compile(origin, bytes, None).await?;
        self.register_base(plugin.clone()).await;
        Ok(plugin)
    }

    /// Load every unsigned `*.wasm` file of `dir` (missing dir = nothing to
    /// load). Signed `*.bundle` files are [`load_installed`](Self::load_installed)'s.
    pub async fn load_dir(&self, dir: &Path) -> Result<Vec<Arc<Plugin>>, LoadError> {
        let io = |source| LoadError::Io { path: dir.display().to_string(), source };
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut paths: Vec<_> = std::fs::read_dir(dir).map_err(io)?.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        let mut loaded = Vec::new();
        for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "wasm")) {
            let bytes = std::fs::read(&path).map_err(io)?;
            let plugin = self.load(&format!("file:{}", path.display()), bytes.into()).await?;
            tracing::warn!(plugin = %plugin.name, path = %path.display(), "unsigned plugin loaded from the plugin directory");
            loaded.push(plugin);
        }
        Ok(loaded)
    }

    /// The plugin serving under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.registry.load().get(name).map(|slot| slot.current.clone())
    }

    /// All plugins serving, by name.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        self.registry.load().values().map(|slot| slot.current.clone()).collect()
    }

    fn store(&self, plugin: &str, settings: Settings, granted: Arc<Granted>) -> Store<PluginState> {
        new_store(&self.engine, &self.limits, plugin, settings, granted, self.kv.clone())
    }

    /// Run `decode` in a fresh instance and check its output.
    pub async fn decode(
        &self,
        plugin: &Arc<Plugin>,
        settings: Settings,
        request: Arc<wit::HttpRequest>,
    ) -> Result<wit::Decoded, Fault> {
        let start = Instant::now();
        let result = match self.decode_raw(plugin, settings, request).await {
            Ok(Ok(decoded)) => Ok(decoded),
            Ok(Err(wit::DecodeError::Malformed(m))) => Err(Fault::new(
                FaultComponent::Plugin,
                FaultKind::Rejected,
                format!("the request is not a valid vendor payload: {m}"),
            )),
            Ok(Err(wit::DecodeError::Unsupported(m))) => Err(Fault::new(
                FaultComponent::Plugin,
                FaultKind::Rejected,
                format!("the plugin does not support this request: {m}"),
            )),
            Err(fault) => Err(fault),
        };
        plugin.stats.record(start.elapsed(), outcome(&result));
        result
    }

    /// `decode` in a fresh instance, with the plugin's own refusal kept
    /// apart from a fault. Not counted in the plugin's stats.
    async fn decode_raw(
        &self,
        plugin: &Arc<Plugin>,
        settings: Settings,
        request: Arc<wit::HttpRequest>,
    ) -> Result<Result<wit::Decoded, wit::DecodeError>, Fault> {
        let mut call = self.instance(plugin, settings).await?;
        let result = call.adapter.decode(&mut call.store, &request).await.map_err(|e| call.fault(&e))?;
        if let Ok(decoded) = &result
            && decoded.events.len() > MAX_EVENTS
        {
            return Err(malformed(format!(
                "decode returned {} events; at most {MAX_EVENTS} are allowed",
                decoded.events.len()
            )));
        }
        Ok(result)
    }

    /// Run `encode` in a fresh instance and check its output.
    pub async fn encode(
        &self,
        plugin: &Arc<Plugin>,
        settings: Settings,
        request: Arc<wit::HttpRequest>,
        verdict: wit::Verdict,
    ) -> Result<wit::HttpResponse, Fault> {
        let start = Instant::now();
        let result = self.encode_unrecorded(plugin, settings, request, verdict).await;
        plugin.stats.record(start.elapsed(), outcome(&result));
        result
    }

    /// `encode`, not counted in the plugin's stats.
    async fn encode_unrecorded(
        &self,
        plugin: &Arc<Plugin>,
        settings: Settings,
        request: Arc<wit::HttpRequest>,
        verdict: wit::Verdict,
    ) -> Result<wit::HttpResponse, Fault> {
        let mut call = self.instance(plugin, settings).await?;
        let reply = call.adapter.encode(&mut call.store, &request, &verdict).await.map_err(|e| call.fault(&e))?;
        if !(200..=599).contains(&reply.status) {
            return Err(malformed(format!("encode returned HTTP status {}", reply.status)));
        }
        if reply.body.len() > MAX_REPLY_BYTES {
            return Err(malformed(format!(
                "encode returned a {} byte body; the limit is {MAX_REPLY_BYTES}",
                reply.body.len()
            )));
        }
        Ok(reply)
    }

    /// A fresh instance of `plugin` in its own store, holding a pool slot.
    async fn instance(&self, plugin: &Arc<Plugin>, settings: Settings) -> Result<Call, Fault> {
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| {
            Fault::new(FaultComponent::Plugin, FaultKind::Unavailable, "the plugin runtime is shutting down")
        })?;
        let mut store = self.store(&plugin.name, settings, plugin.granted.clone());
        let adapter = plugin.pre.instantiate(&mut store).await.map_err(|e| classify(&e, &store))?;
        Ok(Call { store, adapter, _permit: permit })
    }
}

/// One plugin call in progress: its store, instance and pool slot.
struct Call {
    store: Store<PluginState>,
    adapter: Adapter,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Call {
    fn fault(&self, error: &anyhow::Error) -> Fault {
        classify(error, &self.store)
    }
}

fn new_store(
    engine: &Engine,
    limits: &PluginLimits,
    plugin: &str,
    settings: Settings,
    granted: Arc<Granted>,
    kv: Option<Kv>,
) -> Store<PluginState> {
    let state = PluginState {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
        limiter: MemoryCap {
            max_bytes: usize::try_from(limits.memory_limit_mib * 1024 * 1024).unwrap_or(usize::MAX),
            exceeded: false,
        },
        settings,
        plugin: Arc::from(plugin),
        logs: 0,
        ticks: 0,
        granted,
        kv,
        waited_ms: 0,
        deadline_ms: limits.deadline_ms,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Every tick the guest yields to the other tasks of its worker; past the
    // deadline (+1: the first tick may be about to end) it traps.
    let budget = limits.deadline_ms + 1;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        let state = ctx.data_mut();
        state.ticks += 1;
        if state.ticks + state.waited_ms >= budget {
            return Err(Trap::Interrupt.into());
        }
        Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
    });
    store
}

fn outcome<T>(result: &Result<T, Fault>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(f) if f.kind == FaultKind::Rejected => Outcome::Rejected,
        Err(_) => Outcome::Fault,
    }
}

fn malformed(message: String) -> Fault {
    Fault::new(FaultComponent::Plugin, FaultKind::Malformed, message)
}

/// Name a failed call: memory cap, deadline, or another trap.
fn classify(error: &anyhow::Error, store: &Store<PluginState>) -> Fault {
    let first = format!("{error:#}").lines().next().unwrap_or_default().to_owned();
    let cap = store.data().limiter.max_bytes / (1024 * 1024);
    if store.data().limiter.exceeded {
        return Fault::new(
            FaultComponent::Plugin,
            FaultKind::Memory,
            format!("plugin tried to grow its memory past the {cap} MiB cap"),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            Fault::new(FaultComponent::Plugin, FaultKind::Deadline, "plugin call overran its deadline")
        }
        Some(trap) => Fault::new(FaultComponent::Plugin, FaultKind::Trap, format!("plugin trapped: {trap}")),
        None => Fault::new(FaultComponent::Plugin, FaultKind::Trap, format!("plugin call failed: {first}")),
    }
}

/// The `arbiter:plugin` version whose interfaces a component imports; `None`
/// when it imports none of them.
fn wit_version(engine: &Engine, component: &Component) -> Result<Option<&'static str>, String> {
    let ty = component.component_type();
    let mut found: Option<&'static str> = None;
    for (name, _) in ty.imports(engine) {
        let Some(rest) = name.strip_prefix("arbiter:plugin/") else { continue };
        let version = match rest.rsplit_once('@').map(|(_, v)| v) {
            Some("0.1.0") => WIT_V1,
            Some("0.2.0") => WIT_V2,
            _ => return Err(format!("import `{name}` is of no `arbiter:plugin` version this host serves")),
        };
        if found.is_some_and(|f| f != version) {
            return Err("the component imports interfaces of two `arbiter:plugin` versions".to_owned());
        }
        found = Some(version);
    }
    Ok(found)
}

/// Refuse core modules and non-WebAssembly files with a clear message
/// before the compiler sees them.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    const COMPONENT_MAGIC: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    if bytes.len() < 8 || bytes.get(..8) != Some(&COMPONENT_MAGIC[..]) {
        return Err("not a WebAssembly component (bad header; core modules are not plugins)".to_owned());
    }
    Ok(())
}

/// Plugins compiled into the binary by `build.rs`: `BUNDLED` holds
/// `(name, signed bundle bytes)`, `PUBLISHER_KEY` the public key of the
/// `arbiter-bundled` publisher that signed them during this build.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));
}
