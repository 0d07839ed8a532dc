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
    /// How long `apply` waits for the invitation to arrive, and the first interval between
    /// two looks ([`PATIENCE`], [`FIRST_POLL`]; shorter in tests).
    patience: Duration,
    first_poll: Duration,
}

/// How long `apply` waits for the hub's invitation.
pub const PATIENCE: Duration = Duration::from_secs(120);
/// The first interval between two looks for it (growing to 30 s).
pub const FIRST_POLL: Duration = Duration::from_secs(5);

impl AcceptShare {
    pub fn step(meta: StepMeta, ctx: &Arc<Ctx>, spoke: &str, share: &str) -> Arc<dyn Step> {
        Arc::new(AcceptShare {
            meta,
            ctx: ctx.clone(),
            spoke: spoke.to_string(),
            share: share.to_string(),
            patience: PATIENCE,
            first_poll: FIRST_POLL,
        })
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
        ram::accept_share(&client, &self.share, &owner, self.patience, self.first_poll).await.map_err(|e| {
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

/// `ram/<spoke>` and `mesh/accept-<spoke>` as steps, against AWS-shaped responses
/// (aws-smithy-mocks): moto has no GetResourceShareInvitations /
/// AcceptResourceShareInvitation. The invitation logic itself is in `aws::ram::tests`; these
/// prove the step's statuses, that it works in the spoke's account with the hub's account id
/// as the sender, and its error text.
#[cfg(test)]
mod tests {
    use aws_sdk_ram::operation::accept_resource_share_invitation::AcceptResourceShareInvitationOutput;
    use aws_sdk_ram::operation::get_resource_share_invitations::{GetResourceShareInvitationsError, GetResourceShareInvitationsOutput};
    use aws_sdk_ram::operation::get_resource_shares::GetResourceSharesOutput;
    use aws_sdk_ram::types::{ResourceOwner, ResourceShare, ResourceShareInvitation, ResourceShareInvitationStatus, ResourceShareStatus};
    use aws_smithy_mocks::{mock, Rule, RuleMode};
    use aws_smithy_types::DateTime;

    use super::*;
    use crate::aws::testing::{self, FRONTEND, SHARED};

    const TGW_SHARE: &str = "multi-account-tgw-share";
    const INV: &str = "arn:aws:ram:us-east-2:111111111111:resource-share-invitation/3e9b1a7c-5d2f-4c8e-9f00-abcdefabcdef";

    fn step(ctx: &Arc<Ctx>, id: &str) -> Arc<dyn Step> {
        let mut all = steps(ctx);
        all.extend(crate::mesh::appmesh::aws::steps(ctx));
        all.into_iter().find(|s| s.meta().id == id).unwrap_or_else(|| panic!("no step {id}"))
    }

    fn invitation(name: &str, status: ResourceShareInvitationStatus) -> ResourceShareInvitation {
        ResourceShareInvitation::builder()
            .resource_share_invitation_arn(INV)
            .resource_share_name(name)
            .resource_share_arn(format!("arn:aws:ram:us-east-2:{SHARED}:resource-share/6a2f9c1e-0000-4d3b-8e7f-001122334455"))
            .sender_account_id(SHARED)
            .receiver_account_id(FRONTEND)
            .invitation_timestamp(DateTime::from_secs(1_764_304_800))
            .status(status)
            .build()
    }

    fn invitations(list: Vec<ResourceShareInvitation>) -> Rule {
        mock!(aws_sdk_ram::Client::get_resource_share_invitations)
            .then_output(move || GetResourceShareInvitationsOutput::builder().set_resource_share_invitations(Some(list.clone())).build())
    }

    /// GetResourceShares as the recipient asks for it (owner OTHER-ACCOUNTS, by name).
    fn received(name: &'static str, owners: &[&str]) -> Rule {
        let list: Vec<ResourceShare> = owners
            .iter()
            .map(|o| {
                ResourceShare::builder()
                    .resource_share_arn(format!("arn:aws:ram:us-east-2:{o}:resource-share/6a2f9c1e-0000-4d3b-8e7f-001122334455"))
                    .name(name)
                    .owning_account_id(*o)
                    .allow_external_principals(true)
                    .status(ResourceShareStatus::Active)
                    .build()
            })
            .collect();
        mock!(aws_sdk_ram::Client::get_resource_shares)
            .match_requests(move |r| r.resource_owner() == Some(&ResourceOwner::OtherAccounts) && r.name() == Some(name))
            .then_output(move || GetResourceSharesOutput::builder().set_resource_shares(Some(list.clone())).build())
    }

    fn accept_rule() -> Rule {
        mock!(aws_sdk_ram::Client::accept_resource_share_invitation)
            .match_requests(|r| r.resource_share_invitation_arn() == Some(INV))
            .then_output(|| AcceptResourceShareInvitationOutput::builder().resource_share_invitation(invitation(TGW_SHARE, ResourceShareInvitationStatus::Accepted)).build())
    }

    #[tokio::test]
    async fn pending_invitation_is_would_change_and_accepted_in_the_spoke() {
        let invs = invitations(vec![invitation(TGW_SHARE, ResourceShareInvitationStatus::Pending)]);
        let accept = accept_rule();
        // Only the spoke is called: the hub's id comes from its (resolved) identity.
        let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, &[&invs, &accept])]);
        let s = step(&ctx, "ram/frontend");
        let cx = StepCx::detached("ram/frontend");
        assert_eq!(s.check(&cx).await.unwrap(), Status::Drifted(format!("invitation {INV} is pending")));
        assert_eq!(ctx.aws.writes().count(), 0, "check only reads");
        s.apply(&cx).await.unwrap();
        assert_eq!(accept.num_calls(), 1);
        assert_eq!(ctx.aws.writes().calls(), ["RAM:AcceptResourceShareInvitation"]);
    }

    #[tokio::test]
    async fn already_accepted_share_is_up_to_date() {
        let invs = invitations(vec![invitation(TGW_SHARE, ResourceShareInvitationStatus::Accepted)]);
        let shares = received(TGW_SHARE, &[SHARED]);
        let accept = accept_rule();
        let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, &[&invs, &shares, &accept])]);
        let s = step(&ctx, "ram/frontend");
        let cx = StepCx::detached("ram/frontend");
        assert_eq!(s.check(&cx).await.unwrap(), Status::UpToDate);
        s.apply(&cx).await.unwrap();
        assert_eq!((shares.num_calls(), accept.num_calls()), (2, 0));
        assert_eq!(ctx.aws.writes().count(), 0);
    }

    /// Inside an AWS Organization with RAM sharing enabled there is no invitation at all.
    #[tokio::test]
    async fn organization_share_without_invitation_is_up_to_date() {
        let invs = invitations(vec![]);
        let shares = received("mesh-share", &[SHARED]);
        let accept = accept_rule();
        let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, &[&invs, &shares, &accept])]);
        let s = step(&ctx, "mesh/accept-frontend");
        let cx = StepCx::detached("mesh/accept-frontend");
        assert_eq!(s.check(&cx).await.unwrap(), Status::UpToDate);
        s.apply(&cx).await.unwrap();
        assert_eq!((invs.num_calls(), shares.num_calls(), accept.num_calls()), (2, 2, 0));
    }

    #[tokio::test]
    async fn no_invitation_and_no_share_is_missing_and_apply_names_the_share_and_the_hub() {
        let invs = invitations(vec![]);
        // A share of that name from an account that is not the hub does not count.
        let shares = received(TGW_SHARE, &["444444444444"]);
        let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, &[&invs, &shares])]);
        let cx = StepCx::detached("ram/frontend");
        assert_eq!(step(&ctx, "ram/frontend").check(&cx).await.unwrap(), Status::Missing);
        let s = AcceptShare {
            meta: StepMeta::new("ram", "frontend", "frontend", "accept"),
            ctx: ctx.clone(),
            spoke: "frontend".into(),
            share: TGW_SHARE.into(),
            patience: Duration::ZERO,
            first_poll: Duration::from_millis(10),
        };
        let err = s.apply(&cx).await.unwrap_err().message;
        assert_eq!(
            err,
            "account frontend (profile frontend): RAM share multi-account-tgw-share: no invitation to RAM share multi-account-tgw-share \
             from account 111111111111 arrived within 0s, and the share is not associated; check that the hub created it \
             (`aws ram get-resource-shares --resource-owner SELF --name multi-account-tgw-share --profile shared`)"
        );
        assert_eq!(ctx.aws.writes().count(), 0);
    }

    #[tokio::test]
    async fn unreadable_invitations_name_the_account_the_share_and_the_command() {
        let denied = mock!(aws_sdk_ram::Client::get_resource_share_invitations).then_error(|| {
            GetResourceShareInvitationsError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("User is not authorized to perform: ram:GetResourceShareInvitations")
                    .build(),
            )
        });
        let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, &[&denied])]);
        let err = step(&ctx, "mesh/accept-frontend").check(&StepCx::detached("mesh/accept-frontend")).await.unwrap_err().message;
        assert_eq!(
            err,
            "account frontend (profile frontend): RAM share mesh-share: cannot read invitations: AccessDeniedException: User is not authorized \
             to perform: ram:GetResourceShareInvitations; try `aws ram get-resource-share-invitations --profile frontend`"
        );
    }
}
