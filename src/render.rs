//! What the user sees of a run: one indicatif line per running step on a terminal, plain
//! timestamped lines when not on one (CI), JSON lines with `--output json`. All three read the
//! same engine events; the final summary and plan tables are rendered here too.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::engine::{Event, EventKind, EventSink, Mode, Outcome, RunSummary, Status, StepId, StepMeta};

/// A renderer receives events while a run goes and prints the summary at its end.
pub trait Renderer: EventSink {
    fn summary(&self, mode: Mode, summary: &RunSummary);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// indicatif bars on stderr, result lines on stdout.
    Terminal,
    /// One timestamped line per event on stdout.
    Plain,
    /// One JSON object per event on stdout, then a summary object.
    Json,
}

impl Style {
    pub fn detect(json: bool) -> Style {
        if json {
            Style::Json
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Style::Terminal
        } else {
            Style::Plain
        }
    }
}

pub fn renderer(style: Style) -> Box<dyn Renderer> {
    match style {
        Style::Terminal => Box::new(Bars::new()),
        Style::Plain => Box::new(Plain),
        Style::Json => Box::new(JsonLines),
    }
}

/// Short words for outcomes, used by every text output.
pub fn outcome_text(mode: Mode, o: &Outcome) -> String {
    match o {
        Outcome::UpToDate => "up to date".into(),
        Outcome::Created => "created".into(),
        Outcome::Updated(why) => format!("updated ({why})"),
        Outcome::Destroyed => "destroyed".into(),
        Outcome::AlreadyGone => "already gone".into(),
        Outcome::Kept(what) => format!("orphaned, kept: {what} (`meshctl up --prune` removes it)"),
        Outcome::Pruned(what) => format!("pruned: {what}"),
        Outcome::Checked(s) => match (mode, s) {
            (Mode::PlanDown, Status::Missing) => "nothing to destroy".into(),
            (Mode::PlanDown, _) => "would destroy".into(),
            (Mode::Status, Status::UpToDate) => "done".into(),
            (Mode::Status, Status::Missing) => "missing".into(),
            (Mode::Status, Status::Drifted(why)) => format!("drifted: {why}"),
            (Mode::Status, Status::Orphaned(what)) => format!("orphaned: {what}"),
            (_, Status::Orphaned(what)) => format!("orphaned: {what} (`meshctl up --prune` or `down` removes it)"),
            (_, Status::UpToDate) => "up to date".into(),
            (_, Status::Missing) => "would create".into(),
            (_, Status::Drifted(why)) => format!("would change: {why}"),
        },
        Outcome::Pending(needs) => format!("would create (after {})", join(needs)),
    }
}

/// Step ids as `a, b, c`.
pub fn join(ids: &[StepId]) -> String {
    ids.iter().map(StepId::as_str).collect::<Vec<_>>().join(", ")
}

fn stamp(e: &Event) -> String {
    e.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn event_line(e: &Event) -> String {
    match &e.kind {
        EventKind::Started => format!("{} started", e.step),
        EventKind::Progress(m) => format!("{} {m}", e.step),
        EventKind::Done(o) => format!("{} {}", e.step, outcome_text(Mode::Up, o)),
        EventKind::Failed(m) => format!("{} FAILED: {m}", e.step),
        EventKind::Skipped(m) => format!("{} skipped: {m}", e.step),
    }
}

fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

/// Summary text shared by the terminal and plain renderers.
fn summary_text(mode: Mode, s: &RunSummary) -> String {
    let mut t = String::new();
    let mut changed = 0;
    let mut unchanged = 0;
    for (_, o) in &s.done {
        match o {
            Outcome::UpToDate | Outcome::AlreadyGone | Outcome::Checked(Status::UpToDate) | Outcome::Kept(_) => unchanged += 1,
            _ => changed += 1,
        }
    }
    let verb = match mode {
        Mode::Up => "changed",
        Mode::Down => "destroyed",
        Mode::Plan | Mode::PlanDown | Mode::Status => "to change",
    };
    t.push_str(&format!(
        "{} steps: {changed} {verb}, {unchanged} unchanged, {} failed, {} skipped in {:.1}s",
        s.done.len() + s.failed.len() + s.skipped.len(),
        s.failed.len(),
        s.skipped.len(),
        s.elapsed.as_secs_f64()
    ));
    if s.interrupted {
        t.push_str("\ninterrupted: steps that had started were let finish; run the same command again to continue");
    }
    for f in &s.failed {
        t.push_str(&format!("\n✖ {}: {}", f.step, f.message));
    }
    for (id, msg) in &s.skipped {
        t.push_str(&format!("\n– {id}: skipped, {msg}"));
    }
    t
}

pub fn summary_json(mode: Mode, s: &RunSummary) -> serde_json::Value {
    json!({"summary": {
        "mode": mode,
        "ok": s.ok(),
        "done": s.done.iter().map(|(id, o)| json!({"step": id, "outcome": o})).collect::<Vec<_>>(),
        "failed": s.failed.iter().map(|f| json!({"step": f.step, "message": f.message, "kind": f.kind})).collect::<Vec<_>>(),
        "skipped": s.skipped.iter().map(|(id, m)| json!({"step": id, "reason": m})).collect::<Vec<_>>(),
        "interrupted": s.interrupted,
        "elapsed_seconds": (s.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
    }})
}

struct Plain;

impl EventSink for Plain {
    fn event(&self, e: &Event) {
        out(&format!("{} {}", stamp(e), event_line(e)));
    }
}

impl Renderer for Plain {
    fn summary(&self, mode: Mode, s: &RunSummary) {
        out(&summary_text(mode, s));
    }
}

struct JsonLines;

impl EventSink for JsonLines {
    fn event(&self, e: &Event) {
        out(&serde_json::to_string(e).expect("event serializes"));
    }
}

impl Renderer for JsonLines {
    fn summary(&self, mode: Mode, s: &RunSummary) {
        out(&summary_json(mode, s).to_string());
    }
}

struct Bars {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        Bars { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: Mutex::new(BTreeMap::new()) }
    }
}

impl EventSink for Bars {
    fn event(&self, e: &Event) {
        let mut bars = self.bars.lock().expect("bars lock");
        match &e.kind {
            EventKind::Started => {
                let pb = self.multi.add(ProgressBar::new_spinner());
                pb.set_style(ProgressStyle::with_template("{spinner} {prefix:<32} {elapsed:>4} {wide_msg}").expect("template"));
                pb.set_prefix(e.step.to_string());
                pb.enable_steady_tick(Duration::from_millis(120));
                bars.insert(e.step.to_string(), pb);
            }
            EventKind::Progress(m) => {
                if let Some(pb) = bars.get(e.step.as_str()) {
                    pb.set_message(m.clone());
                }
            }
            EventKind::Done(_) | EventKind::Failed(_) | EventKind::Skipped(_) => {
                let mark = match &e.kind {
                    EventKind::Done(_) => "✔",
                    EventKind::Failed(_) => "✖",
                    _ => "–",
                };
                let elapsed = bars.remove(e.step.as_str()).map(|pb| {
                    let t = pb.elapsed();
                    pb.finish_and_clear();
                    self.multi.remove(&pb);
                    t
                });
                let took = elapsed.map(|t| format!(" ({:.1}s)", t.as_secs_f64())).unwrap_or_default();
                let _ = self.multi.println(format!("{mark} {}{took}", event_line(e)));
            }
        }
    }
}

impl Renderer for Bars {
    fn summary(&self, mode: Mode, s: &RunSummary) {
        let _ = self.multi.clear();
        out(&summary_text(mode, s));
    }
}

/// The static graph as a table (`plan --offline`).
pub fn graph_text(mode: Mode, metas: &[StepMeta]) -> String {
    let w = metas.iter().map(|m| m.id.as_str().len()).max().unwrap_or(4).max(4);
    let mut t = format!(
        "meshctl {}: {} steps\n{:<w$}  {:<10}  {:<10}  NEEDS\n",
        if mode == Mode::PlanDown { "down" } else { "up" },
        metas.len(),
        "STEP",
        "PHASE",
        "ACCOUNT"
    );
    for m in metas {
        let mut needs = if m.needs.is_empty() { "-".to_string() } else { join(&m.needs) };
        if !m.after.is_empty() {
            needs.push_str(&format!(" (after {})", join(&m.after)));
        }
        t.push_str(&format!("{:<w$}  {:<10}  {:<10}  {}\n", m.id.as_str(), m.phase, m.account, needs));
    }
    t
}

pub fn graph_json(mode: Mode, metas: &[StepMeta]) -> serde_json::Value {
    json!({"plan": {"mode": if mode == Mode::PlanDown { "down" } else { "up" }, "offline": true, "steps": metas}})
}

/// The result of a check-only run (plan, status) as a table grouped by phase, in graph order.
pub fn check_table(mode: Mode, order: &[StepMeta], s: &RunSummary) -> String {
    let w = order.iter().map(|m| m.id.as_str().len()).max().unwrap_or(4).max(4);
    let mut t = String::new();
    let mut phase = "";
    for m in order {
        let text = if let Some(o) = s.outcome(m.id.as_str()) {
            outcome_text(mode, o)
        } else if let Some(f) = s.failure(m.id.as_str()) {
            format!("failed: {}", f.message)
        } else if let Some(msg) = s.skip_reason(m.id.as_str()) {
            format!("not checked: {msg}")
        } else {
            continue;
        };
        if m.phase != phase {
            phase = &m.phase;
            t.push_str(&format!("{phase}\n"));
        }
        t.push_str(&format!("  {:<w$}  {text}\n", m.id.as_str()));
    }
    t
}
