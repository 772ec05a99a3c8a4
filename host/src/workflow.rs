//! Approvals (STEP_UP) and deferrals (DEFER): actions held for a human or
//! for evidence, with a deadline.
//!
//! A *hold* is created with the STEP_UP or DEFER receipt of the action and
//! stored in the same batch. It is bound to the exact action: the SHA-256 of
//! the canonical (tool, operation, parameters, target, requester). It ends
//! in one of three ways, each with its own signed follow-up receipt that
//! keeps the original submitter's identity and names the resolver apart:
//! an approver approves or denies it (approvals), new evidence lets the
//! decision point decide it (deferrals, in [`crate::pipeline`]), or its
//! deadline passes (DENY, by a background task, and on start for holds that
//! expired while Arbiter was down).
//!
//! An approved (or evidence-resolved ALLOW) hold lets the identical action
//! through `max_uses` times: a hook waiting on it gets the answer at once,
//! and a retry of the identical action is allowed; a changed argument is a
//! different action and is decided afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::{ApprovalsConfig, DeferralsConfig};
use crate::model::{CanonicalAction, Decision, now_rfc3339};
use crate::notify::{ApprovalNotice, Notifier};
use crate::policy::PackIdentity;
use crate::receipts::{ReceiptBody, ReceiptDraft};
use crate::store::{Store, StoreError};

/// Resolved holds kept in memory (for retries of an approved action and
/// for listing); older ones stay readable by id from the store.
const MAX_RESOLVED_IN_MEMORY: usize = 10_000;

/// How often the expiry task looks for holds past their deadline.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// What is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldKind {
    /// STEP_UP: waits for an approver.
    Approval,
    /// DEFER: waits for evidence.
    Deferral,
}

impl HoldKind {
    /// `approval` or `deferral`, as in routes, policy ids and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Approval => "approval",
            Self::Deferral => "deferral",
        }
    }
}

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldStatus {
    /// Waiting.
    Pending,
    /// Approved, or re-decided to let the action proceed.
    Approved,
    /// Denied by an approver or by the re-decision.
    Denied,
    /// The deadline passed: DENY.
    Expired,
    /// Re-decided to STEP_UP: the retried action asks for an approval.
    Escalated,
}

/// How a hold was resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// The decision it resolved to.
    pub decision: Decision,
    /// `approved`, `denied`, `expired`, `context` (new session evidence),
    /// `resolver` (the pack's evidence resolver) or `api` (explicit).
    pub method: String,
    /// Who resolved it: an approver's identity, `admin`, or `arbiter`.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// The resolver's comment, if any.
    pub comment: Option<String>,
    /// The follow-up receipt.
    pub receipt_id: String,
}

/// An action held for approval or evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// `apr-…` / `def-…` + UUIDv7.
    pub id: String,
    /// Approval or deferral.
    pub kind: HoldKind,
    /// Where it stands.
    pub status: HoldStatus,
    /// The STEP_UP / DEFER receipt that created it.
    pub receipt_id: String,
    /// The session.
    pub session: String,
    /// The action, with the submitter's identity.
    pub action: CanonicalAction,
    /// `sha256:` of the canonical action it is bound to ([`args_hash`]).
    pub args_hash: String,
    /// Why it was held.
    pub reason: String,
    /// Deciding policies.
    pub policy_ids: Vec<String>,
    /// Session risk at the decision.
    pub risk: f64,
    /// Approver groups (approvals).
    pub approvers: Vec<String>,
    /// Evidence the policies were missing (deferrals).
    pub missing: Vec<String>,
    /// Context hash of the decision.
    pub context_hash: String,
    /// The session as the policies saw it.
    pub session_view: Value,
    /// The pack that decided.
    pub pack: PackIdentity,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Deadline (RFC 3339).
    pub deadline: String,
    /// Deadline, Unix milliseconds.
    pub deadline_ms: u64,
    /// Identical actions it let through so far.
    pub uses: u32,
    /// Identical actions it may let through.
    pub max_uses: u32,
    /// Set once resolved.
    pub resolution: Option<Resolution>,
    /// The tenant of its session (records made before tenants: `default`).
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

fn default_tenant() -> String {
    crate::tenants::DEFAULT.to_owned()
}

impl Hold {
    /// The `approval` or `deferral` member of the receipt that created it.
    pub fn created_member(&self) -> Value {
        match self.kind {
            HoldKind::Approval => json!({
                "id": self.id, "status": "pending", "approvers": self.approvers, "args_hash": self.args_hash,
                "deadline": self.deadline, "method": "approval_service",
            }),
            HoldKind::Deferral => json!({
                "id": self.id, "reason": self.reason, "missing": self.missing, "deadline": self.deadline,
                "resolution_method": "pending", "resolved_at": null, "resolves": null,
            }),
        }
    }

    /// The `approval` or `deferral` member of a receipt that resolves it or
    /// uses it.
    pub fn resolved_member(&self, resolves: &str) -> Value {
        let r = self.resolution.as_ref();
        match self.kind {
            HoldKind::Approval => json!({
                "id": self.id, "status": self.status, "approvers": self.approvers, "args_hash": self.args_hash,
                "approver": r.map(|r| &r.by), "decided_at": r.map(|r| &r.at),
                "comment": r.and_then(|r| r.comment.as_ref()), "method": r.map(|r| &r.method),
                "resolves": resolves, "uses": self.uses, "max_uses": self.max_uses,
            }),
            HoldKind::Deferral => json!({
                "id": self.id, "reason": self.reason, "missing": self.missing,
                "resolution_method": r.map_or("pending", |r| r.method.as_str()),
                "resolved_at": r.map(|r| &r.at), "resolved_by": r.map(|r| &r.by),
                "comment": r.and_then(|r| r.comment.as_ref()), "resolves": resolves,
                "uses": self.uses, "max_uses": self.max_uses,
            }),
        }
    }

    fn record(&self) -> Result<(String, Vec<u8>), StoreError> {
        let bytes = serde_json::to_vec(self).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok((self.id.clone(), bytes))
    }
}

/// `sha256:` of the canonical JSON (RFC 8785) of what an approval is bound
/// to: tool, operation, parameters, target and the requester's session,
/// agent and human. A changed argument is a different action.
pub fn args_hash(action: &CanonicalAction) -> String {
    let rc = &action.requester_context;
    let bound = json!({
        "tool": action.tool, "operation": action.operation, "parameters": action.parameters,
        "resource": action.resource, "session": rc.session, "agent": rc.agent, "human": rc.human,
    });
    // INVARIANT: a serde_json::Value always serialises under JCS.
    let bytes = serde_jcs::to_vec(&bound).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How a hold is resolved ([`Workflow::resolve`]).
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    /// The decision it resolves to.
    pub decision: Decision,
    /// See [`Resolution::method`].
    pub method: &'a str,
    /// The resolver's identity.
    pub by: &'a str,
    /// The resolver's comment.
    pub comment: Option<String>,
    /// The follow-up receipt's reason.
    pub reason: String,
}

/// Errors of the workflow API.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// No hold of that id and kind.
    #[error("no {0} with id `{1}`")]
    NotFound(&'static str, String),
    /// It is already resolved.
    #[error("{0} `{1}` is already {2}")]
    Resolved(&'static str, String, String),
    /// The caller may not resolve it.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct State {
    holds: HashMap<String, Hold>,
    /// (kind, session, args_hash) → id of the latest hold for that action.
    bindings: HashMap<(HoldKind, String, String), String>,
    /// Hook requests waiting on a hold.
    waiters: HashMap<String, watch::Sender<Option<Resolution>>>,
    /// session → ids of its pending deferrals (read on every decision).
    deferred: HashMap<String, std::collections::BTreeSet<String>>,
    /// Ids of the resolved holds in memory, oldest first (UUIDv7 order).
    resolved: std::collections::BTreeSet<String>,
}

impl State {
    fn index(&mut self, hold: Hold) {
        self.bindings.insert((hold.kind, hold.session.clone(), hold.args_hash.clone()), hold.id.clone());
        if hold.kind == HoldKind::Deferral {
            let ids = self.deferred.entry(hold.session.clone()).or_default();
            if hold.status == HoldStatus::Pending {
                ids.insert(hold.id.clone());
            } else {
                ids.remove(&hold.id);
                if ids.is_empty() {
                    self.deferred.remove(&hold.session);
                }
            }
        }
        if hold.status == HoldStatus::Pending {
            self.resolved.remove(&hold.id);
        } else {
            self.resolved.insert(hold.id.clone());
        }
        self.holds.insert(hold.id.clone(), hold);
        // Bounded memory: forget the oldest resolved holds (their records
        // stay in the store; an approval forgotten before its use means the
        // retry asks for a new one, never that it is let through).
        while self.resolved.len() > MAX_RESOLVED_IN_MEMORY {
            let Some(oldest) = self.resolved.pop_first() else { break };
            if let Some(gone) = self.holds.remove(&oldest) {
                let key = (gone.kind, gone.session, gone.args_hash);
                if self.bindings.get(&key) == Some(&oldest) {
                    self.bindings.remove(&key);
                }
            }
        }
    }
}

/// The approval and deferral services.
pub struct Workflow {
    store: Store,
    notifier: Notifier,
    approvals: ApprovalsConfig,
    deferrals: DeferralsConfig,
    state: Mutex<State>,
}

impl Workflow {
    /// Load the stored holds.
    pub fn open(
        store: Store,
        notifier: Notifier,
        approvals: ApprovalsConfig,
        deferrals: DeferralsConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let mut state = State::default();
        for value in store.holds()? {
            let hold: Hold = serde_json::from_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            state.index(hold);
        }
        Ok(Arc::new(Self { store, notifier, approvals, deferrals, state: Mutex::new(state) }))
    }

    /// Expire what passed its deadline while Arbiter was down, then keep
    /// expiring in the background (the task ends with the runtime).
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        self.expire_due().await?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                if let Err(e) = me.expire_due().await {
                    tracing::error!(error = %e, "expiring holds failed; retrying");
                }
            }
        });
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long a hook waits on a hold of `kind` before answering with a
    /// block.
    pub fn hold_time(&self, kind: HoldKind) -> Duration {
        Duration::from_millis(match kind {
            HoldKind::Approval => self.approvals.hold_ms,
            HoldKind::Deferral => self.deferrals.hold_ms,
        })
    }

    /// A new hold for a STEP_UP or DEFER outcome (not stored yet: it goes
    /// into the batch of its receipt, then [`Workflow::register`]).
    #[allow(clippy::too_many_arguments, reason = "one constructor for the record's facts")]
    pub fn new_hold(
        &self,
        kind: HoldKind,
        receipt_id: &str,
        action: &CanonicalAction,
        outcome: &crate::policy::PolicyOutcome,
        pack: &PackIdentity,
        missing: Vec<String>,
        tenant: &str,
    ) -> Hold {
        let now = time::OffsetDateTime::now_utc();
        let secs = outcome.hold_deadline_secs.unwrap_or(match kind {
            HoldKind::Approval => self.approvals.deadline_secs,
            HoldKind::Deferral => self.deferrals.deadline_secs,
        });
        let deadline = now + time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2));
        let prefix = match kind {
            HoldKind::Approval => "apr",
            HoldKind::Deferral => "def",
        };
        Hold {
            id: format!("{prefix}-{}", uuid::Uuid::now_v7()),
            kind,
            status: HoldStatus::Pending,
            receipt_id: receipt_id.to_owned(),
            session: action.requester_context.session.clone(),
            action: action.clone(),
            args_hash: args_hash(action),
            reason: outcome.reason.clone(),
            policy_ids: outcome.policy_ids.clone(),
            risk: outcome.scores.risk,
            approvers: outcome.approvers.clone(),
            missing,
            context_hash: outcome.context_hash.clone(),
            session_view: outcome.session.clone(),
            pack: pack.clone(),
            created_at: crate::model::format_rfc3339(now),
            deadline: crate::model::format_rfc3339(deadline),
            deadline_ms: unix_ms(deadline),
            uses: 0,
            max_uses: outcome.approval_uses.unwrap_or(self.approvals.max_uses),
            resolution: None,
            tenant: tenant.to_owned(),
        }
    }

    /// The stored record of `hold`, for its receipt's batch.
    pub fn record(hold: &Hold) -> Result<(String, Vec<u8>), StoreError> {
        hold.record()
    }

    /// Take a hold in once its receipt is durable; notify the approvers of
    /// a new approval.
    pub fn register(&self, hold: Hold, public_url: Option<&str>) {
        if hold.kind == HoldKind::Approval && hold.status == HoldStatus::Pending {
            for group in &hold.approvers {
                let notice = ApprovalNotice {
                    approval_id: hold.id.clone(),
                    group: group.clone(),
                    receipt_id: hold.receipt_id.clone(),
                    action: serde_json::to_value(&hold.action).unwrap_or(Value::Null),
                    reason: hold.reason.clone(),
                    risk: hold.risk,
                    args_hash: hold.args_hash.clone(),
                    created_at: hold.created_at.clone(),
                    deadline: hold.deadline.clone(),
                    approve_url: public_url
                        .map(|u| format!("{}/v1/approvals/{}/approve", u.trim_end_matches('/'), hold.id)),
                };
                drop(self.notifier.notify(notice));
            }
        }
        self.lock().index(hold);
    }

    /// The base URL for approve links in notifications.
    pub fn public_url(&self) -> Option<&str> {
        self.approvals.public_url.as_deref()
    }

    /// The latest hold of `kind` bound to exactly this action.
    pub fn bound(&self, kind: HoldKind, action: &CanonicalAction) -> Option<Hold> {
        let state = self.lock();
        let key = (kind, action.requester_context.session.clone(), args_hash(action));
        state.bindings.get(&key).and_then(|id| state.holds.get(id)).cloned()
    }

    /// Reserve one use of a resolved hold that lets this exact action
    /// proceed. The caller records the use in its receipt's batch.
    pub fn take_use(&self, kind: HoldKind, action: &CanonicalAction) -> Option<Hold> {
        let mut state = self.lock();
        let key = (kind, action.requester_context.session.clone(), args_hash(action));
        let id = state.bindings.get(&key)?.clone();
        let hold = state.holds.get_mut(&id)?;
        let proceeds = hold.resolution.as_ref().is_some_and(|r| r.decision.proceeds());
        if hold.status != HoldStatus::Approved || !proceeds || hold.uses >= hold.max_uses {
            return None;
        }
        hold.uses += 1;
        Some(hold.clone())
    }

    /// Pending deferrals of a session, oldest first.
    pub fn pending_deferrals(&self, session: &str) -> Vec<Hold> {
        let state = self.lock();
        let Some(ids) = state.deferred.get(session) else { return Vec::new() };
        ids.iter().filter_map(|id| state.holds.get(id)).cloned().collect()
    }

    /// How many deferrals of a session are pending (the cascade depth).
    pub fn pending_deferral_count(&self, session: &str) -> usize {
        self.lock().deferred.get(session).map_or(0, std::collections::BTreeSet::len)
    }

    /// Whether a session has pending deferrals.
    pub fn has_pending_deferrals(&self, session: &str) -> bool {
        self.lock().deferred.contains_key(session)
    }

    /// The cascade cap: pending deferrals a session may have.
    pub fn max_pending_deferrals(&self) -> u32 {
        self.deferrals.max_pending_per_session
    }

    /// Wait (up to `within`) for `id` to be resolved.
    pub async fn wait(&self, id: &str, within: Duration) -> Option<Resolution> {
        let mut rx = {
            let mut state = self.lock();
            if let Some(r) = state.holds.get(id).and_then(|h| h.resolution.clone()) {
                return Some(r);
            }
            state.waiters.entry(id.to_owned()).or_insert_with(|| watch::channel(None).0).subscribe()
        };
        let resolved = tokio::time::timeout(within, rx.wait_for(Option::is_some)).await;
        match resolved {
            Ok(Ok(r)) => r.clone(),
            _ => None,
        }
    }

    /// One hold.
    pub fn get(&self, kind: HoldKind, id: &str) -> Option<Hold> {
        let held = self.lock().holds.get(id).cloned();
        let hold = held.or_else(|| {
            let value = self.store.hold(id).ok().flatten()?;
            serde_json::from_value::<Hold>(value).ok()
        });
        hold.filter(|h| h.kind == kind)
    }

    /// Holds of `kind`, newest first, optionally of one status.
    pub fn list(&self, kind: HoldKind, status: Option<HoldStatus>) -> Vec<Hold> {
        let state = self.lock();
        let mut out: Vec<Hold> =
            state.holds.values().filter(|h| h.kind == kind && status.is_none_or(|s| h.status == s)).cloned().collect();
        out.sort_by(|a, b| b.id.cmp(&a.id));
        out
    }

    /// Resolve a pending hold with a follow-up receipt (stored with the
    /// updated record in one batch), then wake the hooks waiting on it.
    /// The receipt's action and identity are the original submitter's; the
    /// resolver is recorded apart.
    pub async fn resolve(&self, kind: HoldKind, id: &str, verdict: Verdict<'_>) -> Result<Hold, WorkflowError> {
        let Verdict { decision, method, by, comment, reason } = verdict;
        let what = kind.name();
        let mut hold = self.get(kind, id).ok_or_else(|| WorkflowError::NotFound(what, id.to_owned()))?;
        if hold.status != HoldStatus::Pending {
            let status = serde_json::to_value(hold.status).ok().and_then(|v| v.as_str().map(str::to_owned));
            return Err(WorkflowError::Resolved(what, id.to_owned(), status.unwrap_or_default()));
        }
        let receipt_id = uuid::Uuid::now_v7().to_string();
        hold.status = match (method, decision) {
            ("expired", _) => HoldStatus::Expired,
            (_, Decision::StepUp) => HoldStatus::Escalated,
            (_, d) if d.proceeds() => HoldStatus::Approved,
            _ => HoldStatus::Denied,
        };
        let resolution = Resolution {
            decision,
            method: method.to_owned(),
            by: by.to_owned(),
            at: now_rfc3339(),
            comment,
            receipt_id: receipt_id.clone(),
        };
        hold.resolution = Some(resolution.clone());
        let policy_id = format!("arbiter.{what}.{method}");
        let draft = follow_up_receipt(&hold, &receipt_id, decision, &reason, vec![policy_id], None, &hold.receipt_id)?;
        self.store.append_receipt(draft).await?;
        let mut state = self.lock();
        state.index(hold.clone());
        if let Some(tx) = state.waiters.remove(&hold.id) {
            tx.send_replace(Some(resolution));
        }
        Ok(hold)
    }

    /// Expire every pending hold past its deadline.
    async fn expire_due(&self) -> Result<(), StoreError> {
        let now = unix_ms(time::OffsetDateTime::now_utc());
        let due: Vec<(HoldKind, String)> = {
            let state = self.lock();
            state
                .holds
                .values()
                .filter(|h| h.status == HoldStatus::Pending && h.deadline_ms <= now)
                .map(|h| (h.kind, h.id.clone()))
                .collect()
        };
        for (kind, id) in due {
            let reason = match kind {
                HoldKind::Approval => "no approver answered before the deadline; the action is denied",
                HoldKind::Deferral => "the missing evidence did not arrive before the deadline; the action is denied",
            };
            let verdict = Verdict {
                decision: Decision::Deny,
                method: "expired",
                by: "arbiter",
                comment: None,
                reason: reason.to_owned(),
            };
            match self.resolve(kind, &id, verdict).await {
                Ok(_) | Err(WorkflowError::Resolved(..) | WorkflowError::NotFound(..)) => {}
                Err(WorkflowError::Store(e)) => return Err(e),
                Err(e) => tracing::error!(error = %e, hold = %id, "expiring a hold failed"),
            }
        }
        Ok(())
    }
}

/// A receipt that resolves (or uses) `hold`: the original action and
/// submitter, the new decision, the hold's `approval` / `deferral` member.
pub fn follow_up_receipt(
    hold: &Hold,
    receipt_id: &str,
    decision: Decision,
    reason: &str,
    policy_ids: Vec<String>,
    modified_parameters: Option<Map<String, Value>>,
    resolves: &str,
) -> Result<ReceiptDraft, StoreError> {
    let member = hold.resolved_member(resolves);
    let (approval, deferral) = match hold.kind {
        HoldKind::Approval => (member, Value::Null),
        HoldKind::Deferral => (Value::Null, member),
    };
    let body = ReceiptBody {
        action: serde_json::to_value(&hold.action).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        decision: json!({
            "result": decision,
            "classification": null,
            "reason": reason,
            "policy": {"policy_ids": policy_ids, "version": hold.pack.version, "hash": hold.pack.hash,
                       "pack": hold.pack.pack},
            "scores": {"alignment": null, "confidence": 0.0, "drift": 0.0, "risk": hold.risk},
            "approvers": hold.approvers,
            "signals": [],
            "data_classes": [],
            "modified_parameters": modified_parameters,
            "fault": null,
        }),
        context_hash: hold.context_hash.clone(),
        session: hold.session_view.clone(),
        approval,
        deferral,
        vendor: json!({"integration": hold.action.integration, "plugin": null, "plugin_version": null,
                       "plugin_digest": null, "plugin_bundle_digest": null, "plugin_publisher": null,
                       "event_kind": hold.action.event_kind, "reply": null}),
        tenant: hold.tenant.clone(),
    };
    let rc = &hold.action.requester_context;
    let mut draft = ReceiptDraft::new(
        receipt_id.to_owned(),
        body,
        rc.session.clone(),
        rc.agent.clone().unwrap_or_default(),
        decision.as_str().to_owned(),
        None,
    )?;
    draft.holds.push(hold.record()?);
    Ok(draft)
}

fn unix_ms(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn action(v: Value) -> CanonicalAction {
        crate::policy::testing::action_from(&v).unwrap()
    }

    fn hold(n: usize, status: HoldStatus) -> Hold {
        let a = action(json!({"tool": "shell", "operation": "exec", "parameters": {"n": n},
                              "requester_context": {"session": "s"}}));
        Hold {
            id: format!("apr-{n:08}"),
            kind: HoldKind::Approval,
            status,
            receipt_id: String::new(),
            session: "s".to_owned(),
            args_hash: args_hash(&a),
            action: a,
            reason: String::new(),
            policy_ids: Vec::new(),
            risk: 0.0,
            approvers: Vec::new(),
            missing: Vec::new(),
            context_hash: String::new(),
            session_view: Value::Null,
            pack: PackIdentity { pack: "p".to_owned(), version: "1".to_owned(), hash: "h".to_owned() },
            created_at: String::new(),
            deadline: String::new(),
            deadline_ms: 0,
            uses: 0,
            max_uses: 1,
            resolution: None,
            tenant: default_tenant(),
        }
    }

    #[test]
    // Memory holds every pending hold and the newest resolved ones; the
    // oldest resolved are forgotten together with their bindings.
    fn resolved_holds_are_bounded_in_memory() {
        let mut state = State::default();
        state.index(hold(0, HoldStatus::Pending));
        for n in 1..=MAX_RESOLVED_IN_MEMORY + 5 {
            state.index(hold(n, HoldStatus::Denied));
        }
        assert_eq!(state.holds.len(), MAX_RESOLVED_IN_MEMORY + 1);
        assert!(state.holds.contains_key("apr-00000000"), "a pending hold is never forgotten");
        assert!(!state.holds.contains_key("apr-00000001") && state.holds.contains_key("apr-00000006"));
        assert_eq!(state.bindings.len(), MAX_RESOLVED_IN_MEMORY + 1);
    }

    #[test]
    // The binding covers what the action does and who asks, not when or
    // under which call id it was sent; key order does not matter.
    fn args_hash_binds_the_action_and_the_requester() {
        let base = json!({"tool": "file", "operation": "write", "resource": "/x",
                          "parameters": {"a": 1, "b": {"c": "d"}},
                          "requester_context": {"session": "s", "agent": "a", "human": "h"}});
        let h = args_hash(&action(base.clone()));
        assert!(h.starts_with("sha256:") && h.len() == 71);
        let mut reordered = action(base.clone());
        reordered.parameters = serde_json::from_str(r#"{"b": {"c": "d"}, "a": 1}"#).unwrap();
        reordered.action_id = "another-call".to_owned();
        reordered.timestamp = "2030-01-01T00:00:00.000Z".to_owned();
        assert_eq!(args_hash(&reordered), h);
        for (pointer, value) in [
            ("/parameters/a", json!(2)),
            ("/resource", json!("/y")),
            ("/requester_context/session", json!("other")),
            ("/requester_context/human", json!("mallory")),
        ] {
            let mut changed = base.clone();
            *changed.pointer_mut(pointer).unwrap() = value;
            assert_ne!(args_hash(&action(changed)), h, "{pointer}");
        }
    }
}
