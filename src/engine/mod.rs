//! The step graph and its scheduler.
//!
//! This module owns *how* work runs: which steps are ready, how many run at once, what
//! happens to the dependents of a failed step, and what events a renderer sees. It knows
//! nothing about AWS, Kubernetes or any phase: a step is anything that implements [`Step`].
//!
//! Three walks over one graph:
//! - `Up`: each step's `check` runs first; only a step that is not up to date is applied.
//! - `Down`: the graph reversed; a step is destroyed after every step that needs it.
//! - `Plan`: checks only, in dependency order; a step whose needs are not all up to date is
//!   reported as pending on them instead of being checked (its check could not be trusted).

mod graph;
mod run;

pub use graph::{Graph, GraphError};
pub use run::{run, RunOptions, Summary};

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// What a step is and where it sits. Pure data, so the graph prints without running anything.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepMeta {
    /// `phase/name`, e.g. `stacks/frontend`.
    pub id: String,
    /// The phase that contributes the step (`stacks`, `ram`, ...).
    pub phase: String,
    /// The account role the step works in (`shared`, `frontend`, ...), or `-` for none/all.
    pub account: String,
    /// Ids of the steps that must be done before this one.
    pub needs: Vec<String>,
    /// One line that reads well after "will": "create stack eks-cluster-frontend-stack".
    pub description: String,
}

impl StepMeta {
    pub fn new(phase: &str, name: &str, account: &str, description: impl Into<String>) -> Self {
        StepMeta {
            id: format!("{phase}/{name}"),
            phase: phase.to_string(),
            account: account.to_string(),
            needs: Vec::new(),
            description: description.into(),
        }
    }

    /// Adds dependencies; ids are kept sorted and unique so printed graphs are stable.
    pub fn needs<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.needs.extend(ids.into_iter().map(Into::into));
        self.needs.sort();
        self.needs.dedup();
        self
    }
}

/// The live state of a step's resources compared with what the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "kebab-case")]
pub enum Status {
    /// Exists and matches: `up` does nothing.
    UpToDate,
    /// Does not exist: `up` creates it, `down` has nothing to do.
    Missing,
    /// Exists but differs; the reason says how.
    Drifted(String),
}

/// A step failed; the message is what the user reads, so it names the account, the
/// resource, what the remote side said, and where it helps the next command to run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        StepError { message: message.into() }
    }

    /// The error of a step whose work is not written yet: it must fail, never pretend.
    pub fn not_implemented(what: &str) -> Self {
        StepError::new(format!("not implemented: {what}"))
    }
}

/// Lets any displayable error become a step error with a prefix naming what was being done.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T, StepError>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T, StepError> {
        self.map_err(|e| StepError::new(format!("{what}: {e}")))
    }
}

/// What a step may use while it runs: progress reporting, the `--yes` answer, cancellation.
#[derive(Clone)]
pub struct StepCx {
    id: String,
    sink: Arc<dyn EventSink>,
    /// The user allowed destructive repairs (e.g. deleting a stack stuck in ROLLBACK_COMPLETE).
    pub yes: bool,
    cancel: tokio_util::sync::CancellationToken,
}

impl StepCx {
    /// Shows the step's current sub-state (e.g. `CREATE_IN_PROGRESS`) on its progress line.
    pub fn progress(&self, message: impl Into<String>) {
        self.sink.event(&Event::now(&self.id, EventKind::Progress(message.into())));
    }

    /// True once the user pressed Ctrl-C: long waits should stop at their next safe point.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A context for code paths outside a run (tests, one-off checks): events are dropped.
    pub fn detached(id: &str) -> StepCx {
        StepCx {
            id: id.to_string(),
            sink: Arc::new(NullSink),
            yes: false,
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }
}

/// One unit of work in the graph. `check` must not change anything; `apply` and `destroy`
/// must be safe to repeat (a rerun of a finished step changes nothing; destroying what is
/// already gone succeeds).
#[async_trait::async_trait]
pub trait Step: Send + Sync {
    fn meta(&self) -> &StepMeta;
    async fn check(&self, cx: &StepCx) -> Result<Status, StepError>;
    async fn apply(&self, cx: &StepCx) -> Result<(), StepError>;
    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError>;
    /// A step that only reads (preflight): `down` checks it and destroys nothing.
    fn read_only(&self) -> bool {
        false
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
    Pending(Vec<String>),
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
    pub step: String,
    #[serde(flatten)]
    pub kind: EventKind,
    #[serde(with = "time::serde::rfc3339")]
    pub time: time::OffsetDateTime,
}

impl Event {
    pub fn now(step: &str, kind: EventKind) -> Event {
        Event { step: step.to_string(), kind, time: SystemTime::now().into() }
    }
}

/// Receives every event of a run, in order per step. Implemented by the renderers.
pub trait EventSink: Send + Sync {
    fn event(&self, event: &Event);
}

struct NullSink;
impl EventSink for NullSink {
    fn event(&self, _: &Event) {}
}

#[cfg(test)]
mod tests;
