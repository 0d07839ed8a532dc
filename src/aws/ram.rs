//! AWS RAM, recipient side: find and accept the invitation to a named resource share sent by
//! the hub account. Inside an AWS Organization with RAM sharing enabled there is no
//! invitation: the share is simply associated, which counts as accepted.

use std::time::Duration;

use aws_sdk_ram::types::{ResourceOwner, ResourceShareInvitationStatus, ResourceShareStatus};
use aws_sdk_ram::Client;

use super::Backoff;
use crate::error::{Error, ErrorKind};

/// Where the recipient account stands with a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareState {
    /// The share is active for this account (invitation accepted, or Organization sharing).
    Active,
    /// An invitation waits to be accepted.
    Pending { invitation_arn: String },
    /// Neither an invitation nor the share is visible (yet).
    Absent,
}

/// Reads the state of share `name` owned by `owner` as seen from the recipient account.
pub async fn share_state(client: &Client, name: &str, owner: &str) -> Result<ShareState, Error> {
    // Pending invitations first: a share deleted and created again leaves an old accepted one.
    let mut token: Option<String> = None;
    let mut pending: Option<(Option<aws_smithy_types::DateTime>, String)> = None;
    loop {
        let out = client.get_resource_share_invitations().set_next_token(token.clone()).send().await?;
        for inv in out.resource_share_invitations.unwrap_or_default() {
            if inv.resource_share_name.as_deref() != Some(name) || inv.sender_account_id.as_deref() != Some(owner) {
                continue;
            }
            if inv.status == Some(ResourceShareInvitationStatus::Pending) {
                let arn = inv.resource_share_invitation_arn.unwrap_or_default();
                let newer = match &pending {
                    None => true,
                    Some((ts, _)) => inv.invitation_timestamp > *ts,
                };
                if newer {
                    pending = Some((inv.invitation_timestamp, arn));
                }
            }
        }
        token = out.next_token;
        if token.is_none() {
            break;
        }
    }
    if let Some((_, invitation_arn)) = pending {
        return Ok(ShareState::Pending { invitation_arn });
    }
    let out = client.get_resource_shares().resource_owner(ResourceOwner::OtherAccounts).name(name).send().await?;
    let active = out
        .resource_shares
        .unwrap_or_default()
        .iter()
        .any(|s| s.owning_account_id.as_deref() == Some(owner) && s.status == Some(ResourceShareStatus::Active));
    Ok(if active { ShareState::Active } else { ShareState::Absent })
}

/// Accepts the pending invitation (already accepted counts as success).
pub async fn accept(client: &Client, invitation_arn: &str) -> Result<(), Error> {
    match client.accept_resource_share_invitation().resource_share_invitation_arn(invitation_arn).send().await {
        Ok(out) => match out.resource_share_invitation.and_then(|i| i.status) {
            Some(ResourceShareInvitationStatus::Accepted) | None => Ok(()),
            Some(other) => {
                Err(Error::new(ErrorKind::Conflict, format!("invitation {invitation_arn} is {} after accepting", other.as_str())))
            }
        },
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_share_invitation_already_accepted_exception()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Waits (up to `patience`) for the invitation to arrive, accepts it, and returns once the
/// share is active for this account.
pub async fn accept_share(client: &Client, name: &str, owner: &str, patience: Duration, first_poll: Duration) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let mut backoff = Backoff::new(first_poll, Duration::from_secs(30));
    loop {
        match share_state(client, name, owner).await? {
            ShareState::Active => return Ok(()),
            ShareState::Pending { invitation_arn } => {
                accept(client, &invitation_arn).await?;
                return Ok(());
            }
            ShareState::Absent if started.elapsed() >= patience => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no invitation to RAM share {name} from account {owner} arrived within {}s, and the share is not associated",
                        patience.as_secs()
                    ),
                ))
            }
            ShareState::Absent => backoff.wait(false).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::testing::mocked_client;
    use aws_sdk_ram::operation::accept_resource_share_invitation::AcceptResourceShareInvitationOutput;
    use aws_sdk_ram::operation::get_resource_share_invitations::GetResourceShareInvitationsOutput;
    use aws_sdk_ram::operation::get_resource_shares::GetResourceSharesOutput;
    use aws_sdk_ram::types::{ResourceShare, ResourceShareInvitation};
    use aws_smithy_mocks::{mock, Rule, RuleMode};

    const HUB: &str = "111111111111";
    const ME: &str = "222222222222";
    const INV: &str = "arn:aws:ram:us-east-2:111111111111:resource-share-invitation/3e9b1a7c-0000-4c8e-9f00-abcdefabcdef";

    fn client(rules: &[&Rule]) -> Client {
        mocked_client!(aws_sdk_ram, RuleMode::MatchAny, rules)
    }

    fn invitation(name: &str, sender: &str, status: ResourceShareInvitationStatus, secs: i64) -> ResourceShareInvitation {
        ResourceShareInvitation::builder()
            .resource_share_invitation_arn(format!("{INV}-{secs}"))
            .resource_share_name(name)
            .resource_share_arn(format!("arn:aws:ram:us-east-2:{sender}:resource-share/{name}"))
            .sender_account_id(sender)
            .receiver_account_id(ME)
            .invitation_timestamp(aws_smithy_types::DateTime::from_secs(secs))
            .status(status)
            .build()
    }

    fn shares(list: Vec<ResourceShare>) -> Rule {
        mock!(Client::get_resource_shares)
            .match_requests(|r| r.resource_owner() == Some(&ResourceOwner::OtherAccounts))
            .then_output(move || GetResourceSharesOutput::builder().set_resource_shares(Some(list.clone())).build())
    }

    #[tokio::test]
    async fn pending_invitation_is_found_and_accepted() {
        let invs = mock!(Client::get_resource_share_invitations).then_output(|| {
            GetResourceShareInvitationsOutput::builder()
                .resource_share_invitations(invitation("other-share", HUB, ResourceShareInvitationStatus::Pending, 100))
                .resource_share_invitations(invitation(
                    "multi-account-tgw-share",
                    "999999999999",
                    ResourceShareInvitationStatus::Pending,
                    100,
                ))
                .resource_share_invitations(invitation("multi-account-tgw-share", HUB, ResourceShareInvitationStatus::Accepted, 50))
                .resource_share_invitations(invitation("multi-account-tgw-share", HUB, ResourceShareInvitationStatus::Pending, 200))
                .build()
        });
        let accept_rule = mock!(Client::accept_resource_share_invitation)
            .match_requests(|r| r.resource_share_invitation_arn() == Some(&format!("{INV}-200")))
            .then_output(|| {
                AcceptResourceShareInvitationOutput::builder()
                    .resource_share_invitation(invitation("multi-account-tgw-share", HUB, ResourceShareInvitationStatus::Accepted, 200))
                    .build()
            });
        let c = client(&[&invs, &accept_rule]);
        assert_eq!(
            share_state(&c, "multi-account-tgw-share", HUB).await.unwrap(),
            ShareState::Pending { invitation_arn: format!("{INV}-200") }
        );
        accept_share(&c, "multi-account-tgw-share", HUB, Duration::from_secs(1), Duration::from_millis(10)).await.unwrap();
        assert_eq!(accept_rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn accepted_or_organization_share_is_active() {
        let invs = mock!(Client::get_resource_share_invitations).then_output(|| {
            GetResourceShareInvitationsOutput::builder()
                .resource_share_invitations(invitation("mesh-share", HUB, ResourceShareInvitationStatus::Accepted, 10))
                .build()
        });
        let active = shares(vec![ResourceShare::builder()
            .name("mesh-share")
            .owning_account_id(HUB)
            .status(ResourceShareStatus::Active)
            .resource_share_arn("arn:aws:ram:us-east-2:111111111111:resource-share/abc")
            .build()]);
        let accept_rule =
            mock!(Client::accept_resource_share_invitation).then_output(|| AcceptResourceShareInvitationOutput::builder().build());
        let c = client(&[&invs, &active, &accept_rule]);
        assert_eq!(share_state(&c, "mesh-share", HUB).await.unwrap(), ShareState::Active);
        accept_share(&c, "mesh-share", HUB, Duration::from_secs(1), Duration::from_millis(10)).await.unwrap();
        assert_eq!(accept_rule.num_calls(), 0, "nothing to accept");
    }

    #[tokio::test]
    async fn absent_share_times_out_with_a_clear_message() {
        let invs = mock!(Client::get_resource_share_invitations).then_output(|| GetResourceShareInvitationsOutput::builder().build());
        let none = shares(vec![]);
        let c = client(&[&invs, &none]);
        assert_eq!(share_state(&c, "mesh-share", HUB).await.unwrap(), ShareState::Absent);
        let err = accept_share(&c, "mesh-share", HUB, Duration::from_millis(30), Duration::from_millis(10)).await.unwrap_err();
        assert!(err.to_string().contains("no invitation to RAM share mesh-share from account 111111111111"), "{err}");
    }

    #[tokio::test]
    async fn already_accepted_error_counts_as_success() {
        use aws_sdk_ram::operation::accept_resource_share_invitation::AcceptResourceShareInvitationError;
        use aws_sdk_ram::types::error::ResourceShareInvitationAlreadyAcceptedException;
        let rule = mock!(Client::accept_resource_share_invitation).then_error(|| {
            AcceptResourceShareInvitationError::ResourceShareInvitationAlreadyAcceptedException(
                ResourceShareInvitationAlreadyAcceptedException::builder().message("already accepted").build().unwrap(),
            )
        });
        let c = client(&[&rule]);
        accept(&c, INV).await.unwrap();
    }
}
