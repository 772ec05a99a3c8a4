//! Arbiter adapter plugin for Microsoft Copilot Studio external threat
//! detection ("external security provider", api-version `2025-05-01`).
//!
//! Copilot Studio is configured with the base URL
//! `https://<arbiter>/v1/hooks/<integration>` and calls two endpoints below
//! it; the host hands the plugin the path without its query string:
//!
//! | path | body | events | reply |
//! |---|---|---|---|
//! | `/validate` | empty (0 bytes) | none | `200 {"isSuccessful":true,"status":"OK"}` |
//! | `/analyze-tool-execution` | the planner's intended tool call | intent, observations, one action | `200 {"blockAction":false}` or the block form below |
//!
//! Any other path is [`DecodeError::Unsupported`].
//!
//! # Decoding `/analyze-tool-execution`
//!
//! Events, in this order:
//! 1. intent (`userMessage`): `plannerContext.userMessage`, the user's request
//!    that the tool call is scored against; omitted when absent or empty.
//! 2. one observation (`previousToolOutput`) per entry of
//!    `plannerContext.previousToolsOutputs` (the spelling of real traffic) and
//!    of `plannerContext.previousToolOutputs` (the documented spelling), in
//!    that order. `original-tool` is the entry's `toolId` (else `toolName`),
//!    `tool` is mapped from it as below, `operation` is `call`, and
//!    `output-json` is `outputs` exactly as sent (an object, or an array of
//!    `{name, description, type, value}`).
//! 3. one action (`analyzeToolExecution`), mapped from `toolDefinition` and
//!    `inputValues`:
//!    - `original-tool` = `toolDefinition.id`, the stable key
//!      (`toolDefinition.name` is a display name, kept as the `toolName`
//!      attribute);
//!    - `tool` = [`canonical_tool`] of the id, `operation` = `call`;
//!    - `parameters-json` = `inputValues` (absent or null = `{}`);
//!    - `resource` = the first string value, non-empty, among the
//!      `inputValues` keys `to`, `url`, `path`, `file` (in that order, keys
//!      compared case-insensitively), else none;
//!    - `call-id` = `conversationMetadata.planStepId`.
//!
//! # Tool mapping ([`canonical_tool`])
//!
//! Connector action ids look like `<prefix>.action.<Connector>-<Operation>`
//! (`cra65_otpdemo.action.SendEmail-SendEmail`). The canonical tool is the
//! connector: the text after the last `action.` segment, up to its first `-`.
//! Ids without an `action.` segment (`tool-email`, prebuilt tools) are used
//! whole. The result is lower-cased, characters outside `[a-z0-9_-]` become
//! `_`, leading and trailing `_`/`-` are dropped, and it is cut to 64
//! characters (the canonical-action schema's `tool` pattern). So
//! `cra65_otpdemo.action.SendEmail-SendEmail` → `sendemail`,
//! `cra65_otpdemo.action.ExcelOnlineBusiness-Createtable` →
//! `excelonlinebusiness`, `cra65_x.action.WorkIQCopilot(Preview)` →
//! `workiqcopilot_preview`. Policies that need the exact action match
//! `original_tool`.
//!
//! # Requester
//!
//! - session: `conversationMetadata.conversationId`, else `planId`;
//! - agent: `conversationMetadata.agent.name`, else `agent.id`;
//! - human: `conversationMetadata.user.id`, else the `human` setting;
//! - service: `copilot-studio`; roles: the `roles` setting;
//! - attributes: `tenantId` (the agent's, else the user's), `environmentId`,
//!   `agentId`, `agentName`, `isPublished`, `channelId`, `planId`,
//!   `planStepId`, `messageId`, `parentAgentComponentId`, `incomingClientIp`,
//!   `triggerId`, `triggerSchemaName`, `correlationId` (header
//!   `x-ms-correlation-id`), `toolName` and `toolType` (from
//!   `toolDefinition`) and `thought` (`plannerContext.thought`, cut to 1024
//!   characters), each only when present and not empty.
//!
//! Ids (session, agent, human, the id attributes, tool ids, call id) longer
//! than 256 bytes and a resource longer than 4096 bytes are refused as
//! malformed, not clipped: a clipped id could match a different policy.
//! `plannerContext.chatHistory` is not decoded: the intent is the current
//! `userMessage`.
//!
//! A `/validate` call has no conversation: its requester session is
//! `copilot-studio-validate`.
//!
//! # Replies
//!
//! Copilot Studio carries only allow and block (`blockAction`); it cannot
//! ask a human nor rewrite a tool's input. Every analyze reply is HTTP 200
//! with JSON (a timeout or an error makes Copilot Studio run the tool):
//!
//! | verdict | reply |
//! |---|---|
//! | ALLOW | `{"blockAction":false}` |
//! | DENY | block, `reasonCode` [`REASON_DENY`] (1001) |
//! | DENY naming a pending approval (STEP_UP in the host's hold mode) | block, [`REASON_STEP_UP`] (1002) |
//! | STEP_UP | block, [`REASON_STEP_UP`] (1002) |
//! | DEFER | block, [`REASON_DEFER`] (1003) |
//! | MODIFY | block, [`REASON_MODIFY_UNSUPPORTED`] (1004): the parameters would need changing, which Copilot Studio cannot do |
//! | any non-ALLOW forced by a fault, and the blocking reply | block, [`REASON_FAULT`] (1005) |
//!
//! The block form is `{"blockAction":true,"reasonCode":<code>,"reason":"…",
//! "diagnostics":"arbiter decision=<decision> receipt=<id>"}`.
//!
//! # Settings
//!
//! - `human`: the human when the payload names no user.
//! - `roles`: comma-separated roles of the agent.
//! - `max_body_bytes`: the largest body accepted (default 1 MiB, the host's
//!   default body limit).

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use arbiter_sdk::{Adapter, Decision, DecodeError, Decoded, HttpRequest, HttpResponse, PluginInfo, Verdict};

pub use decode::{
    DEFAULT_MAX_BODY_BYTES, EVENT_ACTION, EVENT_INTENT, EVENT_OBSERVATION, MAX_JSON_DEPTH, MAX_OBSERVATIONS,
    MAX_THOUGHT_CHARS, VALIDATE_SESSION, canonical_tool,
};
pub use encode::{REASON_DEFER, REASON_DENY, REASON_FAULT, REASON_MODIFY_UNSUPPORTED, REASON_STEP_UP};

/// The plugin name, also the default integration name.
pub const PLUGIN_NAME: &str = "copilot-studio";

/// The path of the endpoint Copilot Studio calls when an admin saves the
/// threat-detection settings.
pub const PATH_VALIDATE: &str = "/validate";

/// The path of the endpoint Copilot Studio calls before each tool call.
pub const PATH_ANALYZE: &str = "/analyze-tool-execution";

/// Reply sent when the host cannot get one from the plugin (trap, timeout,
/// undecodable request): a block with the fault reason code. The host fills
/// in `{{reason}}`.
pub const BLOCKING_REPLY: &str =
    r#"{"blockAction":true,"reasonCode":1005,"reason":"{{reason}}","diagnostics":"arbiter blocking reply"}"#;

/// Event kinds this adapter understands: `validate` (no canonical event) and
/// the kinds of the canonical events it emits for an analyze call.
pub const EVENTS: &[&str] = &["validate", EVENT_ACTION, EVENT_INTENT, EVENT_OBSERVATION];

/// The Copilot Studio adapter.
pub struct CopilotStudio;

impl Adapter for CopilotStudio {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: PLUGIN_NAME.to_owned(),
            vendor: "Microsoft Copilot Studio".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: vec!["2025-05-01".to_owned()],
            // `blockAction` true/false is all Copilot Studio carries: STEP_UP,
            // DEFER and MODIFY degrade to a block.
            decisions: vec![Decision::Allow, Decision::Deny],
            events: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            blocking_reply: HttpResponse::json(200, BLOCKING_REPLY),
        }
    }

    fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
        decode::decode(req)
    }

    fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
        encode::encode(req, verdict)
    }
}

arbiter_sdk::export_adapter!(CopilotStudio);
