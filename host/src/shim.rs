//! `arbiter hook`: the command-hook shim for vendors that run a program per
//! hook (Gemini CLI, Codex CLI, Cursor, Claude Code command hooks).
//!
//! It reads the hook JSON on stdin, posts it to Arbiter, prints the vendor
//! reply on stdout and exits 0; when the reply blocks, it also writes the
//! reason on stderr and exits 2, the code every one of these vendors reads
//! as "block". Every vendor runs the tool when a hook times out or crashes
//! (vendors/README.md), so the shim never lets that happen: Arbiter
//! unreachable, slower than the shim's own timeout (keep it under the
//! vendor's), an error status, a reply that is not JSON, a missing token or
//! an oversized input all end in the vendor's deny form, exit 2 and a reason
//! on stderr.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

/// Largest hook payload read from stdin (the service's default body limit).
pub const MAX_INPUT: usize = 1024 * 1024;

/// Largest reply accepted from Arbiter.
const MAX_REPLY: usize = 1024 * 1024;

/// Exit code every command-hook vendor reads as "block".
pub const BLOCK: u8 = 2;

/// What the shim was told to do.
#[derive(Debug, Clone)]
pub struct HookArgs {
    /// Integration name (`/v1/hooks/{integration}`), also the vendor format
    /// of the deny form when Arbiter cannot be asked.
    pub integration: String,
    /// Event path segment for vendors whose payload has no event name.
    pub event: Option<String>,
    /// Arbiter's base URL.
    pub url: String,
    /// Ingress token.
    pub token: Option<String>,
    /// Whole-call timeout.
    pub timeout: Duration,
}

/// What to print and how to exit.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// stdout.
    pub stdout: String,
    /// stderr (the reason, when blocking).
    pub stderr: String,
    /// Exit code: 0, or [`BLOCK`].
    pub code: u8,
}

/// Run the shim on `input` (the hook JSON). Never fails: every failure is a
/// blocking outcome.
pub async fn run(args: &HookArgs, input: &[u8]) -> Outcome {
    let event = serde_json::from_slice::<Value>(input)
        .ok()
        .and_then(|v| v.get("hook_event_name").and_then(Value::as_str).map(str::to_owned));
    let block = |reason: String| blocked(&args.integration, event.as_deref(), &reason);
    if input.len() > MAX_INPUT {
        return block(format!("arbiter hook: the hook payload exceeds {MAX_INPUT} bytes"));
    }
    let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) else {
        return block("arbiter hook: no ingress token (set ARBITER_TOKEN or --token-file)".to_owned());
    };
    let mut url = format!("{}/v1/hooks/{}", args.url.trim_end_matches('/'), args.integration);
    if let Some(e) = &args.event {
        url.push('/');
        url.push_str(e);
    }
    let client =
        match reqwest::Client::builder().timeout(args.timeout).redirect(reqwest::redirect::Policy::none()).build() {
            Ok(c) => c,
            Err(e) => return block(format!("arbiter hook: cannot build an HTTP client: {e}")),
        };
    let sent = client
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(input.to_vec())
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return block(format!("arbiter hook: Arbiter did not answer within {:?}; blocking", args.timeout));
        }
        Err(e) => return block(format!("arbiter hook: Arbiter is unreachable ({}); blocking", e.without_url())),
    };
    let status = response.status();
    let decision = response.headers().get("x-arbiter-decision").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = match read_limited(response).await {
        Ok(b) => b,
        Err(e) => return block(format!("arbiter hook: reading Arbiter's reply failed ({e}); blocking")),
    };
    if !status.is_success() {
        return block(format!("arbiter hook: Arbiter answered HTTP {status}; blocking"));
    }
    let reply: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return block("arbiter hook: Arbiter's reply is not a JSON object; blocking".to_owned()),
    };
    let stdout = reply.to_string();
    let proceed = Outcome { stdout: stdout.clone(), stderr: String::new(), code: 0 };
    match decision.as_deref() {
        // Not a decision point (a prompt, an observation), or let through.
        None | Some("ALLOW" | "MODIFY") => proceed,
        // The vendor's own prompt decides: exiting 2 would skip it.
        Some("STEP_UP") if asks(&reply) => proceed,
        Some(_) => Outcome { stderr: reason_of(&reply), stdout, code: BLOCK },
    }
}

/// Whether a vendor reply asks the user (the vendor's own STEP_UP).
fn asks(reply: &Value) -> bool {
    ["/hookSpecificOutput/permissionDecision", "/permissionDecision", "/decision", "/permission"]
        .iter()
        .any(|p| reply.pointer(p).and_then(Value::as_str) == Some("ask"))
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + chunk.len() > MAX_REPLY {
            return Err(format!("the reply exceeds {MAX_REPLY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The reason a vendor reply gives, wherever its format puts it.
fn reason_of(reply: &Value) -> String {
    let candidates = [
        "/hookSpecificOutput/permissionDecisionReason",
        "/permissionDecisionReason",
        "/reason",
        "/agent_message",
        "/user_message",
        "/stopReason",
    ];
    candidates.iter().find_map(|p| reply.pointer(p).and_then(Value::as_str)).unwrap_or("blocked by Arbiter").to_owned()
}

/// The vendor's deny form, for when Arbiter cannot be asked.
fn blocked(integration: &str, event: Option<&str>, reason: &str) -> Outcome {
    let body = match integration {
        i if i.starts_with("claude-code") || i.starts_with("codex") => json!({"hookSpecificOutput": {
            "hookEventName": event.unwrap_or("PreToolUse"),
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }}),
        i if i.starts_with("github-copilot") || i.starts_with("copilot") => {
            json!({"permissionDecision": "deny", "permissionDecisionReason": reason})
        }
        // Cursor: a prompt is held back with `continue: false`, a tool or a
        // file read with `permission: "deny"`; an unreadable payload gets both.
        i if i.starts_with("cursor") => match event {
            Some("beforeSubmitPrompt") => json!({"continue": false, "user_message": reason}),
            Some(_) => json!({"permission": "deny", "user_message": reason, "agent_message": reason}),
            None => json!({"permission": "deny", "continue": false, "user_message": reason, "agent_message": reason}),
        },
        _ => json!({"decision": "deny", "reason": reason}),
    };
    Outcome { stdout: body.to_string(), stderr: reason.to_owned(), code: BLOCK }
}

/// Read stdin up to [`MAX_INPUT`] + 1 bytes (so an oversized payload is
/// recognised, not silently cut).
pub fn read_stdin() -> std::io::Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin().take(MAX_INPUT as u64 + 1).read_to_end(&mut input)?;
    Ok(input)
}

/// Print an outcome.
pub fn emit(outcome: &Outcome) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", outcome.stdout);
    let _ = out.flush();
    if !outcome.stderr.is_empty() {
        let _ = writeln!(std::io::stderr(), "{}", outcome.stderr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // Each vendor family gets its own deny form, with the reason in it and on stderr.
    fn deny_forms_per_vendor() {
        let o = blocked("claude-code", Some("PermissionRequest"), "down");
        assert_eq!(o.code, BLOCK);
        assert_eq!(o.stderr, "down");
        let v: Value = serde_json::from_str(&o.stdout).unwrap_or_default();
        assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "deny");
        assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PermissionRequest");
        let v: Value = serde_json::from_str(&blocked("gemini-cli", None, "x").stdout).unwrap_or_default();
        assert_eq!((v["decision"].as_str(), v["reason"].as_str()), (Some("deny"), Some("x")));
        let v: Value =
            serde_json::from_str(&blocked("cursor", Some("beforeShellExecution"), "x").stdout).unwrap_or_default();
        assert_eq!(v, json!({"permission": "deny", "user_message": "x", "agent_message": "x"}));
        let v: Value =
            serde_json::from_str(&blocked("cursor", Some("beforeSubmitPrompt"), "x").stdout).unwrap_or_default();
        assert_eq!(v, json!({"continue": false, "user_message": "x"}));
        let v: Value = serde_json::from_str(&blocked("cursor", None, "x").stdout).unwrap_or_default();
        assert_eq!((v["permission"].as_str(), v["continue"].as_bool()), (Some("deny"), Some(false)));
        assert_eq!(reason_of(&json!({"hookSpecificOutput": {"permissionDecisionReason": "r"}})), "r");
        assert_eq!(reason_of(&json!({})), "blocked by Arbiter");
    }
}
