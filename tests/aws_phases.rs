//! The AWS phases (preflight, base stacks) against the test bed's moto: `up`,
//! `plan` (everything up to date), a second `up` with zero mutating AWS calls, then `down`
//! leaving nothing behind in any of the three accounts. See tests/README.md, "AWS phases",
//! for what moto cannot do and where those code paths are tested instead.
//!
//! Needs the test bed's AWS part: `scripts/testbed up` and `source $MESHCTL_TESTBED_DIR/env`.

mod common;

use common::{testbed, Testbed, WALKTHROUGH};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use meshctl::config::Config;
use meshctl::engine::{self, Event, EventKind, EventSink, Mode, Outcome, RunOptions, RunSummary, Status, StepId};
use meshctl::session::Session;
use meshctl::phases;

/// Prints every event, keeps them for assertions.
#[derive(Default)]
struct Sink {
    events: Mutex<Vec<Event>>,
}
impl EventSink for Sink {
    fn event(&self, e: &Event) {
        match &e.kind {
            EventKind::Started => {}
            k => eprintln!("  {:<22} {}", e.step, serde_json::to_string(k).unwrap_or_default()),
        }
        self.events.lock().unwrap().push(e.clone());
    }
}

fn config(tb: &Testbed) -> Config {
    let mut c = Config::default();
    c.region = tb.region.clone();
    for profile in WALKTHROUGH {
        assert!(c.account(profile).is_some_and(|a| a.profile == profile), "default profiles are the test bed's");
    }
    c
}

/// The steps of this issue that moto can run (see tests/README.md for the rest).
fn selection(c: &Config) -> BTreeSet<StepId> {
    let mut s = BTreeSet::from([phases::ids::preflight()]);
    for a in c.accounts() {
        s.insert(phases::ids::stack(&a.name));
    }
    s
}

async fn run(c: &Config, mode: Mode, yes: bool) -> (Arc<Session>, RunSummary, std::time::Duration) {
    eprintln!("== {mode:?}");
    let ctx = Arc::new(Session::new(c.clone()).unwrap());
    let graph = phases::graph(&ctx).expect("graph builds");
    let mut opts = RunOptions::new(mode);
    opts.selection = Some(selection(c));
    opts.yes = yes;
    let t = Instant::now();
    let summary = engine::run(&graph, &opts, Arc::new(Sink::default())).await;
    let took = t.elapsed();
    (ctx, summary, took)
}

async fn sdk(profile: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .profile_name(profile)
        .region(aws_config::Region::new(region.to_string()))
        .load()
        .await
}

fn assert_ok(what: &str, s: &RunSummary) {
    assert!(s.ok(), "{what} failed: failed={:#?} skipped={:#?}", s.failed, s.skipped);
}

async fn assert_live_state(tb: &Testbed, c: &Config) {
    let spoke_ids: BTreeSet<String> = c.spokes.iter().map(|s| tb.account(&s.profile).to_string()).collect();
    for a in c.accounts() {
        let conf = sdk(&a.profile, &tb.region).await;
        let cfn = aws_sdk_cloudformation::Client::new(&conf);
        let st = cfn.describe_stacks().stack_name(&a.stack_name).send().await.expect("stack exists");
        let st = &st.stacks()[0];
        assert_eq!(st.stack_status().map(|s| s.as_str()), Some("CREATE_COMPLETE"), "{}", a.stack_name);
        let tags: Vec<(&str, &str)> = st.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or(""))).collect();
        assert!(tags.contains(&("meshctl:managed-by", "meshctl")), "{tags:?}");
        assert!(tags.contains(&("meshctl:account", a.name.as_str())), "{tags:?}");
        let params: Vec<(&str, &str)> =
            st.parameters().iter().map(|p| (p.parameter_key().unwrap_or(""), p.parameter_value().unwrap_or(""))).collect();
        assert!(params.contains(&("ClusterName", a.cluster_name.as_str())), "{params:?}");
        assert!(params.contains(&("VpcCidr", a.vpc_cidr.as_str())), "{params:?}");

        let res = cfn.list_stack_resources().stack_name(&a.stack_name).send().await.unwrap();
        let logical: BTreeSet<&str> = res.stack_resource_summaries().iter().filter_map(|r| r.logical_resource_id()).collect();
        for want in ["Vpc", "InternetGateway", "NatGateway", "PublicSubnet1", "PublicSubnet3", "PrivateSubnet1", "PrivateSubnet3", "PrivateRouteTable3", "ClusterRole", "ClusterSecurityGroup", "NodeRole", "NodeLaunchTemplate"] {
            assert!(logical.contains(want), "{}: no {want} in {logical:?}", a.stack_name);
        }
        // the VPC and its six subnets, live
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let vpc_id = res.stack_resource_summaries().iter().find(|r| r.logical_resource_id() == Some("Vpc")).unwrap().physical_resource_id().unwrap().to_string();
        let vpcs = ec2.describe_vpcs().vpc_ids(&vpc_id).send().await.unwrap();
        assert_eq!(vpcs.vpcs()[0].cidr_block(), Some(a.vpc_cidr.as_str()));
        let subnets = ec2
            .describe_subnets()
            .filters(aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(&vpc_id).build())
            .send()
            .await
            .unwrap();
        assert_eq!(subnets.subnets().len(), 6, "{}: subnets", a.stack_name);

        let iam = aws_sdk_iam::Client::new(&conf);
        // node role with the name spokes trust
        iam.get_role().role_name(format!("{}-node-role", a.cluster_name)).send().await.expect("node role");
        if a.name == c.hub.name {
            assert!(logical.contains("TransitGateway"), "{logical:?}");
            let tgws = ec2.describe_transit_gateways().send().await.unwrap();
            assert!(
                tgws.transit_gateways().iter().any(|t| t.tags().iter().any(|tag| tag.key() == Some("Name") && tag.value() == Some(c.network.tgw_name.as_str()))),
                "a transit gateway tagged Name={}",
                c.network.tgw_name
            );
            let share_ids: BTreeSet<String> = params.iter().find(|(k, _)| *k == "SpokeAccountIds").unwrap().1.split(',').map(str::to_string).collect();
            assert_eq!(share_ids, spoke_ids, "the TGW share names the spoke accounts");
        } else {
            assert!(logical.contains("AccessRole"), "{logical:?}");
            let role = iam.get_role().role_name(a.access_role_name()).send().await.expect("access role").role.unwrap();
            let doc = role.assume_role_policy_document.unwrap();
            let doc = meshctl::steps::irsa::decode_policy(&doc).expect("trust policy JSON");
            let hub_id = tb.account(&c.hub.profile);
            let st = &doc["Statement"][0];
            assert_eq!(st["Principal"]["AWS"], format!("arn:aws:iam::{hub_id}:root"), "{doc}");
            assert_eq!(st["Condition"]["ArnLike"]["aws:PrincipalArn"], format!("arn:aws:iam::{hub_id}:role/{}-node-role", c.hub.cluster_name), "{doc}");
        }

    }
}

async fn assert_all_gone(tb: &Testbed, c: &Config) {
    for a in c.accounts() {
        let conf = sdk(&a.profile, &tb.region).await;
        let cfn = aws_sdk_cloudformation::Client::new(&conf);
        let live = cfn.describe_stacks().send().await.unwrap();
        for s in live.stacks() {
            let name = s.stack_name().unwrap_or("");
            let gone = s.stack_status().map(|s| s.as_str()) == Some("DELETE_COMPLETE");
            assert!(gone || !name.starts_with(&a.stack_name), "{}: stack {name} is left ({:?})", a.name, s.stack_status());
        }
        let iam = aws_sdk_iam::Client::new(&conf);
        for role in [format!("{}-node-role", a.cluster_name), a.access_role_name().to_string()] {
            if role.is_empty() {
                continue;
            }
            assert!(iam.get_role().role_name(&role).send().await.is_err(), "{}: role {role} is left", a.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_phases_up_plan_rerun_down_against_moto() {
    let tb = testbed();
    let c = config(&tb);

    // Start from nothing, whatever an earlier run left (down of absent things succeeds).
    let (_, pre, _) = run(&c, Mode::Down, true).await;
    assert_ok("initial down", &pre);

    let (ctx, up, up_time) = run(&c, Mode::Up, false).await;
    assert_ok("up", &up);
    for id in selection(&c) {
        assert!(up.outcome(id.as_str()).is_some(), "{id} ran");
    }
    eprintln!("full up: {:.2}s, {} mutating AWS calls", up_time.as_secs_f64(), ctx.aws.writes().count());
    assert!(ctx.aws.writes().count() > 0, "up made changes");
    assert_live_state(&tb, &c).await;

    let (_, plan, _) = run(&c, Mode::Plan, false).await;
    assert_ok("plan", &plan);
    for (id, outcome) in &plan.done {
        assert_eq!(outcome, &Outcome::Checked(Status::UpToDate), "{id} is not up to date after up");
    }

    let (ctx2, rerun, rerun_time) = run(&c, Mode::Up, false).await;
    assert_ok("second up", &rerun);
    eprintln!("no-op up: {:.2}s, {} mutating AWS calls", rerun_time.as_secs_f64(), ctx2.aws.writes().count());
    assert_eq!(ctx2.aws.writes().calls(), Vec::<String>::new(), "the second up changes nothing");
    for (id, outcome) in &rerun.done {
        assert_eq!(outcome, &Outcome::UpToDate, "{id}");
    }

    let (_, down, down_time) = run(&c, Mode::Down, false).await;
    assert_ok("down", &down);
    eprintln!("down: {:.2}s", down_time.as_secs_f64());
    assert_all_gone(&tb, &c).await;

    let (ctx3, down2, _) = run(&c, Mode::Down, false).await;
    assert_ok("second down", &down2);
    assert_eq!(ctx3.aws.writes().count(), 0, "down of nothing deletes nothing: {:?}", ctx3.aws.writes().calls());

    eprintln!("timings: full up {:.2}s, no-op up {:.2}s (scripts/bench reports them as figures)", up_time.as_secs_f64(), rerun_time.as_secs_f64());
}

/// The three base stacks (and so the clusters in them) have no path between them, and only
/// the TGW-attachment stacks wait on the hub's stack. No test bed needed.
#[test]
fn base_stacks_are_independent_and_only_tgw_stacks_need_the_hub() {
    let c = Config::default();
    let ctx = Arc::new(Session::new(c.clone()).unwrap());
    let g = phases::graph(&ctx).expect("graph builds");
    let bases: Vec<StepId> = c.accounts().map(|a| phases::ids::stack(&a.name)).collect();
    for a in &bases {
        for b in &bases {
            if a != b {
                assert!(!g.connected(a.as_str(), b.as_str()), "{a} and {b} must build at once");
            }
        }
    }
    let hub = phases::ids::stack(&c.hub.name);
    for m in g.metas().filter(|m| m.phase == "stacks") {
        let waits = g.ancestors(m.id.as_str()).contains(&hub);
        assert_eq!(waits, m.id.as_str().ends_with("-tgw"), "{}: waits on the hub stack = {waits}", m.id);
    }
    for s in &c.spokes {
        let tgw = phases::ids::tgw_stack(&s.name);
        let anc = g.ancestors(tgw.as_str());
        assert!(anc.contains(&phases::ids::ram(&s.name)) && anc.contains(&phases::ids::stack(&s.name)), "{tgw}: {anc:?}");
    }
}

/// Every CloudFormation template meshctl deploys is cfn-lint clean (the test bed's pinned
/// cfn-lint, in the test bed's region): the files in templates/, and the bodies meshctl
/// renders from them with the peer routes inserted, for the walkthrough and for three spokes.
#[test]
fn templates_are_cfn_lint_clean() {
    let tb = testbed();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(files.len() >= 3, "hub, spoke and spoke-tgw templates in templates/");
    let rendered = common::temp_dir("cfn-lint");
    let three = Config::load(Some(&root.join("examples/three-spokes.toml")), &[], &[]).unwrap();
    for (label, c) in [("walkthrough", Config::default()), ("three-spokes", three)] {
        let mut bodies = vec![("hub".to_string(), phases::stacks::hub_body(&c))];
        for s in &c.spokes {
            bodies.push((format!("{}-tgw", s.name), phases::stacks::spoke_tgw_body(&c, s)));
        }
        for (name, body) in bodies {
            let f = rendered.path().join(format!("{label}-{name}.yaml"));
            std::fs::write(&f, body).unwrap();
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
