//! The scheduler: runs ready steps concurrently, bounded; skips the dependents of a failed
//! step while independent branches finish; stops launching on cancellation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Event, EventKind, EventSink, Graph, Mode, Outcome, Status, Step, StepCx, StepError};

pub struct RunOptions {
    pub mode: Mode,
    /// At most this many steps run at once (at least 1).
    pub concurrency: usize,
    pub yes: bool,
    /// Only these ids run; needs outside the selection count as satisfied (the caller checks
    /// them first). `None` runs the whole graph.
    pub selection: Option<BTreeSet<String>>,
    pub cancel: CancellationToken,
}

impl RunOptions {
    pub fn new(mode: Mode) -> RunOptions {
        RunOptions { mode, concurrency: 8, yes: false, selection: None, cancel: CancellationToken::new() }
    }
}

/// The result of a run, in the order steps finished.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub done: Vec<(String, Outcome)>,
    pub failed: Vec<(String, String)>,
    pub skipped: Vec<(String, String)>,
    pub interrupted: bool,
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted
    }

    pub fn outcome(&self, id: &str) -> Option<&Outcome> {
        self.done.iter().find(|(i, _)| i == id).map(|(_, o)| o)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Running,
    /// Finished; `true` when dependents may rely on it (applied, up to date, destroyed).
    Done(bool),
    Failed,
    Skipped,
}

/// Runs the graph in `opts.mode`. Never panics on step errors: they end up in the summary.
pub async fn run(graph: &Graph, opts: &RunOptions, sink: Arc<dyn EventSink>) -> Summary {
    let started = Instant::now();
    let order = graph.topo_order().expect("graph was validated when built");
    let selected: BTreeSet<String> = match &opts.selection {
        Some(sel) => sel.clone(),
        None => order.iter().cloned().collect(),
    };
    let reverse = matches!(opts.mode, Mode::Down | Mode::PlanDown);
    // The steps each step waits for, within the selection, in the walk's direction.
    let mut waits: BTreeMap<String, Vec<String>> = selected.iter().map(|id| (id.clone(), Vec::new())).collect();
    for id in &selected {
        for need in &graph.get(id).expect("selected id exists").meta().needs {
            if selected.contains(need) {
                let (from, to) = if reverse { (need, id) } else { (id, need) };
                waits.get_mut(from).expect("in selection").push(to.clone());
            }
        }
    }
    let mut walk: Vec<String> = order.into_iter().filter(|id| selected.contains(id)).collect();
    if reverse {
        walk.reverse();
    }
    let mut state: BTreeMap<String, State> = walk.iter().map(|id| (id.clone(), State::Waiting)).collect();
    let mut summary = Summary::default();
    let mut running = FuturesUnordered::new();
    let limit = opts.concurrency.max(1);

    loop {
        // Settle every waiting step whose fate is already decided, launch the ready ones.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for id in &walk {
                if state[id] != State::Waiting {
                    continue;
                }
                let deps = &waits[id];
                if let Some(bad) = deps.iter().find(|d| matches!(state[*d], State::Failed | State::Skipped)) {
                    let why = if state[bad] == State::Failed {
                        format!("{bad} failed")
                    } else {
                        format!("{bad} was skipped")
                    };
                    let reason = if reverse { format!("{bad} must be destroyed first, but {why}") } else { format!("needs {why}") };
                    skip(&mut state, &mut summary, &*sink, id, reason);
                    progressed = true;
                    continue;
                }
                if !deps.iter().all(|d| matches!(state[d], State::Done(_))) {
                    continue;
                }
                let unmet: Vec<String> = deps.iter().filter(|d| state[*d] == State::Done(false)).cloned().collect();
                if opts.mode == Mode::Plan && !unmet.is_empty() {
                    // Its check would read resources its needs have not made yet.
                    let outcome = Outcome::Pending(unmet);
                    sink.event(&Event::now(id, EventKind::Done(outcome.clone())));
                    summary.done.push((id.clone(), outcome));
                    state.insert(id.clone(), State::Done(false));
                    progressed = true;
                    continue;
                }
                if opts.cancel.is_cancelled() || running.len() >= limit {
                    continue;
                }
                let step = graph.get(id).expect("selected id exists").clone();
                let cx = StepCx { id: id.clone(), sink: sink.clone(), yes: opts.yes, cancel: opts.cancel.clone() };
                sink.event(&Event::now(id, EventKind::Started));
                state.insert(id.clone(), State::Running);
                let mode = opts.mode;
                let id = id.clone();
                running.push(async move {
                    let result = perform(mode, &*step, &cx).await;
                    (id, result)
                });
                progressed = true;
            }
        }
        let Some((id, result)) = running.next().await else { break };
        match result {
            Ok(outcome) => {
                let satisfied = match &outcome {
                    Outcome::Checked(s) => *s == Status::UpToDate,
                    Outcome::Pending(_) => false,
                    _ => true,
                };
                sink.event(&Event::now(&id, EventKind::Done(outcome.clone())));
                summary.done.push((id.clone(), outcome));
                state.insert(id, State::Done(satisfied));
            }
            Err(e) => {
                sink.event(&Event::now(&id, EventKind::Failed(e.message.clone())));
                summary.failed.push((id.clone(), e.message));
                state.insert(id, State::Failed);
            }
        }
    }
    if opts.cancel.is_cancelled() {
        summary.interrupted = true;
        for id in &walk {
            if state[id] == State::Waiting {
                skip(&mut state, &mut summary, &*sink, id, "interrupted before it started".to_string());
            }
        }
    }
    summary.elapsed = started.elapsed();
    summary
}

fn skip(state: &mut BTreeMap<String, State>, summary: &mut Summary, sink: &dyn EventSink, id: &str, reason: String) {
    sink.event(&Event::now(id, EventKind::Skipped(reason.clone())));
    summary.skipped.push((id.to_string(), reason));
    state.insert(id.to_string(), State::Skipped);
}

/// One step's work in the given mode: check first, then act only when needed.
async fn perform(mode: Mode, step: &dyn Step, cx: &StepCx) -> Result<Outcome, StepError> {
    let status = step.check(cx).await?;
    if step.read_only() && matches!(mode, Mode::Down | Mode::PlanDown) {
        return Ok(if mode == Mode::Down { Outcome::UpToDate } else { Outcome::Checked(Status::Missing) });
    }
    match mode {
        Mode::Plan | Mode::PlanDown | Mode::Status => Ok(Outcome::Checked(status)),
        Mode::Up => match status {
            Status::UpToDate => Ok(Outcome::UpToDate),
            Status::Missing => {
                step.apply(cx).await?;
                Ok(Outcome::Created)
            }
            Status::Drifted(why) => {
                step.apply(cx).await?;
                Ok(Outcome::Updated(why))
            }
        },
        Mode::Down => match status {
            Status::Missing => Ok(Outcome::AlreadyGone),
            _ => {
                step.destroy(cx).await?;
                Ok(Outcome::Destroyed)
            }
        },
    }
}
