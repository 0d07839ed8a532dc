//! Names and marks more than one part of meshctl needs: the ownership tag and label on
//! everything meshctl creates, and the names derived from the configuration that one phase
//! creates and another refers to (role ARNs, stack names). Spelled here once.

use crate::config::{Account, Config};

/// AWS tag on every AWS resource meshctl creates (stacks, roles, OIDC providers, shares).
pub const TAG_MANAGED_BY: &str = "meshctl:managed-by";
/// Its value.
pub const MANAGED_BY: &str = "meshctl";
/// AWS tag naming the meshctl account role a resource belongs to.
pub const TAG_ACCOUNT: &str = "meshctl:account";
/// AWS tag naming the EKS cluster a resource belongs to.
pub const TAG_CLUSTER: &str = "meshctl:cluster";
/// AWS tag on every stack naming the mesh it belongs to, by its hub's stack name (one hub per
/// mesh): orphans are looked for among the stacks of the same mesh only.
pub const TAG_MESH: &str = "meshctl:mesh";
/// AWS tags on the hub's stack for one spoke: the spoke's profile and base stack, so that once
/// the spoke is gone from the configuration its stacks can still be found and deleted.
pub const TAG_SPOKE_PROFILE: &str = "meshctl:spoke-profile";
pub const TAG_SPOKE_STACK: &str = "meshctl:spoke-stack";

/// Kubernetes label on every object meshctl creates, so teardown touches only its own.
pub const LABEL_MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", MANAGED_BY);

/// The ARN partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// `arn:<partition>:iam::<account id>:role/<name>`.
pub fn role_arn(config: &Config, account_id: &str, role: &str) -> String {
    format!("arn:{}:iam::{account_id}:role/{role}", partition(&config.region))
}

/// The cross-account role of a spoke that the hub's SPIRE server assumes.
pub fn access_role_arn(config: &Config, spoke: &Account, spoke_account_id: &str) -> String {
    role_arn(config, spoke_account_id, spoke.access_role_name())
}

/// The hub's SPIRE server role (EKS Pod Identity of its service account). The hub stack
/// creates it under this name and every spoke's access role trusts exactly it, by name, so the
/// spoke stacks need not wait for the hub's.
pub fn spire_server_role_name(hub: &Account) -> String {
    format!("{}-spire-server", hub.cluster_name)
}

/// The stack in the hub account holding what the hub keeps for one spoke: routes to its VPC,
/// the Transit Gateway share with its account, the SPIRE server's permission to assume its
/// access role.
pub fn hub_peer_stack_name(hub: &Account, spoke: &Account) -> String {
    format!("{}-{}", hub.stack_name, spoke.name)
}

/// The stack holding a spoke's Transit Gateway attachment, routes and ingress.
pub fn tgw_stack_name(spoke: &Account) -> String {
    tgw_stack_of(&spoke.stack_name)
}

/// [`tgw_stack_name`] from the spoke's base stack name alone (a removed spoke's, read from a tag).
pub fn tgw_stack_of(base_stack: &str) -> String {
    format!("{base_stack}-tgw")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        let c = Config::default();
        assert_eq!(access_role_arn(&c, &c.spokes[1], "333333333333"), "arn:aws:iam::333333333333:role/eks-cluster-backend-access-role");
        assert_eq!(spire_server_role_name(&c.hub), "eks-cluster-shared-spire-server");
        assert_eq!(tgw_stack_name(&c.spokes[0]), "eks-cluster-frontend-stack-tgw");
        assert_eq!(hub_peer_stack_name(&c.hub, &c.spokes[1]), "eks-cluster-shared-services-stack-backend");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("cn-north-1"), "aws-cn");
    }
}
