//! Every bundled command/HTTP-hook adapter through the real binary, from its
//! vendor's captured payload: the same baseline policy allows `ls` and
//! refuses `rm -rf /` whatever the platform, in that platform's own reply
//! format, with a receipt naming the adapter. GitHub Copilot's camelCase
//! payloads carry no event name, so they go to `/v1/hooks/github-copilot/<event>`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use common::Server;
use serde_json::Value;

fn fixture(vendor_dir: &str, name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(vendor_dir).join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

struct Case {
    integration: &'static str,
    path: &'static str,
    payload: Value,
    /// Where the command goes in the payload.
    command: &'static str,
    /// JSON pointer to the reply's verdict, and its allow / deny values.
    verdict: &'static str,
    allow: Option<&'static str>,
    deny: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            integration: "gemini-cli",
            path: "/v1/hooks/gemini-cli",
            payload: fixture("gemini-cli/0.61.0", "BeforeTool.json"),
            command: "/tool_input/command",
            verdict: "/decision",
            allow: Some("allow"),
            deny: "deny",
        },
        Case {
            integration: "codex-cli",
            path: "/v1/hooks/codex-cli",
            payload: fixture("codex-cli/0.169.0", "PreToolUse.json"),
            command: "/tool_input/command",
            verdict: "/hookSpecificOutput/permissionDecision",
            // Codex reads a bare allow as a failed hook: ALLOW is `{}`.
            allow: None,
            deny: "deny",
        },
        // Cursor's payloads are written from its documentation (no capture
        // exists): the dedicated shell hook and the generic tool hook.
        Case {
            integration: "cursor",
            path: "/v1/hooks/cursor",
            payload: fixture("cursor/documented", "beforeShellExecution.json"),
            command: "/command",
            verdict: "/permission",
            allow: Some("allow"),
            deny: "deny",
        },
        Case {
            integration: "cursor",
            path: "/v1/hooks/cursor",
            payload: fixture("cursor/documented", "preToolUse.json"),
            command: "/tool_input/command",
            verdict: "/permission",
            allow: Some("allow"),
            deny: "deny",
        },
        Case {
            integration: "github-copilot",
            path: "/v1/hooks/github-copilot/preToolUse",
            payload: fixture("copilot-cli/1.0.102", "camel-preToolUse.json"),
            command: "/toolArgs/command",
            verdict: "/permissionDecision",
            allow: Some("allow"),
            deny: "deny",
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_platform_gets_the_same_decisions_in_its_own_format() {
    let server = Server::start();
    for case in cases() {
        for (command, allowed) in [("ls", true), ("rm -rf /", false)] {
            let mut body = case.payload.clone();
            *body.pointer_mut(case.command).unwrap() = Value::from(command);
            let r = server.post_raw(case.path, Some(&server.ingress_token), serde_json::to_vec(&body).unwrap()).await;
            let what = format!("{} `{command}`", case.integration);
            assert_eq!(r.status, 200, "{what}: {}", r.text);
            let reply = r.json();
            let verdict = reply.pointer(case.verdict).and_then(Value::as_str);
            match (allowed, case.allow) {
                (true, Some(allow)) => assert_eq!(verdict, Some(allow), "{what}: {reply}"),
                (true, None) => assert_eq!(reply, serde_json::json!({}), "{what}: {reply}"),
                (false, _) => assert_eq!(verdict, Some(case.deny), "{what}: {reply}"),
            }
            let id = r.header("x-arbiter-receipt-id").unwrap_or_else(|| panic!("{what}: no receipt"));
            let receipt = server.admin_json(&format!("/v1/receipts/{id}")).await;
            assert_eq!(receipt["vendor"]["plugin"], case.integration, "{what}");
            assert_eq!(receipt["action"]["tool"], "shell", "{what}: {receipt}");
            assert_eq!(receipt["decision"]["result"], if allowed { "ALLOW" } else { "DENY" }, "{what}: {receipt}");
            if !allowed {
                assert_eq!(receipt["decision"]["classification"], "forbidden", "{what}");
            }
        }
    }
}

/// A pack that allows everything but needs an approval for reading `.env`
/// files and for shell commands that `deploy`.
fn step_up_pack(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let files = [
        ("pack.toml", "name = \"cursor-step-up\"\nversion = \"0.1.0\"\ndefault_posture = \"ALLOW\"\n"),
        (
            "detectors.toml",
            "[[detector]]\nid = \"t.env_read\"\nactions = [\"file.read\"]\nfields = [\"file_path\"]\npattern = '''\\.env$'''\n\n\
             [[detector]]\nid = \"t.deploy\"\nactions = [\"shell.exec\"]\nfields = [\"command\"]\npattern = '''deploy'''\n",
        ),
        (
            "step-up.cedar",
            "@id(\"t.step-up\")\n@decision(\"STEP_UP\")\n@approvers(\"oncall\")\n@reason(\"needs the on-call\")\n\
             forbid (principal, action, resource)\n\
             when { context.signals.contains(\"t.env_read\") || context.signals.contains(\"t.deploy\") };\n",
        ),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Cursor's default integration: STEP_UP is Cursor's own `ask` on the shell
// hook; a file read (allow or deny only) and the generic `preToolUse` go to
// Arbiter's approvers, and the deny names the approval to wait for.
async fn cursor_asks_where_it_can_and_holds_where_it_cannot() {
    let pack = tempfile::tempdir().unwrap();
    step_up_pack(pack.path());
    let config = format!("policies = \"{}\"\n\n[approvals]\nhold_ms = 100\n", pack.path().display());
    let server = Server::start_with(common::ServerOptions { config: Some(config), ..Default::default() });
    let send = |name: &str, pointer: &str, value: &str| {
        let mut body = fixture("cursor/documented", name);
        *body.pointer_mut(pointer).unwrap() = Value::from(value);
        body
    };
    let shell = server.hook("cursor", &send("beforeShellExecution.json", "/command", "./deploy.sh prod")).await;
    let reply = shell.json();
    assert_eq!(reply["permission"], "ask", "{reply}");
    assert!(
        reply["user_message"].as_str().unwrap().starts_with("needs approval by policy: needs the on-call"),
        "{reply}"
    );
    let receipt = server.admin_json(&format!("/v1/receipts/{}", shell.receipt_id())).await;
    assert_eq!(receipt["decision"]["result"], "STEP_UP", "{receipt}");
    assert_eq!(receipt["approval"]["method"], "vendor_console", "{receipt}");

    for (name, pointer, value) in [
        ("beforeReadFile.json", "/file_path", "/Users/dev/proj/.env"),
        ("preToolUse.json", "/tool_input/command", "./deploy.sh prod"),
    ] {
        let r = server.hook("cursor", &send(name, pointer, value)).await;
        let reply = r.json();
        let receipt = server.admin_json(&format!("/v1/receipts/{}", r.receipt_id())).await;
        assert_eq!(receipt["decision"]["result"], "STEP_UP", "{name}: {receipt}");
        let id = receipt["approval"]["id"].as_str().unwrap_or_else(|| panic!("{name}: no approval: {receipt}"));
        assert_eq!(receipt["approval"]["status"], "pending", "{name}");
        assert_eq!(reply["permission"], "deny", "{name}: {reply}");
        let told = reply["agent_message"].as_str().unwrap();
        assert!(told.contains(id) && told.contains("retry"), "{name}: {told}");
    }
}
