//! Results of `meshctl verify` and their three renderings: grouped text (✔ ‼ ✖ –), JSON
//! lines (one object per check plus a summary) and JUnit XML. Running the checks and printing
//! them are separate: every rendering reads the same `Report`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Which of the verify checks a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    /// The Envoy admin interface answered.
    Admin,
    /// 1. The SDS cluster toward the SPIRE agent socket is connected and healthy.
    Sds,
    /// 2. `/certs` holds the workload's SVID and the trust-domain CA, valid.
    Identity,
    /// 3. The TLS contexts accept exactly the allowed SPIFFE IDs.
    Peers,
    /// 4. `ssl.handshake` counters (rising after traffic).
    Handshakes,
    /// 5. `ssl.connection_error` / `ssl.fail_verify_*` counters.
    TlsFailures,
}

impl CheckId {
    /// All checks in report order.
    pub const ALL: [CheckId; 6] =
        [CheckId::Admin, CheckId::Sds, CheckId::Identity, CheckId::Peers, CheckId::Handshakes, CheckId::TlsFailures];

    /// The id used in JSON and JUnit (`sds`, `tls-failures`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Admin => "admin",
            CheckId::Sds => "sds",
            CheckId::Identity => "identity",
            CheckId::Peers => "peers",
            CheckId::Handshakes => "handshakes",
            CheckId::TlsFailures => "tls-failures",
        }
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
    /// The check could not run (the reason is in `observed`).
    Skip,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
            CheckStatus::Skip => "skip",
        }
    }
    /// ✔ ‼ ✖ –
    pub fn symbol(self) -> &'static str {
        match self {
            CheckStatus::Pass => "✔",
            CheckStatus::Warn => "‼",
            CheckStatus::Fail => "✖",
            CheckStatus::Skip => "–",
        }
    }
    fn color(self) -> &'static str {
        match self {
            CheckStatus::Pass => "\x1b[32m",
            CheckStatus::Warn => "\x1b[33m",
            CheckStatus::Fail => "\x1b[31m",
            CheckStatus::Skip => "\x1b[2m",
        }
    }
}

/// One check of one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub workload: String,
    /// The cluster (account role) the workload runs in, for grouping.
    pub cluster: String,
    pub check: CheckId,
    /// Positive description that reads well after ✔.
    pub description: String,
    pub status: CheckStatus,
    /// What was seen (for a skip: why the check could not run).
    pub observed: String,
    /// What was required.
    pub expected: String,
    /// On failure or warning: the likely cause and the command that shows more.
    pub hint: Option<String>,
    /// Counters the check read, by full stat name (the value after traffic when traffic was
    /// sent), so callers and tests can compare with `/stats`.
    pub counters: BTreeMap<String, u64>,
}

impl CheckResult {
    pub(crate) fn new(workload: &super::Proxy, check: CheckId, description: impl Into<String>) -> Self {
        CheckResult {
            workload: workload.name.clone(),
            cluster: workload.cluster.clone(),
            check,
            description: description.into(),
            status: CheckStatus::Pass,
            observed: String::new(),
            expected: String::new(),
            hint: None,
            counters: BTreeMap::new(),
        }
    }
}

/// Counts per status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReportSummary {
    pub passed: usize,
    pub warned: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// A cluster with its workloads and their results.
type Group<'a> = (String, Vec<(String, Vec<&'a CheckResult>)>);

/// Everything `meshctl verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// In workload order, then check order.
    pub results: Vec<CheckResult>,
    /// How each workload's admin interface was reached (`workload name → description`).
    pub targets: BTreeMap<String, String>,
    /// One line per traffic request sent with `--traffic` (`GET url → 200`).
    pub traffic: Vec<String>,
}

impl Report {
    /// False when any check failed (warnings and skips do not fail the run; an unreachable
    /// admin interface is itself a failed `admin` check).
    pub fn passed(&self) -> bool {
        !self.results.iter().any(|r| r.status == CheckStatus::Fail)
    }

    pub fn summary(&self) -> ReportSummary {
        let mut s = ReportSummary::default();
        for r in &self.results {
            match r.status {
                CheckStatus::Pass => s.passed += 1,
                CheckStatus::Warn => s.warned += 1,
                CheckStatus::Fail => s.failed += 1,
                CheckStatus::Skip => s.skipped += 1,
            }
        }
        s
    }

    /// The result of one check of one workload.
    pub fn get(&self, workload: &str, check: CheckId) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.workload == workload && r.check == check)
    }

    /// (workload, check) of every failed check.
    pub fn failures(&self) -> Vec<(String, CheckId)> {
        self.results.iter().filter(|r| r.status == CheckStatus::Fail).map(|r| (r.workload.clone(), r.check)).collect()
    }

    /// Clusters then workloads, in first-seen order.
    fn groups(&self) -> Vec<Group<'_>> {
        let mut out: Vec<Group<'_>> = Vec::new();
        for r in &self.results {
            let ci = match out.iter().position(|(c, _)| *c == r.cluster) {
                Some(i) => i,
                None => {
                    out.push((r.cluster.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            let ws = &mut out[ci].1;
            let wi = match ws.iter().position(|(w, _)| *w == r.workload) {
                Some(i) => i,
                None => {
                    ws.push((r.workload.clone(), Vec::new()));
                    ws.len() - 1
                }
            };
            ws[wi].1.push(r);
        }
        out
    }

    /// Human output, grouped per cluster and workload, in the spirit of `linkerd check`.
    pub fn render_text(&self, color: bool) -> String {
        let (bold, reset) = if color { ("\x1b[1m", "\x1b[0m") } else { ("", "") };
        let mut s = String::new();
        if !self.traffic.is_empty() {
            let _ = writeln!(s, "{bold}traffic{reset}");
            for t in &self.traffic {
                let _ = writeln!(s, "  {t}");
            }
            s.push('\n');
        }
        for (cluster, workloads) in self.groups() {
            let _ = writeln!(s, "{bold}{cluster}{reset}");
            let _ = writeln!(s, "{}", "-".repeat(cluster.chars().count()));
            for (workload, results) in workloads {
                match self.targets.get(&workload) {
                    Some(t) => {
                        let _ = writeln!(s, "{workload} (admin {t})");
                    }
                    None => {
                        let _ = writeln!(s, "{workload}");
                    }
                }
                for r in results {
                    let sym =
                        if color { format!("{}{}{reset}", r.status.color(), r.status.symbol()) } else { r.status.symbol().to_string() };
                    let _ = writeln!(s, "  {sym} {}", r.description);
                    match r.status {
                        CheckStatus::Pass => {}
                        CheckStatus::Skip => {
                            let _ = writeln!(s, "      skipped: {}", r.observed);
                        }
                        CheckStatus::Warn | CheckStatus::Fail => {
                            if !r.observed.is_empty() {
                                let _ = writeln!(s, "      observed: {}", r.observed);
                            }
                            if !r.expected.is_empty() {
                                let _ = writeln!(s, "      expected: {}", r.expected);
                            }
                            if let Some(h) = &r.hint {
                                let _ = writeln!(s, "      hint: {h}");
                            }
                        }
                    }
                }
            }
            s.push('\n');
        }
        let sum = self.summary();
        let verdict = if self.passed() { "verify passed" } else { "verify FAILED" };
        let _ = writeln!(
            s,
            "{bold}{verdict}{reset}: {} passed, {} warnings, {} failed, {} skipped",
            sum.passed, sum.warned, sum.failed, sum.skipped
        );
        s
    }

    /// One JSON object per check `{workload, cluster, check, status, observed, expected, hint,
    /// description, counters}`, then `{"summary": {passed, warned, failed, skipped}, "passed",
    /// "traffic": [one line per request sent]}`.
    pub fn to_json_lines(&self) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = self
            .results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "workload": r.workload,
                    "cluster": r.cluster,
                    "check": r.check.as_str(),
                    "status": r.status.as_str(),
                    "description": r.description,
                    "observed": r.observed,
                    "expected": r.expected,
                    "hint": r.hint,
                    "counters": r.counters,
                })
            })
            .collect();
        let sum = self.summary();
        out.push(serde_json::json!({ "summary": sum, "passed": self.passed(), "traffic": self.traffic }));
        out
    }

    /// JUnit XML: one `<testsuite>` per workload, one `<testcase>` per check; a failure carries
    /// the hint, a warning is written to `<system-out>`, a skip to `<skipped>`.
    pub fn to_junit(&self) -> String {
        let sum = self.summary();
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            s,
            "<testsuites name=\"meshctl verify\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
            self.results.len(),
            sum.failed,
            sum.skipped
        );
        for (cluster, workloads) in self.groups() {
            for (workload, results) in workloads {
                let failures = results.iter().filter(|r| r.status == CheckStatus::Fail).count();
                let skipped = results.iter().filter(|r| r.status == CheckStatus::Skip).count();
                let _ = writeln!(
                    s,
                    "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
                    xml_escape(&format!("{cluster}/{workload}")),
                    results.len(),
                    failures,
                    skipped
                );
                for r in results {
                    let _ = write!(
                        s,
                        "    <testcase classname=\"{}\" name=\"{}\"",
                        xml_escape(&format!("verify.{cluster}.{workload}")),
                        xml_escape(&format!("{}: {}", r.check, r.description))
                    );
                    let detail = format!("observed: {}\nexpected: {}", r.observed, r.expected);
                    match r.status {
                        CheckStatus::Pass => s.push_str("/>\n"),
                        CheckStatus::Skip => {
                            let _ = writeln!(s, ">\n      <skipped message=\"{}\"/>\n    </testcase>", xml_escape(&r.observed));
                        }
                        CheckStatus::Warn => {
                            let _ = writeln!(
                                s,
                                ">\n      <system-out>{}</system-out>\n    </testcase>",
                                xml_escape(&format!("warning: {detail}\nhint: {}", r.hint.as_deref().unwrap_or("")))
                            );
                        }
                        CheckStatus::Fail => {
                            let _ = writeln!(
                                s,
                                ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                                xml_escape(r.hint.as_deref().unwrap_or(&r.observed)),
                                r.check,
                                xml_escape(&format!("{detail}\nhint: {}", r.hint.as_deref().unwrap_or("")))
                            );
                        }
                    }
                }
                s.push_str("  </testsuite>\n");
            }
        }
        s.push_str("</testsuites>\n");
        s
    }
}

/// Escapes text for XML attributes and content.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}
