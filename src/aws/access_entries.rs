//! EKS access entries: let an IAM principal into a cluster without the aws-auth ConfigMap.
//!
//! What the entry grants is either Kubernetes groups (least privilege: meshctl's group,
//! bound by RBAC in the cluster) or EKS's cluster-admin access policy. EKS refuses groups that
//! start with `system:` in an access entry, so the walkthrough's `system:masters` becomes an
//! entry with no groups and the `AmazonEKSClusterAdminPolicy` associated at cluster scope.

use aws_sdk_eks::types::{AccessScope, AccessScopeType};
use aws_sdk_eks::Client;

use crate::error::{Error, ErrorKind, ResultExt};
use crate::names::{MANAGED_BY, TAG_MANAGED_BY};
use crate::state::Status;

/// EKS's managed cluster-admin access policy.
pub const ADMIN_POLICY: &str = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy";

/// What the entry must grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Kubernetes groups of the entry (never `system:*`).
    pub groups: Vec<String>,
    /// Associate [`ADMIN_POLICY`] at cluster scope.
    pub cluster_admin: bool,
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Whether the admin policy is associated with the principal at cluster scope.
async fn admin_associated(eks: &Client, cluster: &str, principal: &str) -> Result<bool, Error> {
    let mut token = None;
    loop {
        let out = eks
            .list_associated_access_policies()
            .cluster_name(cluster)
            .principal_arn(principal)
            .set_next_token(token)
            .send()
            .await
            .context(format!("EKS ListAssociatedAccessPolicies {principal} in {cluster}"))?;
        let found = out.associated_access_policies.unwrap_or_default().iter().any(|p| {
            p.policy_arn.as_deref() == Some(ADMIN_POLICY)
                && p.access_scope.as_ref().and_then(|s| s.r#type.as_ref()) == Some(&AccessScopeType::Cluster)
        });
        if found {
            return Ok(true);
        }
        token = out.next_token;
        if token.is_none() {
            return Ok(false);
        }
    }
}

/// The entry's state against `grant`: missing, up to date, or what differs.
pub async fn status(eks: &Client, cluster: &str, principal: &str, grant: &Grant) -> Result<Status, Error> {
    let entry = match eks.describe_access_entry().cluster_name(cluster).principal_arn(principal).send().await {
        Ok(out) => out.access_entry,
        Err(e) => {
            let e = Error::from(e);
            if e.is(ErrorKind::NotFound) {
                return Ok(Status::Missing);
            }
            return Err(e.context(format!("EKS DescribeAccessEntry {principal} in {cluster}")));
        }
    };
    let mut why = Vec::new();
    let have = sorted(entry.and_then(|e| e.kubernetes_groups).unwrap_or_default());
    let want = sorted(grant.groups.clone());
    if have != want {
        why.push(format!("access entry groups are {have:?}, want {want:?}"));
    }
    let admin = admin_associated(eks, cluster, principal).await?;
    match (admin, grant.cluster_admin) {
        (false, true) => why.push("AmazonEKSClusterAdminPolicy is not associated".into()),
        (true, false) => why.push("AmazonEKSClusterAdminPolicy is still associated".into()),
        _ => {}
    }
    Ok(if why.is_empty() { Status::UpToDate } else { Status::Drifted(why.join("; ")) })
}

/// Creates or fixes the entry and its policy association.
pub async fn ensure(eks: &Client, cluster: &str, principal: &str, grant: &Grant) -> Result<(), Error> {
    let groups = (!grant.groups.is_empty()).then(|| grant.groups.clone());
    match status(eks, cluster, principal, grant).await? {
        Status::UpToDate => return Ok(()),
        Status::Missing => {
            eks.create_access_entry()
                .cluster_name(cluster)
                .principal_arn(principal)
                .set_kubernetes_groups(groups)
                .r#type("STANDARD")
                .tags(TAG_MANAGED_BY, MANAGED_BY)
                .send()
                .await
                .context(format!("EKS CreateAccessEntry {principal} in {cluster}"))?;
        }
        Status::Drifted(_) | Status::Orphaned(_) => {
            eks.update_access_entry()
                .cluster_name(cluster)
                .principal_arn(principal)
                .set_kubernetes_groups(Some(grant.groups.clone()))
                .send()
                .await
                .context(format!("EKS UpdateAccessEntry {principal} in {cluster}"))?;
        }
    }
    let admin = admin_associated(eks, cluster, principal).await?;
    if grant.cluster_admin && !admin {
        eks.associate_access_policy()
            .cluster_name(cluster)
            .principal_arn(principal)
            .policy_arn(ADMIN_POLICY)
            .access_scope(AccessScope::builder().r#type(AccessScopeType::Cluster).build())
            .send()
            .await
            .context(format!("EKS AssociateAccessPolicy {ADMIN_POLICY} to {principal} in {cluster}"))?;
    } else if !grant.cluster_admin && admin {
        eks.disassociate_access_policy()
            .cluster_name(cluster)
            .principal_arn(principal)
            .policy_arn(ADMIN_POLICY)
            .send()
            .await
            .context(format!("EKS DisassociateAccessPolicy {ADMIN_POLICY} from {principal} in {cluster}"))?;
    }
    Ok(())
}

/// Deletes the entry (its policy associations go with it); absent is success.
pub async fn delete(eks: &Client, cluster: &str, principal: &str) -> Result<(), Error> {
    match eks.delete_access_entry().cluster_name(cluster).principal_arn(principal).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = Error::from(e);
            if e.is(ErrorKind::NotFound) {
                Ok(())
            } else {
                Err(e.context(format!("EKS DeleteAccessEntry {principal} in {cluster}")))
            }
        }
    }
}

/// moto has no EKS access entries: the exact calls are proven against the SDK's own mocks.
#[cfg(test)]
mod tests {
    use aws_sdk_eks::operation::associate_access_policy::AssociateAccessPolicyOutput;
    use aws_sdk_eks::operation::create_access_entry::CreateAccessEntryOutput;
    use aws_sdk_eks::operation::delete_access_entry::DeleteAccessEntryError;
    use aws_sdk_eks::operation::describe_access_entry::{DescribeAccessEntryError, DescribeAccessEntryOutput};
    use aws_sdk_eks::operation::list_associated_access_policies::ListAssociatedAccessPoliciesOutput;
    use aws_sdk_eks::types::error::ResourceNotFoundException;
    use aws_sdk_eks::types::{AccessEntry, AssociatedAccessPolicy};
    use aws_smithy_mocks::{mock, Rule, RuleMode};

    use super::*;
    use crate::aws::testing::mocked_client;

    const CLUSTER: &str = "eks-cluster-frontend";
    const ROLE: &str = "arn:aws:iam::222222222222:role/eks-cluster-frontend-access-role";
    const SPIRE_GROUP: &str = "meshctl:spire-server";

    fn eks(rules: &[&Rule]) -> Client {
        mocked_client!(aws_sdk_eks, RuleMode::MatchAny, rules)
    }

    fn missing() -> Rule {
        mock!(Client::describe_access_entry).then_error(|| {
            DescribeAccessEntryError::ResourceNotFoundException(ResourceNotFoundException::builder().message("no entry").build())
        })
    }

    fn present(groups: &'static [&'static str]) -> Rule {
        mock!(Client::describe_access_entry).then_output(move || {
            let mut e = AccessEntry::builder().cluster_name(CLUSTER).principal_arn(ROLE);
            for g in groups {
                e = e.kubernetes_groups(*g);
            }
            DescribeAccessEntryOutput::builder().access_entry(e.build()).build()
        })
    }

    fn policies(admin: bool) -> Rule {
        mock!(Client::list_associated_access_policies).then_output(move || {
            let mut out = ListAssociatedAccessPoliciesOutput::builder().cluster_name(CLUSTER).principal_arn(ROLE);
            if admin {
                out = out.associated_access_policies(
                    AssociatedAccessPolicy::builder()
                        .policy_arn(ADMIN_POLICY)
                        .access_scope(AccessScope::builder().r#type(AccessScopeType::Cluster).build())
                        .build(),
                );
            }
            out.build()
        })
    }

    #[tokio::test]
    async fn least_privilege_entry_is_created_with_meshctls_group_and_no_policy() {
        let create = mock!(Client::create_access_entry)
            .match_requests(|r| {
                r.cluster_name() == Some(CLUSTER)
                    && r.principal_arn() == Some(ROLE)
                    && r.kubernetes_groups() == [SPIRE_GROUP.to_string()]
                    && r.r#type() == Some("STANDARD")
            })
            .then_output(|| CreateAccessEntryOutput::builder().build());
        let (missing, none) = (missing(), policies(false));
        let c = eks(&[&missing, &create, &none]);
        let grant = Grant { groups: vec![SPIRE_GROUP.into()], cluster_admin: false };
        assert_eq!(status(&c, CLUSTER, ROLE, &grant).await.unwrap(), Status::Missing);
        ensure(&c, CLUSTER, ROLE, &grant).await.unwrap();
        assert_eq!(create.num_calls(), 1);
    }

    /// The walkthrough's grant through access entries: EKS rejects `system:masters` as a
    /// group, so the entry gets no group and the cluster-admin policy at cluster scope.
    #[tokio::test]
    async fn system_masters_becomes_the_cluster_admin_policy_at_cluster_scope() {
        let create = mock!(Client::create_access_entry)
            .match_requests(|r| r.principal_arn() == Some(ROLE) && r.kubernetes_groups().is_empty())
            .then_output(|| CreateAccessEntryOutput::builder().build());
        let associate = mock!(Client::associate_access_policy)
            .match_requests(|r| {
                r.cluster_name() == Some(CLUSTER)
                    && r.principal_arn() == Some(ROLE)
                    && r.policy_arn() == Some(ADMIN_POLICY)
                    && r.access_scope().and_then(|s| s.r#type()) == Some(&AccessScopeType::Cluster)
                    && r.access_scope().is_some_and(|s| s.namespaces().is_empty())
            })
            .then_output(|| AssociateAccessPolicyOutput::builder().build());
        let (missing, none) = (missing(), policies(false));
        let c = eks(&[&missing, &create, &none, &associate]);
        ensure(&c, CLUSTER, ROLE, &Grant { groups: vec![], cluster_admin: true }).await.unwrap();
        assert_eq!((create.num_calls(), associate.num_calls()), (1, 1));

        let (entry, admin) = (present(&[]), policies(true));
        let c = eks(&[&entry, &admin]);
        assert_eq!(status(&c, CLUSTER, ROLE, &Grant { groups: vec![], cluster_admin: true }).await.unwrap(), Status::UpToDate);
        assert!(matches!(status(&c, CLUSTER, ROLE, &Grant { groups: vec![SPIRE_GROUP.into()], cluster_admin: false }).await.unwrap(),
            Status::Drifted(w) if w.contains("still associated") && w.contains("groups")));
    }

    #[tokio::test]
    async fn up_to_date_and_delete_tolerates_absent() {
        let (entry, none) = (present(&[SPIRE_GROUP]), policies(false));
        let gone = mock!(Client::delete_access_entry)
            .then_error(|| DeleteAccessEntryError::ResourceNotFoundException(ResourceNotFoundException::builder().build()));
        let c = eks(&[&entry, &none, &gone]);
        let grant = Grant { groups: vec![SPIRE_GROUP.into()], cluster_admin: false };
        assert_eq!(status(&c, CLUSTER, ROLE, &grant).await.unwrap(), Status::UpToDate);
        ensure(&c, CLUSTER, ROLE, &grant).await.unwrap();
        delete(&c, CLUSTER, ROLE).await.unwrap();
        assert_eq!(gone.num_calls(), 1);
    }
}
