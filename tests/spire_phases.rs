//! The SPIRE charts: `helm template` of both embedded charts (default values, and the values
//! meshctl computes for a two- and a three-spoke config) gives well-formed Kubernetes objects,
//! and the server.conf / agent.conf they render pass `spire-server validate` /
//! `spire-agent validate` of the pinned SPIRE 1.13.3. Need the test bed's binaries (helm,
//! spire-server, spire-agent) in $MESHCTL_TESTBED_BIN or ~/.cache/meshctl-testbed/bin
//! (`scripts/testbed setup`). The `spire` and `register` phases run for real in the system test
//! (`tests/system.rs`), with the server and agents as pods on the test bed's nodes.
//!
//! Missing test bed or binaries => panic with what to run; these tests never skip.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use meshctl::config::Config;
use meshctl::spire::charts::{agent_values, server_values, SpokeAccess, AGENT_CHART, SERVER_CHART, TOKEN_DIR};
use serde_json::{json, Value};

const TD: &str = "am-multi-account-mesh";

// ------------------------------------------------------------------------------------------------
// binaries

/// The test bed's binary directory, without needing the test bed to be running.
fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("MESHCTL_TESTBED_BIN").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/meshctl-testbed/bin"),
    };
    for b in ["helm", "spire-server", "spire-agent"] {
        assert!(
            dir.join(b).is_file(),
            "{} missing: run scripts/testbed setup (or set MESHCTL_TESTBED_BIN to the directory holding helm, spire-server and spire-agent 1.13.3)",
            dir.join(b).display()
        );
    }
    dir
}

fn tool(name: &str) -> Command {
    Command::new(bin_dir().join(name))
}

// ------------------------------------------------------------------------------------------------
// helm template + validate

/// `helm template` of an embedded chart with optional values; returns the parsed documents.
fn template(chart: &meshctl::helm::EmbeddedChart, values: Option<&Value>) -> Vec<Value> {
    let dir = chart.materialize().unwrap();
    let mut c = tool("helm");
    c.args(["template", "meshctl-test"]).arg(dir.path().join(chart.name)).args(["--namespace", "spire"]);
    let vf = dir.path().join("values.json");
    if let Some(v) = values {
        std::fs::write(&vf, serde_json::to_vec(v).unwrap()).unwrap();
        c.arg("--values").arg(&vf);
    }
    let out = run_with_timeout(&mut c, Duration::from_secs(60));
    assert_success(&out, &format!("helm template {}", chart.name));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: rendered invalid YAML: {e}\n{text}", chart.name));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

/// Every document is a typed Kubernetes object with a name in namespace spire (or cluster-scoped).
fn assert_well_formed(docs: &[Value]) -> BTreeMap<(String, String), Value> {
    let mut by_kind = BTreeMap::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_else(|| panic!("no kind: {d}")).to_string();
        let name = d["metadata"]["name"].as_str().unwrap_or_else(|| panic!("no name: {d}")).to_string();
        assert!(d["apiVersion"].is_string(), "no apiVersion: {d}");
        let typed = |r: Result<(), serde_json::Error>| r.unwrap_or_else(|e| panic!("{kind} {name} does not deserialize: {e}\n{d:#}"));
        match kind.as_str() {
            "ConfigMap" => typed(serde_json::from_value::<ConfigMap>(d.clone()).map(drop)),
            "ServiceAccount" => typed(serde_json::from_value::<ServiceAccount>(d.clone()).map(drop)),
            "Service" => typed(serde_json::from_value::<Service>(d.clone()).map(drop)),
            "StatefulSet" => typed(serde_json::from_value::<StatefulSet>(d.clone()).map(drop)),
            "DaemonSet" => typed(serde_json::from_value::<DaemonSet>(d.clone()).map(drop)),
            "Role" => typed(serde_json::from_value::<Role>(d.clone()).map(drop)),
            "RoleBinding" => typed(serde_json::from_value::<RoleBinding>(d.clone()).map(drop)),
            "ClusterRole" => typed(serde_json::from_value::<ClusterRole>(d.clone()).map(drop)),
            "ClusterRoleBinding" => typed(serde_json::from_value::<ClusterRoleBinding>(d.clone()).map(drop)),
            other => panic!("unexpected kind {other} in chart output"),
        }
        if !kind.starts_with("Cluster") {
            assert_eq!(d["metadata"]["namespace"], "spire", "{kind} {name} namespace");
        }
        assert!(by_kind.insert((kind.clone(), name.clone()), d.clone()).is_none(), "duplicate {kind} {name}");
    }
    by_kind
}

fn conf_of(objs: &BTreeMap<(String, String), Value>, cm: &str, key: &str) -> String {
    objs.get(&("ConfigMap".to_string(), cm.to_string()))
        .and_then(|c| c["data"][key].as_str())
        .unwrap_or_else(|| panic!("ConfigMap {cm} with key {key} not rendered"))
        .to_string()
}

/// `<binary> validate -config <file>` of the pinned SPIRE: rejects unknown and renamed keys.
fn validate(binary: &str, conf: &str) {
    let dir = temp_dir("spire-validate");
    let f = dir.path().join("spire.conf");
    std::fs::write(&f, conf).unwrap();
    let mut c = tool(binary);
    c.arg("validate").arg("-config").arg(&f);
    let out = run_with_timeout(&mut c, Duration::from_secs(60));
    assert_success(&out, &format!("{binary} validate of\n{conf}"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("is valid"), "{binary} validate said: {said}");
}

/// The values meshctl computes for a configuration, with made-up account ids.
fn values(c: &Config) -> Value {
    let access: Vec<SpokeAccess> = c
        .spokes
        .iter()
        .enumerate()
        .map(|(i, s)| SpokeAccess {
            spoke: s.clone(),
            access_role_arn: meshctl::names::access_role_arn(c, s, &format!("{:012}", 222_222_222_222u64 + i as u64)),
        })
        .collect();
    server_values(c, &access)
}

fn three_spokes() -> Config {
    let dir = temp_dir("spire-cfg");
    let f = dir.path().join("meshctl.toml");
    std::fs::write(&f, "[[spokes]]\nname = \"frontend\"\n[[spokes]]\nname = \"backend\"\n[[spokes]]\nname = \"payments\"\n").unwrap();
    Config::load(Some(&f), &[], &[]).unwrap()
}

#[test]
fn server_chart_renders_valid_manifests_and_config() {
    let default = template(&SERVER_CHART, None);
    let objs = assert_well_formed(&default);
    for (k, n) in [
        ("StatefulSet", "spire-server"),
        ("ConfigMap", "spire-server"),
        ("Service", "spire-server"),
        ("ServiceAccount", "spire-server"),
        ("ConfigMap", "spire-bundle"),
    ] {
        assert!(objs.contains_key(&(k.to_string(), n.to_string())), "{k} {n} not rendered");
    }
    let conf = conf_of(&objs, "spire-server", "server.conf");
    validate("spire-server", &conf);
    assert!(conf.contains("default_x509_svid_ttl") && !conf.contains("default_svid_ttl ="), "{conf}");
    assert!(conf.contains("Notifier \"k8sbundle\""), "{conf}");

    // The kubeconfig ConfigMaps are mounted where kube_config_file points.
    let sts = &objs[&("StatefulSet".to_string(), "spire-server".to_string())];
    let mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].to_string();
    let volumes = sts["spec"]["template"]["spec"]["volumes"].to_string();
    for (role, cm, key) in [("frontend", "front-kubeconfig", "frontend.conf"), ("backend", "back-kubeconfig", "backend.conf")] {
        assert!(mounts.contains(&format!("/etc/kubeconfig/{role}")), "{mounts}");
        assert!(volumes.contains(cm), "{volumes}");
        assert!(conf.contains(&format!("kube_config_file = \"/etc/kubeconfig/{role}/{key}\"")), "{conf}");
    }

    // meshctl's own values, two and three spokes; and the alternative bundle publisher.
    for config in [Config::default(), three_spokes()] {
        let objs = assert_well_formed(&template(&SERVER_CHART, Some(&values(&config))));
        let conf = conf_of(&objs, "spire-server", "server.conf");
        validate("spire-server", &conf);
        for s in &config.spokes {
            assert!(conf.contains(&format!("\"{}\" = {{", s.psat_cluster())), "{} missing:\n{conf}", s.psat_cluster());
            assert!(conf.contains(&format!("[\"spire:{}\"]", s.agent_service_account())), "{conf}");
        }
        assert!(conf.contains(&format!("trust_domain = \"{TD}\"")), "{conf}");
        assert!(conf.contains("default_x509_svid_ttl = \"1h\"") && conf.contains("ca_ttl = \"24h\""), "{conf}");
        assert_token_refresher(&objs, &config);
    }
    let mut v = values(&Config::default());
    v["bundle"]["mechanism"] = json!("bundlepublisher");
    let objs = assert_well_formed(&template(&SERVER_CHART, Some(&v)));
    let conf = conf_of(&objs, "spire-server", "server.conf");
    assert!(conf.contains("BundlePublisher \"k8s_configmap\""), "{conf}");
    validate("spire-server", &conf);
}

#[test]
fn agent_chart_renders_valid_manifests_and_config() {
    let objs = assert_well_formed(&template(&AGENT_CHART, None));
    let conf = conf_of(&objs, "spire-agent", "agent.conf");
    validate("spire-agent", &conf);
    let ds = &objs[&("DaemonSet".to_string(), "spire-agent".to_string())];
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"], "spire-agent-front");
    let vols = spec["volumes"].to_string();
    assert!(vols.contains("\"audience\":\"spire-server\""), "{vols}");
    assert!(vols.contains("/run/spire/sockets"), "{vols}");
    assert!(vols.contains("spire-bundle"), "{vols}");

    let c = Config::default();
    for s in &c.spokes {
        let objs = assert_well_formed(&template(&AGENT_CHART, Some(&agent_values(&c, s, "10.0.1.5"))));
        let conf = conf_of(&objs, "spire-agent", "agent.conf");
        validate("spire-agent", &conf);
        for want in [
            format!("cluster = \"{}\"", s.psat_cluster()),
            "server_address = \"10.0.1.5\"".to_string(),
            "socket_path = \"/run/spire/sockets/agent.sock\"".to_string(),
            "trust_bundle_path = \"/run/spire/bundle/bundle.crt\"".to_string(),
            "default_bundle_name = \"ROOTCA\"".to_string(),
            "WorkloadAttestor \"k8s\"".to_string(),
            "WorkloadAttestor \"unix\"".to_string(),
        ] {
            assert!(conf.contains(&want), "{want} missing:\n{conf}");
        }
        assert!(objs.contains_key(&("ServiceAccount".to_string(), s.agent_service_account().to_string())));
    }

    // spire.agent_health_port moves the health endpoint in agent.conf and the pod's port
    let mut c = Config::default();
    c.spire.agent_health_port = 18080;
    let objs = assert_well_formed(&template(&AGENT_CHART, Some(&agent_values(&c, &c.spokes[0], "10.0.1.5"))));
    let conf = conf_of(&objs, "spire-agent", "agent.conf");
    validate("spire-agent", &conf);
    assert!(conf.contains("bind_port = \"18080\""), "{conf}");
    let ds = &objs[&("DaemonSet".to_string(), "spire-agent".to_string())];
    assert_eq!(ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 18080);
}

/// The server pod gets each spoke's token from the official AWS CLI image (init once, then a
/// refresher), in an in-memory volume the server reads but cannot write; its claim names
/// meshctl's StorageClass (EKS has no default one).
fn assert_token_refresher(objs: &BTreeMap<(String, String), Value>, c: &Config) {
    let sts = &objs[&("StatefulSet".to_string(), "spire-server".to_string())];
    let pod = &sts["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    let refresher = containers.iter().find(|c| c["name"] == "token-refresher").expect("a token-refresher container");
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "token-init");
    for c2 in [refresher, init] {
        assert_eq!(c2["image"], "public.ecr.aws/aws-cli/aws-cli:2.15.62");
        let script = c2["args"][0].as_str().unwrap();
        assert!(
            script.contains("aws eks get-token") && script.contains("--role-arn") && script.contains("--query status.token"),
            "{script}"
        );
        let env = c2["env"].to_string();
        for s in &c.spokes {
            assert!(env.contains(&format!("{}.token|{}|arn:aws:iam::", s.name, s.cluster_name)), "{env}");
        }
    }
    let server = containers.iter().find(|c| c["name"] == "spire-server").unwrap();
    let mount =
        server["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "spoke-tokens").expect("tokens mounted in the server");
    assert_eq!((mount["mountPath"].as_str(), mount["readOnly"].as_bool()), (Some(TOKEN_DIR), Some(true)));
    let vol = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "spoke-tokens").unwrap();
    assert_eq!(vol["emptyDir"]["medium"], "Memory", "tokens are never written to disk");
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"], "meshctl-gp3");
}
