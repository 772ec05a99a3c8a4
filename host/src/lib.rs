//! Arbiter: a runtime security host for AI-agent actions (AARM).
//!
//! Agent platforms call Arbiter through their governance hooks before each
//! tool call. An adapter plugin (a sandboxed WebAssembly component) turns the
//! vendor's event into a canonical action; Cedar policy and the session's
//! history decide it; the adapter answers in the vendor's format; and a
//! signed, hash-chained receipt of the decision is made durable before the
//! answer leaves. Any fault on that path blocks the action.
//!
//! The path of one callback reads top to bottom in [`pipeline`].

#![deny(missing_docs)]

pub mod alignment;
pub mod api;
pub mod auth;
pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod context;
pub mod credentials;
pub mod inbound;
pub mod jwks;
pub mod limits;
pub mod mcp_gateway;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod plugins;
pub mod policy;
pub mod receipt_bundle;
pub mod receipts;
pub mod shim;
pub mod store;
pub mod tenants;
pub mod tlog;
pub mod tokens;
pub mod workflow;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;
use crate::credentials::{ReceiptKey, Token};

/// Start the service and run until SIGINT/SIGTERM.
///
/// Prints one JSON line `{"event":"listening","addr":"IP:PORT"}` to stdout
/// once it accepts connections (logs go to stderr).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let data = &config.data_dir;
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // Receipts and session logs describe what agents did: owner only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
            .with_context(|| format!("cannot create data dir `{}`", data.display()))?;
        let mode = std::fs::metadata(data)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(data_dir = %data.display(), mode = format!("{:o}", mode & 0o777), "data dir is readable by other users; chmod 700 it");
        }
    }

    let ingress_token = Token::resolve(
        config.auth.ingress_token.as_deref(),
        config.auth.ingress_token_file.as_deref(),
        &data.join("ingress.token"),
    )?;
    let admin_token = Token::resolve(
        config.auth.admin_token.as_deref(),
        config.auth.admin_token_file.as_deref(),
        &data.join("admin.token"),
    )?;
    let key = Arc::new(ReceiptKey::load_or_create(&data.join("keys").join(ReceiptKey::FILE_NAME))?);

    let store = store::Store::open_with(&data.join("store"), key.clone(), config.store.max_batch, config.log.options())
        .context("cannot open the store")?;

    let tenancy = Arc::new(tenants::Tenancy::from_config(&config));
    let pdp = Arc::new(policy::Pdp::new(
        tenant_pack(&store, tenants::DEFAULT, config.policies.as_deref())?,
        config.default_posture,
    ));
    let mut tenant_pdps = std::collections::HashMap::new();
    for (id, tenant) in &config.tenants {
        let pack = tenant_pack(&store, id, tenant.policies.as_deref())?;
        tenant_pdps.insert(id.clone(), Arc::new(policy::Pdp::new(pack, config.default_posture)));
    }

    let started = std::time::Instant::now();
    let dirs = plugins::PluginDirs {
        plugins: config.plugin_dir(),
        cache: config.plugins.cache.then(|| data.join("plugin-cache")),
    };
    let plugins = Arc::new(plugins::PluginHost::new(&config.plugins)?.with_dirs(dirs).with_kv(store.plugin_kv()?));
    // Base versions first (the binary's, then unsigned files), then the
    // bundles installed before the last stop, which serve over them.
    plugins.load_bundled().await.context("bundled plugins")?;
    plugins.load_dir(&config.plugin_dir()).await?;
    plugins.load_installed().await?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis(), plugins = plugins.list().len(), "plugins loaded");
    if config.plugins.watch_interval_ms > 0 {
        plugins.watch(Duration::from_millis(config.plugins.watch_interval_ms));
    }
    for (name, integration) in &config.integrations {
        anyhow::ensure!(
            plugins.get(&integration.plugin).is_some(),
            "integration `{name}` needs plugin `{}`, which is not loaded",
            integration.plugin
        );
    }

    let embedder = pipeline::embedder(&config.alignment)?;
    tracing::info!(provider = embedder.name(), "alignment scoring");
    let webhooks = config.approvals.groups.iter().map(|(g, c)| (g.clone(), c.webhooks.clone())).collect();
    let notifier = notify::Notifier::new(&webhooks).context("approvals.groups")?;
    let workflow =
        workflow::Workflow::open(store.clone(), notifier, config.approvals.clone(), config.deferrals.clone())?;
    workflow.start().await?;
    let integrations = pipeline::integrations(&config.integrations, &config.ingress);
    let tokens = Arc::new(tokens::TokenStore::load(store.clone()).context("cannot load the API tokens")?);
    let pipeline = Arc::new(
        pipeline::Pipeline::new(plugins, pdp, store, integrations, embedder, workflow)?
            .with_tenants(tenancy.clone(), tenant_pdps)?,
    );
    let mut approvers = Vec::new();
    for (identity, auth) in &config.auth.approvers {
        let token = Token::resolve(
            auth.token.as_deref(),
            auth.token_file.as_deref(),
            &data.join("approvers").join(format!("{identity}.token")),
        )?;
        approvers.push(auth::BootstrapApprover {
            identity: identity.clone(),
            token,
            groups: auth.groups.clone(),
            tenant: auth.tenant.clone().unwrap_or_else(|| tenants::DEFAULT.to_owned()),
        });
    }
    let oidc = config.auth.oidc.as_ref().map(|o| auth::Oidc::new(o, &tenancy)).transpose().context("auth.oidc")?;
    let authenticator = auth::Authenticator::new(ingress_token, admin_token, approvers, tokens, oidc);
    authenticator.warm().await;
    let mut integration_auth = std::collections::HashMap::new();
    for (name, integration) in &config.integrations {
        if let Some(auth) = &integration.auth {
            let verifier = inbound::Verifier::new(auth, &data.join("integrations").join(format!("{name}.token")))
                .with_context(|| format!("integrations.{name}.auth"))?;
            verifier.warm().await;
            integration_auth.insert(name.clone(), verifier);
        }
    }
    let state = api::AppState {
        pipeline,
        auth: Arc::new(authenticator),
        integration_auth: Arc::new(integration_auth),
        key,
        body_limit: config.ingress.body_limit_bytes,
        max_concurrent: config.ingress.max_concurrent_requests,
        request_timeout: Duration::from_millis(config.ingress.request_timeout_ms),
        default_posture: config.default_posture,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    println!("{}", serde_json::json!({"event": "listening", "addr": addr.to_string()}));
    tracing::info!(%addr, data_dir = %data.display(), "arbiter listening");
    axum::serve(listener, api::app(state)).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

/// The pack a tenant starts with: its uploaded pack in force (which survives
/// restarts), else its configured directory, else the bundled baseline.
fn tenant_pack(
    store: &store::Store,
    tenant: &str,
    dir: Option<&std::path::Path>,
) -> anyhow::Result<policy::PolicyPack> {
    let pack = match store.tenant_active_pack(tenant)? {
        Some(key) => {
            let doc = store.pack(&key)?.with_context(|| format!("the active uploaded pack `{key}` is missing"))?;
            let files = doc
                .get("files")
                .and_then(serde_json::Value::as_object)
                .map(|f| {
                    f.iter().map(|(p, c)| (p.clone(), c.as_str().unwrap_or_default().as_bytes().to_vec())).collect()
                })
                .unwrap_or_default();
            tracing::warn!(%tenant, pack = %key, "an uploaded policy pack is in force; the configured directory is not used");
            policy::PolicyPack::from_files(files).with_context(|| format!("uploaded policy pack `{key}`"))?
        }
        None => match dir {
            Some(dir) => policy::PolicyPack::load(dir).with_context(|| format!("policy pack `{}`", dir.display()))?,
            None => policy::PolicyPack::bundled().context("bundled policy pack")?,
        },
    };
    let id = pack.identity();
    tracing::info!(%tenant, pack = %id.pack, version = %id.version, hash = %id.hash, policies = pack.len(), "policy pack loaded");
    Ok(pack)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}
