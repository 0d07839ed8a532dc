//! The binary as a user meets it: exit codes, offline plan, config show, bad input. None of
//! these contact AWS or Kubernetes. How fast `--help` answers is a figure of `scripts/bench`,
//! not an assertion here: a loaded CI machine is not a bug.

use std::process::{Command, Output};

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env_remove("MESHCTL_CONFIG")
        .env("NO_COLOR", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run meshctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_the_commands() {
    let o = meshctl(&["--help"]);
    assert!(o.status.success());
    for cmd in ["up", "down", "plan", "status", "verify", "stacks", "yelb", "cleanup", "token"] {
        assert!(stdout(&o).contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn plan_offline_prints_the_whole_up_graph() {
    let o = meshctl(&["plan", "--offline"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for id in [
        "preflight/accounts",
        "stacks/shared",
        "stacks/frontend",
        "stacks/backend",
        "stacks/frontend-tgw",
        "ram/frontend",
        "kubeconfig/spire-namespace",
        "kubeconfig/spire-frontend",
        "aws-auth/backend",
        "spire/server",
        "spire/agent-backend",
        "register/node-frontend",
        "register/yelb-ui",
        "yelb/frontend",
    ] {
        assert!(text.contains(id), "{id} missing from:\n{text}");
    }
    // The default provider (meshctl's own Envoy sidecars) has no control plane: App Mesh is
    // gone. A build with the App Mesh provider removes its control plane (a setup switched
    // from appmesh converges): every mesh step is a removal; nothing of it is created.
    assert!(!text.contains("App Mesh") && !text.contains("Cloud Map"), "{text}");
    if cfg!(feature = "appmesh") {
        assert!(text.contains("mesh/retire-controller-backend") && text.contains("mesh/retire-appmesh"), "{text}");
        for line in text.lines().filter(|l| l.contains("mesh/")) {
            assert!(line.starts_with("mesh/retire-"), "only removals in the mesh phase: {line}");
        }
    } else {
        assert!(!text.contains("mesh/"), "{text}");
    }
}

#[test]
fn plan_offline_json_schema() {
    let o = meshctl(&["plan", "--offline", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(v["plan"]["mode"], "up");
    assert_eq!(v["plan"]["offline"], true);
    let steps = v["plan"]["steps"].as_array().unwrap();
    assert!(steps.len() > 20, "{} steps", steps.len());
    for s in steps {
        let obj = s.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).filter(|k| *k != "after").collect();
        keys.sort();
        assert_eq!(keys, ["account", "description", "id", "needs", "phase"]);
        assert!(s["needs"].is_array());
        // Order-only edges are listed when a step has some: the search for orphaned entries
        // (it reads a running server's entries, even one about to change), and the removals
        // of a provider that is no longer selected (only in a build with the App Mesh
        // provider).
        if let Some(after) = obj.get("after") {
            if s["id"] == "register/orphans" {
                assert_eq!(after, &serde_json::json!(["spire/server"]), "{s}");
            } else {
                assert!(cfg!(feature = "appmesh") && s["id"].as_str().unwrap().starts_with("mesh/retire-"), "{s}");
                assert!(after.as_array().unwrap().iter().any(|a| a == "yelb/frontend"), "{s}");
            }
        }
        assert!(s["id"].as_str().unwrap().starts_with(s["phase"].as_str().unwrap()));
    }
    // Steps come after their needs and what they go after.
    let pos = |id: &str| steps.iter().position(|s| s["id"] == id).unwrap();
    for s in steps {
        for n in s["needs"].as_array().unwrap().iter().chain(s["after"].as_array().into_iter().flatten()) {
            assert!(pos(n.as_str().unwrap()) < pos(s["id"].as_str().unwrap()));
        }
    }
    // Only the per-spoke stacks (the hub's for each spoke, each spoke's TGW attachment) and
    // the search for orphaned stacks (deleted before the hub's on `down`) wait on the hub stack.
    let mut on_hub: Vec<&str> = steps
        .iter()
        .filter(|s| s["phase"] == "stacks" && s["needs"].as_array().unwrap().iter().any(|n| n == "stacks/shared"))
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    on_hub.sort();
    assert_eq!(on_hub, ["stacks/backend-tgw", "stacks/frontend-tgw", "stacks/hub-backend", "stacks/hub-frontend", "stacks/orphans"]);
}

#[test]
fn plan_offline_down_reverses_the_graph() {
    let o = meshctl(&["plan", "--offline", "--down", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["plan"]["mode"], "down");
    let ids: Vec<&str> = v["plan"]["steps"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    let pos = |id: &str| ids.iter().position(|i| *i == id).unwrap();
    assert!(pos("preflight/accounts") < pos("yelb/frontend"), "down checks the accounts before it deletes anything");
    assert!(pos("yelb/frontend") < pos("yelb/backend"), "the caller goes before its callee");
    assert!(pos("yelb/backend") < pos("spire/agent-backend"));
    assert!(pos("register/yelb-db") < pos("spire/server"));
    assert!(pos("stacks/frontend-tgw") < pos("stacks/shared"));
    if cfg!(feature = "appmesh") {
        // A retired App Mesh goes after the app and before the cluster access, in the order
        // `up` removes it.
        assert!(pos("yelb/backend") < pos("mesh/retire-resource-backend"));
        assert!(pos("mesh/retire-resource-backend") < pos("mesh/retire-controller-backend"));
        assert!(pos("mesh/retire-controller-backend") < pos("kubeconfig/backend"));
        let step = v["plan"]["steps"].as_array().unwrap().iter().find(|s| s["id"] == "mesh/retire-controller-backend").unwrap();
        let first: Vec<&str> = step["needs"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert!(first.contains(&"mesh/retire-resource-backend") && first.contains(&"yelb/backend"), "destroyed after: {first:?}");
    }
    let text = stdout(&meshctl(&["plan", "--offline", "--down"]));
    assert!(text.starts_with("meshctl down:"), "{text}");
}

#[test]
fn three_spoke_config_builds_a_graph_per_spoke() {
    let o = meshctl(&["--config", "examples/three-spokes.toml", "plan", "--offline"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for id in ["stacks/analytics", "stacks/analytics-tgw", "spire/agent-analytics", "register/report-worker", "yelb/analytics"] {
        assert!(text.contains(id), "{id} missing");
    }
}

#[test]
fn config_show_prints_defaults_as_toml() {
    let o = meshctl(&["config", "show"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let v: toml::Value = toml::from_str(&text).expect("valid TOML");
    assert_eq!(v["region"].as_str(), Some("us-east-2"));
    assert_eq!(v["hub"]["stack_name"].as_str(), Some("eks-cluster-shared-services-stack"));
    assert_eq!(v["spokes"][1]["agent_service_account"].as_str(), Some("spire-agent-back"));
}

#[test]
fn bad_config_exits_2_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshctl.toml");
    std::fs::write(&path, "[[spokes]]\nname = \"frontend\"\nprofile = \"shared\"\n").unwrap();
    let o = meshctl(&["--config", path.to_str().unwrap(), "plan", "--offline"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(":3:") && err.contains("spokes[0].profile"), "{err}");
}

#[test]
fn unknown_phase_and_conflicting_flags_exit_2() {
    let o = meshctl(&["up", "--only", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("stacks") && stderr(&o).contains("aws-auth"), "{}", stderr(&o));
    let o = meshctl(&["up", "--from", "mesh", "--only", "spire"]);
    assert_eq!(o.status.code(), Some(2));
    let o = meshctl(&["spire", "--destroy", "--with-deps"]);
    assert_eq!(o.status.code(), Some(2));
    let o = meshctl(&["--output", "yaml", "status"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn destructive_commands_refuse_without_yes_off_terminal() {
    for args in [&["down"][..], &["cleanup"][..], &["stacks", "--destroy"][..], &["up", "--prune"][..]] {
        let o = meshctl(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("--yes"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn completions_are_printed() {
    let o = meshctl(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("meshctl"));
}

#[test]
fn envoy_settings_that_cannot_work_exit_2_with_the_key() {
    let o = meshctl(&["--set", "mesh.envoy.image=docker.io/envoyproxy/envoy", "plan", "--offline"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("mesh.envoy.image") && stderr(&o).contains("tag"), "{}", stderr(&o));
    let o = meshctl(&["--set", "mesh.envoy.inbound_port=6379", "plan", "--offline"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("services[1].backends"), "{}", stderr(&o));
    let o = meshctl(&["--set", "mesh.provider=istio", "plan", "--offline"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("envoy") && stderr(&o).contains("appmesh"), "the allowed values: {}", stderr(&o));
}

/// The walkthrough as written selects App Mesh: a meshctl built without the provider says
/// how to get it; one built with it plans App Mesh's control plane.
#[test]
fn the_walkthrough_example_selects_app_mesh() {
    let o = meshctl(&["--config", "examples/walkthrough.toml", "plan", "--offline"]);
    if cfg!(feature = "appmesh") {
        assert!(o.status.success(), "{}", stderr(&o));
        for id in ["mesh/appmesh", "mesh/share", "mesh/cloudmap", "mesh/irsa-shared", "mesh/controller-backend", "mesh/resource-frontend"] {
            assert!(stdout(&o).contains(id), "{id} missing");
        }
    } else {
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("--features appmesh") && stderr(&o).contains("2026-09-30"), "{}", stderr(&o));
    }
}

/// One region rule (config::is_region) for the key and for `meshctl token --region`: a bad
/// one exits 2 naming where it was written, before any AWS call.
#[test]
fn a_bad_region_exits_2_whether_key_or_flag() {
    let o = meshctl(&["token", "--cluster", "eks-cluster-frontend", "--region", "Ohio"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--region") && stderr(&o).contains("us-east-2"), "{}", stderr(&o));
    let o = meshctl(&["--set", "region=us-east", "plan", "--offline"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("region: \"us-east\" is not valid: an AWS region such as us-east-2"), "{}", stderr(&o));
}

/// A value of the wrong type names its key, like any other configuration error.
#[test]
fn a_value_of_the_wrong_type_exits_2_with_its_key() {
    let o = meshctl(&["--set", "spire.server_port=70000", "plan", "--offline"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("spire.server_port: ") && stderr(&o).contains("0 to 65535"), "{}", stderr(&o));
}
