//! Every run starts here: each profile resolves to credentials, the accounts are distinct
//! and the region is set. Read-only.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ids;
use crate::context::Ctx;
use crate::engine::{Status, Step, StepCx, StepError, StepMeta};

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let mut meta = StepMeta::new(super::PREFLIGHT, "accounts", "-", "check that every profile resolves to its own account");
    meta.id = ids::preflight();
    vec![Arc::new(Preflight { meta, ctx: ctx.clone() })]
}

pub struct Preflight {
    meta: StepMeta,
    ctx: Arc<Ctx>,
}

/// `us-east-2`-shaped: letters, a dash, letters (and dashes), a dash, digits.
pub fn looks_like_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

impl Preflight {
    async fn run(&self) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let mut problems = Vec::new();
        if !looks_like_region(&c.region) {
            problems.push(format!("region {:?} is not an AWS region (e.g. us-east-2); set `region` in meshctl.toml or MESHCTL_REGION", c.region));
        }
        // All accounts at once: each is an independent STS call.
        let ids = futures::future::join_all(c.accounts().map(|a| async move { (a, self.ctx.aws.account_id(&a.name).await) })).await;
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (a, id) in ids {
            match id {
                Ok(id) if id.len() == 12 => {
                    if let Some(other) = seen.insert(id.clone(), a.name.clone()) {
                        problems.push(format!(
                            "accounts {other} and {} both resolve to AWS account {id}: each role needs its own account (check profile {} in ~/.aws/config)",
                            a.name, a.profile
                        ));
                    }
                }
                Ok(id) => problems.push(format!("account {} (profile {}): STS answered an odd account id {id:?}", a.name, a.profile)),
                Err(e) => {
                    let text = e.to_string();
                    let hint = if text.contains("ProfileFile") || text.contains("profile") && text.contains("not") {
                        format!(" (is [profile {}] in your AWS config?)", a.profile)
                    } else {
                        String::new()
                    };
                    problems.push(format!("{text}{hint}"));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StepError::new(problems.join("\n")))
        }
    }
}

#[async_trait::async_trait]
impl Step for Preflight {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, _cx: &StepCx) -> Result<Status, StepError> {
        self.run().await.map(|_| Status::UpToDate)
    }
    async fn apply(&self, _cx: &StepCx) -> Result<(), StepError> {
        self.run().await
    }
    async fn destroy(&self, _cx: &StepCx) -> Result<(), StepError> {
        Ok(())
    }
    fn read_only(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn regions() {
        assert!(super::looks_like_region("us-east-2"));
        assert!(super::looks_like_region("ap-southeast-1"));
        assert!(super::looks_like_region("us-gov-west-1"));
        assert!(!super::looks_like_region(""));
        assert!(!super::looks_like_region("useast2"));
        assert!(!super::looks_like_region("us-east-x"));
    }
}
