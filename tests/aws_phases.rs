//! The AWS part of the graph against the test bed's moto (moto with its wrapper,
//! `scripts/testbed-moto.py`, the four accounts in one AWS Organization with RAM sharing on):
//! `preflight`, every base stack, every hub stack per spoke (`stacks/hub-<spoke>`), the
//! Transit Gateway share in each spoke (`ram/<spoke>`, the Organization path: no invitation),
//! every spoke's TGW stack. Asserted on the live state read back through the SDK, then
//! `plan` all up to date, a second `up` with zero mutating calls, `down` leaving nothing of
//! meshctl's in any account. A second test adds a third spoke (`analytics`) to a running
//! two-spoke setup. See tests/README.md, "AWS phases".
//!
//! Needs the test bed's AWS part: `scripts/testbed up` and `source $MESHCTL_TESTBED_DIR/env`.

mod common;

use common::{testbed, Testbed};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use meshctl::config::Config;
use meshctl::engine::{self, Event, EventKind, EventSink, Mode, Outcome, RunOptions, RunSummary, Status, StepId};
use meshctl::names::{access_role_arn, hub_peer_stack_name, spire_server_role_name, tgw_stack_name};
use meshctl::phases::{self, ids, stacks};
use meshctl::session::Session;
use meshctl::steps::irsa::decode_policy;

/// Both moto tests use the same accounts and stack names: one at a time.
static BED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Prints every event (the outcomes are asserted from the run's summary).
struct Sink;
impl EventSink for Sink {
    fn event(&self, e: &Event) {
        match &e.kind {
            EventKind::Started => {}
            k => eprintln!("  {:<22} {}", e.step, serde_json::to_string(k).unwrap_or_default()),
        }
    }
}

/// The test bed's region with these spokes; every other key is the default (profiles, stack
/// and cluster names derive from the account names, which are the test bed's profiles).
fn config(tb: &Testbed, spokes: &[&str]) -> Config {
    let mut toml = format!("region = \"{}\"\n", tb.region);
    for s in spokes {
        toml.push_str(&format!("[[spokes]]\nname = \"{s}\"\n"));
    }
    let dir = common::temp_dir("aws-phases");
    let path = dir.path().join("meshctl.toml");
    std::fs::write(&path, toml).unwrap();
    let c = Config::load(Some(&path), &[], &[]).unwrap();
    for a in c.accounts() {
        tb.account(&a.profile); // a test-bed profile
    }
    c
}

/// The AWS part of the graph: preflight and every step of the stacks and ram phases.
fn selection(c: &Config) -> BTreeSet<StepId> {
    let mut s = BTreeSet::from([ids::preflight()]);
    for a in c.accounts() {
        s.insert(ids::stack(&a.name));
    }
    for sp in &c.spokes {
        s.extend([ids::hub_peer_stack(&sp.name), ids::ram(&sp.name), ids::tgw_stack(&sp.name)]);
    }
    s
}

async fn run(c: &Config, mode: Mode) -> (Arc<Session>, RunSummary) {
    run_only(c, mode, selection(c), false).await
}

/// A run of only these steps, `adopt` as `--adopt` gives it.
async fn run_only(c: &Config, mode: Mode, selection: BTreeSet<StepId>, adopt: bool) -> (Arc<Session>, RunSummary) {
    eprintln!("== {mode:?} ({} spokes){}", c.spokes.len(), if adopt { " --adopt" } else { "" });
    let session = Arc::new(Session::new(c.clone()).expect("session"));
    let graph = phases::graph(&session).expect("graph builds");
    let mut opts = RunOptions::new(mode);
    opts.selection = Some(selection);
    opts.adopt = adopt;
    let t = Instant::now();
    let summary = engine::run(&graph, &opts, Arc::new(Sink)).await;
    eprintln!("== {mode:?}: {:.2}s, {} mutating AWS calls", t.elapsed().as_secs_f64(), session.aws.writes().count());
    (session, summary)
}

fn assert_ok(what: &str, s: &RunSummary) {
    assert!(s.ok(), "{what} failed: failed={:#?} skipped={:#?}", s.failed, s.skipped);
}

async fn sdk(profile: &str, region: &str) -> aws_config::SdkConfig {
    meshctl::aws::sdk_loader().profile_name(profile).region(aws_config::Region::new(region.to_string())).load().await
}

fn pairs<'a>(it: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>) -> BTreeMap<String, String> {
    it.map(|(k, v)| (k.unwrap_or_default().to_string(), v.unwrap_or_default().to_string())).collect()
}

/// A stack as CloudFormation shows it: status, tags, parameters, Outputs, resources.
struct LiveStack {
    status: String,
    tags: BTreeMap<String, String>,
    params: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    /// logical id → physical id
    resources: BTreeMap<String, String>,
}

async fn stack(conf: &aws_config::SdkConfig, name: &str) -> LiveStack {
    let cfn = aws_sdk_cloudformation::Client::new(conf);
    let out = cfn.describe_stacks().stack_name(name).send().await.unwrap_or_else(|e| panic!("stack {name}: {e:?}"));
    let s = &out.stacks()[0];
    let res = cfn.list_stack_resources().stack_name(name).send().await.unwrap();
    LiveStack {
        status: s.stack_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        tags: pairs(s.tags().iter().map(|t| (t.key(), t.value()))),
        params: pairs(s.parameters().iter().map(|p| (p.parameter_key(), p.parameter_value()))),
        outputs: pairs(s.outputs().iter().map(|o| (o.output_key(), o.output_value()))),
        resources: pairs(res.stack_resource_summaries().iter().map(|r| (r.logical_resource_id(), r.physical_resource_id()))),
    }
}

/// The stack exists, CREATE_COMPLETE (UPDATE_COMPLETE when it is one of `updated`), tagged as
/// meshctl's for `account`, with exactly the parameters meshctl computes for it.
fn assert_stack(live: &LiveStack, name: &str, account: &str, want: &BTreeMap<String, String>, updated: &[&str]) {
    let status = if updated.contains(&name) { "UPDATE_COMPLETE" } else { "CREATE_COMPLETE" };
    assert_eq!(live.status, status, "{name}");
    assert_eq!(live.tags.get("meshctl:managed-by").map(String::as_str), Some("meshctl"), "{name}: {:?}", live.tags);
    assert_eq!(live.tags.get("meshctl:account").map(String::as_str), Some(account), "{name}: {:?}", live.tags);
    assert_eq!(&live.params, want, "{name}: parameters");
}

/// The IAM role's trust policy, decoded.
async fn trust(iam: &aws_sdk_iam::Client, role: &str) -> serde_json::Value {
    let r = iam.get_role().role_name(role).send().await.unwrap_or_else(|e| panic!("role {role}: {e:?}")).role.unwrap();
    decode_policy(r.assume_role_policy_document().unwrap()).expect("trust policy JSON")
}

/// Routes in these route tables to `cidr` through the Transit Gateway `tgw`.
async fn assert_routes(ec2: &aws_sdk_ec2::Client, tables: &str, cidr: &str, tgw: &str, what: &str) {
    for rtb in tables.split(',') {
        let t = ec2.describe_route_tables().route_table_ids(rtb).send().await.unwrap();
        let routes = t.route_tables()[0].routes();
        assert!(
            routes.iter().any(|r| r.destination_cidr_block() == Some(cidr) && r.transit_gateway_id() == Some(tgw)),
            "{what}: no route to {cidr} through {tgw} in {rtb}: {routes:?}"
        );
    }
}

/// Ingress from `cidr` into the security group.
async fn assert_ingress(ec2: &aws_sdk_ec2::Client, group: &str, cidr: &str, what: &str) {
    let g = ec2.describe_security_groups().group_ids(group).send().await.unwrap();
    let perms = g.security_groups()[0].ip_permissions();
    assert!(
        perms.iter().any(|p| p.ip_ranges().iter().any(|r| r.cidr_ip() == Some(cidr))),
        "{what}: no ingress from {cidr} in {group}: {perms:?}"
    );
}

/// `updated`: the stacks an `up` updated after creating them.
async fn assert_live_state(tb: &Testbed, c: &Config, updated: &[&str]) {
    let hub = &c.hub;
    let hub_id = tb.account(&hub.profile).to_string();
    let hub_conf = sdk(&hub.profile, &tb.region).await;
    let spire_role = spire_server_role_name(hub);

    // ---- base stacks: parameters exactly as meshctl computes them offline; VPC, cluster, nodes
    for a in c.accounts() {
        let conf = sdk(&a.profile, &tb.region).await;
        let live = stack(&conf, &a.stack_name).await;
        assert_stack(&live, &a.stack_name, &a.name, &stacks::base_spec(c, a, &hub_id).unwrap().params, updated);
        for want in ["Vpc", "NatGateway", "PrivateRouteTable3", "ClusterSecurityGroup", "Cluster", "NodeGroup", "NodeRole"] {
            assert!(live.resources.contains_key(want), "{}: no {want} in {:?}", a.stack_name, live.resources.keys());
        }
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let vpc = &live.resources["Vpc"];
        assert_eq!(ec2.describe_vpcs().vpc_ids(vpc).send().await.unwrap().vpcs()[0].cidr_block(), Some(a.vpc_cidr.as_str()));
        let subnets =
            ec2.describe_subnets().filters(aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(vpc).build()).send().await.unwrap();
        assert_eq!(subnets.subnets().len(), 6, "{}: subnets", a.stack_name);

        let eks = aws_sdk_eks::Client::new(&conf);
        let cluster = eks.describe_cluster().name(&a.cluster_name).send().await.unwrap().cluster.unwrap();
        assert_eq!(cluster.version(), Some(a.kubernetes_version.as_str()), "{}", a.cluster_name);
        let ng = eks
            .describe_nodegroup()
            .cluster_name(&a.cluster_name)
            .nodegroup_name(format!("{}-nodes", a.cluster_name))
            .send()
            .await
            .unwrap()
            .nodegroup
            .unwrap();
        let scaling = ng.scaling_config().unwrap();
        assert_eq!(
            (scaling.desired_size(), scaling.max_size()),
            (Some(a.node_count as i32), Some(stacks::node_max_size(a) as i32)),
            "{}",
            a.cluster_name
        );
        assert_eq!(ng.instance_types(), std::slice::from_ref(&a.instance_type), "{}", a.cluster_name);

        let iam = aws_sdk_iam::Client::new(&conf);
        let node_role = format!("{}-node-role", a.cluster_name);
        let inline = iam.list_role_policies().role_name(&node_role).send().await.unwrap();
        assert!(
            inline.policy_names().is_empty(),
            "{node_role} has inline policies (it must not assume the spoke roles): {:?}",
            inline.policy_names()
        );
        if a.name != hub.name {
            // the spoke's access role trusts exactly the hub's SPIRE server role
            let doc = trust(&iam, a.access_role_name()).await;
            let st = &doc["Statement"];
            assert_eq!(st.as_array().map(Vec::len), Some(1), "{doc}");
            assert_eq!(st[0]["Principal"]["AWS"], format!("arn:aws:iam::{hub_id}:root"), "{doc}");
            assert_eq!(st[0]["Condition"]["ArnLike"]["aws:PrincipalArn"], format!("arn:aws:iam::{hub_id}:role/{spire_role}"), "{doc}");
            assert_eq!(st[0]["Action"], serde_json::json!(["sts:AssumeRole", "sts:TagSession"]), "{doc}");
        }
    }

    // ---- hub: Transit Gateway, add-ons, Pod Identity associations and their roles
    let hub_live = stack(&hub_conf, &hub.stack_name).await;
    let tgw = hub_live.outputs.get("TransitGatewayId").expect("hub output TransitGatewayId").clone();
    let ec2 = aws_sdk_ec2::Client::new(&hub_conf);
    let tgws = ec2.describe_transit_gateways().transit_gateway_ids(&tgw).send().await.unwrap();
    assert!(
        tgws.transit_gateways()[0].tags().iter().any(|t| t.key() == Some("Name") && t.value() == Some(c.network.tgw_name.as_str())),
        "TGW {tgw} named {}",
        c.network.tgw_name
    );
    let eks = aws_sdk_eks::Client::new(&hub_conf);
    let addons: BTreeSet<String> =
        eks.list_addons().cluster_name(&hub.cluster_name).send().await.unwrap().addons().iter().cloned().collect();
    assert_eq!(addons, BTreeSet::from(["aws-ebs-csi-driver".to_string(), "eks-pod-identity-agent".to_string()]));
    let assocs = eks.list_pod_identity_associations().cluster_name(&hub.cluster_name).send().await.unwrap();
    let mut found = BTreeMap::new();
    for s in assocs.associations() {
        let d = eks
            .describe_pod_identity_association()
            .cluster_name(&hub.cluster_name)
            .association_id(s.association_id().unwrap())
            .send()
            .await
            .unwrap();
        let d = d.association.unwrap();
        found.insert(format!("{}/{}", d.namespace().unwrap(), d.service_account().unwrap()), d.role_arn().unwrap().to_string());
    }
    let ebs_role = format!("{}-ebs-csi-driver", hub.cluster_name);
    assert_eq!(
        found,
        BTreeMap::from([
            (
                format!("{}/{}", c.spire.namespace, meshctl::spire::charts::SERVER_SERVICE_ACCOUNT),
                format!("arn:aws:iam::{hub_id}:role/{spire_role}")
            ),
            ("kube-system/ebs-csi-controller-sa".to_string(), format!("arn:aws:iam::{hub_id}:role/{ebs_role}")),
        ])
    );
    let iam = aws_sdk_iam::Client::new(&hub_conf);
    for role in [&spire_role, &ebs_role] {
        let doc = trust(&iam, role).await;
        assert_eq!(doc["Statement"][0]["Principal"]["Service"], "pods.eks.amazonaws.com", "{role}: {doc}");
        assert_eq!(doc["Statement"][0]["Action"], serde_json::json!(["sts:AssumeRole", "sts:TagSession"]), "{role}: {doc}");
    }
    let attached = iam.list_attached_role_policies().role_name(&ebs_role).send().await.unwrap();
    let attached: Vec<&str> = attached.attached_policies().iter().filter_map(|p| p.policy_arn()).collect();
    assert_eq!(attached, ["arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"]);
    // the SPIRE server role may assume each spoke's access role, one policy per spoke
    let inline = iam.list_role_policies().role_name(&spire_role).send().await.unwrap();
    let want: BTreeSet<String> = c.spokes.iter().map(|s| format!("assume-{}-access-role", s.name)).collect();
    assert_eq!(inline.policy_names().iter().cloned().collect::<BTreeSet<_>>(), want);

    // ---- per spoke: the hub's stack for it, the share, the spoke's TGW stack
    let hub_ec2 = aws_sdk_ec2::Client::new(&hub_conf);
    let ram = aws_sdk_ram::Client::new(&hub_conf);
    let shares = ram
        .get_resource_shares()
        .resource_owner(aws_sdk_ram::types::ResourceOwner::SelfValue)
        .name(&c.network.tgw_share)
        .send()
        .await
        .unwrap();
    let active = shares.resource_shares().iter().filter(|s| s.status().map(|s| s.as_str()) == Some("ACTIVE")).count();
    assert_eq!(active, c.spokes.len(), "one share {} per spoke: {:?}", c.network.tgw_share, shares.resource_shares());
    for s in &c.spokes {
        let spoke_id = tb.account(&s.profile).to_string();
        let name = hub_peer_stack_name(hub, s);
        let live = stack(&hub_conf, &name).await;
        assert_stack(&live, &name, &hub.name, &stacks::hub_peer_spec(c, s, &spoke_id, &hub_live.outputs).unwrap().params, updated);
        assert_routes(&hub_ec2, &hub_live.outputs["PrivateRouteTableIds"], &s.vpc_cidr, &tgw, &name).await;
        assert_ingress(&hub_ec2, &hub_live.outputs["ClusterSecurityGroupId"], &s.vpc_cidr, &name).await;
        let policy =
            iam.get_role_policy().role_name(&spire_role).policy_name(format!("assume-{}-access-role", s.name)).send().await.unwrap();
        let doc = decode_policy(policy.policy_document()).unwrap();
        assert_eq!(doc["Statement"][0]["Resource"], access_role_arn(c, s, &spoke_id), "{doc}");

        let conf = sdk(&s.profile, &tb.region).await;
        // the spoke sees one share of that name from the hub, with the hub's TGW in it
        let sram = aws_sdk_ram::Client::new(&conf);
        let got = sram
            .get_resource_shares()
            .resource_owner(aws_sdk_ram::types::ResourceOwner::OtherAccounts)
            .name(&c.network.tgw_share)
            .send()
            .await
            .unwrap();
        let got: Vec<(Option<&str>, Option<&str>)> =
            got.resource_shares().iter().map(|r| (r.owning_account_id(), r.status().map(|s| s.as_str()))).collect();
        assert_eq!(got, [(Some(hub_id.as_str()), Some("ACTIVE"))], "{}: shares received", s.name);
        let res = sram.list_resources().resource_owner(aws_sdk_ram::types::ResourceOwner::OtherAccounts).send().await.unwrap();
        assert!(
            res.resources().iter().any(|r| r.arn().is_some_and(|a| a.ends_with(&format!("transit-gateway/{tgw}")))),
            "{}: {:?}",
            s.name,
            res.resources()
        );

        let own = stack(&conf, &s.stack_name).await;
        let name = tgw_stack_name(s);
        let live = stack(&conf, &name).await;
        assert_stack(&live, &name, &s.name, &stacks::tgw_spec(c, s, &hub_live.outputs, &own.outputs).unwrap().params, updated);
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let att = ec2
            .describe_transit_gateway_attachments()
            .transit_gateway_attachment_ids(&live.resources["TransitGatewayAttachment"])
            .send()
            .await
            .unwrap();
        let att = &att.transit_gateway_attachments()[0];
        assert_eq!(
            (att.transit_gateway_id(), att.resource_id(), att.state().map(|s| s.as_str())),
            (Some(tgw.as_str()), Some(own.outputs["VpcId"].as_str()), Some("available"))
        );
        for peer in c.accounts().filter(|p| p.name != s.name) {
            assert_routes(&ec2, &own.outputs["PrivateRouteTableIds"], &peer.vpc_cidr, &tgw, &name).await;
            assert_ingress(&ec2, &own.outputs["ClusterSecurityGroupId"], &peer.vpc_cidr, &name).await;
        }
    }
}

/// Nothing of meshctl's is left in any of the test bed's accounts: no stack, VPC, EKS cluster,
/// Transit Gateway, TGW share or role of these names.
async fn assert_all_gone(tb: &Testbed, c: &Config) {
    let left = common::aws_leftovers(tb).await;
    assert!(left.is_empty(), "left after down ({} spokes): {left:#?}", c.spokes.len());
}

/// Starts from nothing, whatever an earlier run left in any of the test bed's accounts (down of
/// absent things succeeds), with every spoke the test bed has.
async fn clean_start(tb: &Testbed) {
    let all = config(tb, &["frontend", "backend", "analytics"]);
    let (_, pre) = run(&all, Mode::Down).await;
    assert_ok("initial down", &pre);
    assert_all_gone(tb, &all).await;
}

fn outcomes(s: &RunSummary) -> BTreeMap<String, Outcome> {
    s.done.iter().map(|(id, o)| (id.to_string(), o.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_phases_up_plan_rerun_down_against_moto() {
    let _bed = BED.lock().await;
    let tb = testbed();
    let c = config(&tb, &["frontend", "backend"]);
    assert_eq!(c.spokes, Config::default().spokes, "the walkthrough's spokes");
    clean_start(&tb).await;

    let (session, up) = run(&c, Mode::Up).await;
    assert_ok("up", &up);
    let done = outcomes(&up);
    for id in selection(&c) {
        assert!(done.contains_key(id.as_str()), "{id} did not run: {done:?}");
    }
    for a in c.accounts() {
        assert_eq!(done[ids::stack(&a.name).as_str()], Outcome::Created, "{}", a.name);
    }
    for s in &c.spokes {
        assert_eq!(done[ids::hub_peer_stack(&s.name).as_str()], Outcome::Created);
        assert_eq!(done[ids::tgw_stack(&s.name).as_str()], Outcome::Created);
        // inside the Organization the share is associated at once: nothing to accept
        assert_eq!(done[ids::ram(&s.name).as_str()], Outcome::UpToDate, "ram/{}", s.name);
    }
    let writes = session.aws.writes().calls();
    assert!(!writes.iter().any(|w| w.starts_with("RAM:")), "no invitation accepted: {writes:?}");
    assert_live_state(&tb, &c, &[]).await;

    let (_, plan) = run(&c, Mode::Plan).await;
    assert_ok("plan", &plan);
    assert_eq!(plan.done.len(), selection(&c).len());
    for (id, outcome) in &plan.done {
        assert_eq!(outcome, &Outcome::Checked(Status::UpToDate), "{id} is not up to date after up");
    }

    let (session, rerun) = run(&c, Mode::Up).await;
    assert_ok("second up", &rerun);
    assert_eq!(session.aws.writes().calls(), Vec::<String>::new(), "the second up changes nothing");
    for (id, outcome) in &rerun.done {
        assert_eq!(outcome, &Outcome::UpToDate, "{id}");
    }

    let (_, down) = run(&c, Mode::Down).await;
    assert_ok("down", &down);
    assert_all_gone(&tb, &c).await;

    let (session, down2) = run(&c, Mode::Down).await;
    assert_ok("second down", &down2);
    assert_eq!(session.aws.writes().count(), 0, "down of nothing deletes nothing: {:?}", session.aws.writes().calls());
}

/// Issue 15.5 on moto: a third spoke added to a running two-spoke setup. `plan` shows every
/// existing base stack (the clusters) and hub stack up to date; `up` creates only the new
/// spoke's stacks and updates only the existing spokes' TGW stacks (their routes to the new
/// VPC).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_a_third_spoke_touches_no_existing_base_stack_on_moto() {
    let _bed = BED.lock().await;
    let tb = testbed();
    let two = config(&tb, &["frontend", "backend"]);
    let three = config(&tb, &["frontend", "backend", "analytics"]);

    clean_start(&tb).await;
    let (_, up) = run(&two, Mode::Up).await;
    assert_ok("up with two spokes", &up);

    let (_, plan) = run(&three, Mode::Plan).await;
    let plan = outcomes(&plan);
    let existing: Vec<String> = two
        .accounts()
        .map(|a| ids::stack(&a.name).to_string())
        .chain(two.spokes.iter().flat_map(|s| [ids::hub_peer_stack(&s.name).to_string(), ids::ram(&s.name).to_string()]))
        .collect();
    for id in &existing {
        assert_eq!(plan.get(id), Some(&Outcome::Checked(Status::UpToDate)), "{id}: {plan:?}");
    }
    assert_eq!(plan["stacks/analytics"], Outcome::Checked(Status::Missing));
    assert_eq!(plan["stacks/hub-analytics"], Outcome::Checked(Status::Missing));
    for s in &two.spokes {
        // the only change to an existing stack: a spoke's routes to the new VPC
        assert_eq!(plan[ids::tgw_stack(&s.name).as_str()], Outcome::Checked(Status::Drifted("template changed".into())), "{}", s.name);
    }

    let (_, up3) = run(&three, Mode::Up).await;
    assert_ok("up with three spokes", &up3);
    let done = outcomes(&up3);
    let created: BTreeSet<&str> = done.iter().filter(|(_, o)| **o == Outcome::Created).map(|(id, _)| id.as_str()).collect();
    assert_eq!(created, BTreeSet::from(["stacks/analytics", "stacks/analytics-tgw", "stacks/hub-analytics"]));
    let updated: BTreeSet<&str> = done.iter().filter(|(_, o)| matches!(o, Outcome::Updated(_))).map(|(id, _)| id.as_str()).collect();
    assert_eq!(updated, BTreeSet::from(["stacks/backend-tgw", "stacks/frontend-tgw"]));
    for id in &existing {
        assert_eq!(done[id.as_str()], Outcome::UpToDate, "{id}");
    }
    assert_live_state(&tb, &three, &["eks-cluster-frontend-stack-tgw", "eks-cluster-backend-stack-tgw"]).await;

    let (_, down) = run(&three, Mode::Down).await;
    assert_ok("down", &down);
    assert_all_gone(&tb, &three).await;
}

/// Issue 14.4 on moto: a stack of the configured name that meshctl did not create is drift
/// ("not created by meshctl") in `plan`, refused by `up` and `down` (NotOurs: the CLI exits 2;
/// nothing changed), and taken over by `up --adopt` (meshctl's template, parameters and tag); after
/// that it is meshctl's like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_stack_is_refused_and_adopted_on_moto() {
    let _bed = BED.lock().await;
    let tb = testbed();
    let c = config(&tb, &["frontend", "backend"]);
    clean_start(&tb).await;
    let front = c.account("frontend").unwrap();
    let conf = sdk(&front.profile, &tb.region).await;
    let cfn = aws_sdk_cloudformation::Client::new(&conf);
    let theirs = r#"{"Resources": {"TheirVpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.91.0.0/16"}}}}"#;
    cfn.create_stack()
        .stack_name(&front.stack_name)
        .template_body(theirs)
        .tags(aws_sdk_cloudformation::types::Tag::builder().key("team").value("networking").build())
        .send()
        .await
        .unwrap();
    let only = BTreeSet::from([ids::preflight(), ids::stack(&front.name)]);
    let id = ids::stack(&front.name).to_string();

    let (_, plan) = run_only(&c, Mode::Plan, only.clone(), false).await;
    assert_eq!(outcomes(&plan)[&id], Outcome::Checked(Status::Drifted(meshctl::aws::cfn::foreign_reason())));
    for mode in [Mode::Up, Mode::Down] {
        let (session, refused) = run_only(&c, mode, only.clone(), false).await;
        let f = refused.failure(&id).unwrap_or_else(|| panic!("{mode:?} must refuse {id}: {refused:?}"));
        assert_eq!(f.kind, engine::ErrorKind::NotOurs, "{mode:?}: {f:?}");
        assert_eq!(meshctl::commands::exit_code(&refused), meshctl::commands::exit::USAGE, "the CLI exits 2");
        assert!(
            f.message.starts_with(
                "account frontend (profile frontend): stack eks-cluster-frontend-stack: exists but was not created by meshctl"
            ),
            "{}",
            f.message
        );
        assert!(f.message.contains("--adopt"), "{}", f.message);
        assert_eq!(session.aws.writes().calls(), Vec::<String>::new(), "{mode:?} changed something");
    }
    let live = stack(&conf, &front.stack_name).await;
    assert_eq!(
        (live.status.as_str(), live.resources.keys().map(String::as_str).collect::<Vec<_>>()),
        ("CREATE_COMPLETE", vec!["TheirVpc"]),
        "untouched"
    );

    let (_, adopted) = run_only(&c, Mode::Up, only.clone(), true).await;
    assert_ok("up --adopt", &adopted);
    assert_eq!(outcomes(&adopted)[&id], Outcome::Updated(meshctl::aws::cfn::foreign_reason()));
    let hub_id = tb.account(&c.hub.profile);
    let live = stack(&conf, &front.stack_name).await;
    assert_stack(&live, &front.stack_name, &front.name, &stacks::base_spec(&c, front, hub_id).unwrap().params, &[&front.stack_name]);
    assert!(live.resources.contains_key("Cluster") && !live.resources.contains_key("TheirVpc"), "{:?}", live.resources.keys());
    let (_, plan) = run_only(&c, Mode::Plan, only.clone(), false).await;
    assert_eq!(outcomes(&plan)[&id], Outcome::Checked(Status::UpToDate));

    let (_, down) = run_only(&c, Mode::Down, only, false).await;
    assert_ok("down of the adopted stack", &down);
    assert_all_gone(&tb, &c).await;
}

/// The base stacks (and so the clusters in them) have no path between them; only the
/// per-spoke stacks (the hub's for each spoke, each spoke's TGW stack) wait on the hub's base
/// stack. No test bed needed.
#[test]
fn base_stacks_are_independent_and_only_per_spoke_stacks_need_the_hub() {
    let c = Config::default();
    let session = Arc::new(Session::new(c.clone()).unwrap());
    let g = phases::graph(&session).expect("graph builds");
    let bases: Vec<StepId> = c.accounts().map(|a| ids::stack(&a.name)).collect();
    for a in &bases {
        for b in &bases {
            if a != b {
                assert!(!g.connected(a.as_str(), b.as_str()), "{a} and {b} must build at once");
            }
        }
    }
    let hub = ids::stack(&c.hub.name);
    // and the search for orphaned stacks, which `down` runs before deleting the hub's
    let per_spoke: BTreeSet<StepId> =
        c.spokes.iter().flat_map(|s| [ids::hub_peer_stack(&s.name), ids::tgw_stack(&s.name)]).chain([ids::orphan_stacks()]).collect();
    for m in g.metas().filter(|m| m.phase == "stacks") {
        let waits = g.ancestors(m.id.as_str()).contains(&hub);
        assert_eq!(waits, per_spoke.contains(&m.id), "{}: waits on the hub stack = {waits}", m.id);
    }
    for s in &c.spokes {
        let tgw = ids::tgw_stack(&s.name);
        let anc = g.ancestors(tgw.as_str());
        assert!(
            anc.contains(&ids::ram(&s.name)) && anc.contains(&ids::stack(&s.name)) && anc.contains(&ids::hub_peer_stack(&s.name)),
            "{tgw}: {anc:?}"
        );
    }
}

/// Every CloudFormation template meshctl deploys is cfn-lint clean (the test bed's pinned
/// cfn-lint, in the test bed's region): the files in templates/, and the spoke TGW bodies
/// meshctl renders with the peer routes inserted, for the walkthrough and for three spokes.
#[test]
fn templates_are_cfn_lint_clean() {
    let tb = testbed();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(files.len() >= 4, "hub, spoke, hub-peer and spoke-tgw templates in templates/");
    let rendered = common::temp_dir("cfn-lint");
    let three = Config::load(Some(&root.join("examples/three-spokes.toml")), &[], &[]).unwrap();
    for (label, c) in [("walkthrough", Config::default()), ("three-spokes", three)] {
        for s in &c.spokes {
            let f = rendered.path().join(format!("{label}-{}-tgw.yaml", s.name));
            std::fs::write(&f, stacks::spoke_tgw_body(&c, s)).unwrap();
            files.push(f);
        }
    }
    files.sort();
    let mut lint = tb.command("cfn-lint");
    lint.arg("--regions").arg(&tb.region).arg("--").args(&files);
    let out = common::run_with_timeout(&mut lint, std::time::Duration::from_secs(300));
    assert!(
        out.status.success(),
        "cfn-lint {}:\n{}{}",
        files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
