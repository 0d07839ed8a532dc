//! Every run starts here, in every direction (`up`, `down`, `plan`, `status`): each profile
//! resolves to credentials, the accounts are distinct, and the mesh provider's own checks
//! pass. Read-only: the engine runs it before any other step.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ids;
use crate::engine::{Error, ErrorKind, Status, Step, StepMeta, StepRun, Teardown};
use crate::session::Session;

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let meta = StepMeta::new(ids::preflight(), "-", "check that every profile resolves to its own account");
    vec![Arc::new(Preflight { meta, session: session.clone() })]
}

pub struct Preflight {
    meta: StepMeta,
    session: Arc<Session>,
}

impl Preflight {
    async fn run(&self, run: &StepRun) -> Result<(), Error> {
        let s = &self.session;
        let c = &s.config;
        // All accounts at once: each is an independent STS call.
        let ids = futures::future::join_all(c.accounts().map(|a| async move { (a, s.aws.account_id(&a.name).await) })).await;
        let mut problems = Vec::new();
        let mut kind = ErrorKind::Other;
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (a, id) in ids {
            match id {
                Ok(id) if id.len() == 12 => {
                    if let Some(other) = seen.insert(id.clone(), a.name.clone()) {
                        kind = ErrorKind::InvalidInput;
                        problems.push(format!(
                            "accounts {other} and {} both resolve to AWS account {id}: each role needs its own account (check profile {} in ~/.aws/config)",
                            a.name, a.profile
                        ));
                    }
                }
                Ok(id) => problems.push(format!("account {} (profile {}): STS answered an odd account id {id:?}", a.name, a.profile)),
                Err(e) => {
                    let e = Error::from(e);
                    kind = e.kind();
                    let text = e.chain();
                    let hint = if text.contains("ProfileFile") || text.contains("profile") && text.contains("not") {
                        format!(" (is [profile {}] in your AWS config?)", a.profile)
                    } else {
                        String::new()
                    };
                    problems.push(format!("{text}{hint}"));
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::new(kind, problems.join("\n")));
        }
        s.mesh.preflight(s, run).await
    }
}

#[async_trait::async_trait]
impl Step for Preflight {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        self.run(run).await.map(|_| Status::UpToDate)
    }
    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        self.run(run).await
    }
    async fn destroy(&self, _run: &StepRun) -> Result<(), Error> {
        Ok(())
    }
    fn teardown(&self) -> Teardown {
        Teardown::ReadOnly
    }
}
