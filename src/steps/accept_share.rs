//! In a spoke account: the share `share` from the hub account is active — its invitation
//! accepted, or associated through an AWS Organization with RAM sharing on (no invitation
//! then). The `ram` phase accepts the Transit Gateway share with it; the App Mesh provider
//! the mesh share. Nothing to tear down: the hub deleting the share ends it for every
//! recipient.

use std::sync::Arc;
use std::time::Duration;

use crate::aws::ram::{self, ShareState};
use crate::engine::{Error, Status, Step, StepMeta, StepRun, Teardown};
use crate::error::ResultExt;
use crate::session::Session;

/// How long `apply` waits for the hub's invitation.
pub const PATIENCE: Duration = Duration::from_secs(120);
/// The first interval between two looks for it (growing to 30 s).
pub const FIRST_POLL: Duration = Duration::from_secs(5);

pub struct AcceptShare {
    meta: StepMeta,
    session: Arc<Session>,
    spoke: String,
    share: String,
    /// How long `apply` waits for the invitation to arrive, and the first interval between
    /// two looks ([`PATIENCE`], [`FIRST_POLL`]; shorter in tests).
    patience: Duration,
    first_poll: Duration,
}

impl AcceptShare {
    pub fn step(meta: StepMeta, session: &Arc<Session>, spoke: &str, share: &str) -> Arc<dyn Step> {
        Arc::new(AcceptShare {
            meta,
            session: session.clone(),
            spoke: spoke.to_string(),
            share: share.to_string(),
            patience: PATIENCE,
            first_poll: FIRST_POLL,
        })
    }

    fn who(&self) -> String {
        format!("{}: RAM share {}", crate::aws::who(&self.session.aws, &self.spoke), self.share)
    }

    async fn parts(&self) -> Result<(aws_sdk_ram::Client, String), Error> {
        let hub = &self.session.config.hub.name;
        let owner = self.session.aws.account_id(hub).await?;
        let client = self.session.aws.ram(&self.spoke).await?;
        Ok((client, owner))
    }
}

#[async_trait::async_trait]
impl Step for AcceptShare {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _run: &StepRun) -> Result<Status, Error> {
        let (client, owner) = self.parts().await?;
        let state = ram::share_state(&client, &self.share, &owner)
            .await
            .context(format!("{}: cannot read invitations", self.who()))
            .map_err(|e| {
                e.hint(format!(
                    "try `aws ram get-resource-share-invitations --profile {}`",
                    self.session.aws.profile(&self.spoke).unwrap_or("?")
                ))
            })?;
        Ok(match state {
            ShareState::Active => Status::UpToDate,
            ShareState::Pending { invitation_arn } => Status::Drifted(format!("invitation {invitation_arn} is pending")),
            ShareState::Absent => Status::Missing,
        })
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let (client, owner) = self.parts().await?;
        run.progress(format!("waiting for the invitation to {} from {owner}", self.share));
        ram::accept_share(&client, &self.share, &owner, self.patience, self.first_poll).await.context(self.who()).map_err(|e| {
            e.hint(format!(
                "check that the hub created it (`aws ram get-resource-shares --resource-owner SELF --name {} --profile {}`)",
                self.share, self.session.config.hub.profile
            ))
        })
    }

    async fn destroy(&self, _run: &StepRun) -> Result<(), Error> {
        Ok(())
    }

    fn teardown(&self) -> Teardown {
        Teardown::WithParent
    }
}

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
    use crate::engine::{Status, StepId};

    const TGW_SHARE: &str = "multi-account-tgw-share";
    const INV: &str = "arn:aws:ram:us-east-2:111111111111:resource-share-invitation/3e9b1a7c-5d2f-4c8e-9f00-abcdefabcdef";

    /// The step accepting `share` in the frontend account, as `ram/frontend` (the TGW share)
    /// and the App Mesh provider's `mesh/accept-frontend` (the mesh share) build it.
    fn step(ctx: &Arc<Session>, share: &str, patience: Duration) -> AcceptShare {
        AcceptShare {
            meta: StepMeta::new(StepId::new("ram", "frontend"), "frontend", "accept"),
            session: ctx.clone(),
            spoke: "frontend".into(),
            share: share.into(),
            patience,
            first_poll: Duration::from_millis(10),
        }
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
            .then_output(|| {
                AcceptResourceShareInvitationOutput::builder()
                    .resource_share_invitation(invitation(TGW_SHARE, ResourceShareInvitationStatus::Accepted))
                    .build()
            })
    }

    #[tokio::test]
    async fn pending_invitation_is_would_change_and_accepted_in_the_spoke() {
        let invs = invitations(vec![invitation(TGW_SHARE, ResourceShareInvitationStatus::Pending)]);
        let accept = accept_rule();
        // Only the spoke is called: the hub's id comes from its (resolved) identity.
        let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, &[&invs, &accept])]);
        let s = step(&ctx, TGW_SHARE, PATIENCE);
        let cx = StepRun::detached("ram/frontend");
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
        let s = step(&ctx, TGW_SHARE, PATIENCE);
        let cx = StepRun::detached("ram/frontend");
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
        let s = step(&ctx, "mesh-share", PATIENCE);
        let cx = StepRun::detached("mesh/accept-frontend");
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
        let cx = StepRun::detached("ram/frontend");
        assert_eq!(step(&ctx, TGW_SHARE, PATIENCE).check(&cx).await.unwrap(), Status::Missing);
        let err = step(&ctx, TGW_SHARE, Duration::ZERO).apply(&cx).await.unwrap_err().chain();
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
        let err = step(&ctx, "mesh-share", PATIENCE).check(&StepRun::detached("mesh/accept-frontend")).await.unwrap_err().chain();
        assert_eq!(
            err,
            "account frontend (profile frontend): RAM share mesh-share: cannot read invitations: AccessDeniedException: User is not authorized \
             to perform: ram:GetResourceShareInvitations; try `aws ram get-resource-share-invitations --profile frontend`"
        );
    }
}
