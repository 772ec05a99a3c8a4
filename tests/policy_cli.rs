//! `arbiter policy validate|test DIR`, run as a security engineer runs it in
//! CI: on both bundled packs, on a pack with a deliberately wrong
//! expectation, and on a pack whose policy breaks its Cedar schema.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::ARBITER;

fn pack(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies").join(name)
}

fn policy(command: &str, dir: &Path) -> (Option<i32>, String) {
    let Output { status, stdout, stderr } =
        Command::new(ARBITER).args(["policy", command]).arg(dir).output().expect("running arbiter policy");
    (status.code(), format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr)))
}

#[test]
// Both bundled packs validate against their schemas and pass their own tests.
fn bundled_packs_validate_and_pass_their_tests() {
    for name in ["baseline", "aarm-conformance"] {
        let (code, out) = policy("validate", &pack(name));
        assert_eq!(code, Some(0), "{name}: {out}");
        assert!(out.contains("validated against its Cedar schema"), "{name}: {out}");
        let (code, out) = policy("test", &pack(name));
        assert_eq!(code, Some(0), "{name}: {out}");
        let tally = out.lines().last().unwrap_or_default();
        assert!(tally.ends_with("passed, 0 failed"), "{name}: {tally}");
        let passed: usize = tally.split_whitespace().next().unwrap().parse().unwrap();
        assert!(passed >= 100, "{name} runs only {passed} checks");
    }
}

#[test]
// A wrong expectation fails the run (non-zero exit) with a table naming the
// case, the step, what was expected and what the PDP decided, failures first.
fn a_wrong_expectation_fails_with_a_readable_table() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&pack("aarm-conformance"), dir.path());
    let file = dir.path().join("tests/r3-forbidden.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = &mut cases[0];
    let name = first["name"].as_str().unwrap().to_owned();
    assert_eq!(first["expect"]["decision"], "DENY", "the pack's case changed: {first}");
    first["expect"]["decision"] = "ALLOW".into();
    std::fs::write(&file, serde_json::to_string_pretty(&cases).unwrap()).unwrap();

    let (code, out) = policy("test", dir.path());
    assert_eq!(code, Some(1), "{out}");
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for column in ["RESULT", "CASE", "STEP", "EXPECTED", "GOT"] {
        assert!(header.contains(column), "header {header:?}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with("FAIL"), "failures come first: {out}");
    assert!(row.contains(&name.chars().take(40).collect::<String>()), "{row}");
    let expected = row.find("ALLOW").expect("expected decision in the row");
    let got = row.find("DENY forbidden [aarm.forbid.drop-database]").expect("the PDP's decision in the row");
    assert!(expected < got, "{row}");
    assert!(lines.next().unwrap().contains("reason:"), "{out}");
    assert!(out.lines().last().unwrap().ends_with("passed, 1 failed"), "{out}");
}

#[test]
// A policy that reads an attribute the pack's schema does not declare is
// refused by `validate` (and `test`), naming the problem.
fn a_policy_that_breaks_the_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&pack("aarm-conformance"), dir.path());
    std::fs::write(
        dir.path().join("typo.cedar"),
        "@id(\"typo\") forbid(principal, action == Action::\"email.send\", resource)\n\
         when { context.sesion.denied > 3 };\n",
    )
    .unwrap();
    for command in ["validate", "test"] {
        let (code, out) = policy(command, dir.path());
        assert_ne!(code, Some(0), "{command}: {out}");
        assert!(out.contains("schema") && out.contains("sesion"), "{command}: {out}");
    }
}
