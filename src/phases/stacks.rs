//! Phase 1: CloudFormation stacks. Three kinds, so that nothing that holds a running cluster
//! changes when a spoke is added:
//!
//! - `stacks/<account>`, one base stack per account (VPC, EKS cluster and node group, roles;
//!   the hub's also the Transit Gateway, the Pod Identity and EBS CSI add-ons, the SPIRE
//!   server's role). Base stacks need nothing from each other and nothing per spoke, so all
//!   clusters build at once and a new spoke leaves the existing ones untouched;
//! - `stacks/hub-<spoke>`, in the hub account, one small stack per spoke: the hub's routes to
//!   that spoke's VPC and ingress from it, the RAM share of the Transit Gateway with that
//!   spoke's account, and the SPIRE server role's permission to assume its access role;
//! - `stacks/<spoke>-tgw`, in the spoke: its Transit Gateway attachment, and routes to every
//!   other VPC's CIDR and ingress from it (generated at the `# meshctl:peers` marker, so any
//!   number of spokes works). It waits for the hub, its base stack and the accepted share.
//!
//! The templates live in `templates/` and are compiled into the binary. What each stack is
//! wanted as ([`base_spec`], [`hub_peer_spec`], [`tgw_spec`]) is computed from the
//! configuration, account ids and the Outputs of the stacks it builds on, without AWS calls;
//! the steps gather those inputs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::ids;
use crate::aws::cfn::{self, StackSpec};
use crate::aws::Aws;
use crate::config::{Account, Config};
use crate::engine::{Error, ErrorKind, Status, Step, StepMeta, StepRun};
use crate::error::ResultExt;
use crate::names::{
    access_role_arn, hub_peer_stack_name, spire_server_role_name, tgw_stack_name, MANAGED_BY, TAG_ACCOUNT, TAG_MANAGED_BY, TAG_MESH,
    TAG_SPOKE_PROFILE, TAG_SPOKE_STACK,
};
use crate::session::Session;
use crate::spire::charts::SERVER_SERVICE_ACCOUNT;

mod orphans;

pub const HUB_TEMPLATE: &str = include_str!("../../templates/hub.yaml");
pub const SPOKE_TEMPLATE: &str = include_str!("../../templates/spoke.yaml");
pub const HUB_PEER_TEMPLATE: &str = include_str!("../../templates/hub-peer.yaml");
pub const SPOKE_TGW_TEMPLATE: &str = include_str!("../../templates/spoke-tgw.yaml");

const PEERS_MARKER: &str = "  # meshctl:peers\n";

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    let mut out: Vec<Arc<dyn Step>> = Vec::new();
    for a in c.accounts() {
        out.push(Arc::new(StackStep {
            meta: StepMeta::new(
                ids::stack(&a.name),
                &a.name,
                format!("create stack {} (VPC, EKS cluster {})", a.stack_name, a.cluster_name),
            )
            .needs([ids::preflight()]),
            session: session.clone(),
            account: a.name.clone(),
            kind: Kind::Base,
        }));
    }
    for s in &c.spokes {
        out.push(Arc::new(StackStep {
            meta: StepMeta::new(
                ids::hub_peer_stack(&s.name),
                &c.hub.name,
                format!(
                    "create stack {} (hub routes to {}, Transit Gateway share and SPIRE access for it)",
                    hub_peer_stack_name(&c.hub, s),
                    s.name
                ),
            )
            .needs([ids::stack(&c.hub.name)]),
            session: session.clone(),
            account: c.hub.name.clone(),
            kind: Kind::HubPeer(s.name.clone()),
        }));
        out.push(Arc::new(StackStep {
            meta: StepMeta::new(
                ids::tgw_stack(&s.name),
                &s.name,
                format!("create stack {} (TGW attachment and routes)", tgw_stack_name(s)),
            )
            .needs([ids::stack(&c.hub.name), ids::stack(&s.name), ids::ram(&s.name)]),
            session: session.clone(),
            account: s.name.clone(),
            kind: Kind::Tgw,
        }));
    }
    out.push(orphans::step(session));
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `stacks/<account>`: VPC, EKS, roles (hub: + Transit Gateway, add-ons, SPIRE role).
    Base,
    /// `stacks/hub-<spoke>`, in the hub account: what the hub holds for that one spoke.
    HubPeer(String),
    /// `stacks/<spoke>-tgw`: the spoke's attachment, routes and ingress.
    Tgw,
}

pub struct StackStep {
    meta: StepMeta,
    session: Arc<Session>,
    /// The account the stack lives in (the hub's for `HubPeer`).
    account: String,
    kind: Kind,
}

/// Six subnet CIDRs (3 public, then 3 private) carved out of the VPC CIDR, 16 blocks wide.
pub fn subnet_cidrs(vpc_cidr: &str) -> Result<[String; 6], String> {
    let (addr, len) = vpc_cidr.split_once('/').ok_or_else(|| format!("{vpc_cidr} is not a CIDR"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{vpc_cidr} is not an IPv4 CIDR"))?;
    let len: u32 = len.parse().map_err(|_| format!("{vpc_cidr} has no prefix length"))?;
    if !(16..=24).contains(&len) {
        return Err(format!("{vpc_cidr}: the VPC prefix must be /16 to /24 (EKS needs room for 6 subnets)"));
    }
    let sub = len + 4;
    let base = u32::from(addr) & (u32::MAX << (32 - len));
    let size = 1u32 << (32 - sub);
    Ok(std::array::from_fn(|i| format!("{}/{sub}", Ipv4Addr::from(base + i as u32 * size))))
}

/// Routes to each peer CIDR from the three private route tables, through the Transit
/// Gateway, after the attachment; and ingress from each peer CIDR into the cluster SG.
fn peer_resources(peers: &[&str]) -> String {
    let mut out = String::new();
    for (n, cidr) in peers.iter().enumerate() {
        for az in 1..=3 {
            out.push_str(&format!(
                "  RouteToPeer{n}Private{az}:\n    Type: AWS::EC2::Route\n    DependsOn: TransitGatewayAttachment\n    Properties:\n      RouteTableId: !Select [{}, !Ref PrivateRouteTableIds]\n      DestinationCidrBlock: {cidr}\n      TransitGatewayId: !Ref TransitGatewayId\n",
                az - 1
            ));
        }
        out.push_str(&format!(
            "  IngressFromPeer{n}:\n    Type: AWS::EC2::SecurityGroupIngress\n    Properties:\n      GroupId: !Ref ClusterSecurityGroupId\n      CidrIp: {cidr}\n      IpProtocol: \"-1\"\n      Description: all traffic from peer VPC {cidr} over the Transit Gateway\n"
        ));
    }
    out
}

/// A spoke's TGW template with routes to the hub's and the other spokes' CIDRs.
pub fn spoke_tgw_body(config: &Config, spoke: &Account) -> String {
    let peers: Vec<&str> = config.accounts().filter(|a| a.name != spoke.name).map(|a| a.vpc_cidr.as_str()).collect();
    assert!(SPOKE_TGW_TEMPLATE.contains(PEERS_MARKER), "template has the peers marker");
    SPOKE_TGW_TEMPLATE.replacen(PEERS_MARKER, &format!("{PEERS_MARKER}{}", peer_resources(&peers)), 1)
}

fn tags(c: &Config, account: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (TAG_ACCOUNT.to_string(), account.to_string()),
        (TAG_MESH.to_string(), c.hub.stack_name.clone()),
    ])
}

fn params<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The largest node group meshctl allows: the configured node count, with room for 4 nodes
/// when that is fewer (the node group's MaxSize must be at least its DesiredSize).
pub fn node_max_size(a: &Account) -> u32 {
    a.node_count.max(4)
}

/// The parameters every base stack takes: network and cluster/node sizes of the account.
fn account_params(a: &Account) -> Result<BTreeMap<String, String>, Error> {
    let cidrs = subnet_cidrs(&a.vpc_cidr).map_err(|e| Error::new(ErrorKind::InvalidInput, format!("account {}: vpc_cidr {e}", a.name)))?;
    Ok(params([
        ("ClusterName", a.cluster_name.clone()),
        ("VpcCidr", a.vpc_cidr.clone()),
        ("PublicSubnetCidrs", cidrs[..3].join(",")),
        ("PrivateSubnetCidrs", cidrs[3..].join(",")),
        ("KubernetesVersion", a.kubernetes_version.clone()),
        ("NodeInstanceType", a.instance_type.clone()),
        ("NodeCount", a.node_count.to_string()),
        ("NodeMaxSize", node_max_size(a).to_string()),
        ("NodeDiskSize", a.disk_size.to_string()),
    ]))
}

fn spec(c: &Config, a: &Account, name: String, body: String, params: BTreeMap<String, String>) -> StackSpec {
    StackSpec { account: a.name.clone(), profile: a.profile.clone(), name, body, params, tags: tags(c, &a.name) }
}

/// The base stack of `account` as the configuration wants it. It depends on nothing per
/// spoke: the hub's takes no spoke at all, a spoke's only the hub's account id (its access
/// role trusts the hub's SPIRE server role by name), so adding a spoke changes no existing
/// base stack.
pub fn base_spec(c: &Config, account: &Account, hub_account_id: &str) -> Result<StackSpec, Error> {
    let mut p = account_params(account)?;
    let body = if account.name == c.hub.name {
        p.extend(params([
            ("TransitGatewayName", c.network.tgw_name.clone()),
            ("SpireServerRoleName", spire_server_role_name(&c.hub)),
            ("SpireNamespace", c.spire.namespace.clone()),
            ("SpireServiceAccount", SERVER_SERVICE_ACCOUNT.to_string()),
        ]));
        HUB_TEMPLATE
    } else {
        p.extend(params([
            ("AccessRoleName", account.access_role_name().to_string()),
            ("HubAccountId", hub_account_id.to_string()),
            ("HubSpireServerRoleName", spire_server_role_name(&c.hub)),
        ]));
        SPOKE_TEMPLATE
    };
    Ok(spec(c, account, account.stack_name.clone(), body.to_string(), p))
}

/// One Output of a stack, or an error naming the stack and the key.
fn output(outputs: &BTreeMap<String, String>, a: &Account, key: &str) -> Result<String, Error> {
    cfn::output(outputs, &a.name, &a.stack_name, key).map(str::to_string)
}

/// The hub's stack for one spoke, from the hub base stack's Outputs and the spoke's id.
pub fn hub_peer_spec(
    c: &Config,
    spoke: &Account,
    spoke_account_id: &str,
    hub_outputs: &BTreeMap<String, String>,
) -> Result<StackSpec, Error> {
    let hub = &c.hub;
    let p = params([
        ("ClusterName", hub.cluster_name.clone()),
        ("SpokeName", spoke.name.clone()),
        ("SpokeVpcCidr", spoke.vpc_cidr.clone()),
        ("SpokeAccountId", spoke_account_id.to_string()),
        ("SpokeAccessRoleArn", access_role_arn(c, spoke, spoke_account_id)),
        ("SpireServerRoleName", spire_server_role_name(hub)),
        ("TransitGatewayShareName", c.network.tgw_share.clone()),
        ("TransitGatewayId", output(hub_outputs, hub, "TransitGatewayId")?),
        ("PrivateRouteTableIds", output(hub_outputs, hub, "PrivateRouteTableIds")?),
        ("ClusterSecurityGroupId", output(hub_outputs, hub, "ClusterSecurityGroupId")?),
    ]);
    let mut s = spec(c, hub, hub_peer_stack_name(hub, spoke), HUB_PEER_TEMPLATE.to_string(), p);
    s.tags.insert(TAG_SPOKE_PROFILE.to_string(), spoke.profile.clone());
    s.tags.insert(TAG_SPOKE_STACK.to_string(), spoke.stack_name.clone());
    Ok(s)
}

/// A spoke's TGW stack, from the hub's Transit Gateway and the spoke base stack's Outputs.
pub fn tgw_spec(
    c: &Config,
    spoke: &Account,
    hub_outputs: &BTreeMap<String, String>,
    own: &BTreeMap<String, String>,
) -> Result<StackSpec, Error> {
    let p = params([
        ("ClusterName", spoke.cluster_name.clone()),
        ("TransitGatewayId", output(hub_outputs, &c.hub, "TransitGatewayId")?),
        ("VpcId", output(own, spoke, "VpcId")?),
        ("PrivateSubnetIds", output(own, spoke, "PrivateSubnetIds")?),
        ("PrivateRouteTableIds", output(own, spoke, "PrivateRouteTableIds")?),
        ("ClusterSecurityGroupId", output(own, spoke, "ClusterSecurityGroupId")?),
    ]);
    Ok(spec(c, spoke, tgw_stack_name(spoke), spoke_tgw_body(c, spoke), p))
}

impl StackStep {
    fn acct(&self) -> &Account {
        self.session.config.account(&self.account).expect("step account is configured")
    }

    fn stack_name(&self) -> String {
        let c = &self.session.config;
        match &self.kind {
            Kind::Base => self.acct().stack_name.clone(),
            Kind::HubPeer(spoke) => hub_peer_stack_name(&c.hub, c.account(spoke).expect("step spoke is configured")),
            Kind::Tgw => tgw_stack_name(self.acct()),
        }
    }

    async fn client(&self) -> Result<aws_sdk_cloudformation::Client, Error> {
        Ok(self.session.aws.cloudformation(&self.account).await?)
    }

    /// The Outputs of the hub's base stack (which must exist).
    async fn hub_outputs(&self) -> Result<BTreeMap<String, String>, Error> {
        let hub = &self.session.config.hub;
        let client = self.session.aws.cloudformation(&hub.name).await?;
        cfn::outputs(&client, &hub.name, &hub.profile, &hub.stack_name).await
    }

    /// The stack as wanted: the inputs gathered (account ids, the Outputs it builds on), then
    /// the spec computed from them.
    async fn spec(&self) -> Result<StackSpec, Error> {
        let c = &self.session.config;
        let aws = &self.session.aws;
        let a = self.acct();
        match &self.kind {
            Kind::Base if a.name == c.hub.name => base_spec(c, a, ""),
            Kind::Base => base_spec(c, a, &aws.account_id(&c.hub.name).await?),
            Kind::HubPeer(spoke) => {
                let spoke = c.account(spoke).expect("step spoke is configured");
                let hub_out = self.hub_outputs().await?;
                hub_peer_spec(c, spoke, &aws.account_id(&spoke.name).await?, &hub_out)
            }
            Kind::Tgw => {
                let hub_out = self.hub_outputs().await?;
                // A hub stack without its Transit Gateway is reported before the spoke is asked.
                output(&hub_out, &c.hub, "TransitGatewayId")?;
                let own = cfn::outputs(&self.client().await?, &a.name, &a.profile, &a.stack_name).await?;
                tgw_spec(c, a, &hub_out, &own)
            }
        }
    }
}

/// Before a base stack goes: what Kubernetes left in its VPC (load balancers of Services,
/// their interfaces and security groups), which blocks deleting it. Listed, and deleted only
/// with `--yes`; nothing is touched in the VPC of a stack meshctl did not create unless
/// adopting it. `aws` holds the stack's account under `spec.account`; `cluster` is the EKS
/// cluster whose leftovers these would be.
pub(crate) async fn clear_vpc(
    aws: &Aws,
    client: &aws_sdk_cloudformation::Client,
    spec: &StackSpec,
    cluster: &str,
    cx: &StepRun,
) -> Result<(), Error> {
    let (name, profile, stack) = (&spec.account, &spec.profile, &spec.name);
    let Some(live) =
        cfn::describe(client, stack).await.context(format!("account {name} (profile {profile}): stack {stack}: cannot read it"))?
    else {
        return Ok(());
    };
    if live.phase() == cfn::StackPhase::Gone {
        return Ok(());
    }
    cfn::ensure_ours(spec, &live, cx.adopt, "delete")?;
    let mut vpc = live.outputs.get("VpcId").cloned();
    let mut own_groups: Vec<String> = live.outputs.get("ClusterSecurityGroupId").cloned().into_iter().collect();
    if vpc.is_none() || own_groups.is_empty() {
        // A stack whose outputs are not available (failed update, older template): ask
        // for the resources by their logical ids.
        let res = client
            .describe_stack_resources()
            .stack_name(stack)
            .send()
            .await
            .context(format!("account {name} (profile {profile}): stack {stack}: DescribeStackResources"))?;
        for r in res.stack_resources.unwrap_or_default() {
            match (r.logical_resource_id.as_deref(), r.physical_resource_id) {
                (Some("Vpc"), Some(id)) if vpc.is_none() => vpc = Some(id),
                (Some("ClusterSecurityGroup"), Some(id)) => own_groups.push(id),
                _ => {}
            }
        }
    }
    let Some(vpc) = vpc.filter(|v| !v.is_empty()) else { return Ok(()) };
    let ec2 = aws.ec2(name).await?;
    let (v2, classic) = (aws.elbv2(name).await?, aws.elb(name).await?);
    let lbs = crate::aws::vpc::LoadBalancers { v2: &v2, classic: &classic };
    cx.progress(format!("looking for what blocks deleting {vpc}"));
    let found = crate::aws::vpc::blockers(&ec2, &lbs, &vpc, cluster, &own_groups)
        .await
        .context(format!("account {name} (profile {profile}): cannot list what is left in {vpc}"))?;
    if found.is_empty() {
        return Ok(());
    }
    let list = found.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if !cx.yes {
        return Err(Error::new(ErrorKind::Conflict, format!(
            "account {name} (profile {profile}): VPC {vpc} of stack {stack} still holds resources Kubernetes created, which block its deletion: {list}; delete the Services of type LoadBalancer first (`meshctl down` of the app phases), or rerun with --yes to let meshctl delete these"
        )));
    }
    cx.progress(format!("deleting {} leftover resource(s) in {vpc}", found.len()));
    crate::aws::vpc::delete_blockers(&ec2, &lbs, &found).await.context(format!("account {name} (profile {profile}): VPC {vpc}"))
}

#[async_trait::async_trait]
impl Step for StackStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _run: &StepRun) -> Result<Status, Error> {
        let client = self.client().await?;
        // A missing stack needs no spec (and a TGW stack's spec needs the base stacks).
        let a = self.acct();
        if cfn::describe(&client, &self.stack_name())
            .await
            .context(format!("account {} (profile {}): stack {}: cannot read it", a.name, a.profile, self.stack_name()))?
            .is_none()
        {
            return Ok(Status::Missing);
        }
        // The wanted state needs the stacks this one builds on. When one of them is missing
        // or unusable (a hub stack whose deletion failed), this stack is still there to be
        // deleted or fixed: report it as drifted with why, rather than failing the check
        // (which would stop `down`); `up` then fails on the same cause.
        let spec = match self.spec().await {
            Ok(spec) => spec,
            Err(e) if e.is(ErrorKind::NotFound) || e.is(ErrorKind::Conflict) => {
                return Ok(Status::Drifted(format!("its inputs are not available: {}", e.chain())))
            }
            Err(e) => return Err(e),
        };
        cfn::check(&client, &spec).await
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let spec = self.spec().await?;
        cfn::deploy(&self.client().await?, &spec, cfn::Allowed { recreate_failed: run.yes, adopt: run.adopt }, run).await.map(|_| ())
    }

    async fn destroy(&self, cx: &StepRun) -> Result<(), Error> {
        let client = self.client().await?;
        let a = self.acct();
        let spec = spec(&self.session.config, a, self.stack_name(), String::new(), BTreeMap::new());
        if self.kind == Kind::Base {
            clear_vpc(&self.session.aws, &client, &spec, &a.cluster_name, cx).await?;
        }
        cfn::delete(&client, &spec, cx.adopt, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn subnets_are_carved_from_the_vpc() {
        let c = subnet_cidrs("10.1.0.0/16").unwrap();
        assert_eq!(c[0], "10.1.0.0/20");
        assert_eq!(c[1], "10.1.16.0/20");
        assert_eq!(c[5], "10.1.80.0/20");
        assert!(subnet_cidrs("10.0.0.0/8").is_err());
        assert!(subnet_cidrs("nonsense").is_err());
    }

    #[test]
    fn templates_are_embedded_and_parse_as_yaml() {
        let c = Config::default();
        for (name, body) in [
            ("hub", HUB_TEMPLATE.to_string()),
            ("spoke", SPOKE_TEMPLATE.to_string()),
            ("hub-peer", HUB_PEER_TEMPLATE.to_string()),
            ("spoke-tgw", spoke_tgw_body(&c, &c.spokes[0])),
        ] {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let res = v.get("Resources").and_then(|r| r.as_mapping()).unwrap_or_else(|| panic!("{name}: no Resources"));
            assert!(!res.is_empty());
        }
        let tgw = spoke_tgw_body(&c, &c.spokes[0]);
        assert!(tgw.contains(&format!("DestinationCidrBlock: {}", c.hub.vpc_cidr)));
        assert!(tgw.contains(&format!("DestinationCidrBlock: {}", c.spokes[1].vpc_cidr)));
        assert!(!tgw.contains(&format!("DestinationCidrBlock: {}\n", c.spokes[0].vpc_cidr)));
    }

    fn yaml(text: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The SPIRE server reaches the spokes with its own Pod Identity role, and only with it:
    /// the hub's nodes assume nothing, each spoke's access role trusts that one role by name.
    #[test]
    fn spire_server_reaches_the_spokes_through_its_pod_identity_role_only() {
        let hub = yaml(HUB_TEMPLATE);
        let r = &hub["Resources"];
        assert!(r["NodeRole"]["Properties"].get("Policies").is_none(), "the hub's node role assumes no spoke role: {:?}", r["NodeRole"]);
        let role = &r["SpireServerRole"]["Properties"];
        assert_eq!(role["RoleName"], yaml("!Ref SpireServerRoleName"));
        let trust = &role["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(trust.as_sequence().map(Vec::len), Some(1));
        assert_eq!(trust[0]["Principal"], yaml("Service: pods.eks.amazonaws.com"));
        assert_eq!(trust[0]["Action"], yaml("[sts:AssumeRole, sts:TagSession]"));
        let assoc = &r["SpireServerPodIdentity"];
        assert_eq!(assoc["Type"], yaml("AWS::EKS::PodIdentityAssociation"));
        assert_eq!(
            assoc["Properties"],
            yaml("{ClusterName: !Ref Cluster, Namespace: !Ref SpireNamespace, ServiceAccount: !Ref SpireServiceAccount, RoleArn: !GetAtt SpireServerRole.Arn}")
        );
        assert_eq!(r["PodIdentityAgentAddon"]["Properties"]["AddonName"], yaml("eks-pod-identity-agent"));

        let spoke = yaml(SPOKE_TEMPLATE);
        let st = &spoke["Resources"]["AccessRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(st.as_sequence().map(Vec::len), Some(1));
        assert_eq!(st[0]["Principal"]["AWS"], yaml(r#"!Sub "arn:${AWS::Partition}:iam::${HubAccountId}:root""#));
        assert_eq!(
            st[0]["Condition"]["ArnLike"]["aws:PrincipalArn"],
            yaml(r#"!Sub "arn:${AWS::Partition}:iam::${HubAccountId}:role/${HubSpireServerRoleName}""#)
        );
        assert_eq!(st[0]["Action"], yaml("[sts:AssumeRole, sts:TagSession]"), "Pod Identity's session tags are transitive");
    }

    /// Storage for the SPIRE server: the EBS CSI add-on, its controller's service account
    /// associated with a role holding the AWS managed EBS CSI policy.
    #[test]
    fn hub_has_the_ebs_csi_driver_with_its_pod_identity_role() {
        let hub = yaml(HUB_TEMPLATE);
        let r = &hub["Resources"];
        let addon = &r["EbsCsiDriverAddon"];
        assert_eq!(addon["Type"], yaml("AWS::EKS::Addon"));
        assert_eq!(addon["Properties"]["AddonName"], yaml("aws-ebs-csi-driver"));
        assert_eq!(addon["DependsOn"], yaml("[NodeGroup, PodIdentityAgentAddon, EbsCsiDriverPodIdentity]"));
        assert_eq!(
            r["EbsCsiDriverPodIdentity"]["Properties"],
            yaml("{ClusterName: !Ref Cluster, Namespace: kube-system, ServiceAccount: ebs-csi-controller-sa, RoleArn: !GetAtt EbsCsiDriverRole.Arn}")
        );
        let role = &r["EbsCsiDriverRole"]["Properties"];
        assert_eq!(
            role["ManagedPolicyArns"],
            yaml(r#"[!Sub "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"]"#)
        );
        assert_eq!(role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"], yaml("Service: pods.eks.amazonaws.com"));
    }

    const HUB_ID: &str = "111111111111";

    fn owned(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A base stack's spec is the configuration and the hub's account id, nothing else: no
    /// AWS call, no spoke.
    #[test]
    fn base_stack_specs_need_only_the_configuration_and_the_hub_id() {
        let c = Config::default();
        let hub = base_spec(&c, &c.hub, HUB_ID).unwrap();
        assert_eq!((hub.name.as_str(), hub.body.as_str()), ("eks-cluster-shared-services-stack", HUB_TEMPLATE));
        assert_eq!(
            hub.params,
            owned(&[
                ("ClusterName", "eks-cluster-shared"),
                ("VpcCidr", "10.0.0.0/16"),
                ("PublicSubnetCidrs", "10.0.0.0/20,10.0.16.0/20,10.0.32.0/20"),
                ("PrivateSubnetCidrs", "10.0.48.0/20,10.0.64.0/20,10.0.80.0/20"),
                ("KubernetesVersion", "1.34"),
                ("NodeInstanceType", "t3.medium"),
                ("NodeCount", "2"),
                ("NodeMaxSize", "4"),
                ("NodeDiskSize", "40"),
                ("TransitGatewayName", "tgw-shared"),
                ("SpireServerRoleName", "eks-cluster-shared-spire-server"),
                ("SpireNamespace", "spire"),
                ("SpireServiceAccount", "spire-server"),
            ])
        );
        assert_eq!(hub.tags, owned(&[(TAG_MANAGED_BY, "meshctl"), (TAG_ACCOUNT, "shared"), (TAG_MESH, HUB_STACK)]));
        let front = base_spec(&c, &c.spokes[0], HUB_ID).unwrap();
        assert_eq!(
            (front.name.as_str(), front.body.as_str(), front.account.as_str()),
            ("eks-cluster-frontend-stack", SPOKE_TEMPLATE, "frontend")
        );
        assert_eq!(front.params["AccessRoleName"], "eks-cluster-frontend-access-role");
        assert_eq!(front.params["HubAccountId"], HUB_ID);
        assert_eq!(front.params["HubSpireServerRoleName"], hub.params["SpireServerRoleName"], "the spoke trusts the role the hub creates");
        assert_eq!(front.params.len(), 12);
        // every parameter a template declares is given, and only those
        for spec in [&hub, &front] {
            let declared: Vec<String> =
                yaml(&spec.body)["Parameters"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_string()).collect();
            assert_eq!(declared.iter().collect::<std::collections::BTreeSet<_>>(), spec.params.keys().collect(), "{}", spec.name);
        }
    }

    /// Issue 15.5: a third spoke adds stacks; every existing base stack (the clusters) keeps
    /// its template and parameters byte for byte, so `up` does not touch it.
    #[test]
    fn adding_a_spoke_leaves_every_base_stack_byte_identical() {
        let two = Config::default();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut f,
            b"[[spokes]]\nname = \"frontend\"\n[[spokes]]\nname = \"backend\"\n[[spokes]]\nname = \"analytics\"\n",
        )
        .unwrap();
        let three = Config::load(Some(f.path()), &[], &[]).unwrap();
        assert_eq!(three.spokes.len(), 3);
        for a in two.accounts() {
            let before = base_spec(&two, a, HUB_ID).unwrap();
            let after = base_spec(&three, three.account(&a.name).unwrap(), HUB_ID).unwrap();
            assert_eq!(before.body, after.body, "{}: template", a.name);
            assert_eq!(before.params, after.params, "{}: parameters", a.name);
            assert_eq!(before, after, "{}", a.name);
        }
        // the existing spokes' hub stacks too
        let hub_out = owned(&hub_outputs(Some(TGW)));
        for s in &two.spokes {
            let before = hub_peer_spec(&two, s, testing::FRONTEND, &hub_out).unwrap();
            assert_eq!(before, hub_peer_spec(&three, three.account(&s.name).unwrap(), testing::FRONTEND, &hub_out).unwrap());
        }
    }

    /// A changed size key is a parameter change of the base stack in `plan`.
    #[tokio::test]
    async fn a_changed_node_count_is_a_parameter_change_in_plan() {
        let live = base_spec(&Config::default(), &Config::default().spokes[0], HUB_ID).unwrap();
        let params: Vec<(&str, &str)> = live.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let exists =
            describe_rule(SPOKE_STACK, described(testing::FRONTEND, SPOKE_STACK, StackStatus::CreateComplete, &params, &SPOKE_OUTPUTS));
        let tpl = mock!(Client::get_template).then_output(|| GetTemplateOutput::builder().template_body(SPOKE_TEMPLATE).build());
        let mut config = Config::default();
        config.spokes[0].node_count = 3;
        config.spokes[0].disk_size = 80;
        let ctx = testing::session(config, &[("frontend", RuleMode::MatchAny, &[&exists, &tpl])]);
        let step = steps(&ctx).into_iter().find(|s| s.meta().id == "stacks/frontend").unwrap();
        assert_eq!(
            step.check(&StepRun::detached("stacks/frontend")).await.unwrap(),
            Status::Drifted("parameter NodeCount: 2 → 3; parameter NodeDiskSize: 40 → 80".into())
        );
        assert_eq!(ctx.aws.writes().count(), 0);
    }

    /// What the hub holds for one spoke: routes to its CIDR from the three private route
    /// tables through the Transit Gateway, ingress from it, the share with its account alone,
    /// and the SPIRE server role's permission to assume its access role alone.
    #[test]
    fn hub_peer_template_holds_routes_share_and_spire_access_for_one_spoke() {
        let t = yaml(HUB_PEER_TEMPLATE);
        let r = &t["Resources"];
        for az in 0..3 {
            let route = &r[format!("RouteToSpokePrivate{}", az + 1).as_str()]["Properties"];
            assert_eq!(route["RouteTableId"], yaml(&format!("!Select [{az}, !Ref PrivateRouteTableIds]")));
            assert_eq!(route["DestinationCidrBlock"], yaml("!Ref SpokeVpcCidr"));
            assert_eq!(route["TransitGatewayId"], yaml("!Ref TransitGatewayId"));
        }
        assert_eq!(r["IngressFromSpoke"]["Properties"]["CidrIp"], yaml("!Ref SpokeVpcCidr"));
        let share = &r["TransitGatewayShare"]["Properties"];
        assert_eq!(share["Name"], yaml("!Ref TransitGatewayShareName"));
        assert_eq!(share["Principals"], yaml("[!Ref SpokeAccountId]"));
        let policy = &r["AssumeSpokeAccessRole"]["Properties"];
        assert_eq!(policy["Roles"], yaml("[!Ref SpireServerRoleName]"));
        assert_eq!(policy["PolicyDocument"]["Statement"][0]["Resource"], yaml("!Ref SpokeAccessRoleArn"));
        assert_eq!(policy["PolicyDocument"]["Statement"][0]["Action"], yaml("[sts:AssumeRole, sts:TagSession]"));
    }

    #[tokio::test]
    async fn hub_peer_stack_is_made_in_the_hub_from_its_outputs_and_the_spoke_id() {
        let peer_stack = "eks-cluster-shared-services-stack-frontend";
        let hub =
            describe_rule(HUB_STACK, described(testing::SHARED, HUB_STACK, StackStatus::CreateComplete, &[], &hub_outputs(Some(TGW))));
        let absent = not_found(peer_stack);
        let want = owned(&[
            ("ClusterName", "eks-cluster-shared"),
            ("SpokeName", "frontend"),
            ("SpokeVpcCidr", "10.1.0.0/16"),
            ("SpokeAccountId", testing::FRONTEND),
            ("SpokeAccessRoleArn", "arn:aws:iam::222222222222:role/eks-cluster-frontend-access-role"),
            ("SpireServerRoleName", "eks-cluster-shared-spire-server"),
            ("TransitGatewayShareName", "multi-account-tgw-share"),
            ("TransitGatewayId", TGW),
            ("PrivateRouteTableIds", "rtb-0hub000000000001,rtb-0hub000000000002,rtb-0hub000000000003"),
            ("ClusterSecurityGroupId", "sg-0hub000000000001"),
        ]);
        // The hub's stack for a spoke names the spoke's profile and stack: a spoke removed from
        // the configuration is still found, and reached, from them (stacks/orphans).
        let want_tags = owned(&[
            (TAG_MANAGED_BY, "meshctl"),
            (TAG_ACCOUNT, "shared"),
            (TAG_MESH, HUB_STACK),
            (TAG_SPOKE_PROFILE, "frontend"),
            (TAG_SPOKE_STACK, "eks-cluster-frontend-stack"),
        ]);
        let create = mock!(Client::create_change_set)
            .match_requests(move |r| {
                let params: BTreeMap<String, String> = r
                    .parameters()
                    .iter()
                    .map(|p| (p.parameter_key().unwrap_or_default().to_string(), p.parameter_value().unwrap_or_default().to_string()))
                    .collect();
                let tags: BTreeMap<String, String> =
                    r.tags().iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect();
                r.stack_name() == Some(peer_stack)
                    && r.change_set_type() == Some(&ChangeSetType::Create)
                    && params == want
                    && tags == want_tags
                    && r.template_body() == Some(HUB_PEER_TEMPLATE)
            })
            .then_output(move || {
                CreateChangeSetOutput::builder()
                    .id("arn:aws:cloudformation:us-east-2:111111111111:changeSet/meshctl-1/0c4e")
                    .stack_id(stack_id(testing::SHARED, peer_stack))
                    .build()
            });
        let computed = mock!(Client::describe_change_set)
            .then_output(|| DescribeChangeSetOutput::builder().status(ChangeSetStatus::CreateComplete).build());
        let exec = mock!(Client::execute_change_set)
            .match_requests(move |r| r.stack_name() == Some(peer_stack))
            .then_output(|| ExecuteChangeSetOutput::builder().build());
        let done = describe_rule(peer_stack, described(testing::SHARED, peer_stack, StackStatus::CreateComplete, &[], &[]));
        // Only the hub's account is called: the spoke's id comes from its resolved identity.
        let ctx = testing::ctx(&[("shared", RuleMode::Sequential, &[&hub, &absent, &create, &computed, &exec, &done])]);
        let step = steps(&ctx).into_iter().find(|s| s.meta().id == "stacks/hub-frontend").expect("stacks/hub-frontend");
        assert_eq!(step.meta().account, "shared");
        step.apply(&StepRun::detached("stacks/hub-frontend")).await.unwrap();
        assert_eq!((create.num_calls(), exec.num_calls()), (1, 1));
        assert_eq!(ctx.aws.writes().calls(), ["CloudFormation:CreateChangeSet", "CloudFormation:ExecuteChangeSet"]);
    }

    /// `down` of a base stack meshctl did not create stops before looking into its VPC; with
    /// `--adopt` (StepRun::adopt) it is deleted.
    #[tokio::test]
    async fn down_refuses_a_foreign_base_stack_unless_adopted() {
        let foreign = || {
            let mut out = described(testing::FRONTEND, SPOKE_STACK, StackStatus::CreateComplete, &[], &[]);
            for s in out.stacks.iter_mut().flatten() {
                s.tags = None;
            }
            out
        };
        let exists = describe_rule(SPOKE_STACK, foreign());
        let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, &[&exists])]);
        let step = steps(&ctx).into_iter().find(|s| s.meta().id == "stacks/frontend").unwrap();
        let mut run = StepRun::detached("stacks/frontend");
        assert_eq!(step.check(&run).await.unwrap(), Status::Drifted(cfn::foreign_reason()));
        let err = step.destroy(&run).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotOurs);
        assert!(
            err.chain()
                .contains("account frontend (profile frontend): stack eks-cluster-frontend-stack: exists but was not created by meshctl"),
            "{}",
            err.chain()
        );
        assert_eq!(ctx.aws.writes().count(), 0, "no EC2 or CloudFormation call changed anything");

        // adopted: the VPC is looked into (no outputs: by logical ids; none here) and the stack deleted
        let resources = mock!(Client::describe_stack_resources)
            .then_output(|| aws_sdk_cloudformation::operation::describe_stack_resources::DescribeStackResourcesOutput::builder().build());
        let del = mock!(Client::delete_stack)
            .then_output(|| aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput::builder().build());
        // the wait reads the stack by its id
        let gone = mock!(Client::describe_stacks).then_error(|| {
            DescribeStacksError::generic(
                ErrorMetadata::builder().code("ValidationError").message("Stack with id eks-cluster-frontend-stack does not exist").build(),
            )
        });
        let exists = describe_rule(SPOKE_STACK, foreign());
        let again = describe_rule(SPOKE_STACK, foreign());
        let ctx = testing::ctx(&[("frontend", RuleMode::Sequential, &[&exists, &resources, &again, &del, &gone])]);
        let step = steps(&ctx).into_iter().find(|s| s.meta().id == "stacks/frontend").unwrap();
        run.adopt = true;
        step.destroy(&run).await.unwrap();
        assert_eq!(ctx.aws.writes().calls(), ["CloudFormation:DeleteStack"]);
    }

    // ------------------------------------------------------------------ stacks/<spoke>-tgw
    //
    // moto never gives the TGW stacks their inputs (a stack created by a CREATE change set
    // has no Outputs there, and the hub's TransitGatewayAttachment is skipped), so these are
    // proven against AWS-shaped DescribeStacks answers (aws-smithy-mocks).

    use crate::aws::testing;
    use aws_sdk_cloudformation::error::ErrorMetadata;
    use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput;
    use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
    use aws_sdk_cloudformation::operation::describe_stacks::{DescribeStacksError, DescribeStacksOutput};
    use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
    use aws_sdk_cloudformation::operation::get_template::GetTemplateOutput;
    use aws_sdk_cloudformation::types::{Capability, ChangeSetStatus, ChangeSetType, Output, Parameter, Stack, StackStatus, Tag};
    use aws_sdk_cloudformation::Client;
    use aws_smithy_mocks::{mock, Rule, RuleMode};

    const HUB_STACK: &str = "eks-cluster-shared-services-stack";
    const SPOKE_STACK: &str = "eks-cluster-frontend-stack";
    const TGW_STACK: &str = "eks-cluster-frontend-stack-tgw";
    const TGW: &str = "tgw-0a1b2c3d4e5f60718";

    fn stack_id(account: &str, name: &str) -> String {
        format!("arn:aws:cloudformation:us-east-2:{account}:stack/{name}/6a1f0c80-0000-11ef-a000-0a1b2c3d4e5f")
    }

    fn described(
        account: &str,
        name: &str,
        status: StackStatus,
        params: &[(&str, &str)],
        outputs: &[(&str, &str)],
    ) -> DescribeStacksOutput {
        let mut stack = Stack::builder()
            .stack_id(stack_id(account, name))
            .stack_name(name)
            .stack_status(status)
            .creation_time(aws_smithy_types::DateTime::from_secs(1_764_300_000))
            .tags(Tag::builder().key(TAG_MANAGED_BY).value("meshctl").build())
            .tags(Tag::builder().key(TAG_ACCOUNT).value(if account == testing::SHARED { "shared" } else { "frontend" }).build())
            .tags(Tag::builder().key(TAG_MESH).value(HUB_STACK).build());
        for (k, v) in params {
            stack = stack.parameters(Parameter::builder().parameter_key(*k).parameter_value(*v).build());
        }
        for (k, v) in outputs {
            stack = stack.outputs(Output::builder().output_key(*k).output_value(*v).description(format!("{k} of {name}")).build());
        }
        DescribeStacksOutput::builder().stacks(stack.build()).build()
    }

    /// DescribeStacks of `name` (exactly) answering `out`.
    fn describe_rule(name: &'static str, out: DescribeStacksOutput) -> Rule {
        mock!(Client::describe_stacks).match_requests(move |r| r.stack_name() == Some(name)).then_output(move || out.clone())
    }

    /// The hub's Outputs as hub.yaml declares them; its VPC ids differ from the spoke's, so
    /// mixing them up shows.
    fn hub_outputs(with_tgw: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
        let mut out = vec![
            ("VpcId", "vpc-0hub000000000001"),
            ("PrivateSubnetIds", "subnet-0hub00000000004,subnet-0hub00000000005,subnet-0hub00000000006"),
            ("PublicSubnetIds", "subnet-0hub00000000001,subnet-0hub00000000002,subnet-0hub00000000003"),
            ("PrivateRouteTableIds", "rtb-0hub000000000001,rtb-0hub000000000002,rtb-0hub000000000003"),
            ("ClusterSecurityGroupId", "sg-0hub000000000001"),
            ("NodeRoleArn", "arn:aws:iam::111111111111:role/eks-cluster-shared-node-role"),
            ("SpireServerRoleArn", "arn:aws:iam::111111111111:role/eks-cluster-shared-spire-server"),
        ];
        out.extend(with_tgw.map(|t| ("TransitGatewayId", t)));
        out
    }

    /// The frontend base stack's Outputs as spoke.yaml declares them.
    const SPOKE_OUTPUTS: [(&str, &str); 7] = [
        ("VpcId", "vpc-0f1e2d3c4b5a69788"),
        ("PrivateSubnetIds", "subnet-0aa1111111111111d,subnet-0bb2222222222222e,subnet-0cc3333333333333f"),
        ("PublicSubnetIds", "subnet-0dd4444444444444a,subnet-0ee5555555555555b,subnet-0ff6666666666666c"),
        ("PrivateRouteTableIds", "rtb-0a1a1a1a1a1a1a1a1,rtb-0b2b2b2b2b2b2b2b2,rtb-0c3c3c3c3c3c3c3c3"),
        ("ClusterSecurityGroupId", "sg-0123456789abcdef0"),
        ("NodeRoleArn", "arn:aws:iam::222222222222:role/eks-cluster-frontend-node-role"),
        ("AccessRoleArn", "arn:aws:iam::222222222222:role/eks-cluster-frontend-access-role"),
    ];

    /// Exactly the parameters the TGW stack must get: the hub's TGW id and the spoke's own ids.
    fn tgw_params(tgw: &str) -> BTreeMap<String, String> {
        BTreeMap::from(
            [
                ("ClusterName", "eks-cluster-frontend"),
                ("TransitGatewayId", tgw),
                ("VpcId", "vpc-0f1e2d3c4b5a69788"),
                ("PrivateSubnetIds", "subnet-0aa1111111111111d,subnet-0bb2222222222222e,subnet-0cc3333333333333f"),
                ("PrivateRouteTableIds", "rtb-0a1a1a1a1a1a1a1a1,rtb-0b2b2b2b2b2b2b2b2,rtb-0c3c3c3c3c3c3c3c3"),
                ("ClusterSecurityGroupId", "sg-0123456789abcdef0"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn not_found(name: &'static str) -> Rule {
        mock!(Client::describe_stacks).match_requests(move |r| r.stack_name() == Some(name)).then_error(move || {
            DescribeStacksError::generic(
                ErrorMetadata::builder().code("ValidationError").message(format!("Stack with id {name} does not exist")).build(),
            )
        })
    }

    fn tgw_step(ctx: &Arc<Session>) -> Arc<dyn Step> {
        steps(ctx).into_iter().find(|s| s.meta().id == "stacks/frontend-tgw").expect("stacks/frontend-tgw")
    }

    #[tokio::test]
    async fn tgw_stack_gets_its_parameters_from_the_hub_and_spoke_outputs() {
        let config = Config::default();
        let body = spoke_tgw_body(&config, &config.spokes[0]);
        // routes and ingress for the hub's and the other spoke's CIDRs, not its own
        assert!(body.contains("DestinationCidrBlock: 10.0.0.0/16") && body.contains("DestinationCidrBlock: 10.2.0.0/16"));
        assert!(!body.contains("10.1.0.0/16"));
        assert!(body.contains("RouteTableId: !Select [2, !Ref PrivateRouteTableIds]"));

        let hub =
            describe_rule(HUB_STACK, described(testing::SHARED, HUB_STACK, StackStatus::UpdateComplete, &[], &hub_outputs(Some(TGW))));
        let spoke = describe_rule(SPOKE_STACK, described(testing::FRONTEND, SPOKE_STACK, StackStatus::CreateComplete, &[], &SPOKE_OUTPUTS));
        let absent = not_found(TGW_STACK);
        let want_tags = owned(&[(TAG_MANAGED_BY, "meshctl"), (TAG_ACCOUNT, "frontend"), (TAG_MESH, HUB_STACK)]);
        let create = mock!(Client::create_change_set)
            .match_requests(move |r| {
                let params: BTreeMap<String, String> = r
                    .parameters()
                    .iter()
                    .map(|p| (p.parameter_key().unwrap_or_default().to_string(), p.parameter_value().unwrap_or_default().to_string()))
                    .collect();
                let tags: BTreeMap<String, String> =
                    r.tags().iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect();
                r.stack_name() == Some(TGW_STACK)
                    && r.change_set_type() == Some(&ChangeSetType::Create)
                    && params == tgw_params(TGW)
                    && r.parameters().len() == 6
                    && tags == want_tags
                    && r.template_body() == Some(body.as_str())
                    && r.capabilities() == [Capability::CapabilityNamedIam]
            })
            .then_output(|| {
                CreateChangeSetOutput::builder()
                    .id("arn:aws:cloudformation:us-east-2:222222222222:changeSet/meshctl-1/0c4e")
                    .stack_id(stack_id(testing::FRONTEND, TGW_STACK))
                    .build()
            });
        let computed = mock!(Client::describe_change_set)
            .then_output(|| DescribeChangeSetOutput::builder().status(ChangeSetStatus::CreateComplete).build());
        let exec = mock!(Client::execute_change_set)
            .match_requests(|r| r.stack_name() == Some(TGW_STACK))
            .then_output(|| ExecuteChangeSetOutput::builder().build());
        let done = describe_rule(TGW_STACK, described(testing::FRONTEND, TGW_STACK, StackStatus::CreateComplete, &[], &[]));
        let ctx = testing::ctx(&[
            ("shared", RuleMode::Sequential, &[&hub]),
            ("frontend", RuleMode::Sequential, &[&spoke, &absent, &create, &computed, &exec, &done]),
        ]);
        tgw_step(&ctx).apply(&StepRun::detached("stacks/frontend-tgw")).await.unwrap();
        for (rule, what) in [
            (&hub, "hub outputs"),
            (&spoke, "spoke outputs"),
            (&absent, "tgw stack"),
            (&create, "CreateChangeSet"),
            (&exec, "ExecuteChangeSet"),
            (&done, "wait"),
        ] {
            assert_eq!(rule.num_calls(), 1, "{what}");
        }
        assert_eq!(ctx.aws.writes().calls(), ["CloudFormation:CreateChangeSet", "CloudFormation:ExecuteChangeSet"]);
    }

    #[tokio::test]
    async fn tgw_stack_check_sees_a_new_hub_tgw_as_drift() {
        let config = Config::default();
        let old = "tgw-0ffffffffffffffff";
        let live = tgw_params(old);
        let live: Vec<(&str, &str)> = live.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let exists = describe_rule(TGW_STACK, described(testing::FRONTEND, TGW_STACK, StackStatus::CreateComplete, &live, &[]));
        let hub =
            describe_rule(HUB_STACK, described(testing::SHARED, HUB_STACK, StackStatus::UpdateComplete, &[], &hub_outputs(Some(TGW))));
        let spoke = describe_rule(SPOKE_STACK, described(testing::FRONTEND, SPOKE_STACK, StackStatus::CreateComplete, &[], &SPOKE_OUTPUTS));
        let body = spoke_tgw_body(&config, &config.spokes[0]);
        let tpl = mock!(Client::get_template)
            .match_requests(|r| r.stack_name() == Some(stack_id(testing::FRONTEND, TGW_STACK).as_str()))
            .then_output(move || GetTemplateOutput::builder().template_body(body.clone()).build());
        let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&hub]), ("frontend", RuleMode::MatchAny, &[&exists, &spoke, &tpl])]);
        assert_eq!(
            tgw_step(&ctx).check(&StepRun::detached("stacks/frontend-tgw")).await.unwrap(),
            Status::Drifted(format!("parameter TransitGatewayId: {old} → {TGW}"))
        );
        assert_eq!((exists.num_calls(), hub.num_calls(), spoke.num_calls(), tpl.num_calls()), (2, 1, 1, 1));
        assert_eq!(ctx.aws.writes().count(), 0);
    }

    /// A TGW stack whose hub stack failed to delete is still checked (as drifted, saying why),
    /// so `down` can delete it instead of stopping at the check.
    #[tokio::test]
    async fn tgw_stack_over_a_broken_hub_stack_is_drift_not_a_failed_check() {
        let exists = describe_rule(TGW_STACK, described(testing::FRONTEND, TGW_STACK, StackStatus::CreateComplete, &[], &[]));
        let hub = describe_rule(HUB_STACK, described(testing::SHARED, HUB_STACK, StackStatus::DeleteFailed, &[], &hub_outputs(Some(TGW))));
        let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&hub]), ("frontend", RuleMode::MatchAny, &[&exists])]);
        assert_eq!(
            tgw_step(&ctx).check(&StepRun::detached("stacks/frontend-tgw")).await.unwrap(),
            Status::Drifted(
                "its inputs are not available: account shared (profile shared): stack eks-cluster-shared-services-stack is DELETE_FAILED; \
                 run `meshctl up --only stacks` first"
                    .into()
            )
        );
        assert_eq!(ctx.aws.writes().count(), 0);
    }

    #[tokio::test]
    async fn tgw_stack_without_the_hub_tgw_output_names_the_hub_stack_and_the_key() {
        // A hub stack from a template without the output: nothing is asked of the spoke.
        let hub = describe_rule(HUB_STACK, described(testing::SHARED, HUB_STACK, StackStatus::CreateComplete, &[], &hub_outputs(None)));
        let ctx = testing::ctx(&[("shared", RuleMode::Sequential, &[&hub])]);
        let err = tgw_step(&ctx).apply(&StepRun::detached("stacks/frontend-tgw")).await.unwrap_err().chain();
        assert_eq!(
            err,
            "account shared: stack eks-cluster-shared-services-stack has no output TransitGatewayId (outputs: ClusterSecurityGroupId, NodeRoleArn, \
             PrivateRouteTableIds, PrivateSubnetIds, PublicSubnetIds, SpireServerRoleArn, VpcId); was it created by this meshctl's template?"
        );
        assert_eq!(hub.num_calls(), 1);

        // No hub stack at all: the phase to run first.
        let hub = not_found(HUB_STACK);
        let ctx = testing::ctx(&[("shared", RuleMode::Sequential, &[&hub])]);
        let err = tgw_step(&ctx).apply(&StepRun::detached("stacks/frontend-tgw")).await.unwrap_err().chain();
        assert_eq!(
            err,
            "account shared (profile shared): stack eks-cluster-shared-services-stack does not exist; run `meshctl up --only stacks` first"
        );
        assert_eq!(ctx.aws.writes().count(), 0);
    }

    /// A stack of `mesh` in `account` (its `meshctl:account` tag `role`), with parameters
    /// (which tell its kind) and extra tags.
    fn mesh_stack(account: &str, role: &str, name: &str, mesh: &str, params: &[&str], extra: &[(&str, &str)]) -> Stack {
        let mut b = Stack::builder()
            .stack_id(stack_id(account, name))
            .stack_name(name)
            .stack_status(StackStatus::CreateComplete)
            .creation_time(aws_smithy_types::DateTime::from_secs(1_764_300_000))
            .tags(Tag::builder().key(TAG_MANAGED_BY).value("meshctl").build())
            .tags(Tag::builder().key(TAG_ACCOUNT).value(role).build())
            .tags(Tag::builder().key(TAG_MESH).value(mesh).build());
        for (k, v) in extra {
            b = b.tags(Tag::builder().key(*k).value(*v).build());
        }
        for p in params {
            b = b.parameters(Parameter::builder().parameter_key(*p).parameter_value("x").build());
        }
        b.build()
    }

    fn listing(stacks: Vec<Stack>) -> Rule {
        let out = DescribeStacksOutput::builder().set_stacks(Some(stacks)).build();
        mock!(Client::describe_stacks).match_requests(|r| r.stack_name().is_none()).then_output(move || out.clone())
    }

    /// The hub account holds its stack for `analytics`, a spoke the configuration no longer
    /// names; that stack's tags lead to the spoke's own stacks (here behind the `backend`
    /// profile, the one mocked account they can be reached through), which no listing of a
    /// configured account shows. Another mesh's stack and a stack without meshctl's tag are no
    /// orphans. They are reported in deletion order, with no write.
    #[tokio::test]
    async fn orphaned_stacks_are_found_by_tag_in_every_account_and_through_a_removed_spokes_tags() {
        let base = ["ClusterName", "VpcCidr"];
        let peer = ["ClusterName", "SpokeName", "TransitGatewayId"];
        let tgw = ["ClusterName", "TransitGatewayId", "VpcId"];
        let removed_peer = "eks-cluster-shared-services-stack-analytics";
        let mut foreign = mesh_stack(testing::SHARED, "shared", "their-stack", HUB_STACK, &base, &[]);
        foreign.tags = None;
        let mut analytics_peer = mesh_stack(
            testing::SHARED,
            "shared",
            removed_peer,
            HUB_STACK,
            &peer,
            &[(TAG_SPOKE_PROFILE, "backend"), (TAG_SPOKE_STACK, "eks-cluster-analytics-stack")],
        );
        analytics_peer.parameters = Some(vec![
            Parameter::builder().parameter_key("SpokeName").parameter_value("analytics").build(),
            Parameter::builder().parameter_key("ClusterName").parameter_value("eks-cluster-shared").build(),
        ]);
        let shared = listing(vec![
            mesh_stack(testing::SHARED, "shared", HUB_STACK, HUB_STACK, &base, &[]),
            mesh_stack(testing::SHARED, "shared", "eks-cluster-shared-services-stack-frontend", HUB_STACK, &peer, &[]),
            mesh_stack(testing::SHARED, "shared", "eks-cluster-shared-services-stack-backend", HUB_STACK, &peer, &[]),
            analytics_peer,
            mesh_stack(testing::SHARED, "shared", "other-mesh-stack", "another-hub-stack", &base, &[]),
            foreign,
        ]);
        let frontend = listing(vec![
            mesh_stack(testing::FRONTEND, "frontend", SPOKE_STACK, HUB_STACK, &base, &[]),
            mesh_stack(testing::FRONTEND, "frontend", TGW_STACK, HUB_STACK, &tgw, &[]),
        ]);
        let backend = listing(vec![mesh_stack(testing::BACKEND, "backend", "eks-cluster-backend-stack", HUB_STACK, &base, &[])]);
        let by_name = |name: &'static str, params: &[&str]| {
            describe_rule(
                name,
                DescribeStacksOutput::builder().stacks(mesh_stack(testing::BACKEND, "analytics", name, HUB_STACK, params, &[])).build(),
            )
        };
        let (a_tgw, a_base) = (by_name("eks-cluster-analytics-stack-tgw", &tgw), by_name("eks-cluster-analytics-stack", &base));
        let ctx = testing::ctx(&[
            ("shared", RuleMode::MatchAny, &[&shared]),
            ("frontend", RuleMode::MatchAny, &[&frontend]),
            ("backend", RuleMode::MatchAny, &[&backend, &a_tgw, &a_base]),
        ]);
        let step = steps(&ctx).into_iter().find(|s| s.meta().id == "stacks/orphans").unwrap();
        let status = step.check(&StepRun::detached("stacks/orphans")).await.unwrap();
        assert_eq!(
            status,
            Status::Orphaned(
                "stack eks-cluster-analytics-stack-tgw (account analytics, profile backend), \
                 stack eks-cluster-shared-services-stack-analytics (account shared, profile shared), \
                 stack eks-cluster-analytics-stack (account analytics, profile backend)"
                    .into()
            )
        );
        assert_eq!(ctx.aws.writes().count(), 0);

        // Nothing orphaned: up to date on the way up, missing (already gone) on the way down.
        let (shared, frontend, backend) = (listing(vec![]), listing(vec![]), listing(vec![]));
        let ctx = testing::ctx(&[
            ("shared", RuleMode::MatchAny, &[&shared]),
            ("frontend", RuleMode::MatchAny, &[&frontend]),
            ("backend", RuleMode::MatchAny, &[&backend]),
        ]);
        let step = steps(&ctx).into_iter().find(|s| s.meta().id == "stacks/orphans").unwrap();
        assert_eq!(step.check(&StepRun::detached("stacks/orphans")).await.unwrap(), Status::UpToDate);
        let down = StepRun::detached("stacks/orphans").with_mode(crate::engine::Mode::Down);
        assert_eq!(step.check(&down).await.unwrap(), Status::Missing);
    }
}
