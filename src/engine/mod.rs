//! The step graph and its scheduler.
//!
//! This module owns *how* work runs: which steps are ready, how many run at once, what
//! happens to the dependents of a failed step, and what events a renderer sees. It knows
//! nothing about AWS, Kubernetes or any phase: a step is anything that implements [`Step`].
//! It may use only the leaf modules [`crate::error`] and [`crate::state`].
//!
//! Three walks over one graph:
//! - `Up`: each step's `check` runs first; only a step that is not up to date is applied.
//! - `Down`: the graph reversed; a step is destroyed after every step that needs it.
//! - `Plan`: checks only, in dependency order; a step whose needs are not all up to date is
//!   reported as pending on them instead of being checked (its check could not be trusted).
//!
//! In every walk the read-only steps (preflight) run first and everything else waits for
//! them, so bad credentials are found before anything is changed — on the way down too.
//!
//! Two kinds of edges: `needs` (the step uses what its needs made: `up` runs it after them,
//! `down` destroys it before them) and `after` (pure order that holds in every walk, for a
//! step that removes something whichever way the graph is walked, such as [`Absent`]).

mod absent;
mod graph;
mod run;

pub use absent::Absent;
pub use graph::{Graph, GraphError};
pub use run::{run, Failure, RunOptions, RunSummary};

pub use crate::error::{Error, ErrorKind};
pub use crate::state::{Progress, Status};

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// A step's id, `phase/name` (`stacks/frontend`). Built only through [`StepId::new`], so the
/// ids one phase needs from another come from that phase's constructors, not from strings
/// spelled again elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    pub fn new(phase: &str, name: &str) -> StepId {
        StepId(format!("{phase}/{name}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The phase part of the id.
    pub fn phase(&self) -> &str {
        self.0.split_once('/').map(|(p, _)| p).unwrap_or(&self.0)
    }

    /// The part of the id after the phase (`frontend` in `stacks/frontend`).
    pub fn name(&self) -> &str {
        self.0.split_once('/').map(|(_, n)| n).unwrap_or(&self.0)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for StepId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// What a step is and where it sits. Pure data, so the graph prints without running anything.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepMeta {
    /// `phase/name`, e.g. `stacks/frontend`.
    pub id: StepId,
    /// The phase that contributes the step (`stacks`, `ram`, ...).
    pub phase: String,
    /// The account role the step works in (`shared`, `frontend`, ...), or `-` for none/all.
    pub account: String,
    /// Ids of the steps that must be done before this one (and, on the way down, destroyed
    /// after it).
    pub needs: Vec<StepId>,
    /// Ids of steps this one runs after whenever both are in the run, in every walk: `down`
    /// does not reverse these. Pure order: a run whose selection leaves them out does not
    /// wait for them nor require them, and they are not [`Graph::ancestors`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<StepId>,
    /// One line that reads well after "will": "create stack eks-cluster-frontend-stack".
    pub description: String,
}

impl StepMeta {
    pub fn new(id: StepId, account: &str, description: impl Into<String>) -> Self {
        StepMeta {
            phase: id.phase().to_string(),
            id,
            account: account.to_string(),
            needs: Vec::new(),
            after: Vec::new(),
            description: description.into(),
        }
    }

    /// Adds dependencies; ids are kept sorted and unique so printed graphs are stable.
    pub fn needs(mut self, ids: impl IntoIterator<Item = StepId>) -> Self {
        self.needs.extend(ids);
        self.needs.sort();
        self.needs.dedup();
        self
    }

    /// Adds order-only edges (see [`StepMeta::after`]); kept sorted and unique.
    pub fn after(mut self, ids: impl IntoIterator<Item = StepId>) -> Self {
        self.after.extend(ids);
        self.after.sort();
        self.after.dedup();
        self
    }
}

/// What `down` does with a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Check it, destroy it when it exists.
    Destroy,
    /// Nothing of its own to remove (an accepted share ends with the share; an entry goes
    /// with its server): `down` neither checks nor destroys it.
    WithParent,
    /// It only reads (preflight): checked first in every walk, never destroyed.
    ReadOnly,
}

/// What a step may use while it runs: progress reporting, the `--yes` and `--adopt` answers,
/// cancellation.
#[derive(Clone)]
pub struct StepRun {
    id: StepId,
    sink: Arc<dyn EventSink>,
    /// The user allowed destructive repairs (e.g. deleting a stack stuck in ROLLBACK_COMPLETE).
    pub yes: bool,
    /// The user allowed taking over (updating, deleting) resources of the configured names that
    /// meshctl did not create.
    pub adopt: bool,
    /// The user asked `up` to remove what the configuration no longer names (`--prune`).
    pub prune: bool,
    /// The walk this run is part of (`up`, `down`, a plan): a read-only check may be stricter
    /// on the way up than on the way down.
    pub mode: Mode,
    abort: CancellationToken,
}

impl StepRun {
    /// Shows the step's current sub-state (e.g. `CREATE_IN_PROGRESS`) on its progress line.
    pub fn progress(&self, message: impl Into<String>) {
        self.sink.event(&Event::now(&self.id, EventKind::Progress(message.into())));
    }

    /// True once the user asked to abort (a second Ctrl-C): waits stop at their next safe
    /// point. A first Ctrl-C only stops new steps from starting; running ones finish.
    pub fn aborted(&self) -> bool {
        self.abort.is_cancelled()
    }

    /// A run for code paths outside the engine (tests, one-off checks): events are dropped.
    pub fn detached(id: &str) -> StepRun {
        StepRun {
            id: StepId(id.to_string()),
            sink: Arc::new(NullSink),
            yes: false,
            adopt: false,
            prune: false,
            mode: Mode::Up,
            abort: CancellationToken::new(),
        }
    }

    /// The same run in another walk.
    pub fn with_mode(mut self, mode: Mode) -> StepRun {
        self.mode = mode;
        self
    }

    /// The same run reporting its events to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn EventSink>) -> StepRun {
        self.sink = sink;
        self
    }
}

impl Progress for StepRun {
    fn progress(&self, message: String) {
        StepRun::progress(self, message)
    }
    fn cancelled(&self) -> bool {
        self.aborted()
    }
}

/// One unit of work in the graph. `check` must not change anything; `apply` and `destroy`
/// must be safe to repeat (a rerun of a finished step changes nothing; destroying what is
/// already gone succeeds).
#[async_trait::async_trait]
pub trait Step: Send + Sync {
    fn meta(&self) -> &StepMeta;
    async fn check(&self, run: &StepRun) -> Result<Status, Error>;
    async fn apply(&self, run: &StepRun) -> Result<(), Error>;
    async fn destroy(&self, run: &StepRun) -> Result<(), Error>;
    /// What `down` does with this step.
    fn teardown(&self) -> Teardown {
        Teardown::Destroy
    }
}

/// Which walk to take over the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Up,
    Down,
    /// Checks only, reported as what `up` would do.
    Plan,
    /// Checks only, reported as what `down` would do.
    PlanDown,
    /// Checks only, every step, reported as done / missing / drifted / failed.
    Status,
}

impl Mode {
    /// The walk goes from dependents to their needs.
    pub fn reversed(self) -> bool {
        matches!(self, Mode::Down | Mode::PlanDown)
    }

    /// The walk only reads.
    pub fn check_only(self) -> bool {
        matches!(self, Mode::Plan | Mode::PlanDown | Mode::Status)
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    /// Checked: nothing to do.
    UpToDate,
    /// Was missing, now applied.
    Created,
    /// Had drifted (the reason), now applied.
    Updated(String),
    /// Destroyed by this run.
    Destroyed,
    /// Nothing to destroy.
    AlreadyGone,
    /// Plan: the check's result.
    Checked(Status),
    /// Plan: not checked because these needs are not up to date yet.
    Pending(Vec<StepId>),
    /// Orphans found and left in place (`up` without `--prune`); the reason lists them.
    Kept(String),
    /// Orphans removed (`up --prune`); the reason lists them.
    Pruned(String),
}

/// What the renderer is told.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", content = "message", rename_all = "kebab-case")]
pub enum EventKind {
    Started,
    Progress(String),
    Done(Outcome),
    Failed(String),
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub step: StepId,
    #[serde(flatten)]
    pub kind: EventKind,
    #[serde(with = "time::serde::rfc3339")]
    pub time: time::OffsetDateTime,
}

impl Event {
    pub fn now(step: &StepId, kind: EventKind) -> Event {
        Event { step: step.clone(), kind, time: SystemTime::now().into() }
    }
}

/// Receives every event of a run, in order per step. Implemented by the renderers.
pub trait EventSink: Send + Sync {
    fn event(&self, event: &Event);
}

/// A sink that drops every event.
pub struct NullSink;

impl EventSink for NullSink {
    fn event(&self, _: &Event) {}
}

#[cfg(test)]
mod tests;
