//! Phase 2: in each spoke, accept the pending invitation to the hub's Transit Gateway share
//! (nothing to do when the share is already associated, e.g. inside an AWS Organization).
//! The same step accepts the `mesh-share` in the mesh phase.

use std::sync::Arc;
use std::time::Duration;

use super::ids;
use crate::aws::ram::{self, ShareState};
use crate::context::Ctx;
use crate::engine::{Status, Step, StepCx, StepError, StepMeta};

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    c.spokes
        .iter()
        .map(|s| {
            AcceptShare::step(
                StepMeta::new("ram", &s.name, &s.name, format!("accept RAM share {}", c.network.tgw_share)).needs([ids::stack(&c.hub.name)]),
                ctx,
                &s.name,
                &c.network.tgw_share,
            )
        })
        .collect()
}

/// In a spoke account: the share `share` from the hub account is active (invitation
/// accepted, or associated through an Organization). Destroy is a no-op: the hub deleting
/// the share ends it for every recipient.
pub struct AcceptShare {
    meta: StepMeta,
    ctx: Arc<Ctx>,
    spoke: String,
    share: String,
}

impl AcceptShare {
    pub fn step(meta: StepMeta, ctx: &Arc<Ctx>, spoke: &str, share: &str) -> Arc<dyn Step> {
        Arc::new(AcceptShare { meta, ctx: ctx.clone(), spoke: spoke.to_string(), share: share.to_string() })
    }

    fn who(&self) -> String {
        let profile = self.ctx.aws.profile(&self.spoke).unwrap_or("?");
        format!("account {} (profile {profile}): RAM share {}", self.spoke, self.share)
    }

    async fn parts(&self) -> Result<(aws_sdk_ram::Client, String), StepError> {
        let hub = &self.ctx.config.hub.name;
        let owner = self.ctx.aws.account_id(hub).await.map_err(|e| StepError::new(e.to_string()))?;
        let client = self.ctx.aws.ram(&self.spoke).await.map_err(|e| StepError::new(e.to_string()))?;
        Ok((client, owner))
    }
}

#[async_trait::async_trait]
impl Step for AcceptShare {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _cx: &StepCx) -> Result<Status, StepError> {
        let (client, owner) = self.parts().await?;
        match ram::share_state(&client, &self.share, &owner).await {
            Ok(ShareState::Active) => Ok(Status::UpToDate),
            Ok(ShareState::Pending { invitation_arn }) => Ok(Status::Drifted(format!("invitation {invitation_arn} is pending"))),
            Ok(ShareState::Absent) => Ok(Status::Missing),
            Err(e) => Err(StepError::new(format!(
                "{}: cannot read invitations: {e}; try `aws ram get-resource-share-invitations --profile {}`",
                self.who(),
                self.ctx.aws.profile(&self.spoke).unwrap_or("?")
            ))),
        }
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let (client, owner) = self.parts().await?;
        cx.progress(format!("waiting for the invitation to {} from {owner}", self.share));
        ram::accept_share(&client, &self.share, &owner, Duration::from_secs(120), Duration::from_secs(5)).await.map_err(|e| {
            StepError::new(format!(
                "{}: {e}; check that the hub created it (`aws ram get-resource-shares --resource-owner SELF --name {} --profile {}`)",
                self.who(),
                self.share,
                self.ctx.config.hub.profile
            ))
        })
    }

    async fn destroy(&self, _cx: &StepCx) -> Result<(), StepError> {
        Ok(())
    }
}
