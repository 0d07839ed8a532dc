//! The scheduler: runs ready steps concurrently, bounded; skips the dependents of a failed
//! step while independent branches finish; stops launching on the first Ctrl-C and lets the
//! running steps reach their end, aborts their waits on the second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Error, ErrorKind, Event, EventKind, EventSink, Graph, Mode, Outcome, Status, Step, StepId, StepRun, Teardown};

pub struct RunOptions {
    pub mode: Mode,
    /// At most this many steps run at once (at least 1).
    pub concurrency: usize,
    pub yes: bool,
    /// Steps may take over resources meshctl did not create (`--adopt`).
    pub adopt: bool,
    /// `up` removes what the configuration no longer names (`--prune`).
    pub prune: bool,
    /// `down` only: a step that failed does not stop the steps under it from being destroyed
    /// (`meshctl down --force`); the failure is still reported.
    pub force: bool,
    /// Only these ids run; needs outside the selection count as satisfied (the caller checks
    /// them first). `None` runs the whole graph.
    pub selection: Option<BTreeSet<StepId>>,
    /// Cancelled: no new step starts; running steps go on to their end.
    pub stop: CancellationToken,
    /// Cancelled: running steps are asked to stop waiting at their next safe point.
    pub abort: CancellationToken,
}

impl RunOptions {
    pub fn new(mode: Mode) -> RunOptions {
        RunOptions {
            mode,
            concurrency: 8,
            yes: false,
            adopt: false,
            prune: false,
            force: false,
            selection: None,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }
}

/// A step that failed: its id, what went wrong (the whole error chain) and the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub step: StepId,
    pub message: String,
    pub kind: ErrorKind,
}

/// The result of a run, in the order steps finished.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub done: Vec<(StepId, Outcome)>,
    pub failed: Vec<Failure>,
    pub skipped: Vec<(StepId, String)>,
    pub interrupted: bool,
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl RunSummary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted
    }

    pub fn outcome(&self, id: &str) -> Option<&Outcome> {
        self.done.iter().find(|(i, _)| i.as_str() == id).map(|(_, o)| o)
    }

    pub fn failure(&self, id: &str) -> Option<&Failure> {
        self.failed.iter().find(|f| f.step.as_str() == id)
    }

    pub fn skip_reason(&self, id: &str) -> Option<&str> {
        self.skipped.iter().find(|(i, _)| i.as_str() == id).map(|(_, r)| r.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Waiting,
    Running,
    /// Finished; `true` when dependents may rely on it (applied, up to date, destroyed).
    Done(bool),
    Failed,
    Skipped,
}

/// Runs the graph in `opts.mode`. Never panics on step errors: they end up in the summary.
pub async fn run(graph: &Graph, opts: &RunOptions, sink: Arc<dyn EventSink>) -> RunSummary {
    let started = Instant::now();
    let reverse = opts.mode.reversed();
    let order = if reverse { graph.down_order() } else { graph.topo_order() }.expect("graph was validated when built");
    let selected: BTreeSet<StepId> = match &opts.selection {
        Some(sel) => sel.clone(),
        None => order.iter().cloned().collect(),
    };
    let teardown = |id: &StepId| graph.get(id.as_str()).expect("selected id exists").teardown();
    let read_only: BTreeSet<StepId> = selected.iter().filter(|id| teardown(id) == Teardown::ReadOnly).cloned().collect();
    // The steps each step waits for, within the selection, in the walk's direction. Read-only
    // steps wait for nothing and everything else waits for them, whatever the direction.
    // `after` edges keep their direction in every walk and only order (`order_only`): a plan
    // checks a step even when what it goes after is not up to date.
    let mut waits: BTreeMap<StepId, Vec<StepId>> = selected.iter().map(|id| (id.clone(), Vec::new())).collect();
    let mut order_only: BTreeSet<(StepId, StepId)> = BTreeSet::new();
    for id in &selected {
        if read_only.contains(id) {
            continue;
        }
        let meta = graph.get(id.as_str()).expect("selected id exists").meta();
        for need in &meta.needs {
            if selected.contains(need) && !read_only.contains(need) {
                let (from, to) = if reverse { (need, id) } else { (id, need) };
                waits.get_mut(from).expect("in selection").push(to.clone());
            }
        }
        for a in &meta.after {
            if selected.contains(a) && !read_only.contains(a) {
                waits.get_mut(id).expect("in selection").push(a.clone());
                if !meta.needs.contains(a) {
                    order_only.insert((id.clone(), a.clone()));
                }
            }
        }
        waits.get_mut(id).expect("in selection").extend(read_only.iter().cloned());
    }
    let mut walk: Vec<StepId> = order.into_iter().filter(|id| selected.contains(id)).collect();
    walk.sort_by_key(|id| !read_only.contains(id));
    let mut slots: BTreeMap<StepId, Slot> = walk.iter().map(|id| (id.clone(), Slot::Waiting)).collect();
    let mut summary = RunSummary::default();
    let mut running = FuturesUnordered::new();
    let limit = opts.concurrency.max(1);

    loop {
        // Settle every waiting step whose fate is already decided, launch the ready ones.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for id in &walk {
                if slots[id] != Slot::Waiting {
                    continue;
                }
                let deps = &waits[id];
                // With --force, a failed teardown does not hold back what lies under it (but
                // a failed read-only check still stops everything).
                let blocking = |d: &StepId| match slots[d] {
                    Slot::Failed => !(opts.force && opts.mode == Mode::Down && !read_only.contains(d)),
                    Slot::Skipped => true,
                    _ => false,
                };
                if let Some(bad) = deps.iter().find(|d| blocking(d)) {
                    let why = if slots[bad] == Slot::Failed { format!("{bad} failed") } else { format!("{bad} was skipped") };
                    let reason = if reverse && !read_only.contains(bad) {
                        format!("{bad} must be destroyed first, but {why}")
                    } else {
                        format!("needs {why}")
                    };
                    skip(&mut slots, &mut summary, &*sink, id, reason);
                    progressed = true;
                    continue;
                }
                if !deps.iter().all(|d| matches!(slots[d], Slot::Done(_) | Slot::Failed)) {
                    continue;
                }
                let unmet: Vec<StepId> = deps
                    .iter()
                    .filter(|d| slots[*d] == Slot::Done(false) && !order_only.contains(&(id.clone(), (*d).clone())))
                    .cloned()
                    .collect();
                if opts.mode == Mode::Plan && !unmet.is_empty() {
                    // Its check would read resources its needs have not made yet.
                    let outcome = Outcome::Pending(unmet);
                    sink.event(&Event::now(id, EventKind::Done(outcome.clone())));
                    summary.done.push((id.clone(), outcome));
                    slots.insert(id.clone(), Slot::Done(false));
                    progressed = true;
                    continue;
                }
                if opts.stop.is_cancelled() || running.len() >= limit {
                    continue;
                }
                let step = graph.get(id.as_str()).expect("selected id exists").clone();
                let run = StepRun {
                    id: id.clone(),
                    sink: sink.clone(),
                    yes: opts.yes,
                    adopt: opts.adopt,
                    prune: opts.prune,
                    mode: opts.mode,
                    abort: opts.abort.clone(),
                };
                sink.event(&Event::now(id, EventKind::Started));
                slots.insert(id.clone(), Slot::Running);
                let mode = opts.mode;
                let id = id.clone();
                running.push(async move {
                    let result = perform(mode, &*step, &run).await;
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
                slots.insert(id, Slot::Done(satisfied));
            }
            Err(e) => {
                let message = e.chain();
                sink.event(&Event::now(&id, EventKind::Failed(message.clone())));
                summary.failed.push(Failure { step: id.clone(), message, kind: e.kind() });
                slots.insert(id, Slot::Failed);
            }
        }
    }
    if opts.stop.is_cancelled() {
        summary.interrupted = true;
        for id in &walk {
            if slots[id] == Slot::Waiting {
                skip(&mut slots, &mut summary, &*sink, id, "interrupted before it started".to_string());
            }
        }
    }
    summary.elapsed = started.elapsed();
    summary
}

fn skip(slots: &mut BTreeMap<StepId, Slot>, summary: &mut RunSummary, sink: &dyn EventSink, id: &StepId, reason: String) {
    sink.event(&Event::now(id, EventKind::Skipped(reason.clone())));
    summary.skipped.push((id.clone(), reason));
    slots.insert(id.clone(), Slot::Skipped);
}

/// One step's work in the given mode: check first, then act only when needed.
async fn perform(mode: Mode, step: &dyn Step, run: &StepRun) -> Result<Outcome, Error> {
    match (step.teardown(), mode) {
        (Teardown::WithParent, Mode::Down) => return Ok(Outcome::AlreadyGone),
        (Teardown::WithParent, Mode::PlanDown) => return Ok(Outcome::Checked(Status::Missing)),
        _ => {}
    }
    let status = step.check(run).await?;
    if step.teardown() == Teardown::ReadOnly && mode.reversed() {
        return Ok(if mode == Mode::Down { Outcome::UpToDate } else { Outcome::Checked(Status::Missing) });
    }
    match mode {
        Mode::Plan | Mode::PlanDown | Mode::Status => Ok(Outcome::Checked(status)),
        Mode::Up => match status {
            Status::UpToDate => Ok(Outcome::UpToDate),
            Status::Missing => {
                step.apply(run).await?;
                Ok(Outcome::Created)
            }
            Status::Drifted(why) => {
                step.apply(run).await?;
                Ok(Outcome::Updated(why))
            }
            Status::Orphaned(what) if run.prune => {
                step.apply(run).await?;
                Ok(Outcome::Pruned(what))
            }
            Status::Orphaned(what) => Ok(Outcome::Kept(what)),
        },
        Mode::Down => match status {
            Status::Missing => Ok(Outcome::AlreadyGone),
            _ => {
                step.destroy(run).await?;
                Ok(Outcome::Destroyed)
            }
        },
    }
}
