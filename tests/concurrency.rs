//! Concurrency under load, on the test bed's moto: the AWS phases (`preflight`, every stack,
//! every `ram/<spoke>`) of the three-spoke test-bed configuration
//! (examples/testbed-three-spokes.toml) run once one step at a time (`--concurrency 1`) and
//! once with 32 steps at a time, with `down` in between. The live state both leave behind is
//! read back through the SDK and compared as data — stacks (names, statuses, parameters, the
//! keys of their Outputs, tags), RAM shares with their principals and resources, the shares
//! each spoke receives, meshctl's IAM roles (trust, inline and attached policies), Transit
//! Gateway attachments, VPCs — with the ids AWS generates (vpc-…, tgw-…, uuids) renamed in
//! order of appearance, so two runs compare equal when they built the same thing wired the
//! same way. After each `up`, a second `up` at the same concurrency makes no mutating call.
//! The two durations are printed, never asserted.
//!
//! Needs the test bed's AWS part: `scripts/testbed up` and `source $MESHCTL_TESTBED_DIR/env`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{testbed, Testbed};
use meshctl::config::Config;
use meshctl::engine::{self, Event, EventKind, EventSink, Mode, Outcome, RunOptions, RunSummary, StepId};
use meshctl::phases::{self, ids};
use meshctl::session::Session;
use meshctl::steps::irsa::decode_policy;

/// Prints what each step did (the outcomes are asserted from the summaries).
struct Sink;
impl EventSink for Sink {
    fn event(&self, e: &Event) {
        if !matches!(e.kind, EventKind::Started | EventKind::Progress(_)) {
            eprintln!("  {:<22} {}", e.step, serde_json::to_string(&e.kind).unwrap_or_default());
        }
    }
}

/// The three-spoke test-bed configuration, in the test bed's region.
fn config(tb: &Testbed) -> Config {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/testbed-three-spokes.toml");
    let c = Config::load(Some(&path), &[], &[format!("region={}", tb.region)]).unwrap();
    let names: Vec<&str> = c.spokes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["frontend", "backend", "analytics"]);
    // the accounts are the test bed's, as common::accounts_toml writes them
    let dir = common::temp_dir("concurrency");
    let accounts_file = dir.path().join("meshctl.toml");
    std::fs::write(&accounts_file, common::accounts_toml(&names)).unwrap();
    let accounts = Config::load(Some(&accounts_file), &[], &[]).unwrap();
    for (a, b) in c.accounts().zip(accounts.accounts()) {
        assert_eq!((&a.name, &a.profile, &a.kube_context), (&b.name, &b.profile, &b.kube_context));
        tb.account(&a.profile); // a test-bed profile
    }
    c
}

/// The AWS part of the graph: preflight, every stack and every share acceptance.
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

async fn run(c: &Config, mode: Mode, concurrency: usize) -> (Arc<Session>, RunSummary, Duration) {
    eprintln!("== {mode:?} --concurrency {concurrency}");
    let session = Arc::new(Session::new(c.clone()).expect("session"));
    let graph = phases::graph(&session).expect("graph builds");
    let mut opts = RunOptions::new(mode);
    opts.selection = Some(selection(c));
    opts.concurrency = concurrency;
    let t = Instant::now();
    let summary = engine::run(&graph, &opts, Arc::new(Sink)).await;
    let took = t.elapsed();
    eprintln!("== {mode:?} --concurrency {concurrency}: {:.2}s, {} mutating AWS calls", took.as_secs_f64(), session.aws.writes().count());
    assert!(summary.ok(), "{mode:?} --concurrency {concurrency}: failed={:#?} skipped={:#?}", summary.failed, summary.skipped);
    (session, summary, took)
}

async fn sdk(profile: &str, region: &str) -> aws_config::SdkConfig {
    meshctl::aws::sdk_loader().profile_name(profile).region(aws_config::Region::new(region.to_string())).load().await
}

fn text(s: Option<&str>) -> Value {
    json!(s.unwrap_or_default())
}

/// Everything of meshctl's in one account, as data (AWS's generated ids still in it).
async fn account_state(conf: &aws_config::SdkConfig) -> Value {
    // stacks: status, parameters, tags, the keys of the Outputs
    let cfn = aws_sdk_cloudformation::Client::new(conf);
    let mut stacks = BTreeMap::new();
    for s in cfn.describe_stacks().send().await.unwrap().stacks() {
        if s.stack_status().map(|s| s.as_str()) == Some("DELETE_COMPLETE") {
            continue;
        }
        let params: BTreeMap<&str, &str> =
            s.parameters().iter().map(|p| (p.parameter_key().unwrap_or_default(), p.parameter_value().unwrap_or_default())).collect();
        let tags: BTreeMap<&str, &str> = s.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
        let outputs: BTreeSet<&str> = s.outputs().iter().filter_map(|o| o.output_key()).collect();
        stacks.insert(
            s.stack_name().unwrap_or_default().to_string(),
            json!({"status": text(s.stack_status().map(|x| x.as_str())), "parameters": params, "tags": tags, "outputs": outputs}),
        );
    }

    // RAM: the shares this account owns (with principals and resources), the ones it receives
    let ram = aws_sdk_ram::Client::new(conf);
    let mut owned = Vec::new();
    for s in ram.get_resource_shares().resource_owner(aws_sdk_ram::types::ResourceOwner::SelfValue).send().await.unwrap().resource_shares()
    {
        if s.status().map(|s| s.as_str()) != Some("ACTIVE") {
            continue;
        }
        let arn = s.resource_share_arn().unwrap_or_default();
        // filtered by share here as well: the test bed's RAM answers every share's principals
        // and resources whatever resourceShareArns asks for
        let principals = ram
            .list_principals()
            .resource_owner(aws_sdk_ram::types::ResourceOwner::SelfValue)
            .resource_share_arns(arn)
            .send()
            .await
            .unwrap();
        let principals: BTreeSet<&str> =
            principals.principals().iter().filter(|p| p.resource_share_arn() == Some(arn)).filter_map(|p| p.id()).collect();
        let resources = ram
            .list_resources()
            .resource_owner(aws_sdk_ram::types::ResourceOwner::SelfValue)
            .resource_share_arns(arn)
            .send()
            .await
            .unwrap();
        let resources: BTreeSet<&str> =
            resources.resources().iter().filter(|r| r.resource_share_arn() == Some(arn)).filter_map(|r| r.arn()).collect();
        let tags: BTreeMap<&str, &str> = s.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
        owned.push(json!({
            "name": text(s.name()),
            "allow_external_principals": s.allow_external_principals(),
            "principals": principals,
            "resources": resources,
            "tags": tags,
        }));
    }
    let received = ram.get_resource_shares().resource_owner(aws_sdk_ram::types::ResourceOwner::OtherAccounts).send().await.unwrap();
    let mut received: Vec<Value> = received
        .resource_shares()
        .iter()
        .filter(|s| s.status().map(|s| s.as_str()) == Some("ACTIVE"))
        .map(|s| json!({"name": text(s.name()), "owner": text(s.owning_account_id())}))
        .collect();

    // IAM: meshctl's roles (the test bed's own and AWS's service roles aside)
    let iam = aws_sdk_iam::Client::new(conf);
    let mut roles = BTreeMap::new();
    for r in iam.list_roles().send().await.unwrap().roles() {
        let name = r.role_name();
        if name == "meshctl-testbed" || name.starts_with("AWSServiceRole") {
            continue;
        }
        let inline = iam.list_role_policies().role_name(name).send().await.unwrap();
        let mut policies = BTreeMap::new();
        for p in inline.policy_names() {
            let doc = iam.get_role_policy().role_name(name).policy_name(p).send().await.unwrap();
            // as JSON where it decodes (moto keeps some documents CloudFormation wrote as text)
            policies.insert(p.clone(), decode_policy(doc.policy_document()).unwrap_or_else(|| json!(doc.policy_document())));
        }
        let attached = iam.list_attached_role_policies().role_name(name).send().await.unwrap();
        let attached: BTreeSet<&str> = attached.attached_policies().iter().filter_map(|p| p.policy_arn()).collect();
        let trust = r.assume_role_policy_document().and_then(decode_policy).unwrap_or_default();
        roles.insert(name.to_string(), json!({"trust": trust, "inline": policies, "attached": attached}));
    }

    // EC2: Transit Gateways, their attachments, VPCs
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let live = |state: Option<&str>| !matches!(state, Some("deleted" | "deleting" | "failed"));
    let mut attachments: Vec<Value> = ec2
        .describe_transit_gateway_attachments()
        .send()
        .await
        .unwrap()
        .transit_gateway_attachments()
        .iter()
        .filter(|a| live(a.state().map(|s| s.as_str())))
        .map(|a| {
            json!({
                "transit_gateway": text(a.transit_gateway_id()),
                "resource_type": text(a.resource_type().map(|t| t.as_str())),
                "resource_owner": text(a.resource_owner_id()),
                "resource": text(a.resource_id()),
                "state": text(a.state().map(|s| s.as_str())),
            })
        })
        .collect();
    let mut tgws: Vec<Value> = ec2
        .describe_transit_gateways()
        .send()
        .await
        .unwrap()
        .transit_gateways()
        .iter()
        .filter(|t| live(t.state().map(|s| s.as_str())))
        .map(|t| {
            let tags: BTreeMap<&str, &str> =
                t.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
            json!({"id": text(t.transit_gateway_id()), "state": text(t.state().map(|s| s.as_str())), "tags": tags})
        })
        .collect();
    let mut vpcs: Vec<Value> = ec2
        .describe_vpcs()
        .send()
        .await
        .unwrap()
        .vpcs()
        .iter()
        .filter(|v| v.is_default() != Some(true))
        .map(|v| json!({"id": text(v.vpc_id()), "cidr": text(v.cidr_block())}))
        .collect();
    for list in [&mut owned, &mut received, &mut attachments, &mut tgws, &mut vpcs] {
        list.sort_by_key(|v| generic(&v.to_string()));
    }
    json!({
        "stacks": stacks,
        "ram_shares_owned": owned,
        "ram_shares_received": received,
        "iam_roles": roles,
        "transit_gateways": tgws,
        "transit_gateway_attachments": attachments,
        "vpcs": vpcs,
    })
}

/// AWS's generated ids: resource ids (`vpc-0a1b…`), uuids (in stack and share ARNs), and the
/// random suffix of names CloudFormation gives resources without one (`<stack>-ClusterRole-
/// 26AMGIJLDSF2`).
fn id_pattern() -> regex::Regex {
    regex::Regex::new(
        r"\b(?:(tgw-attach|tgw-rtb|tgw|vpc|subnet|rtb|sg|igw|nat|eipalloc|eni|lt|acl)-[0-9a-f]{8,17}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b|(-)[A-Z0-9]{12}\b",
    )
    .unwrap()
}

/// The kind of a generated id: its prefix, `uuid`, or `cfn` for a CloudFormation name suffix.
fn kind(c: &regex::Captures) -> String {
    match (c.get(1), c.get(2)) {
        (Some(k), _) => k.as_str().to_string(),
        (None, Some(_)) => "cfn".into(),
        (None, None) => "uuid".into(),
    }
}

/// The text with every generated id replaced by its kind alone (a sort key independent of ids).
fn generic(s: &str) -> String {
    id_pattern().replace_all(s, |c: &regex::Captures| format!("<{}>", kind(c))).into_owned()
}

/// Renames every generated id to `<kind>#<n>`, numbered in order of first appearance in a
/// walk of the (sorted) document: two states built the same way get the same names.
fn rename_ids(v: &Value, seen: &mut BTreeMap<String, String>, counts: &mut BTreeMap<String, usize>) -> Value {
    match v {
        Value::String(s) => Value::String(
            id_pattern()
                .replace_all(s, |c: &regex::Captures| {
                    let id = c.get(0).unwrap().as_str().to_string();
                    let kind = kind(c);
                    seen.entry(id)
                        .or_insert_with(|| {
                            let n = counts.entry(kind.clone()).or_default();
                            *n += 1;
                            format!("<{kind}#{n}>")
                        })
                        .clone()
                })
                .into_owned(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| rename_ids(x, seen, counts)).collect()),
        Value::Object(o) => {
            // keys may hold ids too (rare); values in key order
            Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        (rename_ids(&Value::String(k.clone()), seen, counts).as_str().unwrap().to_string(), rename_ids(x, seen, counts))
                    })
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// Every test-bed account's state (by profile), ids renamed.
async fn state(tb: &Testbed) -> Value {
    let mut all = serde_json::Map::new();
    for (profile, _) in &tb.accounts {
        all.insert(profile.clone(), account_state(&sdk(profile, &tb.region).await).await);
    }
    rename_ids(&Value::Object(all), &mut BTreeMap::new(), &mut BTreeMap::new())
}

/// Nothing of meshctl's anywhere: the state of an account with no stack, share, role,
/// Transit Gateway, attachment or VPC.
fn empty(tb: &Testbed) -> Value {
    let none = json!({
        "stacks": {}, "ram_shares_owned": [], "ram_shares_received": [], "iam_roles": {},
        "transit_gateways": [], "transit_gateway_attachments": [], "vpcs": [],
    });
    Value::Object(tb.accounts.iter().map(|(p, _)| (p.clone(), none.clone())).collect())
}

/// Up, then a second up that changes nothing; the state it left.
async fn up_twice(tb: &Testbed, c: &Config, concurrency: usize) -> (Value, Duration) {
    let (_, up, took) = run(c, Mode::Up, concurrency).await;
    for id in selection(c) {
        assert!(up.outcome(id.as_str()).is_some(), "{id} did not run at --concurrency {concurrency}");
    }
    let after = state(tb).await;
    let (session, rerun, _) = run(c, Mode::Up, concurrency).await;
    assert_eq!(session.aws.writes().calls(), Vec::<String>::new(), "the second up at --concurrency {concurrency} changes nothing");
    for (id, outcome) in &rerun.done {
        assert_eq!(outcome, &Outcome::UpToDate, "{id} at --concurrency {concurrency}");
    }
    (after, took)
}

async fn down(tb: &Testbed, c: &Config, concurrency: usize) {
    run(c, Mode::Down, concurrency).await;
    assert_eq!(state(tb).await, empty(tb), "down at --concurrency {concurrency} left something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_aws_phases_leave_the_same_state_one_step_at_a_time_and_32_at_a_time() {
    let tb = testbed();
    let c = config(&tb);
    down(&tb, &c, 8).await; // whatever an earlier run left

    let (serial, t1) = up_twice(&tb, &c, 1).await;
    // what was built is what the configuration says: every stack, one share per spoke with
    // that spoke's account as its one principal, one attachment per spoke
    for a in c.accounts() {
        let stacks = &serial[a.profile.as_str()]["stacks"];
        assert_eq!(stacks[a.stack_name.as_str()]["status"], "CREATE_COMPLETE", "{}: {stacks}", a.name);
    }
    let hub = &serial[c.hub.profile.as_str()];
    let shares: BTreeMap<&str, Vec<&str>> = hub["ram_shares_owned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tags"]["aws:cloudformation:stack-name"].as_str().unwrap_or_default(),
                s["principals"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect(),
            )
        })
        .collect();
    let want: BTreeMap<String, Vec<&str>> =
        c.spokes.iter().map(|s| (meshctl::names::hub_peer_stack_name(&c.hub, s), vec![tb.account(&s.profile)])).collect();
    assert_eq!(
        shares.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        want,
        "one share per spoke, shared with that spoke's account"
    );
    for s in &c.spokes {
        assert_eq!(
            serial[s.profile.as_str()]["transit_gateway_attachments"].as_array().map(Vec::len),
            Some(1),
            "{}: its attachment",
            s.name
        );
        assert_eq!(
            serial[s.profile.as_str()]["ram_shares_received"].as_array().map(Vec::len),
            Some(1),
            "{}: the share it receives",
            s.name
        );
    }
    down(&tb, &c, 8).await;

    let (parallel, t32) = up_twice(&tb, &c, 32).await;
    eprintln!("== up of the AWS phases: --concurrency 1 took {:.2}s, --concurrency 32 took {:.2}s", t1.as_secs_f64(), t32.as_secs_f64());
    if serial != parallel {
        for (profile, _) in &tb.accounts {
            for key in serial[profile.as_str()].as_object().unwrap().keys() {
                let (a, b) = (&serial[profile.as_str()][key], &parallel[profile.as_str()][key]);
                if a != b {
                    eprintln!("-- {profile} {key}\n   --concurrency 1:  {a}\n   --concurrency 32: {b}");
                }
            }
        }
        panic!("--concurrency 1 and --concurrency 32 left different states (above)");
    }
    down(&tb, &c, 32).await;
}
