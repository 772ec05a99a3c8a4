"""Arbiter adapter plugin for Claude Code 2.1.x `http` hooks, in Python.

The same mapping as the Rust reference adapter (plugins/claude-code), written
against the same WIT world (wit/plugin/v0.1.0, world `adapter`) and built
into a WebAssembly component with componentize-py (see ../build.sh).

decode: one hook payload -> one canonical event
  UserPromptSubmit                  -> intent (the prompt)
  PreToolUse, PermissionRequest     -> action (decided)
  PostToolUse, PostToolUseFailure   -> observation
  SessionStart / SessionEnd         -> session-start / session-end
  anything else well-formed         -> other

encode: always HTTP 200 with a JSON body (Claude Code ignores anything else).

Every malformed input becomes the WIT `decode-error` variant: no code path
may raise, because an exception traps the instance (the host would then
answer with the blocking reply and record a plugin fault).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, log
from wit_world.imports.types import (
    Action,
    Decision,
    Decoded,
    DecodeError_Malformed,
    Event_Action,
    Event_Intent,
    Event_Observation,
    Event_Other,
    Event_SessionEnd,
    Event_SessionStart,
    HttpResponse,
    Intent,
    Lifecycle,
    Observation,
    PluginInfo,
    Requester,
)

NAME = "claude-code-py"
VERSION = "0.1.0"
SERVICE = "claude-code"

# Bounds, the same as the Rust adapter's (wit/schemas/canonical-action.v1.json).
DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_BODY_DEPTH = 128  # serde_json's own recursion limit
MAX_JSON_DEPTH = 64  # tool_input / tool_response
MAX_SESSION_LEN = 256
MAX_AGENT_LEN = 256
MAX_ORIGINAL_TOOL_LEN = 256
MAX_TOOL_LEN = 64
MAX_EVENT_NAME_LEN = 64
MAX_RESOURCE_LEN = 4096
MAX_CALL_ID_LEN = 256

BLOCKING_REPLY = (
    '{"decision":"block","reason":"{{reason}}","hookSpecificOutput":{"hookEventName":"PreToolUse",'
    '"permissionDecision":"deny","permissionDecisionReason":"{{reason}}"}}'
)

EVENTS = [
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "PostToolUseFailure",
    "SessionStart",
    "SessionEnd",
    "Stop",
    "SubagentStop",
    "Notification",
    "PreCompact",
]

BASE_FIELDS = {
    "session_id",
    "transcript_path",
    "cwd",
    "prompt_id",
    "permission_mode",
    "effort",
    "agent_id",
    "agent_type",
    "hook_event_name",
}
ATTRIBUTE_FIELDS = ["cwd", "transcript_path", "permission_mode", "prompt_id", "agent_type", "effort", "mcp_server"]


class Malformed(Exception):
    """Raised inside decode, turned into DecodeError_Malformed at the boundary."""


def dumps(value):
    """Compact JSON, like serde_json's `to_string`."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def blen(s):
    return len(s.encode("utf-8"))


def clip(s):
    return s if len(s) <= 80 else s[:80] + "..."


def json_response(body):
    return HttpResponse(200, [("content-type", "application/json")], body.encode("utf-8"))


# ---------------------------------------------------------------------------
# Parsing, bounded.


def body_depth(body):
    """Deepest `[`/`{` nesting of a JSON text, strings skipped. Iterative, so
    the check runs before (and protects) the recursive parser."""
    depth = deepest = 0
    in_string = escaped = False
    for b in body:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # quote
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b == 0x5B or b == 0x7B:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif b == 0x5D or b == 0x7D:
            depth -= 1
    return deepest


def reject_constant(name):
    raise ValueError("%s is not JSON" % name)


def finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number %s is out of range" % clip(text))
    return value


def parse_body(raw):
    limit = body_limit()
    if len(raw) > limit:
        raise Malformed("body is %d bytes, over the %d-byte limit" % (len(raw), limit))
    if body_depth(raw) > MAX_BODY_DEPTH:
        raise Malformed("body is not valid JSON: nested deeper than %d levels" % MAX_BODY_DEPTH)
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=reject_constant, parse_float=finite_float)
        # Lone surrogates (`"\ud800"`) parse in Python but cannot cross the
        # WIT boundary as strings: refuse them here, not by a trap later.
        dumps(body).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError) as e:
        raise Malformed("body is not valid JSON: %s" % e)
    if not isinstance(body, dict):
        raise Malformed("body is not a JSON object")
    return body


def body_limit():
    raw = config.get("max_body_bytes")
    if raw is None:
        return DEFAULT_MAX_BODY_BYTES
    try:
        value = int(raw.strip())
        if value < 0:
            raise ValueError(raw)
        return value
    except ValueError:
        log.log(log.Level.WARN, "setting `max_body_bytes` = `%s` is not a byte count; using %d"
                % (raw, DEFAULT_MAX_BODY_BYTES))
        return DEFAULT_MAX_BODY_BYTES


def check_depth(key, value):
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise Malformed("`%s` nests deeper than %d levels" % (key, MAX_JSON_DEPTH))
        stack.extend((c, depth) for c in children)


def check_len(key, value, limit):
    n = blen(value)
    if n > limit:
        raise Malformed("`%s` is %d bytes, over the %d-byte limit" % (key, n, limit))


def required_str(body, key):
    if key not in body:
        raise Malformed("missing `%s`" % key)
    value = body[key]
    if not isinstance(value, str):
        raise Malformed("`%s` is not a string" % key)
    return value


def optional_str(body, key):
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise Malformed("`%s` is not a string" % key)


# ---------------------------------------------------------------------------
# decode


def decode(request):
    body = parse_body(request.body)
    kind = event_name(body)
    req = requester(body)
    if kind == "UserPromptSubmit":
        event = Event_Intent(Intent(required_str(body, "prompt"), kind))
    elif kind in ("PreToolUse", "PermissionRequest"):
        event = Event_Action(action(body, kind))
    elif kind == "PostToolUse":
        event = Event_Observation(observation(body, kind, body.get("tool_response")))
    elif kind == "PostToolUseFailure":
        output = {k: body[k] for k in ("error", "is_interrupt") if k in body}
        event = Event_Observation(observation(body, kind, output))
    elif kind == "SessionStart":
        event = Event_SessionStart(lifecycle(body, kind))
    elif kind == "SessionEnd":
        event = Event_SessionEnd(lifecycle(body, kind))
    else:
        event = Event_Other(lifecycle(body, kind))
    return Decoded(req, [event])


def event_name(body):
    name = required_str(body, "hook_event_name")
    if not (0 < len(name) <= MAX_EVENT_NAME_LEN and name.isascii() and name.replace("_", "a").isalnum()):
        raise Malformed("`hook_event_name` `%s` is not an event name (1-%d letters, digits or `_`)"
                        % (clip(name), MAX_EVENT_NAME_LEN))
    return name


def list_setting(key):
    raw = config.get(key)
    return [r.strip() for r in raw.split(",") if r.strip()] if raw else []


def requester(body):
    session = required_str(body, "session_id")
    check_len("session_id", session, MAX_SESSION_LEN)
    if not session:
        raise Malformed("`session_id` is empty")
    agent_id = optional_str(body, "agent_id") or None
    if agent_id is not None:
        check_len("agent_id", agent_id, MAX_AGENT_LEN)
    attributes = {k: body[k] for k in ATTRIBUTE_FIELDS if k in body}
    return Requester(
        session=session,
        human=config.get("human") or None,
        agent=agent_id or SERVICE,
        service=SERVICE,
        roles=list_setting("roles"),
        scope=[],
        # Inside a subagent the main session's agent delegated to it.
        delegation_chain=[SERVICE, agent_id] if agent_id else [],
        attributes_json=dumps(attributes),
    )


def tool_name(body):
    name = required_str(body, "tool_name")
    if not name:
        raise Malformed("`tool_name` is empty")
    check_len("tool_name", name, MAX_ORIGINAL_TOOL_LEN)
    return name


def call_id(body):
    cid = optional_str(body, "tool_use_id")
    if cid is not None:
        check_len("tool_use_id", cid, MAX_CALL_ID_LEN)
    return cid


def action(body, kind):
    original = tool_name(body)
    if "tool_input" not in body:
        raise Malformed("missing `tool_input`")
    tool_input = body["tool_input"]
    if not isinstance(tool_input, dict):
        raise Malformed("`tool_input` is not a JSON object")
    check_depth("tool_input", tool_input)
    tool, operation, resource = classify(original, tool_input)
    return Action(tool, operation, dumps(tool_input), resource, original, kind, call_id(body))


def observation(body, kind, output):
    original = tool_name(body)
    check_depth("tool_response", output)
    tool_input = body.get("tool_input")
    tool, operation, _ = classify(original, tool_input if isinstance(tool_input, dict) else {})
    return Observation(original, tool, operation, dumps(output), kind, call_id(body))


def lifecycle(body, kind):
    return Lifecycle(kind, dumps({k: v for k, v in body.items() if k not in BASE_FIELDS}))


def classify(name, tool_input):
    """Canonical (tool, operation, resource) for a Claude Code tool."""

    def field(*keys):
        for k in keys:
            if isinstance(tool_input.get(k), str):
                return tool_input[k]
        return None

    if name == "Bash":
        result = ("shell", "exec", None)
    elif name in ("Write", "Edit", "MultiEdit", "NotebookEdit"):
        result = ("file", "write", field("file_path", "notebook_path"))
    elif name in ("Read", "Glob", "Grep"):
        result = ("file", "read", field("file_path", "path", "pattern"))
    elif name == "WebFetch":
        result = ("network", "egress", field("url"))
    elif name == "WebSearch":
        result = ("network", "egress", None)
    else:
        parts = mcp_parts(name)
        if parts:
            result = ("mcp", "call", "mcp://%s/%s" % parts)
        else:
            result = (generic_tool(name), "call", None)
    if result[2] is not None:
        # Refused, not truncated: a clipped path could match a different policy.
        check_len("resource", result[2], MAX_RESOURCE_LEN)
    return result


def mcp_parts(name):
    """`mcp__<server>__<tool>` -> (server, tool); the server ends at the first `__`."""
    if not name.startswith("mcp__"):
        return None
    server, sep, tool = name[len("mcp__"):].partition("__")
    return (server, tool) if sep and server and tool else None


def generic_tool(name):
    mapped = "".join(c if ("a" <= c <= "z" or "0" <= c <= "9" or c in "_-") else "_"
                     for c in (ch.lower() if ch.isascii() else ch for ch in name))
    tool = mapped.lstrip("_-")[:MAX_TOOL_LEN]
    if not tool:
        raise Malformed("`tool_name` `%s` has no letter or digit" % clip(name))
    return tool


# ---------------------------------------------------------------------------
# encode


def with_receipt(text, v):
    return text + (" [arbiter receipt %s]" % v.receipt_id if v.receipt_id is not None else "")


def reason(v):
    text = "deferred: " + v.reason if v.decision == Decision.DEFER else v.reason
    return with_receipt(text, v)


def unusable_modify_reason(v):
    return with_receipt("modify verdict without usable modified parameters: " + v.reason, v)


def modified_parameters(v):
    if v.modified_parameters_json is None:
        return None
    try:
        params = json.loads(v.modified_parameters_json)
    except (ValueError, RecursionError):
        return None
    return params if isinstance(params, dict) else None


def setting_is(key, value):
    return config.get(key) == value


def pre_tool_use_output(decision, text, updated=None):
    out = {"hookEventName": "PreToolUse", "permissionDecision": decision, "permissionDecisionReason": text}
    if updated is not None:
        out["updatedInput"] = updated
    return {"hookSpecificOutput": out}


def pre_tool_use(v):
    d = v.decision
    if d == Decision.ALLOW:
        # `allow_reply = "neutral"` keeps Claude Code's own permission prompts.
        return {} if setting_is("allow_reply", "neutral") else pre_tool_use_output("allow", reason(v))
    if d in (Decision.DENY, Decision.DEFER):
        return pre_tool_use_output("deny", reason(v))
    if d == Decision.STEP_UP:
        return pre_tool_use_output("ask", reason(v))
    params = modified_parameters(v)  # MODIFY
    if params is None:
        return pre_tool_use_output("deny", unusable_modify_reason(v))
    return pre_tool_use_output("allow", reason(v), params)


def permission_request(v):
    d = v.decision
    if d == Decision.ALLOW:
        # A policy ALLOW is not a human's approval: only approve on opt-in.
        if not setting_is("approve_permission_requests", "true"):
            return {}
        decision = {"behavior": "allow"}
    elif d == Decision.MODIFY:
        params = modified_parameters(v)
        if params is None:
            decision = {"behavior": "deny", "message": unusable_modify_reason(v)}
        else:
            decision = {"behavior": "allow", "updatedInput": params}
    elif d in (Decision.DENY, Decision.DEFER):
        decision = {"behavior": "deny", "message": reason(v)}
    else:  # STEP_UP: leave it to Claude Code's own prompt
        return {}
    return {"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}}


def blocking_body(text):
    return {
        "decision": "block",
        "reason": text,
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": text,
        },
    }


def request_event(raw):
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeError, RecursionError):
        return None
    if isinstance(body, dict) and isinstance(body.get("hook_event_name"), str):
        return body["hook_event_name"]
    return None


def reply(event, v):
    # Deny and defer block wherever the event can carry a block: fail closed.
    blocking = v.decision in (Decision.DENY, Decision.DEFER)
    if event == "PreToolUse" and (v.decided or blocking):
        return pre_tool_use(v)
    if event == "PermissionRequest" and (v.decided or blocking):
        return permission_request(v)
    if event == "UserPromptSubmit" and blocking:
        return {"decision": "block", "reason": reason(v)}
    if event is not None:
        return {}
    # Unreadable request: only a plain allow or step-up may pass silently.
    if v.decision in (Decision.ALLOW, Decision.STEP_UP):
        return {}
    return blocking_body(reason(v))


# ---------------------------------------------------------------------------
# The exports.


class WitWorld(wit_world.WitWorld):
    def describe(self):
        return PluginInfo(
            name=NAME,
            vendor="Claude Code",
            version=VERSION,
            vendor_versions=["2.1.x"],
            # Defer has no Claude Code equivalent; it degrades to a deny.
            decisions=[Decision.ALLOW, Decision.DENY, Decision.MODIFY, Decision.STEP_UP],
            events=list(EVENTS),
            blocking_reply=json_response(BLOCKING_REPLY),
        )

    def decode(self, request):
        try:
            return decode(request)
        except Malformed as e:
            raise Err(DecodeError_Malformed(str(e)))

    def encode(self, request, verdict):
        try:
            body = reply(request_event(request.body), verdict)
        except Exception as e:  # noqa: BLE001 - never trap: answer with a block
            log.log(log.Level.ERROR, "encode failed: %r" % (e,))
            body = blocking_body(with_receipt("claude-code-py: encode failed", verdict))
        return json_response(dumps(body))
