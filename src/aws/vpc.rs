//! What keeps CloudFormation from deleting a cluster's VPC: things Kubernetes created inside
//! it that no stack knows about — load balancers of `LoadBalancer` Services (network and
//! application load balancers from ELBv2, and the classic ELB the in-tree AWS cloud provider
//! makes for a Service without annotations), their leftover network interfaces, and the
//! security groups the controllers made for them.

use std::fmt;

use aws_sdk_ec2::types::{Filter, NetworkInterfaceStatus};

use crate::error::{Error, ErrorKind, ResultExt};

/// The load balancer APIs of an account: ELBv2 (NLB, ALB) and classic ELB.
pub struct LoadBalancers<'a> {
    pub v2: &'a aws_sdk_elasticloadbalancingv2::Client,
    pub classic: &'a aws_sdk_elasticloadbalancing::Client,
}

/// One resource in the VPC that the stack did not create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    LoadBalancer { arn: String, name: String },
    ClassicLoadBalancer { name: String },
    NetworkInterface { id: String, description: String },
    SecurityGroup { id: String, name: String },
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::LoadBalancer { name, arn } => write!(f, "load balancer {name} ({arn})"),
            Blocker::ClassicLoadBalancer { name } => write!(f, "classic load balancer {name}"),
            Blocker::NetworkInterface { id, description } => write!(f, "network interface {id} ({description})"),
            Blocker::SecurityGroup { id, name } => write!(f, "security group {id} ({name})"),
        }
    }
}

/// True for a security group a Kubernetes controller created (in-tree service controller,
/// AWS Load Balancer Controller), never one of the stack's own. The cluster security group
/// EKS itself creates (tagged `aws:eks:cluster-name`, and `kubernetes.io/cluster/<name>` like
/// the controllers' groups) is not one: EKS deletes it with the cluster, and while the cluster
/// runs its interfaces use it, so it can be neither a blocker nor deleted by meshctl.
fn is_kubernetes_group(name: &str, tags: &[(String, String)], cluster: &str) -> bool {
    if tags.iter().any(|(k, _)| k == "aws:eks:cluster-name") {
        return false;
    }
    name.starts_with("k8s-")
        || tags
            .iter()
            .any(|(k, _)| k == &format!("kubernetes.io/cluster/{cluster}") || k == "elbv2.k8s.aws/cluster" || k == "service.k8s.aws/stack")
}

/// True for a network interface Kubernetes left behind: the VPC CNI's (`aws-K8S-<instance>`,
/// tagged `cluster.k8s.amazonaws.com/name`) or a load balancer's (`ELB ...`).
fn is_kubernetes_interface(description: &str, tags: &[(String, String)], cluster: &str) -> bool {
    description.starts_with("aws-K8S-")
        || description.starts_with("ELB ")
        || tags.iter().any(|(k, v)| (k == "cluster.k8s.amazonaws.com/name" && v == cluster) || k == "node.k8s.amazonaws.com/instance_id")
}

/// Lists the blockers in `vpc_id`; `own_groups` are the stack's security groups (kept).
pub async fn blockers(
    ec2: &aws_sdk_ec2::Client,
    lbs: &LoadBalancers<'_>,
    vpc_id: &str,
    cluster: &str,
    own_groups: &[String],
) -> Result<Vec<Blocker>, Error> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = lbs.v2.describe_load_balancers().set_marker(marker.clone()).send().await.context("ELBv2 DescribeLoadBalancers")?;
        for lb in page.load_balancers.unwrap_or_default() {
            if lb.vpc_id.as_deref() == Some(vpc_id) {
                out.push(Blocker::LoadBalancer {
                    arn: lb.load_balancer_arn.unwrap_or_default(),
                    name: lb.load_balancer_name.unwrap_or_default(),
                });
            }
        }
        marker = page.next_marker;
        if marker.is_none() {
            break;
        }
    }
    let mut marker: Option<String> = None;
    loop {
        let page = lbs.classic.describe_load_balancers().set_marker(marker.clone()).send().await.context("ELB DescribeLoadBalancers")?;
        for lb in page.load_balancer_descriptions.unwrap_or_default() {
            if lb.vpc_id.as_deref() == Some(vpc_id) {
                out.push(Blocker::ClassicLoadBalancer { name: lb.load_balancer_name.unwrap_or_default() });
            }
        }
        marker = page.next_marker;
        if marker.is_none() {
            break;
        }
    }
    let vpc_filter = Filter::builder().name("vpc-id").values(vpc_id).build();
    let enis = ec2.describe_network_interfaces().filters(vpc_filter.clone()).send().await.context("EC2 DescribeNetworkInterfaces")?;
    for eni in enis.network_interfaces.unwrap_or_default() {
        // In-use interfaces belong to instances, load balancers or EKS and go with them;
        // detached ones left behind by the VPC CNI or a deleted load balancer block subnets.
        let tags: Vec<(String, String)> =
            eni.tag_set.clone().unwrap_or_default().into_iter().map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default())).collect();
        let description = eni.description.clone().unwrap_or_default();
        if eni.status == Some(NetworkInterfaceStatus::Available) && is_kubernetes_interface(&description, &tags, cluster) {
            out.push(Blocker::NetworkInterface {
                id: eni.network_interface_id.unwrap_or_default(),
                description: eni.description.unwrap_or_default(),
            });
        }
    }
    let groups = ec2.describe_security_groups().filters(vpc_filter).send().await.context("EC2 DescribeSecurityGroups")?;
    for g in groups.security_groups.unwrap_or_default() {
        let id = g.group_id.unwrap_or_default();
        let name = g.group_name.unwrap_or_default();
        if name == "default" || own_groups.contains(&id) {
            continue;
        }
        let tags: Vec<(String, String)> =
            g.tags.unwrap_or_default().into_iter().map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default())).collect();
        if is_kubernetes_group(&name, &tags, cluster) {
            out.push(Blocker::SecurityGroup { id, name });
        }
    }
    Ok(out)
}

/// Deletes the blockers: load balancers first (their interfaces go with them), then the
/// detached interfaces, then the security groups. Already gone counts as deleted.
pub async fn delete_blockers(ec2: &aws_sdk_ec2::Client, lbs: &LoadBalancers<'_>, blockers: &[Blocker]) -> Result<(), Error> {
    fn done<T>(b: &Blocker, r: Result<T, Error>) -> Result<(), Error> {
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.context(format!("deleting {b}"))),
        }
    }
    for b in blockers {
        match b {
            Blocker::LoadBalancer { arn, .. } => {
                done(b, lbs.v2.delete_load_balancer().load_balancer_arn(arn).send().await.map_err(Error::from))?
            }
            Blocker::ClassicLoadBalancer { name } => {
                done(b, lbs.classic.delete_load_balancer().load_balancer_name(name).send().await.map_err(Error::from))?
            }
            _ => {}
        }
    }
    for b in blockers {
        if let Blocker::NetworkInterface { id, .. } = b {
            done(b, ec2.delete_network_interface().network_interface_id(id).send().await.map_err(Error::from))?;
        }
    }
    for b in blockers {
        if let Blocker::SecurityGroup { id, .. } = b {
            done(b, ec2.delete_security_group().group_id(id).send().await.map_err(Error::from))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_groups_are_recognised() {
        let none: Vec<(String, String)> = vec![];
        assert!(is_kubernetes_group("k8s-elb-a1b2c3", &none, "c"));
        assert!(is_kubernetes_group("sg-web", &[("kubernetes.io/cluster/c".into(), "owned".into())], "c"));
        assert!(is_kubernetes_group("sg-web", &[("elbv2.k8s.aws/cluster".into(), "c".into())], "c"));
        assert!(!is_kubernetes_group("c-cluster-sg", &none, "c"));
        assert!(!is_kubernetes_group("sg-web", &[("kubernetes.io/cluster/other".into(), "owned".into())], "c"));
        // EKS's own cluster security group goes with the cluster
        let eks = [("kubernetes.io/cluster/c".to_string(), "owned".to_string()), ("aws:eks:cluster-name".to_string(), "c".to_string())];
        assert!(!is_kubernetes_group("eks-cluster-sg-c-1234567890", &eks, "c"));
        assert!(is_kubernetes_interface("aws-K8S-i-0abc", &none, "c"));
        assert!(is_kubernetes_interface("ELB net/k8s-yelb-yelbui/123", &none, "c"));
        assert!(is_kubernetes_interface("", &[("cluster.k8s.amazonaws.com/name".into(), "c".into())], "c"));
        assert!(!is_kubernetes_interface("Interface for NAT Gateway nat-1", &none, "c"));
        assert!(!is_kubernetes_interface("", &none, "c"));
    }
}
