//! What a tool call acts on: paths (made absolute against the session's
//! working directory), files named in a patch, URLs in a prompt, MCP tools.

/// Most targets decoded from one tool call. A call naming more is refused
/// rather than decided on a subset.
pub const MAX_TARGETS: usize = 64;

/// `mcp://<server>/<tool>`, the resource of an MCP tool call.
pub fn mcp_resource(server: &str, tool: &str) -> String {
    format!("mcp://{server}/{tool}")
}

/// `mcp__<server>__<tool>` → (server, tool). The server name ends at the
/// first `__`; the tool name may contain more.
pub fn split_mcp_double(name: &str) -> Option<(&str, &str)> {
    let (server, tool) = name.strip_prefix("mcp__")?.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// `path` as the absolute, lexically normalised path a policy can match:
/// a relative path is joined to `cwd` (when `cwd` is absolute), `.` and `..`
/// segments are resolved (never above `/`), repeated and trailing slashes are
/// dropped. Paths that are not POSIX-style (`~/x`, `C:\x`, URLs) and relative
/// paths without an absolute `cwd` are returned unchanged.
pub fn resolve_path(cwd: Option<&str>, path: &str) -> String {
    if path.starts_with('/') {
        return normalize(path);
    }
    let posix_relative = !path.is_empty()
        && !path.starts_with('~')
        && !path.starts_with('\\')
        && !path.contains("://")
        && path.as_bytes().get(1) != Some(&b':');
    match cwd {
        Some(cwd) if posix_relative && cwd.starts_with('/') => normalize(&format!("{cwd}/{path}")),
        _ => path.to_owned(),
    }
}

/// Lexical normalisation of an absolute POSIX path.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The files an `apply_patch` patch adds, updates, deletes or moves to, in
/// order: the paths after `*** Add File:`, `*** Update File:`,
/// `*** Delete File:` and `*** Move to:`.
pub fn patch_targets(patch: &str) -> Vec<String> {
    const MARKERS: [&str; 4] = ["*** Add File:", "*** Update File:", "*** Delete File:", "*** Move to:"];
    patch
        .lines()
        .filter_map(|line| {
            let line = line.trim_end();
            MARKERS.iter().find_map(|m| line.strip_prefix(m)).map(str::trim).filter(|p| !p.is_empty())
        })
        .map(str::to_owned)
        .collect()
}

/// The `http://` and `https://` URLs in free text (Gemini's `web_fetch` takes
/// its URLs inside a prompt), in order. A URL ends at whitespace, a quote or
/// a bracket; trailing sentence punctuation is dropped.
pub fn urls_in(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut urls = Vec::new();
    let mut from = 0;
    while let Some(start) = next_scheme(&lower, from) {
        let rest = text.get(start..).unwrap_or_default();
        let end = rest
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}')
            })
            .unwrap_or(rest.len());
        let url = rest.get(..end).unwrap_or_default().trim_end_matches(['.', ',', ';', ':', '!', '?']);
        let scheme_len =
            if url.len() >= 8 && url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) { 8 } else { 7 };
        if url.len() > scheme_len {
            urls.push(url.to_owned());
        }
        from = start + end.max(1);
    }
    urls
}

fn next_scheme(lower: &str, from: usize) -> Option<usize> {
    let rest = lower.get(from..)?;
    let http = rest.find("http://");
    let https = rest.find("https://");
    let first = match (http, https) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    Some(from + first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_cwd() {
        assert_eq!(resolve_path(Some("/proj"), "src/main.rs"), "/proj/src/main.rs");
        assert_eq!(resolve_path(Some("/proj/"), "./a/../b.txt"), "/proj/b.txt");
        assert_eq!(resolve_path(Some("/proj"), "../../../etc/passwd"), "/etc/passwd");
        assert_eq!(resolve_path(Some("/proj"), "/etc//ssh/./sshd_config/"), "/etc/ssh/sshd_config");
        assert_eq!(resolve_path(None, "/a/../b"), "/b");
        assert_eq!(resolve_path(None, "rel/x"), "rel/x");
        assert_eq!(resolve_path(Some("C:\\proj"), "rel/x"), "rel/x");
        for unchanged in ["~/.ssh/id_rsa", "C:\\x", "c:/x", "\\\\server\\share", "https://x.test/a", ""] {
            assert_eq!(resolve_path(Some("/proj"), unchanged), unchanged);
        }
    }

    #[test]
    fn patch_targets_in_order() {
        let patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** Update File: src/lib.rs\r\n*** Move to: src/new.rs\n\
                     @@\n-x\n+y\n*** Delete File:   old.txt  \n*** Add File: \n*** End Patch\n";
        assert_eq!(patch_targets(patch), vec!["a.txt", "src/lib.rs", "src/new.rs", "old.txt"]);
        assert!(patch_targets("no patch here").is_empty());
    }

    #[test]
    fn urls_in_prompt() {
        let text = "Summarize https://example.com/a?b=1, then (see http://intranet.local/x) and \
                    'HTTPS://Upper.test/p'. Also https:// alone and https://end.test.";
        assert_eq!(
            urls_in(text),
            vec!["https://example.com/a?b=1", "http://intranet.local/x", "HTTPS://Upper.test/p", "https://end.test"]
        );
        assert!(urls_in("nothing here").is_empty());
        assert_eq!(urls_in("ünïcode https://ü.test/ä ok"), vec!["https://ü.test/ä"]);
    }

    #[test]
    fn mcp_names() {
        assert_eq!(split_mcp_double("mcp__github__create_issue"), Some(("github", "create_issue")));
        assert_eq!(split_mcp_double("mcp__a__b__c"), Some(("a", "b__c")));
        assert_eq!(split_mcp_double("mcp____x"), None);
        assert_eq!(split_mcp_double("mcp__server"), None);
        assert_eq!(mcp_resource("db", "query"), "mcp://db/query");
    }
}
