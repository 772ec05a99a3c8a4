//! Built-in data classification: content detectors that label text and JSON
//! with data classes (`SECRET`, `PII`) without any policy pack.
//!
//! The pack's own detectors (`detectors.toml`) add classes from paths and
//! URLs (`~/.ssh`, `.env`); this module recognises the *content* itself:
//! private keys, cloud and SaaS credentials, tokens, password assignments,
//! emails, phone numbers, payment cards, SSNs and IBANs. Every finding names
//! a stable detector id (see [`DETECTORS`]) so receipts and policies can say
//! exactly what matched.
//!
//! # Cost
//! This runs inline on every tool call, so a payload with nothing sensitive
//! must cost almost nothing. One Aho-Corasick pass over literal anchors
//! (`-----BEGIN`, `AKIA`, `ghp_`, `eyJ`, `password`, `://`, ...) and one byte
//! pass (for `@`, runs of digits, the `CC00` head of an IBAN) decide which
//! detectors can possibly match; only those run, and the numeric ones only
//! over the digit runs that are long enough. All regexes are linear-time
//! (Rust `regex`), the whole input is scanned (no head/tail windows), and
//! matches are validated in code where a checksum or a decode can tell a
//! real value from a look-alike (Luhn, mod-97, the JWT header). Measured
//! (release, shared 2-core machine): a 2 KiB benign payload about 1 µs, a
//! digit-dense 1 MiB log about 1 ms, and the worst adversarial 1 MiB found
//! (a flood of near-miss candidates) about 6 ms; see the ignored `timing`
//! test.
//!
//! # Bounds
//! At most [`MAX_SCAN_BYTES`] bytes are scanned per call, JSON is walked to
//! [`MAX_DEPTH`] levels, and each detector validates at most 4096 candidates
//! per scan. Past any bound the rest is not classified and the result
//! carries the class [`UNKNOWN`] (detector `unknown.too_large`,
//! `unknown.too_deep` or `unknown.too_many_candidates`): AARM counts data of
//! unknown class as the highest class the pack defines, so neither an
//! oversized nor a crafted payload can launder a secret.
//!
//! # Deliberate non-matches
//! - `user@host` as a login is not an email: an scp/git remote
//!   (`git@github.com:org/repo`), URL user info (`ssh://git@host/x`), or any
//!   `user@host` on a line that runs `ssh`/`scp`/`sftp`/`rsync`/`mosh`.
//!   The cost: an email address quoted inside such a line is missed.
//! - Phone numbers need 10–15 digits and a recognisable shape: `+` and a
//!   country code, a North American `(415) 555-0132` / `415-555-0132` with
//!   valid area and exchange digits, or a national trunk `0` prefix with
//!   separators (`020 7946 0958`). Bare digit strings (epoch times, ids),
//!   versions, dates and IPv4 addresses are never phones; a national number
//!   written as `415 555 0132` or with fewer than 10 digits is missed.
//! - Cards need a major-network prefix (2221–2720, 3, 4, 5, 6), 13–19 digits
//!   in one run or in groups of 3–6, a Luhn pass and not all one digit.
//!   Luhn passes one random number in ten, so a random 16-digit id starting
//!   with 3–6 is still taken for a card about 4% of the time.
//! - Password values that are references, not literals, are skipped:
//!   `$VAR`, `${…}`, `{{…}}`, `<your-token>`, masks (`****`), `null`, type
//!   names (`password: str`), calls (`getpass()`), dotted paths
//!   (`args.password`). An unquoted identifier (`password = pw` in code) is
//!   still flagged: in an INI file the same text is a literal.
//! - A PEM header counts only when key material follows it, so a `grep` for
//!   the header or a doc that names it is not a secret.

use std::collections::{BTreeSet, VecDeque};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};

/// Credentials, private keys and tokens.
pub const SECRET: &str = "SECRET";
/// Personal data about a natural person.
pub const PII: &str = "PII";
/// Content that was not (fully) classified; AARM counts it as the highest
/// class the pack defines.
pub const UNKNOWN: &str = "UNKNOWN";

/// Deepest JSON nesting walked by [`Classifier::classify_value`]; containers
/// below it are not scanned and yield [`UNKNOWN`]. serde_json's parser stops
/// at 128 levels and real tool payloads nest under 10, so 64 never cuts a real
/// payload while it bounds the recursion on values built in code.
pub const MAX_DEPTH: usize = 64;

/// Most bytes scanned per call (4 MiB): keys, strings and numbers of a JSON
/// value together, or one text. Ingress caps a hook body at 1 MiB by
/// default, so real payloads are scanned whole with room to spare, while the
/// worst case stays a few milliseconds. The rest is not scanned and the
/// result carries [`UNKNOWN`] (`unknown.too_large`).
pub const MAX_SCAN_BYTES: usize = 4 * 1024 * 1024;

/// Small JSON leaves are batched into one buffer (newline-separated, which no
/// detector matches across) and scanned together up to this size, so a value
/// with thousands of short strings pays the fixed per-scan cost once per
/// 64 KiB; leaves at least this long are scanned in place, without a copy.
const BATCH_BYTES: usize = 64 * 1024;

/// How far after a PEM header key material must start: covers the optional
/// `Proc-Type`/`DEK-Info` lines of an encrypted PEM (about 80 bytes) and a
/// PGP armour `Version:`/`Comment:` block.
const PEM_BODY_WINDOW: usize = 512;

/// A PEM body line is 64 base64 characters (OpenSSH: 70); 40 in a row is
/// more than any word or path and less than any real first line.
const PEM_BODY_MIN_RUN: usize = 40;

/// Longest JWT header segment decoded. Headers are under 1 KiB unless they
/// carry an `x5c` certificate chain (a few KiB); a longer segment is not a
/// header, and the bound keeps the decode cheap.
const MAX_JWT_HEADER: usize = 64 * 1024;

/// How far back on its line an email's context is examined (login commands,
/// URL user info). A command line is far shorter; the bound keeps many
/// matches on one huge line linear.
const LOOKBACK_BYTES: usize = 256;

/// A digit run shorter than the shortest numeric detector's digit count
/// (SSN: 9) cannot hold a match.
const MIN_RUN_DIGITS: usize = 9;
/// Fewest digits in a phone number: below 10, too many ids and codes collide.
const MIN_PHONE_DIGITS: usize = 10;
/// Most digits in a phone number (E.164).
const MAX_PHONE_DIGITS: usize = 15;
/// Most candidates (regex matches, card windows) one detector validates per
/// scan. Real payloads have a handful; an adversarial one can have one every
/// few bytes (1 MiB of `password=$X` is 87,000), and 4096 validations cost
/// about a millisecond. Past it the detector gives up and the result carries
/// [`UNKNOWN`] (`unknown.too_many_candidates`).
const MAX_CANDIDATES: usize = 4096;
/// Payment card number lengths (ISO/IEC 7812).
const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;
/// Digits per group in a spaced or dashed card number (4-4-4-4, Amex 4-6-5,
/// 19-digit 4-4-4-4-3).
const CARD_GROUP: std::ops::RangeInclusive<usize> = 3..=6;
/// Most groups one card window spans: 19 digits in groups of at least 3.
const CARD_MAX_GROUPS: usize = 7;

/// One detector's verdict: the built-in detector that matched and the data
/// class (for example `SECRET` or `PII`) it assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Finding {
    /// Stable detector id, e.g. `secret.jwt`, `pii.payment_card`.
    pub detector: &'static str,
    /// The data class it assigns: [`SECRET`], [`PII`] or [`UNKNOWN`].
    pub class: &'static str,
}

const fn secret(detector: &'static str) -> Finding {
    Finding { detector, class: SECRET }
}
const fn pii(detector: &'static str) -> Finding {
    Finding { detector, class: PII }
}
const fn unknown(detector: &'static str) -> Finding {
    Finding { detector, class: UNKNOWN }
}

const PEM: Finding = secret("secret.pem_private_key");
const AWS_KEY: Finding = secret("secret.aws_access_key");
const AWS_SECRET: Finding = secret("secret.aws_secret_key");
const GCP: Finding = secret("secret.gcp_service_account");
const GITHUB: Finding = secret("secret.github_token");
const SLACK: Finding = secret("secret.slack_token");
const STRIPE: Finding = secret("secret.stripe_key");
const BEARER: Finding = secret("secret.bearer_token");
const JWT: Finding = secret("secret.jwt");
const PASSWORD: Finding = secret("secret.password_assignment");
const URL_CREDENTIALS: Finding = secret("secret.url_credentials");
const EMAIL: Finding = pii("pii.email");
const PHONE: Finding = pii("pii.phone");
const CARD: Finding = pii("pii.payment_card");
const SSN: Finding = pii("pii.ssn");
const IBAN: Finding = pii("pii.iban");
const TOO_LARGE: Finding = unknown("unknown.too_large");
const TOO_DEEP: Finding = unknown("unknown.too_deep");
const TOO_MANY: Finding = unknown("unknown.too_many_candidates");
const UNAVAILABLE: Finding = unknown("unknown.classifier_unavailable");

/// Every finding the built-in classifier can report.
pub const DETECTORS: &[Finding] = &[
    PEM,
    AWS_KEY,
    AWS_SECRET,
    GCP,
    GITHUB,
    SLACK,
    STRIPE,
    BEARER,
    JWT,
    PASSWORD,
    URL_CREDENTIALS,
    EMAIL,
    PHONE,
    CARD,
    SSN,
    IBAN,
    TOO_LARGE,
    TOO_DEEP,
    TOO_MANY,
    UNAVAILABLE,
];

/// The classes and detectors found in one text or value. Empty when nothing
/// matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Classification {
    /// Data classes, e.g. `PII`, `SECRET`.
    pub classes: BTreeSet<String>,
    /// Ids of the detectors that matched, e.g. `pii.email`.
    pub detectors: BTreeSet<String>,
}

impl Classification {
    /// Record a finding.
    pub fn insert(&mut self, finding: Finding) {
        if !self.detectors.contains(finding.detector) {
            self.detectors.insert(finding.detector.to_owned());
        }
        if !self.classes.contains(finding.class) {
            self.classes.insert(finding.class.to_owned());
        }
    }

    /// Add everything `other` found.
    pub fn merge(&mut self, other: Classification) {
        self.classes.extend(other.classes);
        self.detectors.extend(other.detectors);
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Whether `class` was found.
    pub fn has_class(&self, class: &str) -> bool {
        self.classes.contains(class)
    }

    /// Whether the detector `id` matched.
    pub fn has_detector(&self, id: &str) -> bool {
        self.detectors.contains(id)
    }
}

/// The built-in content classifier. Compiled once; `Send + Sync` and
/// read-only, so one instance is shared behind an `Arc`.
#[derive(Debug)]
pub struct Classifier {
    /// `None` only if a constant pattern failed to compile (a test rules this
    /// out); every result is then [`UNKNOWN`], so the failure fails closed.
    engine: Option<Engine>,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Classifier {
    /// Compile the built-in detectors. Never fails: the patterns are
    /// constants, and a unit test builds them.
    pub fn builtin() -> Self {
        match Engine::build() {
            Ok(engine) => Self { engine: Some(engine) },
            Err(e) => {
                tracing::error!(error = %e, "built-in classifier failed to compile; every result is UNKNOWN");
                Self { engine: None }
            }
        }
    }

    /// Whether every detector compiled (always true for a released build).
    pub fn is_ready(&self) -> bool {
        self.engine.is_some()
    }

    /// Classify one text: a command line, a file's content, a tool's output.
    /// Scans the first [`MAX_SCAN_BYTES`]; a longer text also gets
    /// [`UNKNOWN`].
    pub fn classify_text(&self, text: &str) -> Classification {
        let mut out = Classification::default();
        let (head, truncated) = char_prefix(text, MAX_SCAN_BYTES);
        self.scan(head, &mut out);
        if truncated {
            out.insert(TOO_LARGE);
        }
        out
    }

    /// Classify a JSON value: every string leaf, every object key and every
    /// number (a card number may arrive as a JSON number), plus checks on an
    /// object's shape that a flat scan cannot make (`{"password": "…"}`, a
    /// GCP service-account key, `SecretAccessKey`). Walks [`MAX_DEPTH`]
    /// levels and [`MAX_SCAN_BYTES`] bytes; past either, adds [`UNKNOWN`].
    pub fn classify_value(&self, v: &Value) -> Classification {
        let mut walk = Walk { budget: MAX_SCAN_BYTES, batch: String::new(), out: Classification::default() };
        self.walk(v, 0, &mut walk);
        let batch = std::mem::take(&mut walk.batch);
        self.scan(&batch, &mut walk.out);
        walk.out
    }

    fn scan(&self, text: &str, out: &mut Classification) {
        match &self.engine {
            Some(engine) => engine.scan(text, out),
            None => out.insert(UNAVAILABLE),
        }
    }

    fn walk(&self, v: &Value, depth: usize, w: &mut Walk) {
        match v {
            Value::String(s) => self.leaf(s, w),
            Value::Number(n) => self.leaf(&n.to_string(), w),
            Value::Null | Value::Bool(_) => {}
            Value::Array(items) => {
                if depth >= MAX_DEPTH {
                    w.out.insert(TOO_DEEP);
                    return;
                }
                for item in items {
                    self.walk(item, depth + 1, w);
                }
            }
            Value::Object(map) => {
                if depth >= MAX_DEPTH {
                    w.out.insert(TOO_DEEP);
                    return;
                }
                shape_findings(map, &mut w.out);
                for (key, item) in map {
                    self.leaf(key, w);
                    self.walk(item, depth + 1, w);
                }
            }
        }
    }

    fn leaf(&self, s: &str, w: &mut Walk) {
        if s.is_empty() {
            return;
        }
        if w.budget == 0 {
            w.out.insert(TOO_LARGE);
            return;
        }
        let (s, truncated) = char_prefix(s, w.budget);
        w.budget = if truncated { 0 } else { w.budget.saturating_sub(s.len()) };
        if truncated {
            w.out.insert(TOO_LARGE);
        }
        if s.len() >= BATCH_BYTES {
            self.scan(s, &mut w.out);
            return;
        }
        w.batch.push_str(s);
        w.batch.push('\n');
        if w.batch.len() >= BATCH_BYTES {
            let batch = std::mem::take(&mut w.batch);
            self.scan(&batch, &mut w.out);
            w.batch = batch;
            w.batch.clear();
        }
    }
}

/// State of one [`Classifier::classify_value`] walk.
struct Walk {
    /// Bytes still allowed to be scanned.
    budget: usize,
    /// Small leaves waiting to be scanned together.
    batch: String,
    out: Classification,
}

/// Findings that need an object's structure rather than its text.
fn shape_findings(map: &Map<String, Value>, out: &mut Classification) {
    if map.get("type").and_then(Value::as_str) == Some("service_account") && map.contains_key("private_key") {
        out.insert(GCP);
    }
    for (key, item) in map {
        let Some(s) = item.as_str() else { continue };
        if is_password_key(key) && !is_reference(s.trim(), key) {
            out.insert(PASSWORD);
        }
        if is_aws_secret_key_name(key) && is_aws_secret_value(s) {
            out.insert(AWS_SECRET);
        }
    }
}

// Anchor bits: which detectors a literal anchor makes possible.
const A_PEM: u32 = 1;
const A_AWS_KEY: u32 = 1 << 1;
const A_AWS_SECRET: u32 = 1 << 2;
const A_GCP: u32 = 1 << 3;
const A_GITHUB: u32 = 1 << 4;
const A_SLACK: u32 = 1 << 5;
const A_STRIPE: u32 = 1 << 6;
const A_BEARER: u32 = 1 << 7;
const A_JWT: u32 = 1 << 8;
const A_PASSWORD: u32 = 1 << 9;
const A_URL: u32 = 1 << 10;
const A_ALL: u32 = (1 << 11) - 1;

/// Literal anchors: every match of a detector contains one of its anchors,
/// so text without them skips it. They are case-sensitive, with the usual
/// spellings listed (`password`, `Password`, `PASSWORD` via `assword` and
/// `ASSWORD`): a case-insensitive automaton cannot use the SIMD literal
/// search and was measured 5x slower. A freak spelling (`PassWord=`) is
/// missed by the text scan, though a JSON key of any case is still caught by
/// the structural check.
const ANCHORS: &[(&str, u32)] = &[
    ("-----BEGIN", A_PEM),
    ("AKIA", A_AWS_KEY),
    ("ASIA", A_AWS_KEY),
    ("secret_access_key", A_AWS_SECRET),
    ("SECRET_ACCESS_KEY", A_AWS_SECRET),
    ("SecretAccessKey", A_AWS_SECRET),
    ("secretAccessKey", A_AWS_SECRET),
    ("secretaccesskey", A_AWS_SECRET),
    ("aws_secret_key", A_AWS_SECRET),
    ("AWS_SECRET_KEY", A_AWS_SECRET),
    ("service_account", A_GCP),
    ("ghp_", A_GITHUB),
    ("gho_", A_GITHUB),
    ("ghu_", A_GITHUB),
    ("ghs_", A_GITHUB),
    ("ghr_", A_GITHUB),
    ("github_pat_", A_GITHUB),
    ("xox", A_SLACK),
    ("k_live_", A_STRIPE),
    ("bearer", A_BEARER),
    ("Bearer", A_BEARER),
    ("BEARER", A_BEARER),
    ("eyJ", A_JWT),
    ("assword", A_PASSWORD),
    ("ASSWORD", A_PASSWORD),
    ("asswd", A_PASSWORD),
    ("ASSWD", A_PASSWORD),
    ("assphrase", A_PASSWORD),
    ("ASSPHRASE", A_PASSWORD),
    ("://", A_URL),
];

// The patterns. `(?-u:\b)` is an ASCII word boundary: Unicode `\b` would
// push the regex engine off its DFA onto a slow path for non-ASCII text.
const RE_PEM: &str = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----";
const RE_AWS_KEY: &str = r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)";
const RE_AWS_SECRET: &str = r#"(?i:(?:aws_?)?secret_?access_?key|aws_?secret_?key)(?:\\?["'])?[ \t]*(?::=|[:=])[ \t]*(?:\\?["'])?[A-Za-z0-9/+]{40}"#;
const RE_GCP: &str = r#"\\?"type\\?"\s*:\s*\\?"service_account\\?""#;
const RE_GITHUB: &str = r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})(?-u:\b)";
const RE_SLACK: &str = r"(?-u:\b)xox[abprs]-[0-9A-Za-z]{1,40}-[0-9A-Za-z-]{10,255}";
const RE_STRIPE: &str = r"(?-u:\b)[rs]k_live_[0-9A-Za-z]{16,247}(?-u:\b)";
const RE_BEARER: &str = r"(?-u:\b)(?i:bearer)[ \t]+([A-Za-z0-9._~+/-]{20,}=*)";
const RE_JWT: &str = r"(?-u:\b)eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*";
/// `key = value`, `key: value`, `"key": "value"`, `key := value` or
/// `--password value`, where the key ends in password/passwd/passphrase.
/// Groups: 1 double-quoted, 2 single-quoted, 3 bare value.
const RE_PASSWORD: &str = r#"(?i)(?:(?-u:\b)[a-z0-9_]*(?:password|passwd|passphrase)(?:\\?["'])?[ \t]*(?::=|[:=])|--(?:password|passwd|passphrase)[ \t]+)[ \t]*(?:\\?"([^"\\\r\n]*)|'([^'\r\n]*)|([^\s"'\\`,;&|<>()\[\]{}=]+))"#;
/// `scheme://user:password@`; group 1 is the password.
const RE_URL_CREDENTIALS: &str = r#"(?-u:\b)[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s/:@"'<>]+:([^\s/@"'<>]+)@"#;
const RE_EMAIL: &str = r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}";
const RE_PHONE_INTL: &str = r"\+[1-9][0-9]{0,3}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,6})){1,7}";
const RE_PHONE_NANP: &str = r"(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\)[ ]?|[2-9][0-9]{2}[.-])[2-9][0-9]{2}[.-][0-9]{4}";
const RE_PHONE_TRUNK: &str = r"0[1-9][0-9]{1,3}[ -][0-9]{3,4}[ -]?[0-9]{3,4}";
const RE_IBAN_HEAD: &str = r"(?-u:\b)[A-Z]{2}[0-9]{2}";

/// The compiled detectors.
#[derive(Debug)]
struct Engine {
    anchors: AhoCorasick,
    pem: Regex,
    aws_key: Regex,
    aws_secret: Regex,
    gcp: Regex,
    github: Regex,
    slack: Regex,
    stripe: Regex,
    bearer: Regex,
    jwt: Regex,
    password: Regex,
    url_credentials: Regex,
    email: Regex,
    phone_intl: Regex,
    phone_nanp: Regex,
    phone_trunk: Regex,
    iban_head: Regex,
}

/// A text-wide detector: runs when its anchor bit is set, validating at most
/// the budget's number of candidates.
type Check = fn(&Engine, &str, &mut usize) -> Verdict;
/// A numeric detector over one digit run (`text`, the run's offset, the run).
type RunCheck = fn(&Engine, &str, usize, &str, &mut usize) -> Verdict;

impl Engine {
    fn build() -> Result<Self, String> {
        let re = |p: &str| Regex::new(p).map_err(|e| format!("pattern `{p}`: {e}"));
        let anchors = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(ANCHORS.iter().map(|(needle, _)| needle))
            .map_err(|e| format!("anchors: {e}"))?;
        Ok(Self {
            anchors,
            pem: re(RE_PEM)?,
            aws_key: re(RE_AWS_KEY)?,
            aws_secret: re(RE_AWS_SECRET)?,
            gcp: re(RE_GCP)?,
            github: re(RE_GITHUB)?,
            slack: re(RE_SLACK)?,
            stripe: re(RE_STRIPE)?,
            bearer: re(RE_BEARER)?,
            jwt: re(RE_JWT)?,
            password: re(RE_PASSWORD)?,
            url_credentials: re(RE_URL_CREDENTIALS)?,
            email: re(RE_EMAIL)?,
            phone_intl: re(RE_PHONE_INTL)?,
            phone_nanp: re(RE_PHONE_NANP)?,
            phone_trunk: re(RE_PHONE_TRUNK)?,
            iban_head: re(RE_IBAN_HEAD)?,
        })
    }

    fn scan(&self, text: &str, out: &mut Classification) {
        if text.is_empty() {
            return;
        }
        let record = |out: &mut Classification, finding: Finding, verdict: Verdict| match verdict {
            Verdict::Found => out.insert(finding),
            Verdict::GaveUp => out.insert(TOO_MANY),
            Verdict::Clean => {}
        };
        let bits = self.anchor_bits(text);
        if bits != 0 {
            let checks: [(u32, Finding, Check); 11] = [
                (A_PEM, PEM, Self::pem),
                (A_AWS_KEY, AWS_KEY, |e, t, _| e.aws_key.is_match(t).into()),
                (A_AWS_SECRET, AWS_SECRET, Self::aws_secret),
                (A_GCP, GCP, |e, t, _| (e.gcp.is_match(t) && t.contains("private_key")).into()),
                (A_GITHUB, GITHUB, |e, t, _| e.github.is_match(t).into()),
                (A_SLACK, SLACK, |e, t, _| e.slack.is_match(t).into()),
                (A_STRIPE, STRIPE, |e, t, _| e.stripe.is_match(t).into()),
                (A_BEARER, BEARER, Self::bearer),
                (A_JWT, JWT, Self::jwt),
                (A_PASSWORD, PASSWORD, Self::password),
                (A_URL, URL_CREDENTIALS, Self::url_credentials),
            ];
            for (bit, finding, check) in checks {
                if bits & bit != 0 && !out.has_detector(finding.detector) {
                    let mut budget = MAX_CANDIDATES;
                    record(out, finding, check(self, text, &mut budget));
                }
            }
        }
        let shape = Shape::of(text.as_bytes());
        if shape.at && !out.has_detector(EMAIL.detector) {
            let mut budget = MAX_CANDIDATES;
            record(out, EMAIL, self.email(text, &mut budget));
        }
        if shape.iban && !out.has_detector(IBAN.detector) {
            let mut budget = MAX_CANDIDATES;
            record(out, IBAN, self.iban(text, &mut budget));
        }
        // One budget per numeric detector across all runs of this text.
        let mut numeric = [
            (SSN, 0, Self::ssn as RunCheck, Verdict::Clean, MAX_CANDIDATES),
            (PHONE, MIN_PHONE_DIGITS, Self::phone, Verdict::Clean, MAX_CANDIDATES),
            (CARD, *CARD_DIGITS.start(), Self::card, Verdict::Clean, MAX_CANDIDATES),
        ];
        for run in &shape.runs {
            let Some(s) = text.get(run.start..run.end) else { continue };
            for (finding, min_digits, check, verdict, budget) in &mut numeric {
                if *verdict == Verdict::Clean && run.digits >= *min_digits && !out.has_detector(finding.detector) {
                    *verdict = check(self, text, run.start, s, budget);
                }
            }
        }
        for (finding, _, _, verdict, _) in numeric {
            record(out, finding, verdict);
        }
    }

    /// Which detectors the text's anchors make possible.
    fn anchor_bits(&self, text: &str) -> u32 {
        let mut bits = 0;
        let mut from = 0;
        // Resume one byte after each match's start, not at its end, so that
        // overlapping anchors (`AKIAWS_SECRET_KEY`) are all seen. Past
        // MAX_CANDIDATES hits every text detector runs: each is linear.
        let mut hits = 0;
        while let Some(m) = self.anchors.find(aho_corasick::Input::new(text).span(from..text.len())) {
            bits |= ANCHORS.get(m.pattern().as_usize()).map_or(0, |(_, bit)| *bit);
            hits += 1;
            if bits == A_ALL || hits >= MAX_CANDIDATES {
                return A_ALL;
            }
            from = m.start() + 1;
        }
        bits
    }

    fn pem(&self, text: &str, budget: &mut usize) -> Verdict {
        let bytes = text.as_bytes();
        let mut headers = self.pem.find_iter(text).peekable();
        // Each header's window stops at the next header, so repeated headers
        // cost one pass over the text, not one window each.
        let windows = std::iter::from_fn(|| {
            let m = headers.next()?;
            let limit = headers.peek().map_or(bytes.len(), regex::Match::start);
            Some(bytes.get(m.end()..limit.min(m.end() + PEM_BODY_WINDOW)).unwrap_or_default())
        });
        first_valid(budget, windows, |window| {
            let mut run = 0;
            window.iter().any(|&b| {
                run = if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' { run + 1 } else { 0 };
                run >= PEM_BODY_MIN_RUN
            })
        })
    }

    fn aws_secret(&self, text: &str, budget: &mut usize) -> Verdict {
        // The 40 characters must be the whole value, not the start of a longer token.
        first_valid(budget, self.aws_secret.find_iter(text), |m| !next_char(text, m.end()).is_some_and(is_base64_char))
    }

    fn bearer(&self, text: &str, budget: &mut usize) -> Verdict {
        first_valid(budget, self.bearer.captures_iter(text), |c| {
            c.get(1).is_some_and(|t| {
                let t = t.as_str();
                // Real tokens mix letters and digits; prose after "bearer" does not.
                t.bytes().any(|b| b.is_ascii_digit()) && t.bytes().any(|b| b.is_ascii_alphabetic())
            })
        })
    }

    fn jwt(&self, text: &str, budget: &mut usize) -> Verdict {
        first_valid(budget, self.jwt.find_iter(text), |m| {
            let header = m.as_str().split('.').next().unwrap_or_default();
            header.len() <= MAX_JWT_HEADER
                && base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(header)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
                    .is_some_and(|h| h.get("alg").is_some_and(Value::is_string))
        })
    }

    fn password(&self, text: &str, budget: &mut usize) -> Verdict {
        first_valid(budget, self.password.captures_iter(text), |c| {
            let key = c.get(0).map_or("", |m| m.as_str());
            match (c.get(1).or_else(|| c.get(2)), c.get(3)) {
                (Some(quoted), _) => !is_reference(quoted.as_str().trim(), key),
                (None, Some(bare)) => {
                    // `f(password=getpass())`, `password: Optional[str]`: code, not a literal.
                    let called = matches!(next_char(text, bare.end()), Some('(' | '['));
                    !called && !is_reference(bare.as_str(), key)
                }
                (None, None) => false,
            }
        })
    }

    fn url_credentials(&self, text: &str, budget: &mut usize) -> Verdict {
        first_valid(budget, self.url_credentials.captures_iter(text), |c| {
            c.get(1).is_some_and(|p| !is_reference(p.as_str(), ""))
        })
    }

    fn email(&self, text: &str, budget: &mut usize) -> Verdict {
        first_valid(budget, self.email.find_iter(text), |m| {
            let Some((_, domain)) = m.as_str().split_once('@') else { return false };
            // `icon@2x.png`: an asset scale suffix, not a domain.
            let first_label = domain.split('.').next().unwrap_or_default();
            if first_label
                .strip_suffix(['x', 'X'])
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            {
                return false;
            }
            let mut after = text.get(m.end()..).unwrap_or_default().chars();
            match after.next() {
                // The domain continues (`a@b.com2`, `a@b.co-op`): not where the regex ended.
                Some(c) if c.is_alphanumeric() || c == '_' || c == '-' || c == '@' => return false,
                // `git@github.com:org/repo`: an scp-style remote.
                Some(':') if after.next().is_some_and(|c| !c.is_whitespace()) => return false,
                _ => {}
            }
            let line = line_before(text, m.start());
            let token = line.rsplit(|c: char| c.is_whitespace() || c == '"' || c == '\'').next().unwrap_or_default();
            if token.contains("://") {
                return false;
            }
            !line.split_whitespace().any(|word| {
                let command = word.rsplit('/').next().unwrap_or(word);
                matches!(command, "ssh" | "scp" | "sftp" | "rsync" | "mosh" | "autossh" | "ssh-copy-id")
            })
        })
    }

    fn iban(&self, text: &str, budget: &mut usize) -> Verdict {
        first_valid(budget, self.iban_head.find_iter(text), |m| {
            let Some(len) = text.get(m.start()..m.start() + 2).and_then(iban_length) else { return false };
            let rest = text.as_bytes().get(m.start()..).unwrap_or_default();
            let mut chars = Vec::with_capacity(len);
            let mut end = rest.len();
            let mut after_space = false;
            for (i, &b) in rest.iter().enumerate() {
                if chars.len() == len {
                    end = i;
                    break;
                }
                if b.is_ascii_uppercase() || b.is_ascii_digit() {
                    chars.push(b);
                    after_space = false;
                } else if b == b' ' && !after_space {
                    after_space = true;
                } else {
                    break;
                }
            }
            chars.len() == len && !rest.get(end).is_some_and(u8::is_ascii_alphanumeric) && iban_checksum_ok(&chars)
        })
    }

    /// `ddd-dd-dddd`, found by hand: the regex engine's search for the
    /// inner `-` literal was measured at 9 ns a byte on dash-dense input.
    fn ssn(&self, text: &str, base: usize, run: &str, budget: &mut usize) -> Verdict {
        let shaped = run.as_bytes().windows(11).enumerate().filter_map(|(i, w)| match *w {
            [a0, a1, a2, b'-', g0, g1, b'-', s0, s1, s2, s3]
                if [a0, a1, a2, g0, g1, s0, s1, s2, s3].iter().all(u8::is_ascii_digit) =>
            {
                Some((i, digits_value(&[a0, a1, a2]), digits_value(&[g0, g1]), digits_value(&[s0, s1, s2, s3])))
            }
            _ => None,
        });
        first_valid(budget, shaped, |(i, area, group, serial)| {
            // SSA never issues area 000, 666 or 900-999, group 00 or serial 0000.
            area != 0
                && area != 666
                && area < 900
                && group != 0
                && serial != 0
                && isolated(text, base + i, base + i + 11)
        })
    }

    fn phone(&self, text: &str, base: usize, run: &str, budget: &mut usize) -> Verdict {
        let formats = [
            (&self.phone_intl, MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS),
            (&self.phone_nanp, MIN_PHONE_DIGITS..=11),
            (&self.phone_trunk, MIN_PHONE_DIGITS..=11),
        ];
        let candidates = formats.iter().flat_map(|(re, digits)| re.find_iter(run).map(move |m| (m, digits)));
        first_valid(budget, candidates, |(m, digits)| {
            digits.contains(&m.as_str().bytes().filter(u8::is_ascii_digit).count())
                && isolated(text, base + m.start(), base + m.end())
        })
    }

    /// Card numbers in a digit run: any window of whole digit groups that is
    /// one group of 13–19 digits, or 3–6-digit groups joined by one kind of
    /// separator, and passes the card checks. Each window is a candidate.
    fn card(&self, text: &str, base: usize, run: &str, budget: &mut usize) -> Verdict {
        let bytes = run.as_bytes();
        let mut groups = digit_groups(bytes);
        let mut ahead: VecDeque<Group> = groups.by_ref().take(CARD_MAX_GROUPS).collect();
        let windows = std::iter::from_fn(|| {
            loop {
                let first = ahead.pop_front()?;
                ahead.extend(groups.next());
                let mut spans = Vec::new();
                if CARD_DIGITS.contains(&first.len()) {
                    spans.push((first.start, first.end));
                }
                if CARD_GROUP.contains(&first.len()) {
                    let mut total = first.len();
                    let mut sep = None;
                    for g in &ahead {
                        if g.sep == 0 || !CARD_GROUP.contains(&g.len()) || *sep.get_or_insert(g.sep) != g.sep {
                            break;
                        }
                        total += g.len();
                        if total > *CARD_DIGITS.end() {
                            break;
                        }
                        if total >= *CARD_DIGITS.start() {
                            spans.push((first.start, g.end));
                        }
                    }
                }
                if !spans.is_empty() {
                    return Some(spans);
                }
            }
        })
        .flatten();
        first_valid(budget, windows, |(start, end)| {
            let mut digits = [0u8; 19];
            let mut n = 0;
            for &b in bytes.get(start..end).unwrap_or_default().iter().filter(|b| b.is_ascii_digit()) {
                if let Some(slot) = digits.get_mut(n) {
                    *slot = b;
                }
                n += 1;
            }
            card_number_ok(digits.get(..n).unwrap_or_default()) && isolated(text, base + start, base + end)
        })
    }
}

/// How validating one detector's candidates ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// No candidate passed.
    Clean,
    /// A candidate passed.
    Found,
    /// [`MAX_CANDIDATES`] failed first: the text is not fully classified.
    GaveUp,
}

impl From<bool> for Verdict {
    fn from(found: bool) -> Self {
        if found { Verdict::Found } else { Verdict::Clean }
    }
}

/// Validate candidates in order until one passes or `budget` runs out.
fn first_valid<T>(
    budget: &mut usize,
    candidates: impl Iterator<Item = T>,
    mut valid: impl FnMut(T) -> bool,
) -> Verdict {
    for candidate in candidates {
        if *budget == 0 {
            return Verdict::GaveUp;
        }
        *budget -= 1;
        if valid(candidate) {
            return Verdict::Found;
        }
    }
    Verdict::Clean
}

/// What one byte pass learns about a text.
struct Shape {
    /// Contains `@` (emails are possible).
    at: bool,
    /// Contains two capitals followed by two digits (an IBAN is possible).
    iban: bool,
    /// Maximal runs of digits and phone/card separators that hold at least
    /// [`MIN_RUN_DIGITS`] digits that could start or continue a match: every
    /// numeric detector's match lies inside one of them.
    runs: Vec<Run>,
}

struct Run {
    start: usize,
    end: usize,
    digits: usize,
}

/// Bytes that may sit between the digits of a phone or card number.
fn is_run_separator(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'(' | b')' | b'+')
}

/// Most text has few digits: skipping 32-byte blocks without one (a loop
/// the compiler turns into SIMD compares) keeps the pass well under a
/// nanosecond per byte.
const SKIP_BLOCK: usize = 32;

fn next_digit(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(block) = bytes.get(i..i + SKIP_BLOCK) {
        let any = block.iter().fold(0u8, |acc, &b| acc | u8::from(b.wrapping_sub(b'0') < 10));
        if any != 0 {
            break;
        }
        i += SKIP_BLOCK;
    }
    bytes.get(i..)?.iter().position(u8::is_ascii_digit).map(|p| i + p)
}

impl Shape {
    fn of(bytes: &[u8]) -> Self {
        let mut shape = Shape { at: bytes.contains(&b'@'), iban: false, runs: Vec::new() };
        let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let mut i = 0;
        while let Some(first) = next_digit(bytes, i) {
            let before = first.checked_sub(1).map_or(0, at);
            if first >= 2
                && before.is_ascii_uppercase()
                && at(first - 2).is_ascii_uppercase()
                && at(first + 1).is_ascii_digit()
            {
                shape.iban = true;
            }
            // A phone number may start with `+` or `(` just before its first digit.
            let start = if matches!(before, b'+' | b'(') { first - 1 } else { first };
            // Digits glued to a word (`a716`, and `-4466` right after them)
            // fail `isolated`, so they cannot start a match and are not counted;
            // a space, `(` or `+`, or two separators in a row, end the glue.
            let mut glued = before.is_ascii_alphanumeric() || before == b'_';
            let mut digits = 0;
            let mut prev_digit = false;
            let mut end = first;
            while let Some(&b) = bytes.get(end) {
                if b.is_ascii_digit() {
                    digits += usize::from(!glued);
                    prev_digit = true;
                } else if is_run_separator(b) {
                    if matches!(b, b' ' | b'(' | b'+') || !prev_digit {
                        glued = false;
                    }
                    prev_digit = false;
                } else {
                    break;
                }
                end += 1;
            }
            if digits >= MIN_RUN_DIGITS {
                shape.runs.push(Run { start, end, digits });
            }
            i = end.max(first + 1);
        }
        shape
    }
}

/// A maximal group of digits in a run.
struct Group {
    start: usize,
    end: usize,
    /// The single space or dash joining it to the previous group; 0 when
    /// not joined (first group, or any other gap).
    sep: u8,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

fn digit_groups(bytes: &[u8]) -> impl Iterator<Item = Group> + '_ {
    let mut from = 0;
    // Where the next group must start to be joined to this one, and by what.
    let mut joined_at = (usize::MAX, 0u8);
    std::iter::from_fn(move || {
        let start = from + bytes.get(from..)?.iter().position(u8::is_ascii_digit)?;
        let tail = bytes.get(start..).unwrap_or_default();
        let end = start + tail.iter().position(|b| !b.is_ascii_digit()).unwrap_or(tail.len());
        let sep = if joined_at.0 == start { joined_at.1 } else { 0 };
        joined_at = match (bytes.get(end), bytes.get(end + 1)) {
            (Some(&s @ (b' ' | b'-')), Some(d)) if d.is_ascii_digit() => (end + 1, s),
            _ => (usize::MAX, 0),
        };
        from = end;
        Some(Group { start, end, sep })
    })
}

/// Network prefix, Luhn checksum, and not one repeated digit.
fn card_number_ok(d: &[u8]) -> bool {
    let prefix_ok = match d.first() {
        Some(b'3'..=b'6') => true,
        // Mastercard's 2-series.
        Some(b'2') => (2221..=2720).contains(&d.get(..4).map_or(0, digits_value)),
        _ => false,
    };
    let repeated = d.first().is_some_and(|f| d.iter().all(|b| b == f));
    prefix_ok && !repeated && CARD_DIGITS.contains(&d.len()) && luhn(d)
}

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let x = u32::from(b.saturating_sub(b'0'));
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn digits_value(d: &[u8]) -> u32 {
    d.iter().fold(0u32, |acc, &b| acc.saturating_mul(10).saturating_add(u32::from(b.saturating_sub(b'0'))))
}

/// IBAN length per country (SWIFT IBAN registry). An unknown country is
/// never an IBAN, which keeps random `AB12…` tokens out.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS.iter().find(|(c, _)| *c == country).map(|(_, n)| *n)
}

/// ISO 13616 mod-97: the first four characters moved to the end, letters as
/// 10–35, the number mod 97 must be 1.
fn iban_checksum_ok(chars: &[u8]) -> bool {
    let rotated = chars.iter().skip(4).chain(chars.iter().take(4));
    let rem = rotated.fold(0u32, |r, &b| match b {
        b'0'..=b'9' => (r * 10 + u32::from(b - b'0')) % 97,
        _ => (r * 100 + u32::from(b.saturating_sub(b'A')) + 10) % 97,
    });
    rem == 1
}

/// Whether a numeric match stands alone: not glued to letters or digits,
/// and not one piece of a longer dotted/dashed/slashed number (a version, a
/// decimal, a date, an IP).
fn isolated(text: &str, start: usize, end: usize) -> bool {
    let mut before = text.get(..start).unwrap_or_default().chars().rev();
    let mut after = text.get(end..).unwrap_or_default().chars();
    let side_ok = |next: Option<char>, beyond: Option<char>| match next {
        None => true,
        Some(c) if c.is_alphanumeric() || c == '_' => false,
        Some('.' | '-' | '/' | ':') => !beyond.is_some_and(|c| c.is_ascii_digit()),
        Some(_) => true,
    };
    side_ok(before.next(), before.next()) && side_ok(after.next(), after.next())
}

fn next_char(text: &str, at: usize) -> Option<char> {
    text.get(at..).and_then(|s| s.chars().next())
}

fn is_base64_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '/'
}

/// The end of the line before `pos`, at most [`LOOKBACK_BYTES`] long.
fn line_before(text: &str, pos: usize) -> &str {
    let before = text.get(..pos).unwrap_or_default();
    let mut cut = pos.saturating_sub(LOOKBACK_BYTES);
    while !before.is_char_boundary(cut) {
        cut += 1;
    }
    let window = before.get(cut..).unwrap_or_default();
    window.rsplit('\n').next().unwrap_or_default()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary, and whether anything was cut.
fn char_prefix(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s.get(..end).unwrap_or_default(), true)
}

/// A key that names a password: ends in password/passwd/passphrase, any case
/// (`password`, `DB_PASSWORD`, `userPassword`), not `password_hash`.
fn is_password_key(key: &str) -> bool {
    ["password", "passwd", "passphrase"].iter().any(|suffix| {
        key.len() >= suffix.len()
            && key.get(key.len() - suffix.len()..).is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
    })
}

/// `aws_secret_access_key`, `SecretAccessKey`, `aws-secret-key`, any case.
fn is_aws_secret_key_name(key: &str) -> bool {
    let squashed = || key.bytes().filter(|b| *b != b'_' && *b != b'-').map(|b| b.to_ascii_lowercase());
    ["awssecretaccesskey", "secretaccesskey", "awssecretkey"].iter().any(|name| squashed().eq(name.bytes()))
}

fn is_aws_secret_value(s: &str) -> bool {
    s.len() == 40 && s.chars().all(is_base64_char)
}

/// Whether a secret's value is a reference or template rather than a
/// literal: empty, a variable (`$X`, `${X}`, `%X%`, `{{x}}`), a
/// `<your-token>` template, a mask (`****`, `xxxx`), a YAML tag (`!vault`), a null or
/// type name, a dotted path (`args.password`), or the key's own name
/// (`password=password`, typical of `f(password=password)`).
fn is_reference(value: &str, key: &str) -> bool {
    const NON_LITERALS: &[&str] = &[
        "null",
        "none",
        "nil",
        "undefined",
        "true",
        "false",
        "str",
        "string",
        "bytes",
        "secretstr",
        "optional",
        "redacted",
        "[redacted]",
        "password",
        "passwd",
        "passphrase",
    ];
    let Some(first) = value.chars().next() else { return true };
    let dotted_path = value.contains('.')
        && value.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    let key_tail = key.trim_start_matches('-').rsplit(['_', '.', '-']).next().unwrap_or_default();
    let key_word = key_tail.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    matches!(first, '$' | '%' | '!')
        || value.starts_with("{{")
        || (first == '<' && value.ends_with('>'))
        || value.chars().all(|c| matches!(c, '*' | 'x' | 'X' | '•' | '.' | '#'))
        || NON_LITERALS.iter().any(|w| value.eq_ignore_ascii_case(w))
        || (!key_word.is_empty() && value.eq_ignore_ascii_case(key_word))
        || dotted_path
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

    use std::sync::LazyLock;
    use std::time::Instant;

    use serde_json::json;

    use super::*;

    static C: LazyLock<Classifier> = LazyLock::new(Classifier::builtin);

    fn detectors(text: &str) -> Vec<String> {
        C.classify_text(text).detectors.into_iter().collect()
    }

    fn assert_only(text: &str, id: &str) {
        assert_eq!(detectors(text), vec![id.to_owned()], "text: {text:?}");
    }

    fn assert_clean(text: &str) {
        assert_eq!(detectors(text), Vec::<String>::new(), "text: {text:?}");
    }

    fn b64url(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    // Fixtures that look like live credentials are assembled at run time so
    // that secret scanners do not flag this source file.
    fn github_token() -> String {
        format!("{}{}", "gh", "p_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5")
    }
    fn pem_key() -> String {
        format!(
            "{}-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naTmPkHgLkXSAQ0\n-----END RSA PRIVATE KEY-----",
            concat!("-----BEGIN RSA ", "PRIVATE KEY")
        )
    }

    #[test]
    // Every constant pattern compiles, ids are unique, and the classifier can be shared across threads.
    fn builtin_compiles_every_pattern() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Classifier>();
        assert!(Classifier::builtin().is_ready());
        let ids: BTreeSet<_> = DETECTORS.iter().map(|f| f.detector).collect();
        assert_eq!(ids.len(), DETECTORS.len());
        assert!(DETECTORS.iter().all(|f| [SECRET, PII, UNKNOWN].contains(&f.class)));
    }

    #[test]
    // Leftmost-first anchor search is sound: no anchor contains another detector's anchor.
    fn anchors_never_contain_each_other() {
        for (a, bit_a) in ANCHORS {
            for (b, bit_b) in ANCHORS {
                if bit_a == bit_b {
                    continue;
                }
                assert!(!a.contains(b), "`{a}` contains `{b}`");
            }
        }
    }

    #[test]
    // A PEM private key header followed by key material is a SECRET.
    fn pem_private_key_is_secret() {
        let c = C.classify_text(&format!("cat id_rsa\n{}", pem_key()));
        assert!(c.has_class(SECRET) && c.has_detector("secret.pem_private_key"));
        // OpenSSH and encrypted PKCS#8 keys, and the JSON-escaped form of a key.
        let body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2g";
        assert_only(
            &format!("{}-----\n{body}", concat!("-----BEGIN OPENSSH ", "PRIVATE KEY")),
            "secret.pem_private_key",
        );
        assert_only(
            &format!("{}-----\\n{body}", concat!("-----BEGIN ENCRYPTED ", "PRIVATE KEY")),
            "secret.pem_private_key",
        );
    }

    #[test]
    // A bare PEM header (a grep, a doc), a public key or a certificate is not a secret.
    fn pem_header_without_key_material_is_not_secret() {
        assert_clean(concat!("grep -rl -- '-----BEGIN RSA ", "PRIVATE KEY-----' ."));
        assert_clean("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0Z3VS5JJcds3xfn\n");
        assert_clean("-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\n");
    }

    #[test]
    // AWS access key ids (AKIA long-term, ASIA temporary) are SECRET.
    fn aws_access_key_ids_are_secret() {
        assert_only("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "secret.aws_access_key");
        assert_only("\"AccessKeyId\": \"ASIAY34FZKBOKMUTVV7A\"", "secret.aws_access_key");
    }

    #[test]
    // Near misses of an access key id: too short, lowercase, or inside a longer word.
    fn aws_key_lookalikes_are_clean() {
        assert_clean("AKIAIOSFODNN7EXAMPL is 19 characters");
        assert_clean("akiaiosfodnn7example");
        assert_clean("XAKIAIOSFODNN7EXAMPLE1");
        assert_clean("Asia/Tokyo ASIA-PACIFIC");
    }

    #[test]
    // An aws_secret_access_key assignment in any spelling, in text or as a JSON member, is SECRET.
    fn aws_secret_key_assignments_are_secret() {
        let key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_only(&format!("[default]\naws_secret_access_key = {key}\n"), "secret.aws_secret_key");
        assert_only(&format!("AWS_SECRET_ACCESS_KEY=\"{key}\""), "secret.aws_secret_key");
        // Its anchor overlapping another detector's anchor (`AKIA`) is still seen.
        assert_only(&format!("AKIAWS_SECRET_KEY={key}"), "secret.aws_secret_key");
        let v = json!({"Credentials": {"SecretAccessKey": key, "Expiration": "2026-01-01T00:00:00Z"}});
        assert!(C.classify_value(&v).has_detector("secret.aws_secret_key"));
        // A value that is not exactly 40 base64 characters is not the key.
        assert_clean(&format!("aws_secret_access_key = {key}XYZ"));
        assert_clean("aws_secret_access_key = ${AWS_SECRET}");
    }

    #[test]
    // A GCP service-account key (type service_account with a private_key) is SECRET, as a value or as text.
    fn gcp_service_account_is_secret() {
        let v =
            json!({"type": "service_account", "project_id": "p", "private_key_id": "abc", "private_key": "redacted"});
        assert!(C.classify_value(&v).has_detector("secret.gcp_service_account"));
        let text = serde_json::to_string_pretty(&v).unwrap();
        assert!(C.classify_text(&text).has_detector("secret.gcp_service_account"));
        // A service account's public description has no private key.
        assert_clean(r#"{"type": "service_account", "client_email": "svc"}"#);
    }

    #[test]
    // GitHub classic and fine-grained tokens, Slack tokens and Stripe live keys are SECRET.
    fn saas_tokens_are_secret() {
        assert_only(&format!("GITHUB_TOKEN={}", github_token()), "secret.github_token");
        let pat = format!("{}{}_{}", "github_", "pat_11ABCDEFG0123456789abc", "Z".repeat(59));
        assert_only(&format!("GH_TOKEN={pat}"), "secret.github_token");
        let slack = format!("{}{}", "xox", "b-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx");
        assert_only(&format!("SLACK_TOKEN={slack}"), "secret.slack_token");
        let stripe = format!("{}{}", "sk_", "live_51H8abcDEFghiJKLmnoPQRstu");
        assert_only(&format!("stripe.api_key = '{stripe}'"), "secret.stripe_key");
        // Test-mode Stripe keys and short ghp_ prefixes are not live credentials.
        assert_clean("sk_test_51H8abcDEFghiJKLmnoPQRstu ghp_short");
    }

    #[test]
    // An Authorization: Bearer header with a long token is SECRET; a variable reference is not.
    fn bearer_tokens_are_secret_but_references_are_not() {
        assert_only(
            "curl -H 'Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0' https://api.example.com",
            "secret.bearer_token",
        );
        assert_clean("curl -H \"Authorization: Bearer $API_TOKEN\" https://api.example.com");
        assert_clean("the bearer of this letter is entitled to everything");
    }

    #[test]
    // A JWT is three base64url segments whose first decodes to a JSON header with "alg".
    fn jwts_are_secret() {
        let jwt = format!("{}.{}.c2lnbmF0dXJl", b64url(r#"{"alg":"HS256","typ":"JWT"}"#), b64url(r#"{"sub":"42"}"#));
        assert_only(&format!("token={jwt}"), "secret.jwt");
        assert_only(&format!("{}.{}.", b64url(r#"{"alg":"none"}"#), b64url("{}")), "secret.jwt");
    }

    #[test]
    // eyJ-prefixed dotted strings whose header has no "alg" or is not JSON are not JWTs; plain base64 is clean.
    fn jwt_lookalikes_are_clean() {
        assert_clean(&format!("{}.{}.sig", b64url(r#"{"foo":"bar"}"#), b64url(r#"{"foo":"bar"}"#)));
        assert_clean("eyJub3QganNvbiBhdCBhbGw.eyJub3QganNvbg.abc");
        assert_clean("echo dGhpcyBpcyBub3QgYSBzZWNyZXQgYXQgYWxs | base64 -d");
    }

    #[test]
    // Password assignments with a literal value are SECRET in env, shell, JSON, YAML, URL-query and flag forms.
    fn password_assignments_are_secret() {
        for text in [
            "DB_PASSWORD=s3cr3t-Pa55",
            "PGPASSWORD=hunter2 psql -h db",
            r#"{"user": "alice", "password": "correct horse"}"#,
            "password: hunter2",
            "https://example.com/login?user=a&password=hunter2&x=1",
            "mysql --password hunter2",
            "userPassword := \"s3cret\"",
            r#"{\"password\": \"hunter2\"}"#,
        ] {
            assert_only(text, "secret.password_assignment");
        }
        let v = json!({"db": {"Password": "hunter2"}});
        assert!(C.classify_value(&v).has_detector("secret.password_assignment"));
    }

    #[test]
    // Password keys whose value is empty, a reference, a template, a mask, a type or a call are not secrets.
    fn password_references_are_clean() {
        for text in [
            r#"{"password": ""}"#,
            "password=$DB_PASS",
            "password: ${{ secrets.DB_PASSWORD }}",
            "password: \"<your password>\"",
            "password = \"********\"",
            "def login(user: str, password: str) -> None:",
            "password = getpass.getpass()",
            "password = input('pw: ')",
            "connect(password=password)",
            "password: Optional[str] = None",
            "--password=PASSWORD  the database password",
            "password_hash = bcrypt(pw)",
            "Password:\n",
        ] {
            assert_clean(text);
        }
        assert!(C.classify_value(&json!({"password": null, "password_hint": "pet"})).is_empty());
    }

    #[test]
    // user:password@ in a URL is SECRET; a user alone or a template password is not.
    fn url_credentials_are_secret() {
        assert_only("postgres://app:Tr0ub4dor@db.internal:5432/app", "secret.url_credentials");
        assert_clean("postgres://app:${PGPASS}@db.internal:5432/app");
        assert_clean("http://localhost:8080/health");
    }

    #[test]
    // Email addresses are PII.
    fn emails_are_pii() {
        assert_only("git log --author=alice@example.com", "pii.email");
        assert_only("To: First.Last+tag@mail.example.co.uk.", "pii.email");
        assert!(C.classify_value(&json!({"bob@example.org": 1})).has_detector("pii.email"));
    }

    #[test]
    // Logins and look-alikes are not emails: scp/git remotes, URL user info, ssh targets, retina assets, npm versions.
    fn email_lookalikes_are_clean() {
        for text in [
            "git clone git@github.com:org/repo.git",
            "git remote add origin ssh://git@github.com/org/repo.git",
            "ssh -i ~/.ssh/id deploy@prod.example.com uptime",
            "rsync -av ./dist/ www@web1.example.com:/srv/site",
            "https://user@host.example.com/path",
            "cp logo@2x.png dist/",
            "npm install lodash@4.17.21 @types/node",
            "docker pull nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31",
        ] {
            assert_clean(text);
        }
    }

    #[test]
    // Phone numbers in E.164, North American and national trunk formats are PII.
    fn phone_numbers_are_pii() {
        for text in [
            "call +14155550132 now",
            "tel: +44 20 7946 0958",
            "+1-800-555-0199",
            "(415) 555-0132",
            "cell 212-555-0147.",
            "Tel 020 7946 0958",
        ] {
            assert_only(text, "pii.phone");
        }
    }

    #[test]
    // Versions, dates, times, IPv4 addresses, epoch seconds, build numbers and invalid NANP numbers are not phones.
    fn phone_lookalikes_are_clean() {
        for text in [
            "version 1.2.3 and 10.0.19041.1234",
            "2024-01-15 10:30:00.123456789",
            "ping 192.168.100.200 && ping 10.20.30.40",
            "created_at=1700000000 id=4815162342",
            "123-456-7890",
            "build 20240115-123456",
        ] {
            assert_clean(text);
        }
    }

    #[test]
    // Luhn-valid card numbers are PII: contiguous, spaced, dashed, Amex grouping, and as a JSON number.
    fn payment_cards_are_pii() {
        for text in [
            "card=4111111111111111",
            "5500 0000 0000 0004",
            "4111-1111-1111-1111 exp 12/29",
            "amex 3782 822463 10005",
            "order 12 4111 1111 1111 1111",
        ] {
            assert_only(text, "pii.payment_card");
        }
        assert!(C.classify_value(&json!({"pan": 6011111111111117u64})).has_detector("pii.payment_card"));
    }

    #[test]
    // Luhn failures, one repeated digit, non-card prefixes and longer numbers are not cards.
    fn card_lookalikes_are_clean() {
        for text in [
            "4111111111111112",
            "0000000000000000 4444444444444444",
            "1700000000123456",
            "41111111111111110000",
            "3.4111111111111111",
            "ref 1234 5678 9012 3456",
        ] {
            assert_clean(text);
        }
    }

    #[test]
    // A US SSN ddd-dd-dddd with a valid area, group and serial is PII.
    fn ssns_are_pii() {
        assert_only("SSN: 536-22-1234", "pii.ssn");
        assert_only("ssn=078-05-1120;", "pii.ssn");
    }

    #[test]
    // Area 000/666/9xx, group 00, serial 0000 and longer dashed numbers are not SSNs.
    fn invalid_ssns_are_clean() {
        for text in ["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000", "1-123-45-6789"] {
            assert_clean(text);
        }
    }

    #[test]
    // IBANs with a valid mod-97 checksum are PII, compact or in groups of four.
    fn ibans_are_pii() {
        assert_only("IBAN GB82WEST12345698765432", "pii.iban");
        assert_only("iban: DE89 3704 0044 0532 0130 00 (Commerzbank)", "pii.iban");
    }

    #[test]
    // A wrong checksum, an unknown country or a longer token is not an IBAN.
    fn iban_lookalikes_are_clean() {
        assert_clean("GB82WEST12345698765433");
        assert_clean("ZZ82WEST12345698765432");
        assert_clean("GB82WEST12345698765432X");
        assert_clean("DE89370400440532013000DE89370400440532013000");
    }

    #[test]
    // Everyday agent payloads are clean: shell commands, git SHAs, UUIDs, semver, timestamps, base64, paths.
    fn benign_payloads_are_clean() {
        for text in [
            "ls -la /home/user/project && cd src",
            "git checkout 4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            "request_id=550e8400-e29b-41d4-a716-446655440000",
            "cargo add serde@1.0.219 && rustc 1.90.0",
            "2026-11-23T03:24:37.123Z INFO listening addr=127.0.0.1:8080",
            "echo aGVsbG8gd29ybGQ= | base64 -d",
            "cat ~/.config/app/settings.json | jq .theme",
            "SELECT id, name FROM users WHERE created_at > '2024-01-01' LIMIT 100",
            "@decorator\ndef f(x): return x @ y",
        ] {
            assert_clean(text);
        }
    }

    #[test]
    // Keys, string leaves and numbers are all scanned, at any depth up to the bound.
    fn values_scan_keys_leaves_and_numbers() {
        let v = json!({"a": [{"b": {"notes": ["call +44 20 7946 0958"]}}], "alice@example.com": true, "n": 4111111111111111u64});
        let c = C.classify_value(&v);
        assert_eq!(
            c.detectors.iter().map(String::as_str).collect::<Vec<_>>(),
            ["pii.email", "pii.payment_card", "pii.phone"]
        );
        assert!(C.classify_value(&json!({"cmd": "ls -la", "limit": 100})).is_empty());
        // Leaves are scanned one by one: text split across two leaves does not join.
        assert!(C.classify_value(&json!(["4111 1111", "1111 1111"])).is_empty());
    }

    #[test]
    // Nesting past MAX_DEPTH is not walked and counts as UNKNOWN.
    fn too_deep_values_are_unknown() {
        let mut v = json!("alice@example.com");
        for _ in 0..MAX_DEPTH {
            v = json!([v]);
        }
        assert!(C.classify_value(&v).has_detector("pii.email"));
        let v = json!([v]);
        let c = C.classify_value(&v);
        assert!(c.has_class(UNKNOWN) && c.has_detector("unknown.too_deep"));
    }

    #[test]
    // Input past MAX_SCAN_BYTES is not scanned and counts as UNKNOWN; the cut never splits a character.
    fn oversized_input_is_unknown() {
        let big = "é".repeat(MAX_SCAN_BYTES / 2 + 1);
        let c = C.classify_text(&big);
        assert_eq!(c.detectors.into_iter().collect::<Vec<_>>(), ["unknown.too_large"]);
        let c = C.classify_value(&json!({"a": "x".repeat(MAX_SCAN_BYTES - 10), "b": "é".repeat(100)}));
        assert!(c.has_detector("unknown.too_large"));
        assert!(C.classify_text(&"é".repeat(1000)).is_empty());
    }

    #[test]
    // A text with more failing candidates than MAX_CANDIDATES is not fully classified: UNKNOWN.
    fn candidate_floods_are_unknown() {
        let flood = "password=$X ".repeat(MAX_CANDIDATES + 1);
        assert_eq!(detectors(&flood), ["unknown.too_many_candidates"]);
        // Below the bound, the same references are simply clean.
        assert_clean(&"password=$X ".repeat(100));
    }

    #[test]
    // Matches are found next to multi-byte characters and no offset splits one.
    fn unicode_text_is_safe() {
        assert_only("Contact: «alice@example.com» — 電話", "pii.email");
        assert_only("カード 4111111111111111 です", "pii.payment_card");
        assert_only("🔑AKIAIOSFODNN7EXAMPLE🔑", "secret.aws_access_key");
        assert_clean("日本語のテキスト ümlaut ß 1234 ñ @ - 🙂");
    }

    fn benign_mib() -> String {
        let line = "2026-11-23T03:24:37Z GET /api/v1/items?page=3 200 12ms req=550e8400-e29b-41d4-a716-446655440000 sha=4b825dc642cb6eb9a060e54bf8d69288fbee4904 user=ubuntu ls -la src/ && cargo build --release\n";
        line.repeat((1 << 20) / line.len() + 1)
    }

    #[test]
    // A 1 MiB benign payload is clean, and one secret in its exact middle is found (no head/tail windows).
    fn large_payload_is_scanned_whole() {
        let benign = benign_mib();
        assert!(C.classify_text(&benign).is_empty());
        let mid = benign.len() / 2;
        let cut = (mid..).find(|&i| benign.is_char_boundary(i)).unwrap();
        let with_secret = format!("{} {} {}", &benign[..cut], github_token(), &benign[cut..]);
        assert_eq!(C.classify_text(&with_secret).detectors.into_iter().collect::<Vec<_>>(), ["secret.github_token"]);
        let v = json!({"output": with_secret});
        assert!(C.classify_value(&v).has_detector("secret.github_token"));
    }

    #[test]
    #[ignore = "timing report; run with --ignored --nocapture in release"]
    // Prints the cost per call of a 2 KiB benign payload, 1 MiB payloads, and 1 MiB floods of near-miss candidates.
    fn timing() {
        let c = Classifier::builtin();
        let mut small = String::new();
        while small.len() < 2048 {
            small.push_str(r#"{"command":"cd /work/project && cargo test --lib -- --nocapture 2>&1 | tail -n 50","description":"Run the unit tests","timeout":120000,"cwd":"/work/project","session":"550e8400-e29b-41d4-a716-446655440000"} "#);
        }
        let value: Value = json!({"tool_input": {"command": small.clone()}, "session_id": "abc", "n": 3});
        let big = benign_mib();
        let mid = (big.len() / 2..).find(|&i| big.is_char_boundary(i)).unwrap();
        let big_secret = format!("{} {} {}", &big[..mid], github_token(), &big[mid..]);
        // Best of five batches: the machine may be shared, and the minimum is the least disturbed.
        let time = |label: &str, iters: u32, f: &dyn Fn() -> Classification| {
            let best = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(f());
                    }
                    t.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
                })
                .fold(f64::INFINITY, f64::min);
            println!("{label}: {best:.2} µs/call");
        };
        time("text 2 KiB benign", 20_000, &|| c.classify_text(&small));
        time("value 2 KiB benign", 20_000, &|| c.classify_value(&value));
        time("text 1 MiB benign", 50, &|| c.classify_text(&big));
        time("text 1 MiB + secret", 50, &|| c.classify_text(&big_secret));
        for unit in [
            "eyJhbGciOiJub25lIn0.e30. ",
            "password=$X ",
            "ssh a@b.cc ",
            "git@h.io:x ",
            "4111 1112 ",
            "1-",
            "GB82WEST ",
            "://",
            "-----BEGIN PRIVATE KEY-----",
            "(415) 555-01 ",
        ] {
            let adversarial = unit.repeat((1 << 20) / unit.len());
            time(&format!("1 MiB of {unit:?}"), 5, &|| c.classify_text(&adversarial));
        }
    }
}
