//! Inventory and prune, with the `meshctl` binary on the test bed with real nodes: a service,
//! then a spoke with its service, removed from the configuration after an `up` (the
//! three-spoke example; the same without `report-worker`; the walkthrough's two spokes, which
//! drop `analytics` and `report-worker`).
//!
//! 0. Without `report-worker` (its spoke kept): `plan` names its SPIRE entry as orphaned and
//!    nothing else; `up --prune` deletes the entry, and the app step deletes the service's
//!    objects from its cluster (the app inventory: no flag needed); the spoke's agents stay;
//! 1. `plan` and `status` name what meshctl made for the removed spoke as orphaned: its base
//!    and Transit Gateway stacks in its account (found from the tags of the hub's stack for
//!    it), the hub's stack for it, the SPIRE entries of its agents and of its service;
//! 2. `up` without `--prune` keeps them (outcome "kept");
//! 3. `up --prune` deletes them: none of those stacks is left in moto, no entry of those
//!    SPIFFE IDs on the server; the next `plan` shows no orphan and the next `up` changes
//!    nothing;
//! 4. after the three-spoke `up` again, `down` with the two-spoke configuration finds the
//!    third spoke's stacks by their tags and leaves nothing in moto.
//!
//! What the test bed cannot show: deleting a removed spoke's base stack deletes its EKS cluster
//! on AWS; here the cluster's API server is not the stack's, so what ran in it stays until the
//! final three-spoke `down` (tests/README.md).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{clean_start, meshctl, run_ok, summary, testbed, text, Testbed};
use serde_json::Value;

const TD: &str = "am-multi-account-mesh";

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// What one step reported in a run's summary (`{"outcome": ..., "detail": ...}`).
fn outcome(summary: &Value, step: &str) -> Value {
    summary["done"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["step"] == step)
        .map(|d| d["outcome"].clone())
        .unwrap_or_else(|| panic!("no outcome of {step} in {summary}"))
}

/// The stacks of every test bed account, not deleted.
async fn stacks(tb: &Testbed) -> Vec<String> {
    common::aws_leftovers(tb).await.into_iter().filter(|l| l.contains(": stack ")).collect()
}

/// The SPIFFE IDs of the hub server's entries.
fn entry_ids(tb: &Testbed) -> Vec<String> {
    let out = tb.spire_server("shared", &["entry", "show", "-output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!("spiffe://{}{}", e["spiffe_id"]["trust_domain"].as_str().unwrap_or(""), e["spiffe_id"]["path"].as_str().unwrap_or(""))
        })
        .collect()
}

const REMOVED_STACKS: [&str; 3] =
    ["eks-cluster-shared-services-stack-analytics", "eks-cluster-analytics-stack-tgw", "eks-cluster-analytics-stack"];

fn removed_ids() -> [String; 2] {
    [format!("spiffe://{TD}/ns/spire/sa/spire-agent-analytics"), format!("spiffe://{TD}/analytics/worker")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_spoke_and_service_are_orphaned_then_pruned_and_down_finds_them_by_tag() {
    let tb = testbed();
    tb.real_node_clusters();
    let (three, two) = (example("testbed-three-spokes.toml"), example("testbed.toml"));
    clean_start();
    run_ok(&three, &["--yes", "up"]);
    let ids = entry_ids(&tb);
    for id in removed_ids() {
        assert!(ids.contains(&id), "the three-spoke up registered {id}: {ids:?}");
    }

    // 0. a service removed, its spoke kept
    let dir = common::temp_dir("prune");
    let no_worker = dir.path().join("no-report-worker.toml");
    let text3 = std::fs::read_to_string(&three).unwrap();
    let cut = text3.find("[[services]]\nname = \"report-worker\"").expect("report-worker is the last service of the example");
    std::fs::write(&no_worker, &text3[..cut]).unwrap();
    let plan = summary(&meshctl(&no_worker, &["plan"], Duration::from_secs(600)));
    assert_eq!(outcome(&plan, "stacks/orphans")["detail"]["state"], "up-to-date", "{plan}");
    let entries_o = outcome(&plan, "register/orphans");
    assert_eq!(entries_o["detail"]["state"], "orphaned", "{plan}");
    let [agents, worker] = removed_ids();
    let reason = entries_o["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("({worker})")) && !reason.contains(&format!("({agents})")), "only the service's entry: {reason}");
    let pruned = run_ok(&no_worker, &["--yes", "up", "--prune"]);
    assert_eq!(outcome(&pruned, "register/orphans")["outcome"], "pruned", "{pruned}");
    let ids = entry_ids(&tb);
    assert!(!ids.contains(&worker) && ids.contains(&agents), "the service's entry went, its spoke's agents' stayed: {ids:?}");
    let objects = tb.kubectl_json("analytics", &["-n", "yelb", "get", "deployments,services,configmaps"]);
    let names: Vec<&str> = objects["items"].as_array().unwrap().iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert!(!names.iter().any(|n| n.starts_with("report-worker")), "the service's objects went: {names:?}");
    run_ok(&three, &["--yes", "up"]);

    // 1. plan and status name the orphans
    for cmd in ["plan", "status"] {
        let out = meshctl(&two, &[cmd], Duration::from_secs(600));
        assert!(out.status.success(), "{cmd}:\n{}", text(&out));
        let s = summary(&out);
        let stacks_o = outcome(&s, "stacks/orphans");
        assert_eq!(stacks_o["detail"]["state"], "orphaned", "{cmd}: {stacks_o}");
        let reason = stacks_o["detail"]["reason"].as_str().unwrap();
        for name in REMOVED_STACKS {
            assert!(reason.contains(&format!("stack {name} (")), "{cmd} names {name}: {reason}");
        }
        assert!(!reason.contains("stack eks-cluster-frontend-stack ("), "a configured spoke's stack is no orphan: {reason}");
        let entries_o = outcome(&s, "register/orphans");
        assert_eq!(entries_o["detail"]["state"], "orphaned", "{cmd}: {entries_o}");
        let reason = entries_o["detail"]["reason"].as_str().unwrap();
        for id in removed_ids() {
            assert!(reason.contains(&format!("({id})")), "{cmd} names {id}: {reason}");
        }
        assert!(!reason.contains("/yelbapp)"), "a configured service's entry is no orphan: {reason}");
    }

    // 2. up without --prune keeps them
    let up = run_ok(&two, &["--yes", "up"]);
    assert_eq!(outcome(&up, "stacks/orphans")["outcome"], "kept", "{up}");
    assert_eq!(outcome(&up, "register/orphans")["outcome"], "kept", "{up}");
    let left = stacks(&tb).await;
    for name in REMOVED_STACKS {
        assert!(left.iter().any(|l| l.ends_with(&format!("stack {name}"))), "up kept {name}: {left:?}");
    }

    // 3. up --prune deletes them, and only them
    let pruned = run_ok(&two, &["--yes", "up", "--prune"]);
    assert_eq!(outcome(&pruned, "stacks/orphans")["outcome"], "pruned", "{pruned}");
    assert_eq!(outcome(&pruned, "register/orphans")["outcome"], "pruned", "{pruned}");
    let left = stacks(&tb).await;
    for name in REMOVED_STACKS {
        assert!(!left.iter().any(|l| l.ends_with(&format!("stack {name}"))), "prune deleted {name}: {left:?}");
    }
    assert_eq!(left.len(), 7, "the two-spoke mesh's seven stacks stay: {left:?}");
    let ids = entry_ids(&tb);
    for id in removed_ids() {
        assert!(!ids.contains(&id), "prune deleted the entry of {id}: {ids:?}");
    }
    assert!(ids.contains(&format!("spiffe://{TD}/yelbapp")), "a configured entry stays: {ids:?}");
    let plan = summary(&meshctl(&two, &["plan"], Duration::from_secs(600)));
    for step in ["stacks/orphans", "register/orphans"] {
        assert_eq!(outcome(&plan, step)["detail"]["state"], "up-to-date", "{step} after the prune: {plan}");
    }
    let again = run_ok(&two, &["--yes", "up"]);
    let changed: Vec<&Value> = again["done"].as_array().unwrap().iter().filter(|d| d["outcome"]["outcome"] != "up-to-date").collect();
    assert!(changed.is_empty(), "an up after the prune changed: {changed:#?}");

    // 4. down with the two-spoke configuration finds the third spoke's stacks by their tags
    run_ok(&three, &["--yes", "up"]);
    let down = run_ok(&two, &["--yes", "down"]);
    assert_eq!(outcome(&down, "stacks/orphans")["outcome"], "destroyed", "{down}");
    let left = common::aws_leftovers(&tb).await;
    assert!(left.is_empty(), "left in moto after the two-spoke down: {left:#?}");

    // What ran in the removed spoke's cluster stays on the test bed (its API server is not
    // the stack's): the three-spoke down removes it.
    clean_start();
}
