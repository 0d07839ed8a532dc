//! `down` never strands what costs money, on the test bed with the meshctl binary:
//!
//! - after an `up` that failed at `spire/server`, `down` finishes (exit 0) and leaves nothing:
//!   steps whose resources never came to exist are done, not failed;
//! - when an in-cluster cleanup cannot run (a spoke's API server unreachable), `down` exits 1,
//!   names what is left and the stacks it therefore kept, with the command to finish; `down
//!   --force` then deletes the stacks anyway.
//!
//! Both use every account of the test bed, so they take turns.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{clean_start, run_with_timeout, temp_dir, testbed, Testbed};
use serde_json::Value;

static BED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn meshctl(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.arg("--config").arg(config).arg("--yes").args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(900))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn summary(out: &Output) -> Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rev()
        .find_map(|v| v.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary:\n{}", text(out)))
}

fn steps(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|f| f["step"].as_str().map(String::from)).collect()
}

fn testbed_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/testbed.toml")
}

/// The stacks left in an account of the test bed's moto.
async fn stacks(tb: &Testbed, profile: &str) -> Vec<String> {
    let conf = meshctl::aws::sdk_loader().profile_name(profile).region(aws_config::Region::new(tb.region.clone())).load().await;
    let cfn = aws_sdk_cloudformation::Client::new(&conf);
    let live = cfn.describe_stacks().send().await.unwrap();
    live.stacks()
        .iter()
        .filter(|s| s.stack_status().map(|s| s.as_str()) != Some("DELETE_COMPLETE"))
        .map(|s| s.stack_name().unwrap_or_default().to_string())
        .collect()
}

async fn all_stacks(tb: &Testbed) -> Vec<String> {
    let mut out = Vec::new();
    for p in common::WALKTHROUGH {
        out.extend(stacks(tb, p).await.into_iter().map(|s| format!("{p}: {s}")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_after_an_up_that_failed_at_the_spire_server_leaves_nothing() {
    let _turn = BED.lock().await;
    let tb = testbed();
    let config = testbed_config();
    clean_start();

    // The server's volume asks for a StorageClass the hub does not have: spire/server fails
    // after the stacks, shares, kubeconfigs and access mappings are in place.
    let up = meshctl(&config, &["--output", "json", "--set", "spire.server.storage_class=no-such-class", "up"]);
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    let s = summary(&up);
    assert_eq!(steps(&s["failed"]), ["spire/server"], "{}", text(&up));
    let skipped = steps(&s["skipped"]);
    assert!(skipped.iter().any(|id| id.starts_with("register/")) && skipped.iter().any(|id| id.starts_with("yelb/")), "{skipped:?}");
    assert!(!all_stacks(&tb).await.is_empty(), "the stacks were created");

    let down = meshctl(&config, &["--output", "json", "down"]);
    let s = summary(&down);
    assert!(down.status.success() && s["ok"] == true, "down after the failed up:\n{}", text(&down));
    assert_eq!(all_stacks(&tb).await, Vec::<String>::new());
    for ctx in common::WALKTHROUGH {
        let ns = tb.kubectl_output(ctx, &["get", "namespace", "spire", "--ignore-not-found", "-o", "name"], None);
        assert!(String::from_utf8_lossy(&ns.stdout).trim().is_empty(), "{ctx}: namespace spire left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_with_an_unreachable_cluster_names_what_is_left_then_force_deletes_the_stacks() {
    let _turn = BED.lock().await;
    let tb = testbed();
    let config = testbed_config();
    clean_start();
    // The AWS side and the access mappings in the clusters.
    let up = meshctl(&config, &["aws-auth", "--with-deps"]);
    assert!(up.status.success(), "up to aws-auth:\n{}", text(&up));

    // The same setup, with the backend cluster's API server unreachable.
    let dir = temp_dir("teardown");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(&tb.kubeconfig, &kubeconfig).unwrap();
    let kc = |args: &[&str]| {
        let mut c = tb.command("kubectl");
        c.arg("--kubeconfig").arg(&kubeconfig).args(["config"]).args(args);
        common::assert_success(&run_with_timeout(&mut c, Duration::from_secs(30)), &format!("kubectl config {args:?}"));
    };
    kc(&["set-cluster", "unreachable", "--server=https://127.0.0.1:9"]);
    kc(&["set-context", "unreachable-backend", "--cluster=unreachable", "--user=backend-admin"]);
    let toml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("kube_context = \"backend\"", "kube_context = \"unreachable-backend\"")
        .replace("region = ", &format!("kubeconfig = \"{}\"\nregion = ", kubeconfig.display()));
    let broken = dir.path().join("meshctl.toml");
    std::fs::write(&broken, toml).unwrap();

    let down = meshctl(&broken, &["down"]);
    let out = text(&down);
    assert_eq!(down.status.code(), Some(1), "{out}");
    assert!(out.contains("left in place") && out.contains("aws-auth/backend"), "names the failed cleanup:\n{out}");
    assert!(out.contains("stacks/backend") && out.contains("NOT deleted"), "names the stack kept:\n{out}");
    assert!(out.contains("meshctl down --force"), "says how to finish:\n{out}");
    let left = stacks(&tb, "backend").await;
    assert!(left.iter().any(|s| s == "eks-cluster-backend-stack"), "the backend's stack is kept: {left:?}");

    let forced = meshctl(&broken, &["down", "--force"]);
    let out = text(&forced);
    assert_eq!(forced.status.code(), Some(1), "the failed cleanup is still reported:\n{out}");
    assert!(out.contains("aws-auth/backend"), "{out}");
    assert_eq!(all_stacks(&tb).await, Vec::<String>::new(), "--force deleted every stack:\n{out}");

    // What the unreachable cluster kept (its aws-auth mapping) goes with a reachable down.
    let finish = meshctl(&config, &["down"]);
    assert!(finish.status.success(), "{}", text(&finish));
}
