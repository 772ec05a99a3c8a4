//! The path of one callback, top to bottom (ARCHITECTURE.md):
//!
//! 1. the adapter plugin decodes the vendor request into canonical events;
//! 2. intents, observations and lifecycle events enter the session log;
//! 3. each action is decided by the PDP against the session so far;
//! 4. the adapter encodes the verdict as the vendor's reply;
//! 5. one signed receipt per action is made durable;
//! 6. only then is the reply sent.
//!
//! Nothing answers ALLOW unless every step succeeded. A plugin fault (trap,
//! deadline, memory, malformed output), a policy fault or a store fault
//! turns the answer into the plugin's blocking reply, and the receipt says
//! why. If even the receipt cannot be written, the reply still blocks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::alignment::{self, EmbeddingProvider};
use crate::config::StepUpMode;
use crate::context::{EntryDraft, EntryKind, SessionSummary};
use crate::limits::Limits;
use crate::model::{
    AssertedBy, CanonicalAction, Decision, Fault, FaultComponent, FaultKind, RequesterContext, now_rfc3339,
};
use crate::plugins::{Plugin, PluginHost, Settings, wit};
use crate::policy::{Pdp, PolicyOutcome, Scores};
use crate::receipts::{ReceiptBody, ReceiptDraft, SealError};
use crate::store::{ContextError, Store, StoreError};
use crate::tenants::{self, Tenancy};
use crate::workflow::{Hold, HoldKind, HoldStatus, Verdict, Workflow, WorkflowError, args_hash};

/// JSON Schema of the canonical action (contract in `wit/schemas/`).
const ACTION_SCHEMA: &str = include_str!("../../wit/schemas/canonical-action.v1.json");

/// Most of a vendor reply kept in the receipt; larger bodies are recorded by
/// hash only.
const MAX_RECORDED_REPLY: usize = 64 * 1024;

/// Longest wait for the receipt of a refused request: the refusal must
/// answer inside the vendor's budget even when the store is what is slow.
const REFUSAL_RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Errors the pipeline reports instead of a vendor reply.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// No integration of that name is configured.
    #[error("unknown integration `{0}`")]
    UnknownIntegration(String),
    /// The integration's plugin is not loaded, so no vendor reply can be
    /// formed; the caller answers with a plain error.
    #[error("the plugin for integration `{0}` is not loaded")]
    PluginMissing(String),
    /// An `/v1/evaluate` body breaks the canonical action schema.
    #[error("invalid canonical action: {0}")]
    InvalidAction(String),
    /// The receipt could not be written, so no decision can be given.
    #[error("the decision could not be recorded: {0}")]
    Unrecorded(#[from] StoreError),
}

/// One configured integration.
#[derive(Debug, Clone)]
pub struct Integration {
    /// Plugin serving it.
    pub plugin: String,
    /// Settings the plugin may read.
    pub settings: Settings,
    /// How STEP_UP reaches the vendor (`None`: from the plugin's declared
    /// capabilities).
    pub step_up: Option<StepUpMode>,
    /// Events whose STEP_UP is held whatever `step_up` says.
    pub step_up_hold_events: Vec<String>,
    /// Cap on how long a held hook waits (`None`: the services' own).
    pub hold: Option<std::time::Duration>,
    /// Rate, concurrency and deadline bounds of its hooks.
    pub limits: Arc<Limits>,
}

/// What goes back to a hook caller.
#[derive(Debug)]
pub struct HookReply {
    /// The vendor reply.
    pub response: wit::HttpResponse,
    /// Receipt of the (most restrictive) decision, when one was written.
    pub receipt_id: Option<String>,
    /// The decision, when the request held one.
    pub decision: Option<Decision>,
}

/// What goes back to an `/v1/evaluate` caller.
#[derive(Debug, serde::Serialize)]
pub struct EvaluateReply {
    /// The decision.
    pub decision: Decision,
    /// Why.
    pub reason: String,
    /// The durable receipt.
    pub receipt_id: String,
    /// Rewritten parameters for MODIFY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_parameters: Option<Map<String, Value>>,
    /// STEP_UP: the pending approval; retry the identical action once it is
    /// approved (`GET /v1/approvals/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// DEFER: the pending deferral.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferral_id: Option<String>,
}

/// A decided action on its way to a receipt.
struct Decided {
    action: CanonicalAction,
    outcome: PolicyOutcome,
    receipt_id: String,
    /// The receipt's `approval` and `deferral` members.
    approval: Value,
    deferral: Value,
    /// Holds this receipt creates or updates (stored in its batch).
    holds: Vec<Hold>,
    /// A pending hold the hook may wait on (hold mode).
    wait_on: Option<(HoldKind, String)>,
}

impl Decided {
    fn new(action: CanonicalAction, outcome: PolicyOutcome, receipt_id: String) -> Self {
        Self {
            action,
            outcome,
            receipt_id,
            approval: Value::Null,
            deferral: Value::Null,
            holds: Vec::new(),
            wait_on: None,
        }
    }

    /// The action proceeds on a resolved hold bound to it (one use taken).
    fn proceed_on(&mut self, hold: Hold) {
        let r = hold.resolution.as_ref();
        let (word, id) = match hold.kind {
            HoldKind::Approval => ("approved", "arbiter.approval.approved"),
            HoldKind::Deferral => ("resolved", "arbiter.deferral.resolved"),
        };
        self.outcome.decision = Decision::Allow;
        self.outcome.reason = format!(
            "{} by {} ({} `{}`, use {} of {})",
            word,
            r.map_or("?", |r| r.by.as_str()),
            hold.kind.name(),
            hold.id,
            hold.uses,
            hold.max_uses
        );
        self.outcome.policy_ids.push(id.to_owned());
        self.outcome.modified_parameters = None;
        let member = hold.resolved_member(&hold.receipt_id);
        match hold.kind {
            HoldKind::Approval => self.approval = member,
            HoldKind::Deferral => self.deferral = member,
        }
        self.holds.push(hold);
    }
}

/// The pipeline and the components it ties together.
pub struct Pipeline {
    plugins: Arc<PluginHost>,
    /// The decision point in force. Swapped whole when a new pack is
    /// uploaded; each request loads it once, so it is decided and recorded
    /// by one pack even if a swap happens meanwhile.
    pdp: ArcSwap<Pdp>,
    /// The same, for each tenant but `default` (whose is `pdp`).
    tenant_pdps: HashMap<String, ArcSwap<Pdp>>,
    /// Who owns which integration and session.
    tenancy: Arc<Tenancy>,
    store: Store,
    integrations: HashMap<String, Integration>,
    action_schema: jsonschema::Validator,
    embedder: Arc<dyn EmbeddingProvider>,
    workflow: Arc<Workflow>,
    /// Client of the pack's evidence resolvers.
    http: reqwest::Client,
}

impl Pipeline {
    /// Tie the components together. Fails if the bundled schema is broken.
    pub fn new(
        plugins: Arc<PluginHost>,
        pdp: Arc<Pdp>,
        store: Store,
        integrations: HashMap<String, Integration>,
        embedder: Arc<dyn EmbeddingProvider>,
        workflow: Arc<Workflow>,
    ) -> anyhow::Result<Self> {
        let schema: Value = serde_json::from_str(ACTION_SCHEMA)?;
        let action_schema = jsonschema::validator_for(&schema).map_err(|e| anyhow::anyhow!("action schema: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            plugins,
            pdp: ArcSwap::new(pdp),
            tenant_pdps: HashMap::new(),
            tenancy: Arc::new(Tenancy::single()),
            store,
            integrations,
            action_schema,
            embedder,
            workflow,
            http,
        })
    }

    /// Serve several tenants: `pdps` holds the decision point of every
    /// tenant of `tenancy` but `default`.
    pub fn with_tenants(mut self, tenancy: Arc<Tenancy>, pdps: HashMap<String, Arc<Pdp>>) -> anyhow::Result<Self> {
        for id in tenancy.ids().filter(|t| *t != tenants::DEFAULT) {
            anyhow::ensure!(pdps.contains_key(id), "tenant `{id}` has no policy pack");
        }
        self.tenant_pdps = pdps.into_iter().map(|(t, p)| (t, ArcSwap::new(p))).collect();
        self.tenancy = tenancy;
        Ok(self)
    }

    /// The tenants.
    pub fn tenancy(&self) -> &Arc<Tenancy> {
        &self.tenancy
    }

    /// The decision point of `tenant` (`default`'s for a tenant that does
    /// not exist, which no caller can name: tenants come from config).
    pub fn tenant_pdp(&self, tenant: &str) -> Arc<Pdp> {
        self.tenant_pdps.get(tenant).map_or_else(|| self.pdp.load_full(), ArcSwap::load_full)
    }

    /// Put a new decision point in force for `tenant` only (a tenant that
    /// does not exist changes nothing; callers check it first).
    pub fn swap_tenant_pdp(&self, tenant: &str, pdp: Arc<Pdp>) {
        if tenant == tenants::DEFAULT {
            self.pdp.store(pdp);
        } else if let Some(p) = self.tenant_pdps.get(tenant) {
            p.store(pdp);
        }
    }

    /// The approval and deferral services (for the API).
    pub fn workflow(&self) -> &Arc<Workflow> {
        &self.workflow
    }

    /// The store (for the review API).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The PDP (for the review API).
    pub fn pdp(&self) -> Arc<Pdp> {
        self.pdp.load_full()
    }

    /// Put a new decision point in force. Requests already deciding finish
    /// with the one they loaded.
    pub fn swap_pdp(&self, pdp: Arc<Pdp>) {
        self.pdp.store(pdp);
    }

    /// The plugin host (for the plugin API).
    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
    }

    /// Configured integrations that `plugin` serves, sorted.
    pub fn integrations_using(&self, plugin: &str) -> Vec<String> {
        let mut names: Vec<String> =
            self.integrations.iter().filter(|(_, i)| i.plugin == plugin).map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }

    /// Whether `name` is a configured integration.
    pub fn has_integration(&self, name: &str) -> bool {
        self.integrations.contains_key(name)
    }

    /// Govern one vendor hook request, within the integration's limits: a
    /// hook over its rate or concurrency, or not answered by its deadline,
    /// gets the plugin's blocking reply and a receipt naming the limit.
    pub async fn handle_hook(&self, integration: &str, request: wit::HttpRequest) -> Result<HookReply, PipelineError> {
        let config = self
            .integrations
            .get(integration)
            .ok_or_else(|| PipelineError::UnknownIntegration(integration.to_owned()))?;
        let plugin =
            self.plugins.get(&config.plugin).ok_or_else(|| PipelineError::PluginMissing(integration.to_owned()))?;
        let request = Arc::new(request);
        let pdp = self.tenant_pdp(self.tenancy.of_integration(integration));
        let _admission = match config.limits.admit() {
            Ok(a) => a,
            Err(fault) => return Ok(self.refuse(&pdp, integration, &plugin, &request, None, Vec::new(), fault).await),
        };
        let deadline = config.limits.timeout();
        match tokio::time::timeout(deadline, self.govern(config, &plugin, &pdp, integration, request.clone())).await {
            Ok(reply) => reply,
            // Receipts the abandoned attempt already wrote stay; this one
            // records the block that was actually answered.
            Err(_) => {
                let fault = Fault::new(
                    FaultComponent::Ingress,
                    FaultKind::Deadline,
                    format!(
                        "deadline exceeded: integration `{integration}` answers within {} ms",
                        deadline.as_millis()
                    ),
                );
                Ok(self.refuse(&pdp, integration, &plugin, &request, None, Vec::new(), fault).await)
            }
        }
    }

    async fn govern(
        &self,
        config: &Integration,
        plugin: &Arc<Plugin>,
        pdp: &Arc<Pdp>,
        integration: &str,
        request: Arc<wit::HttpRequest>,
    ) -> Result<HookReply, PipelineError> {
        let (plugin, pdp) = (plugin.clone(), pdp.clone());
        let settings = config.settings.clone();

        // 1. Decode.
        let decoded = match self.plugins.decode(&plugin, settings.clone(), request.clone()).await {
            Ok(d) => d,
            Err(fault) => return Ok(self.block_undecoded(&pdp, integration, &plugin, &request, fault).await),
        };
        let mut requester = match requester_context(&decoded.requester) {
            Ok(r) => r,
            Err(fault) => return Ok(self.block_undecoded(&pdp, integration, &plugin, &request, fault).await),
        };
        // The tenant is the integration's, whatever the payload says.
        let tenant = self.tenancy.of_integration(integration);
        requester.session = self.tenancy.session_key(tenant, &requester.session);
        if let Err(fault) = config.limits.admit_session(&requester.session) {
            // Nothing of a refused request enters the session log; its
            // actions are recorded as refused.
            let actions = decoded
                .events
                .into_iter()
                .filter_map(|e| match e {
                    wit::Event::Action(a) => self.canonical_action(a, &requester, integration).ok(),
                    _ => None,
                })
                .map(|a| pdp.map_action(a))
                .collect();
            return Ok(self.refuse(&pdp, integration, &plugin, &request, Some(&requester), actions, fault).await);
        }

        // 2. Context events first, so an intent in this request precedes its actions.
        let mut actions = Vec::new();
        let mut context_fault = None;
        for event in decoded.events {
            let (kind, data) = match event {
                wit::Event::Action(a) => {
                    actions.push(self.canonical_action(a, &requester, integration).map(|a| pdp.map_action(a)));
                    continue;
                }
                wit::Event::Intent(i) => {
                    // Vendors that resend the user's message with every tool
                    // call (Copilot Studio) would restart the drift each time.
                    if self.store.session_summary(&requester.session).is_ok_and(|s| {
                        s.latest_intent.as_deref() == Some(crate::context::stored_intent(&i.text).as_str())
                    }) {
                        continue;
                    }
                    (EntryKind::Intent, json!({"text": i.text, "event_kind": i.event_kind}))
                }
                wit::Event::Observation(o) => (EntryKind::Observation, observation_data(&pdp, &o)),
                wit::Event::SessionStart(l) => (EntryKind::SessionStart, lifecycle_data(&l)),
                wit::Event::SessionEnd(l) => (EntryKind::SessionEnd, lifecycle_data(&l)),
                wit::Event::Other(l) => (EntryKind::Other, lifecycle_data(&l)),
            };
            let draft = EntryDraft { session_id: requester.session.clone(), kind, data };
            if let Err(e) = self.store.append_entry(draft).await {
                context_fault = Some(Fault::new(FaultComponent::Store, FaultKind::Unavailable, e.to_string()));
            }
        }

        // New context may settle actions deferred earlier in this session.
        if context_fault.is_none()
            && self.workflow.has_pending_deferrals(&requester.session)
            && let Err(e) = self.redecide_deferrals(&requester.session, "context", "arbiter").await
        {
            tracing::warn!(error = %e, "re-deciding deferred actions failed; they stay pending");
        }

        // 3. Decide, on the session as its verified log describes it.
        let summary = self.store.verified_summary(&requester.session).map_err(context_fault_of);
        let mut decided = Vec::with_capacity(actions.len());
        for action in actions {
            let receipt_id = uuid::Uuid::now_v7().to_string();
            let outcome = match (&action, &summary, &context_fault) {
                (Err(fault), _, _) | (_, Err(fault), _) | (_, _, Some(fault)) => fault_outcome(fault.clone()),
                (Ok(a), Ok(s), None) => pdp.decide(a, s, &self.scores(s, a).await),
            };
            let action = action.unwrap_or_else(|_| stand_in_action(integration, &request, Some(&requester)));
            let mut d = Decided::new(action, outcome, receipt_id);
            if d.outcome.fault.is_none() {
                let mode = step_up_mode(config, &plugin, &d.action.event_kind);
                self.apply_holds(&pdp, &mut d, mode);
            }
            decided.push(d);
        }

        // 4. Encode the most restrictive verdict.
        let lead = decided.iter().max_by_key(|d| d.outcome.decision.severity());
        let verdict = match lead {
            Some(d) => wit::Verdict {
                decision: match (&d.wait_on, d.outcome.decision) {
                    // Hold mode: the vendor gets a block naming the approval.
                    (Some((HoldKind::Approval, _)), _) => wit::Decision::Deny,
                    (_, decision) => to_wit(decision),
                },
                reason: match &d.wait_on {
                    Some((kind, id)) => pending_reason(*kind, id, &d.outcome.reason),
                    None => d.outcome.reason.clone(),
                },
                receipt_id: Some(d.receipt_id.clone()),
                modified_parameters_json: d
                    .outcome
                    .modified_parameters
                    .as_ref()
                    .map(|p| Value::Object(p.clone()).to_string()),
                fault: d.outcome.fault.is_some(),
                decided: true,
            },
            None => match &context_fault {
                None => wit::Verdict {
                    decision: wit::Decision::Allow,
                    reason: "recorded".to_owned(),
                    receipt_id: None,
                    modified_parameters_json: None,
                    fault: false,
                    decided: false,
                },
                Some(f) => wit::Verdict {
                    decision: wit::Decision::Deny,
                    reason: format!("blocked: the session context could not be recorded ({})", f.message),
                    receipt_id: None,
                    modified_parameters_json: None,
                    fault: true,
                    decided: false,
                },
            },
        };
        let lead_receipt = lead.map(|d| d.receipt_id.clone());
        // A plugin that just broke the contract is not asked to phrase the
        // answer: its blocking reply is used instead.
        let plugin_fault =
            decided.iter().find_map(|d| d.outcome.fault.as_ref().filter(|f| f.component == FaultComponent::Plugin));
        let encoded = match plugin_fault {
            Some(f) => Err(f.clone()),
            None => self.plugins.encode(&plugin, settings, request.clone(), verdict).await,
        };
        let response = match encoded {
            Ok(r) => r,
            Err(fault) => {
                // The plugin could not say it; the decision becomes a block.
                for d in &mut decided {
                    d.outcome = forced_deny(&d.outcome, fault.clone());
                }
                plugin.blocking_reply(&format!("blocked: {}", fault.message))
            }
        };
        let decision = decided.iter().map(|d| d.outcome.decision).max_by_key(|d| d.severity());

        // 5. Receipts, durable before the reply.
        let waits = decided.len() == 1;
        let mut wait_on = None;
        for d in decided {
            let draft = receipt_draft(&pdp, &d, Some((&plugin, integration)), Some(&response), true, tenant)
                .map_err(StoreError::from);
            let written = match draft {
                Ok(draft) => self.store.append_receipt(draft).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::error!(error = %e, "receipt not written; blocking");
                return Ok(HookReply {
                    response: plugin.blocking_reply(&format!("blocked: the decision could not be recorded ({e})")),
                    receipt_id: None,
                    decision: Some(Decision::Deny),
                });
            }
            for hold in d.holds {
                self.workflow.register(hold, self.workflow.public_url());
            }
            // Not when a fault forced the answer: that block stands.
            if waits && d.wait_on.is_some() && d.outcome.fault.is_none() {
                wait_on = d.wait_on.map(|w| (w, d.action, d.receipt_id));
            }
        }

        // 6. A held action: ask the pack's evidence resolvers (deferrals),
        // then wait (bounded) for its approver or evidence, and answer the
        // moment it is resolved.
        let hold_for =
            |kind| config.hold.map_or(self.workflow.hold_time(kind), |h| h.min(self.workflow.hold_time(kind)));
        if let Some(((HoldKind::Deferral, id), _, _)) = &wait_on
            && !hold_for(HoldKind::Deferral).is_zero()
        {
            self.gather_evidence(&pdp, id).await;
        }
        if let Some(((kind, id), action, held_receipt)) = wait_on
            && !hold_for(kind).is_zero()
            && let Some(resolution) = self.workflow.wait(&id, hold_for(kind)).await
        {
            let resolved = self
                .answer_resolved(
                    &pdp,
                    &plugin,
                    integration,
                    config.settings.clone(),
                    &request,
                    kind,
                    &id,
                    action,
                    &held_receipt,
                    resolution,
                )
                .await;
            return Ok(resolved);
        }
        Ok(HookReply { response, receipt_id: lead_receipt, decision })
    }

    /// The answer to a hook whose held action was resolved while it waited:
    /// the action proceeds on its hold (one use) or is refused, with a
    /// receipt of that answer.
    #[allow(clippy::too_many_arguments, reason = "the facts of one held request")]
    async fn answer_resolved(
        &self,
        pdp: &Pdp,
        plugin: &Arc<Plugin>,
        integration: &str,
        settings: Settings,
        request: &Arc<wit::HttpRequest>,
        kind: HoldKind,
        id: &str,
        action: CanonicalAction,
        held_receipt: &str,
        resolution: crate::workflow::Resolution,
    ) -> HookReply {
        let receipt_id = uuid::Uuid::now_v7().to_string();
        let what = kind.name();
        let base = PolicyOutcome::blocked(String::new());
        let mut d = Decided::new(action, base, receipt_id.clone());
        match self.workflow.take_use(kind, &d.action) {
            Some(hold) if resolution.decision.proceeds() => {
                d.outcome.context_hash = hold.context_hash.clone();
                d.outcome.session = hold.session_view.clone();
                d.outcome.policy_ids = hold.policy_ids.clone();
                d.proceed_on(hold);
            }
            _ => {
                let hold = self.workflow.get(kind, id);
                d.outcome.reason = match resolution.decision {
                    Decision::StepUp => {
                        format!("{what} `{id}` was resolved: the action now needs approval; retry it to request one")
                    }
                    _ => format!("{what} `{id}` was {} by {}: the action is refused", resolution.method, resolution.by),
                };
                d.outcome.policy_ids = vec![format!("arbiter.{what}.{}", resolution.method)];
                if let Some(hold) = hold {
                    let member = hold.resolved_member(held_receipt);
                    match kind {
                        HoldKind::Approval => d.approval = member,
                        HoldKind::Deferral => d.deferral = member,
                    }
                }
            }
        }
        let verdict = wit::Verdict {
            decision: to_wit(d.outcome.decision),
            reason: d.outcome.reason.clone(),
            receipt_id: Some(receipt_id.clone()),
            modified_parameters_json: None,
            fault: false,
            decided: true,
        };
        let encoded = self.plugins.encode(plugin, settings, request.clone(), verdict).await;
        let response = match encoded {
            Ok(r) => r,
            Err(fault) => {
                d.outcome = forced_deny(&d.outcome, fault.clone());
                plugin.blocking_reply(&format!("blocked: {}", fault.message))
            }
        };
        let tenant = self.tenancy.of_integration(integration);
        let draft = receipt_draft(pdp, &d, Some((plugin, integration)), Some(&response), true, tenant)
            .map_err(StoreError::from);
        let written = match draft {
            Ok(draft) => self.store.append_receipt(draft).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "receipt not written; blocking");
            return HookReply {
                response: plugin.blocking_reply(&format!("blocked: the decision could not be recorded ({e})")),
                receipt_id: None,
                decision: Some(Decision::Deny),
            };
        }
        for hold in d.holds {
            self.workflow.register(hold, None);
        }
        HookReply { response, receipt_id: Some(receipt_id), decision: Some(d.outcome.decision) }
    }

    /// STEP_UP and DEFER become holds; a resolved hold bound to this exact
    /// action lets it proceed; an action on the target of a pending
    /// deferral waits for it.
    fn apply_holds(&self, pdp: &Pdp, d: &mut Decided, mode: StepUpMode) {
        let wf = &self.workflow;
        let session = d.action.requester_context.session.clone();
        let tenant = self.tenancy.of_session(&session);
        match d.outcome.decision {
            Decision::StepUp => {
                if let Some(hold) = wf.take_use(HoldKind::Approval, &d.action) {
                    d.proceed_on(hold);
                } else if mode == StepUpMode::Ask {
                    // The vendor's own prompt: the human at the console decides.
                    d.approval = json!({"method": "vendor_console", "status": "asked",
                                        "approvers": d.outcome.approvers, "args_hash": args_hash(&d.action)});
                } else if let Some(hold) =
                    wf.bound(HoldKind::Approval, &d.action).filter(|h| h.status == HoldStatus::Pending)
                {
                    d.approval = hold.created_member();
                    d.wait_on = Some((HoldKind::Approval, hold.id));
                } else {
                    let hold = wf.new_hold(
                        HoldKind::Approval,
                        &d.receipt_id,
                        &d.action,
                        &d.outcome,
                        pdp.pack().identity(),
                        Vec::new(),
                        tenant,
                    );
                    d.approval = hold.created_member();
                    d.wait_on = Some((HoldKind::Approval, hold.id.clone()));
                    d.holds.push(hold);
                }
            }
            Decision::Defer => {
                if let Some(hold) = wf.take_use(HoldKind::Deferral, &d.action) {
                    d.proceed_on(hold);
                } else if let Some(hold) =
                    wf.bound(HoldKind::Deferral, &d.action).filter(|h| h.status == HoldStatus::Pending)
                {
                    d.deferral = hold.created_member();
                    d.wait_on = Some((HoldKind::Deferral, hold.id));
                } else if wf.pending_deferral_count(&session) >= wf.max_pending_deferrals() as usize {
                    d.outcome.decision = Decision::Deny;
                    d.outcome.reason = format!(
                        "{} — but this session already has {} deferred actions pending (the cap); \
                         resolve those first",
                        d.outcome.reason,
                        wf.max_pending_deferrals()
                    );
                    d.outcome.policy_ids.push("arbiter.deferral.cascade".to_owned());
                } else {
                    let missing = d.outcome.missing.clone();
                    let hold = wf.new_hold(
                        HoldKind::Deferral,
                        &d.receipt_id,
                        &d.action,
                        &d.outcome,
                        pdp.pack().identity(),
                        missing,
                        tenant,
                    );
                    d.deferral = hold.created_member();
                    d.wait_on = Some((HoldKind::Deferral, hold.id.clone()));
                    d.holds.push(hold);
                }
            }
            decision if decision.proceeds() => {
                // An action on the very target of a pending deferral (the file
                // it would write, the secret it would rotate) depends on it:
                // it stays deferred too. Other actions proceed.
                let dependency = wf.pending_deferrals(&session).into_iter().find(|h| {
                    d.action.resource.as_deref().is_some_and(|t| !t.is_empty())
                        && h.action.resource == d.action.resource
                });
                if let Some(dep) = dependency {
                    d.outcome.decision = Decision::Defer;
                    d.outcome.classification = Some("context_dependent_defer".to_owned());
                    d.outcome.reason = format!(
                        "waits for deferred action `{}` on the same target ({}): {}",
                        dep.id,
                        d.action.resource.as_deref().unwrap_or_default(),
                        dep.reason
                    );
                    d.outcome.policy_ids = vec!["arbiter.deferral.dependent".to_owned()];
                    d.outcome.modified_parameters = None;
                    d.deferral = json!({"id": dep.id, "reason": d.outcome.reason, "depends_on": dep.id,
                                        "resolution_method": "pending", "resolved_at": null, "resolves": null});
                }
            }
            _ => {}
        }
    }

    /// Record evidence on a session (the deferral service's input), then
    /// re-decide every deferred action of that session: those the evidence
    /// settles are resolved with a follow-up receipt; the rest stay pending.
    pub async fn supply_evidence(
        &self,
        session: &str,
        evidence: Map<String, Value>,
        method: &str,
        by: &str,
    ) -> Result<Vec<Hold>, WorkflowError> {
        let evidence: Map<String, Value> =
            evidence.into_iter().filter(|(k, v)| !k.is_empty() && k.len() <= 128 && v.is_string()).collect();
        let draft = EntryDraft {
            session_id: session.to_owned(),
            kind: EntryKind::Evidence,
            data: json!({"evidence": evidence, "by": by, "method": method}),
        };
        self.store.append_entry(draft).await?;
        self.redecide_deferrals(session, method, by).await
    }

    /// Ask the pack's evidence resolvers for what a deferral misses (all
    /// configured names at once, concurrently, each bounded by its
    /// timeout), and supply what they answer. A resolver that fails or says
    /// nothing usable leaves the deferral pending: never an ALLOW by itself.
    async fn gather_evidence(&self, pdp: &Pdp, id: &str) {
        let resolvers = pdp.evidence_resolvers();
        let Some(hold) = self.workflow.get(HoldKind::Deferral, id) else { return };
        if hold.status != HoldStatus::Pending || !hold.missing.iter().any(|m| resolvers.contains_key(m)) {
            return;
        }
        let question = |name: &str| {
            json!({"question": name, "deferral_id": hold.id, "session": hold.session,
                   "action": {"tool": hold.action.tool, "operation": hold.action.operation,
                              "target": hold.action.resource}})
        };
        let asks = resolvers.iter().map(|(name, r)| {
            let request = self
                .http
                .post(&r.url)
                .timeout(std::time::Duration::from_millis(r.timeout_ms))
                .json(&question(name))
                .send();
            async move {
                let value = match request.await {
                    Ok(resp) if resp.status().is_success() => resp.json::<Value>().await.ok(),
                    Ok(resp) => {
                        tracing::warn!(evidence = %name, status = %resp.status(), "evidence resolver refused");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(evidence = %name, error = %e.without_url(), "evidence resolver failed");
                        None
                    }
                };
                let answer = value.as_ref().and_then(|v| v.get("value")).and_then(Value::as_str);
                answer.filter(|a| a.len() <= 1024).map(|a| (name.clone(), Value::String(a.to_owned())))
            }
        });
        let evidence: Map<String, Value> = futures::future::join_all(asks).await.into_iter().flatten().collect();
        if evidence.is_empty() {
            return;
        }
        if let Err(e) = self.supply_evidence(&hold.session, evidence, "resolver", "evidence-resolver").await {
            tracing::warn!(error = %e, deferral = %hold.id, "supplying resolved evidence failed");
        }
    }

    /// Re-decide the pending deferrals of `session` on its current context.
    async fn redecide_deferrals(&self, session: &str, method: &str, by: &str) -> Result<Vec<Hold>, WorkflowError> {
        let pdp = self.tenant_pdp(self.tenancy.of_session(session));
        let summary = match self.store.verified_summary(session) {
            Ok(s) => s,
            Err(ContextError::Store(e)) => return Err(WorkflowError::Store(e)),
            Err(e @ ContextError::Tampered(_)) => return Err(WorkflowError::Forbidden(e.to_string())),
        };
        let mut resolved = Vec::new();
        for hold in self.workflow.pending_deferrals(session) {
            let outcome = pdp.decide(&hold.action, &summary, &self.scores(&summary, &hold.action).await);
            if outcome.decision == Decision::Defer {
                continue;
            }
            let verdict = Verdict { decision: outcome.decision, method, by, comment: None, reason: outcome.reason };
            let hold = self.workflow.resolve(HoldKind::Deferral, &hold.id, verdict).await?;
            resolved.push(hold);
        }
        Ok(resolved)
    }

    /// Block a request the plugin could not decode, with a receipt.
    async fn block_undecoded(
        &self,
        pdp: &Pdp,
        integration: &str,
        plugin: &Plugin,
        request: &wit::HttpRequest,
        fault: Fault,
    ) -> HookReply {
        self.refuse(pdp, integration, plugin, request, None, Vec::new(), fault).await
    }

    /// Answer with the plugin's blocking reply because of `fault`, with one
    /// receipt per action (or one for a stand-in of the request when it held
    /// none). Never touches the session log: a refused request is not part
    /// of the session. The receipt write is bounded, so a refusal answers
    /// even when the store is what is slow; without a receipt it still blocks.
    #[allow(clippy::too_many_arguments, reason = "the facts of one refused request")]
    async fn refuse(
        &self,
        pdp: &Pdp,
        integration: &str,
        plugin: &Plugin,
        request: &wit::HttpRequest,
        requester: Option<&RequesterContext>,
        actions: Vec<CanonicalAction>,
        fault: Fault,
    ) -> HookReply {
        let reason = format!("blocked: {}", fault.message);
        let response = plugin.blocking_reply(&reason);
        let actions = if actions.is_empty() { vec![stand_in_action(integration, request, requester)] } else { actions };
        let mut receipt_id = None;
        for action in actions {
            let d = Decided::new(action, fault_outcome(fault.clone()), uuid::Uuid::now_v7().to_string());
            let tenant = self.tenancy.of_integration(integration);
            let written = match receipt_draft(pdp, &d, Some((plugin, integration)), Some(&response), false, tenant) {
                Ok(draft) => tokio::time::timeout(REFUSAL_RECEIPT_WAIT, self.store.append_receipt(draft))
                    .await
                    .unwrap_or(Err(StoreError::Unavailable("the store did not answer in time"))),
                Err(e) => Err(StoreError::from(e)),
            };
            match written {
                Ok(_) => {
                    receipt_id.get_or_insert(d.receipt_id);
                }
                Err(e) => tracing::error!(error = %e, "fault receipt not written"),
            }
        }
        HookReply { response, receipt_id, decision: Some(Decision::Deny) }
    }

    /// Govern one action from an SDK-style caller acting in `tenant`.
    pub async fn evaluate(&self, tenant: &str, body: &Value) -> Result<EvaluateReply, PipelineError> {
        let errors: Vec<String> =
            self.action_schema.iter_errors(body).take(5).map(|e| format!("{} at `{}`", e, e.instance_path)).collect();
        if !errors.is_empty() {
            return Err(PipelineError::InvalidAction(errors.join("; ")));
        }
        let input: EvaluateInput =
            serde_json::from_value(body.clone()).map_err(|e| PipelineError::InvalidAction(e.to_string()))?;
        let pdp = self.tenant_pdp(tenant);
        let mut action = input.into_action();
        action.requester_context.session = self.tenancy.session_key(tenant, &action.requester_context.session);
        let action = pdp.map_action(action);
        let outcome = match self.store.verified_summary(&action.requester_context.session) {
            Ok(s) => pdp.decide(&action, &s, &self.scores(&s, &action).await),
            Err(e) => fault_outcome(context_fault_of(e)),
        };
        let mut d = Decided::new(action, outcome, uuid::Uuid::now_v7().to_string());
        if d.outcome.fault.is_none() {
            // SDK callers have no vendor prompt: STEP_UP goes to approvers.
            self.apply_holds(&pdp, &mut d, StepUpMode::Hold);
        }
        let draft = receipt_draft(&pdp, &d, None, None, true, tenant).map_err(StoreError::from)?;
        self.store.append_receipt(draft).await?;
        for hold in std::mem::take(&mut d.holds) {
            self.workflow.register(hold, self.workflow.public_url());
        }
        let (approval_id, deferral_id) = match &d.wait_on {
            Some((HoldKind::Approval, id)) => (Some(id.clone()), None),
            Some((HoldKind::Deferral, id)) => (None, Some(id.clone())),
            None => (None, None),
        };
        Ok(EvaluateReply {
            decision: d.outcome.decision,
            reason: d.outcome.reason,
            receipt_id: d.receipt_id,
            modified_parameters: d.outcome.modified_parameters,
            approval_id,
            deferral_id,
        })
    }

    /// Score the action against the session's latest intent. No intent, or
    /// an embedding service that fails or times out, leaves the score
    /// unknown: policies that read it then DEFER rather than guess.
    async fn scores(&self, session: &SessionSummary, action: &CanonicalAction) -> Scores {
        let unknown = Scores { alignment: None, confidence: 0.0, drift: session.drift };
        let Some(intent) = session.latest_intent.as_deref() else { return unknown };
        let texts = [intent.to_owned(), alignment::action_text(action)];
        match self.embedder.embed(&texts).await {
            Ok(v) => match (v.first(), v.get(1)) {
                (Some(i), Some(a)) => scores_from(session, intent, alignment::alignment_score(i, a)),
                _ => unknown,
            },
            Err(e) => {
                tracing::warn!(error = %e, provider = self.embedder.name(), "alignment unavailable; score unknown");
                unknown
            }
        }
    }

    /// Turn a plugin's action into a canonical action, or a malformed fault.
    fn canonical_action(
        &self,
        a: wit::Action,
        requester: &RequesterContext,
        integration: &str,
    ) -> Result<CanonicalAction, Fault> {
        let parameters = match serde_json::from_str::<Value>(&a.parameters_json) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(plugin_malformed("action parameters-json is not a JSON object")),
            Err(e) => return Err(plugin_malformed(&format!("action parameters-json is not JSON: {e}"))),
        };
        let action = CanonicalAction {
            action_id: a
                .call_id
                .filter(|c| !c.is_empty() && c.len() <= 128)
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            timestamp: now_rfc3339(),
            tool: a.tool,
            operation: a.operation,
            parameters,
            resource: a.resource,
            original_tool: a.original_tool,
            event_kind: a.event_kind,
            integration: integration.to_owned(),
            requester_context: requester.clone(),
        };
        let value = serde_json::to_value(&action).map_err(|e| plugin_malformed(&e.to_string()))?;
        if let Some(e) = self.action_schema.iter_errors(&value).next() {
            return Err(plugin_malformed(&format!("action breaks the canonical schema: {e} at `{}`", e.instance_path)));
        }
        Ok(action)
    }
}

/// Scores for an action whose alignment with `intent` is `score`: the drift
/// includes this action, exactly as the context log will fold it.
pub fn scores_from(session: &SessionSummary, intent: &str, score: f64) -> Scores {
    let previous = (session.scored_actions > 0).then_some(session.drift);
    Scores {
        alignment: Some(score),
        confidence: intent_confidence(intent),
        drift: alignment::fold_drift(previous, score),
    }
}

/// Scores with the built-in embedding, synchronously (for `policy test`).
pub fn builtin_scores(session: &SessionSummary, action: &CanonicalAction) -> Scores {
    match session.latest_intent.as_deref() {
        None => Scores { alignment: None, confidence: 0.0, drift: session.drift },
        Some(intent) => {
            let i = alignment::HashedEmbedder::embed_text(intent);
            let a = alignment::HashedEmbedder::embed_text(&alignment::action_text(action));
            scores_from(session, intent, alignment::alignment_score(&i, &a))
        }
    }
}

/// How much an alignment score can be trusted, from how much the intent
/// says: a lexical score against a two-word request means little. Grows
/// linearly to 1 at five words of two or more characters.
fn intent_confidence(intent: &str) -> f64 {
    let words = intent.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() >= 2).count();
    (words as f64 / 5.0).min(1.0)
}

/// Build the embedding provider from config.
pub fn embedder(config: &crate::config::AlignmentProviderConfig) -> anyhow::Result<Arc<dyn EmbeddingProvider>> {
    use crate::config::AlignmentProvider;
    Ok(match config.provider {
        AlignmentProvider::Builtin => Arc::new(alignment::HashedEmbedder),
        AlignmentProvider::Http => {
            let need = |what: &str| anyhow::anyhow!("alignment.provider = \"http\" needs `alignment.{what}`");
            let mut c = alignment::HttpEmbedderConfig::new(
                config.url.clone().ok_or_else(|| need("url"))?,
                config.model.clone().ok_or_else(|| need("model"))?,
                config.dimensions.ok_or_else(|| need("dimensions"))?,
            );
            if let Some(path) = &config.api_key_file {
                let key = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
                c.api_key = Some(key.trim().to_owned());
            }
            if let Some(ms) = config.timeout_ms {
                c.timeout = std::time::Duration::from_millis(ms);
            }
            Arc::new(alignment::HttpEmbedder::new(c)?)
        }
    })
}

/// The fault a session context failure forces: tampering is named as such.
fn context_fault_of(e: ContextError) -> Fault {
    match e {
        ContextError::Tampered(_) => Fault::new(FaultComponent::Context, FaultKind::Tampered, e.to_string()),
        ContextError::Store(e) => Fault::new(FaultComponent::Store, FaultKind::Unavailable, e.to_string()),
    }
}

fn plugin_malformed(message: &str) -> Fault {
    Fault::new(FaultComponent::Plugin, FaultKind::Malformed, format!("plugin returned a malformed action: {message}"))
}

/// The requester context a plugin reported, marked as vendor-asserted.
fn requester_context(r: &wit::Requester) -> Result<RequesterContext, Fault> {
    let attributes = match serde_json::from_str::<Value>(&r.attributes_json) {
        Ok(Value::Object(m)) => m,
        Ok(Value::Null) => Map::new(),
        _ => return Err(plugin_malformed("requester attributes-json is not a JSON object")),
    };
    if r.session.is_empty() || r.session.len() > 256 {
        return Err(plugin_malformed("requester session must be 1 to 256 bytes"));
    }
    Ok(RequesterContext {
        session: r.session.clone(),
        human: r.human.clone(),
        agent: r.agent.clone(),
        service: r.service.clone(),
        roles: r.roles.clone(),
        scope: r.scope.clone(),
        delegation_chain: r.delegation_chain.clone(),
        asserted_by: AssertedBy::Vendor,
        attributes,
    })
}

/// Stand-in action for a request that never became one: it records which
/// request it was (digest and size), never its content.
fn stand_in_action(
    integration: &str,
    request: &wit::HttpRequest,
    requester: Option<&RequesterContext>,
) -> CanonicalAction {
    let mut parameters = Map::new();
    parameters.insert("request_sha256".to_owned(), Value::String(hex::encode(Sha256::digest(&request.body))));
    parameters.insert("request_bytes".to_owned(), Value::from(request.body.len()));
    CanonicalAction {
        action_id: uuid::Uuid::now_v7().to_string(),
        timestamp: now_rfc3339(),
        tool: "unknown".to_owned(),
        operation: "unknown".to_owned(),
        parameters,
        resource: None,
        original_tool: String::new(),
        event_kind: String::new(),
        integration: integration.to_owned(),
        requester_context: requester.cloned().unwrap_or(RequesterContext {
            session: "unknown".to_owned(),
            human: None,
            agent: None,
            service: None,
            roles: Vec::new(),
            scope: Vec::new(),
            delegation_chain: Vec::new(),
            asserted_by: AssertedBy::Vendor,
            attributes: Map::new(),
        }),
    }
}

fn fault_outcome(fault: Fault) -> PolicyOutcome {
    PolicyOutcome { fault: Some(fault.clone()), ..PolicyOutcome::blocked(format!("blocked: {}", fault.message)) }
}

/// Keep the evaluation facts, but force a block because of `fault`.
fn forced_deny(outcome: &PolicyOutcome, fault: Fault) -> PolicyOutcome {
    PolicyOutcome {
        decision: Decision::Deny,
        reason: format!("blocked: {} (policy said {}: {})", fault.message, outcome.decision.as_str(), outcome.reason),
        modified_parameters: None,
        fault: Some(fault),
        ..outcome.clone()
    }
}

fn to_wit(d: Decision) -> wit::Decision {
    match d {
        Decision::Allow => wit::Decision::Allow,
        Decision::Deny => wit::Decision::Deny,
        Decision::Modify => wit::Decision::Modify,
        Decision::StepUp => wit::Decision::StepUp,
        Decision::Defer => wit::Decision::Defer,
    }
}

fn observation_data(pdp: &Pdp, o: &wit::Observation) -> Value {
    let output: Value = serde_json::from_str(&o.output_json).unwrap_or_else(|_| Value::String(o.output_json.clone()));
    let data_classes = pdp.classify_output(&output);
    json!({
        "tool": o.tool, "operation": o.operation, "original_tool": o.original_tool,
        "event_kind": o.event_kind, "call_id": o.call_id,
        // The output itself is large and may hold secrets: the log keeps its
        // digest and size; classification of outputs reads it before this.
        "output_sha256": hex::encode(Sha256::digest(output.to_string().as_bytes())),
        "output_bytes": o.output_json.len(),
        "data_classes": data_classes,
    })
}

fn lifecycle_data(l: &wit::Lifecycle) -> Value {
    let detail: Value = serde_json::from_str(&l.detail_json).unwrap_or(Value::Null);
    json!({"event_kind": l.event_kind, "detail": detail})
}

/// How STEP_UP reaches this integration's vendor for an action of
/// `event_kind`: held when the event is one the vendor cannot ask on, else
/// as configured, else `ask` when the plugin declares its vendor carries
/// STEP_UP natively.
fn step_up_mode(integration: &Integration, plugin: &Plugin, event_kind: &str) -> StepUpMode {
    if integration.step_up_hold_events.iter().any(|e| e == event_kind) {
        return StepUpMode::Hold;
    }
    integration.step_up.unwrap_or(if plugin.info.decisions.contains(&wit::Decision::StepUp) {
        StepUpMode::Ask
    } else {
        StepUpMode::Hold
    })
}

/// What the agent is told while its action is held.
fn pending_reason(kind: HoldKind, id: &str, reason: &str) -> String {
    match kind {
        HoldKind::Approval => format!(
            "approval required ({reason}); approval `{id}` is pending: once an approver approves it, \
             retry exactly the same action"
        ),
        HoldKind::Deferral => {
            format!("{reason}; deferral `{id}` waits for that evidence: retry exactly the same action later")
        }
    }
}

/// Build the receipt draft for a decided action.
fn receipt_draft(
    pdp: &Pdp,
    d: &Decided,
    plugin: Option<(&Plugin, &str)>,
    reply: Option<&wit::HttpResponse>,
    log_entry: bool,
    tenant: &str,
) -> Result<ReceiptDraft, SealError> {
    let o = &d.outcome;
    let pack = pdp.pack().identity();
    let decision = json!({
        "result": o.decision,
        "classification": o.classification,
        "reason": o.reason,
        "policy": {"policy_ids": o.policy_ids, "version": pack.version, "hash": pack.hash, "pack": pack.pack},
        "scores": o.scores,
        "approvers": o.approvers,
        "signals": o.signals,
        "data_classes": o.data_classes,
        "modified_parameters": o.modified_parameters,
        "fault": o.fault,
    });
    let vendor = match plugin {
        Some((p, integration)) => json!({
            "integration": integration,
            "plugin": p.name,
            "plugin_version": p.version,
            "plugin_digest": p.digest,
            "plugin_bundle_digest": p.bundle.as_ref().map(|b| &b.digest),
            "plugin_publisher": p.bundle.as_ref().map(|b| &b.publisher),
            "event_kind": d.action.event_kind,
            "reply": reply.map(recorded_reply),
        }),
        None => {
            json!({"integration": d.action.integration, "plugin": null, "plugin_version": null, "plugin_digest": null, "plugin_bundle_digest": null, "plugin_publisher": null,
                       "event_kind": d.action.event_kind, "reply": null})
        }
    };
    let body = ReceiptBody {
        action: serde_json::to_value(&d.action).map_err(|e| SealError::Canonical(e.to_string()))?,
        decision,
        context_hash: o.context_hash.clone(),
        session: o.session.clone(),
        approval: d.approval.clone(),
        deferral: d.deferral.clone(),
        vendor,
        tenant: tenant.to_owned(),
    };
    let rc = &d.action.requester_context;
    let entry = log_entry.then(|| EntryDraft {
        session_id: rc.session.clone(),
        kind: EntryKind::Action,
        data: json!({
            "receipt_id": d.receipt_id, "action_id": d.action.action_id,
            "tool": d.action.tool, "operation": d.action.operation, "original_tool": d.action.original_tool,
            "decision": o.decision, "policy_ids": o.policy_ids, "signals": o.signals, "data_classes": o.data_classes,
            "alignment": o.scores.alignment,
        }),
    });
    let mut draft = ReceiptDraft::new(
        d.receipt_id.clone(),
        body,
        rc.session.clone(),
        rc.agent.clone().unwrap_or_default(),
        o.decision.as_str().to_owned(),
        entry,
    )?;
    for hold in &d.holds {
        draft.holds.push(Workflow::record(hold).map_err(|e| SealError::Canonical(e.to_string()))?);
    }
    Ok(draft)
}

fn recorded_reply(r: &wit::HttpResponse) -> Value {
    let body = if r.body.len() > MAX_RECORDED_REPLY {
        json!({"sha256": hex::encode(Sha256::digest(&r.body)), "bytes": r.body.len()})
    } else {
        serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into_owned()))
    };
    json!({"status": r.status, "body": body})
}

/// `/v1/evaluate` body after schema validation.
#[derive(Debug, Deserialize)]
struct EvaluateInput {
    action_id: Option<String>,
    timestamp: Option<String>,
    tool: String,
    operation: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    resource: Option<String>,
    original_tool: Option<String>,
    event_kind: Option<String>,
    integration: Option<String>,
    requester_context: EvaluateRequester,
}

#[derive(Debug, Deserialize)]
struct EvaluateRequester {
    session: String,
    human: Option<String>,
    agent: Option<String>,
    service: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    delegation_chain: Vec<String>,
    #[serde(default)]
    attributes: Map<String, Value>,
}

impl EvaluateInput {
    fn into_action(self) -> CanonicalAction {
        let r = self.requester_context;
        CanonicalAction {
            action_id: self.action_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            timestamp: self.timestamp.unwrap_or_else(now_rfc3339),
            original_tool: self.original_tool.unwrap_or_else(|| self.tool.clone()),
            tool: self.tool,
            operation: self.operation,
            parameters: self.parameters,
            resource: self.resource,
            event_kind: self.event_kind.unwrap_or_else(|| "evaluate".to_owned()),
            integration: self.integration.unwrap_or_else(|| "sdk".to_owned()),
            requester_context: RequesterContext {
                session: r.session,
                human: r.human,
                agent: r.agent,
                service: r.service,
                roles: r.roles,
                scope: r.scope,
                delegation_chain: r.delegation_chain,
                // Whatever the body claims, an SDK caller asserted it.
                asserted_by: AssertedBy::Caller,
                attributes: r.attributes,
            },
        }
    }
}

/// Build the integration table from config; every integration's hooks share
/// one pool of `ingress.max_concurrent_requests` slots.
pub fn integrations(
    config: &BTreeMap<String, crate::config::IntegrationConfig>,
    ingress: &crate::config::IngressConfig,
) -> HashMap<String, Integration> {
    let global = Arc::new(tokio::sync::Semaphore::new(ingress.max_concurrent_requests));
    let timeout = std::time::Duration::from_millis(ingress.request_timeout_ms);
    config
        .iter()
        .map(|(name, c)| {
            (
                name.clone(),
                Integration {
                    plugin: c.plugin.clone(),
                    settings: Arc::new(c.settings.clone()),
                    step_up: c.step_up,
                    step_up_hold_events: c.step_up_hold_events.clone(),
                    hold: c.hold_ms.map(std::time::Duration::from_millis),
                    limits: Arc::new(Limits::new(name, &c.limits, global.clone(), timeout)),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::config::{Config, PluginLimits};
    use crate::credentials::ReceiptKey;
    use crate::policy::PolicyPack;

    /// The real pipeline: bundled Claude Code plugin, bundled pack, a fjall
    /// store in a temporary directory.
    async fn pipeline(dir: &std::path::Path) -> Pipeline {
        let plugins = Arc::new(PluginHost::new(&PluginLimits::default()).unwrap());
        plugins.load_bundled().await.unwrap();
        let pdp = Arc::new(Pdp::new(PolicyPack::bundled().unwrap(), None));
        let store = Store::open(dir, Arc::new(ReceiptKey::generate()), 64).unwrap();
        let store_for_workflow = store.clone();
        Pipeline::new(
            plugins,
            pdp,
            store,
            integrations(&Config::default().integrations, &Config::default().ingress),
            Arc::new(alignment::HashedEmbedder),
            Workflow::open(
                store_for_workflow,
                crate::notify::Notifier::disabled(),
                Config::default().approvals,
                Config::default().deferrals,
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn pre_tool_use(command: &str) -> wit::HttpRequest {
        let body = json!({"session_id": "s1", "transcript_path": "/t", "cwd": "/w", "hook_event_name": "PreToolUse",
                          "tool_name": "Bash", "tool_input": {"command": command}, "tool_use_id": "toolu_1"});
        wit::HttpRequest {
            method: "POST".to_owned(),
            path: String::new(),
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    fn permission(reply: &HookReply) -> String {
        let body: Value = serde_json::from_slice(&reply.response.body).unwrap();
        body["hookSpecificOutput"]["permissionDecision"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // An action policy allows is still blocked when its receipt cannot be written.
    async fn store_refusing_writes_blocks_allowed_actions() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path()).await;
        let ok = p.handle_hook("claude-code", pre_tool_use("ls")).await.unwrap();
        assert_eq!((permission(&ok), ok.decision), ("allow".to_owned(), Some(Decision::Allow)));
        assert!(ok.receipt_id.is_some());

        p.store().poison();
        let blocked = p.handle_hook("claude-code", pre_tool_use("ls")).await.unwrap();
        assert_eq!(blocked.response.status, 200, "Claude Code ignores a deny sent with another status");
        assert_eq!((permission(&blocked), blocked.decision), ("deny".to_owned(), Some(Decision::Deny)));
        assert_eq!(blocked.receipt_id, None);
        assert_eq!(p.store().receipt_count().unwrap(), 1, "nothing was recorded after the failure");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The SDK endpoint reports an unrecorded decision as an error, never as ALLOW.
    async fn store_refusing_writes_fails_evaluate() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path()).await;
        p.store().poison();
        let action = json!({"tool": "shell", "operation": "exec", "parameters": {"command": "ls"},
                            "requester_context": {"session": "s"}});
        assert!(matches!(p.evaluate(tenants::DEFAULT, &action).await, Err(PipelineError::Unrecorded(_))));
    }
}
