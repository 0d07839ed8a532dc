//! [`Absent`]: a step that wants another step's resources gone, in every walk. It wraps the
//! steps of something that used to be configured and no longer is, so that `up` converges
//! by removing what they made, and `down` removes it too.
//!
//! The wrapper knows nothing of what it removes: it reads the inner step's `check` and calls
//! its `destroy`. Its place in the graph is derived from the inner steps' own edges:
//! - the wrapped steps go in reverse: `Absent(A)` goes after `Absent(B)` when B needed A
//!   (what stood on A is removed first) — as an `after` edge, so `down` keeps that order;
//! - it needs what the inner step needed outside the wrapped set, directly or through other
//!   wrapped steps (the cluster access, the account), so those are in place while it runs and
//!   `down` destroys them only after it;
//! - it goes after the caller's `after` ids in every walk (what must stop using the
//!   resources before they go).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Error, Status, Step, StepId, StepMeta, StepRun, Teardown};

/// `Absent(inner)`: up to date when the inner step's resources are gone; applying it
/// destroys them.
pub struct Absent {
    meta: StepMeta,
    inner: Arc<dyn Step>,
}

impl Absent {
    /// The id of the wrapper of `inner`: `<phase>/retire-<name>`.
    pub fn id_for(inner: &StepId) -> StepId {
        StepId::new(inner.phase(), &format!("retire-{}", inner.name()))
    }

    /// Wraps every step of `steps` (the whole set that is going away). Each wrapper's
    /// description says what it removes and `why`; each goes after every id of `after`.
    pub fn wrap_all(steps: Vec<Arc<dyn Step>>, after: &[StepId], why: &str) -> Vec<Arc<dyn Step>> {
        let by_id: BTreeMap<StepId, Arc<dyn Step>> = steps.iter().map(|s| (s.meta().id.clone(), s.clone())).collect();
        let mut out: Vec<Arc<dyn Step>> = Vec::new();
        for s in &steps {
            let m = s.meta();
            // Needs outside the wrapped set, through any chain of wrapped steps.
            let mut outside = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut todo: Vec<StepId> = m.needs.clone();
            while let Some(n) = todo.pop() {
                if !seen.insert(n.clone()) {
                    continue;
                }
                match by_id.get(&n) {
                    Some(w) => todo.extend(w.meta().needs.iter().cloned()),
                    None => {
                        outside.insert(n);
                    }
                }
            }
            // Wrapped steps that needed this one go first.
            let before = steps.iter().filter(|o| o.meta().needs.contains(&m.id)).map(|o| Absent::id_for(&o.meta().id));
            let meta = StepMeta::new(Absent::id_for(&m.id), &m.account, format!("remove what {} made ({}): {why}", m.id, m.description))
                .needs(outside)
                .after(before.chain(after.iter().cloned()));
            out.push(Arc::new(Absent { meta, inner: s.clone() }));
        }
        out
    }

    /// True when the inner step has nothing of its own to remove (it goes with its parent,
    /// or only reads).
    fn nothing_of_its_own(&self) -> bool {
        self.inner.teardown() != Teardown::Destroy
    }
}

#[async_trait::async_trait]
impl Step for Absent {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    /// Forward walks (`up`, plan, status): gone is up to date, anything present is drifted.
    /// Backward walks (`down`): the inner step's own status, so that `down` destroys what
    /// exists and skips what is gone.
    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        if self.nothing_of_its_own() {
            return Ok(if run.mode.reversed() { Status::Missing } else { Status::UpToDate });
        }
        let status = self.inner.check(run).await?;
        if run.mode.reversed() {
            return Ok(status);
        }
        Ok(match status {
            Status::Missing => Status::UpToDate,
            Status::UpToDate | Status::Drifted(_) | Status::Orphaned(_) => Status::Drifted("exists; would remove".into()),
        })
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        if self.nothing_of_its_own() {
            return Ok(());
        }
        self.inner.destroy(run).await
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        if self.nothing_of_its_own() {
            return Ok(());
        }
        self.inner.destroy(run).await
    }

    fn teardown(&self) -> Teardown {
        if self.nothing_of_its_own() {
            Teardown::WithParent
        } else {
            Teardown::Destroy
        }
    }
}
