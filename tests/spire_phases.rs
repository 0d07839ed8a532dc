//! The SPIRE charts and the `spire` and `register` phases.
//!
//! - Chart tests: `helm template` of both embedded charts (default values, and the values meshctl
//!   computes for a two- and a three-spoke config) gives well-formed Kubernetes objects, and the
//!   server.conf / agent.conf they render pass `spire-server validate` / `spire-agent validate` of
//!   the pinned SPIRE 1.13.3. Need the test bed's binaries (helm, spire-server, spire-agent) in
//!   $MESHCTL_TESTBED_BIN or ~/.cache/meshctl-testbed/bin (`scripts/testbed setup`).
//! - `spire_and_register_phases_on_the_test_bed`: the real steps, through `engine::run`, against
//!   the test bed's API servers (`scripts/testbed up`; `source $STATE/env`). Pods are kwok
//!   pods that run no containers, so the test plays the SPIRE server's part: it runs a real
//!   `spire-server` locally (kwok maps `exec` in the spire-server-0 pod to a local process, so the
//!   configured `spire.server_binary` / `spire.server_socket` point at it), and it writes the
//!   hub's `spire-bundle` ConfigMap the way the k8sbundle notifier would.
//! - `spire_and_register_phases_with_three_spokes_on_the_test_bed`: the same run for
//!   `examples/three-spokes.toml` (spokes frontend, backend and `analytics`, the fourth cluster of
//!   the test bed; the four Yelb services plus `report-worker`). Both share one body, parameterised
//!   by a [`Layout`] whose expected names and entries are written out by hand.
//!
//! Missing test bed or binaries => panic with what to run; these tests never skip.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use meshctl::config::Config;
use meshctl::context::Ctx;
use meshctl::engine::{self, EventSink, Mode, Outcome, RunOptions};
use meshctl::spire::charts::{agent_values, server_values, AGENT_CHART, SERVER_CHART};
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
    for (k, n) in [("StatefulSet", "spire-server"), ("ConfigMap", "spire-server"), ("Service", "spire-server"), ("ServiceAccount", "spire-server"), ("ConfigMap", "spire-bundle")] {
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
        let objs = assert_well_formed(&template(&SERVER_CHART, Some(&server_values(&config))));
        let conf = conf_of(&objs, "spire-server", "server.conf");
        validate("spire-server", &conf);
        for s in &config.spokes {
            assert!(conf.contains(&format!("\"{}\" = {{", s.psat_cluster())), "{} missing:\n{conf}", s.psat_cluster());
            assert!(conf.contains(&format!("[\"spire:{}\"]", s.agent_service_account())), "{conf}");
        }
        assert!(conf.contains(&format!("trust_domain = \"{TD}\"")), "{conf}");
    }
    let mut v = server_values(&Config::default());
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

// ------------------------------------------------------------------------------------------------
// the phases against the test bed

struct Quiet;
impl EventSink for Quiet {
    fn event(&self, _: &engine::Event) {}
}

/// The SPIRE server of the test: the real spire-server 1.13.3 running locally with the
/// server.conf the chart rendered into the hub (read back from the live ConfigMap), so the
/// pod exec of the register steps reaches it through kwok and its k8sbundle notifier publishes
/// the real bundle into the hub's ConfigMap. Killed on drop.
struct LocalServer {
    child: Option<ChildGuard>,
    dir: TempDir,
    socket: PathBuf,
    binary: PathBuf,
    port: u16,
    /// `spire.agent_health_port` of this test's agents: they use the node's network, so the
    /// two tests' agents fit on the one test-bed node only with ports of their own.
    agent_health_port: u16,
}

impl LocalServer {
    /// Paths and ports fixed before the config is written (they flow into the chart values).
    fn prepare() -> LocalServer {
        let dir = temp_dir("spire-srv");
        let socket = dir.path().join("api.sock");
        LocalServer { child: None, socket, binary: bin_dir().join("spire-server"), port: free_port(), agent_health_port: free_port(), dir }
    }

    /// Starts the server with the chart's server.conf, with only what differs outside a pod
    /// rewritten: the data dir, the health port, the mounted kubeconfig paths (-> the test bed's
    /// per-cluster kubeconfigs) and, for the notifier, the hub's kubeconfig instead of
    /// in-cluster credentials.
    fn start(&mut self, tb: &Testbed, rendered: &str, spokes: &[Spoke]) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let kc = |c: &str| tb.dir.join(c).join("kubeconfig").display().to_string();
        let mut conf = rendered
            .replace("\"/run/spire/data", &format!("\"{}", data.display()))
            .replace("bind_port = \"8080\"", &format!("bind_port = \"{}\"", free_port()));
        for s in spokes {
            conf = conf.replace(&format!("/etc/kubeconfig/{}/{}", s.name, s.key), &kc(s.name));
        }
        assert!(!conf.contains("/etc/kubeconfig/"), "a mounted kubeconfig path not mapped to a test-bed cluster:\n{conf}");
        let key = "config_map_key = \"bundle.crt\"";
        assert!(conf.contains(key), "no k8sbundle notifier in:\n{rendered}");
        conf = conf.replace(key, &format!("{key}\n          kube_config_file_path = \"{}\"", kc("shared")));
        assert!(conf.contains(&format!("socket_path = \"{}\"", self.socket.display())), "{conf}");
        assert!(conf.contains(&format!("bind_port = \"{}\"", self.port)), "{conf}");
        let cf = self.dir.path().join("server.conf");
        std::fs::write(&cf, &conf).unwrap();
        let log = self.dir.path().join("server.log");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("run").arg("-config").arg(&cf);
        self.child = Some(spawn_logged(&mut cmd, &log));
        let (binary, socket) = (self.binary.clone(), self.socket.clone());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(&binary).arg("healthcheck").arg("-socketPath").arg(&socket).output().map(|o| o.status.success()).unwrap_or(false);
            if ok {
                break;
            }
            let exited = self.child.as_mut().unwrap().0.try_wait().unwrap().is_some();
            if exited || std::time::Instant::now() > deadline {
                panic!("local spire-server with the chart's config did not become healthy:\n{}\nconfig:\n{conf}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let mut c = Command::new(&self.binary);
        c.args(args).arg("-socketPath").arg(&self.socket);
        let out = run_with_timeout(&mut c, Duration::from_secs(30));
        assert_success(&out, &format!("spire-server {}", args.join(" ")));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every entry: (spiffe id, parent id, selectors) → (entry id, revision).
    fn entries(&self) -> BTreeMap<(String, String, BTreeSet<String>), (String, String)> {
        let v: Value = serde_json::from_str(&self.cli(&["entry", "show", "-output", "json"])).unwrap();
        let id = |i: &Value| format!("spiffe://{}{}", i["trust_domain"].as_str().unwrap(), i["path"].as_str().unwrap());
        let mut out = BTreeMap::new();
        for e in v["entries"].as_array().cloned().unwrap_or_default() {
            let sels: BTreeSet<String> = e["selectors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| format!("{}:{}", s["type"].as_str().unwrap(), s["value"].as_str().unwrap()))
                .collect();
            out.insert((id(&e["spiffe_id"]), id(&e["parent_id"]), sels), (e["id"].as_str().unwrap().to_string(), e["revision_number"].to_string()));
        }
        out
    }
}

/// One spoke as the test expects it, written out by hand (not derived by the code under test):
/// spoke name (= kube context of the test bed), k8s_psat cluster name, agent service account,
/// and the hub ConfigMap (and key) holding its kubeconfig.
struct Spoke {
    name: &'static str,
    cluster: &'static str,
    sa: &'static str,
    configmap: &'static str,
    key: &'static str,
}

/// The walkthrough's own names for its two spokes.
const FRONTEND: Spoke = Spoke { name: "frontend", cluster: "frontend-k8s-cluster", sa: "spire-agent-front", configmap: "front-kubeconfig", key: "frontend.conf" };
const BACKEND: Spoke = Spoke { name: "backend", cluster: "backend-k8s-cluster", sa: "spire-agent-back", configmap: "back-kubeconfig", key: "backend.conf" };
/// Any other spoke: names derived from the spoke name.
const ANALYTICS: Spoke =
    Spoke { name: "analytics", cluster: "analytics-k8s-cluster", sa: "spire-agent-analytics", configmap: "analytics-kubeconfig", key: "analytics.conf" };

/// A workload entry by hand: (SPIFFE path, parent agent's service account, app label, tier label).
type Workload = (&'static str, &'static str, &'static str, &'static str);

/// The `[[services]]` of `examples/walkthrough.toml` (the four Yelb services).
macro_rules! yelb_services {
    () => {
        r#"
[[services]]
name = "yelb-ui"
account = "frontend"
spiffe_path = "frontend"
tier_label = "frontend"
port = 80
backends = ["yelb-appserver"]
load_balancer_port = 80

[[services]]
name = "yelb-appserver"
account = "backend"
spiffe_path = "yelbapp"
tier_label = "middletier"
port = 4567
backends = ["yelb-db", "redis-server"]

[[services]]
name = "yelb-db"
account = "backend"
spiffe_path = "yelbdb"
tier_label = "backenddb"
port = 5432
protocol = "tcp"

[[services]]
name = "redis-server"
account = "backend"
spiffe_path = "redis"
tier_label = "cache"
port = 6379
protocol = "tcp"
"#
    };
}

/// One run of the phases: the spokes, the services (TOML) and the entries they must give.
struct Layout {
    /// Namespace prefix, distinct per layout (the tests run in parallel).
    tag: &'static str,
    spokes: &'static [Spoke],
    services: &'static str,
    workloads: &'static [Workload],
}

/// The walkthrough: two spokes, the design brief's table.
const TWO_SPOKES: Layout = Layout {
    tag: "spire2",
    spokes: &[FRONTEND, BACKEND],
    services: yelb_services!(),
    workloads: &[
        ("frontend", "spire-agent-front", "yelb-ui", "frontend"),
        ("yelbapp", "spire-agent-back", "yelb-appserver", "middletier"),
        ("yelbdb", "spire-agent-back", "yelb-db", "backenddb"),
        ("redis", "spire-agent-back", "redis-server", "cache"),
    ],
};

/// `examples/three-spokes.toml`: the walkthrough plus an `analytics` spoke whose worker calls
/// the appserver.
const THREE_SPOKES: Layout = Layout {
    tag: "spire3",
    spokes: &[FRONTEND, BACKEND, ANALYTICS],
    services: concat!(
        yelb_services!(),
        r#"
[[services]]
name = "report-worker"
account = "analytics"
spiffe_path = "analytics/worker"
tier_label = "batch"
port = 8080
backends = ["yelb-appserver"]
"#
    ),
    workloads: &[
        ("frontend", "spire-agent-front", "yelb-ui", "frontend"),
        ("yelbapp", "spire-agent-back", "yelb-appserver", "middletier"),
        ("yelbdb", "spire-agent-back", "yelb-db", "backenddb"),
        ("redis", "spire-agent-back", "redis-server", "cache"),
        ("analytics/worker", "spire-agent-analytics", "report-worker", "batch"),
    ],
};

/// The entries the server must hold: one node entry per spoke, one workload entry per service.
fn expected_entries(ns: &str, spokes: &[Spoke], workloads: &[Workload]) -> BTreeSet<(String, String, BTreeSet<String>)> {
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
    let agent = |sa: &str| format!("spiffe://{TD}/ns/{ns}/sa/{sa}");
    let mut out = BTreeSet::new();
    for s in spokes {
        out.insert((
            agent(s.sa),
            format!("spiffe://{TD}/spire/server"),
            set(&[format!("k8s_psat:cluster:{}", s.cluster), format!("k8s_psat:agent_ns:{ns}"), format!("k8s_psat:agent_sa:{}", s.sa)]),
        ));
    }
    for &(path, sa, app, tier) in workloads {
        out.insert((
            format!("spiffe://{TD}/{path}"),
            agent(sa),
            set(&[
                "k8s:ns:yelb".to_string(),
                "k8s:sa:default".to_string(),
                format!("k8s:pod-label:app:{app}"),
                format!("k8s:pod-label:tier:{tier}"),
                "k8s:container-name:envoy".to_string(),
            ]),
        ));
    }
    assert_eq!(out.len(), spokes.len() + workloads.len(), "the hand-written table has duplicates");
    out
}

fn config(tb: &Testbed, dir: &Path, ns: &str, server: &LocalServer, layout: &Layout, sets: &[String]) -> Config {
    let f = dir.join("meshctl.toml");
    let spokes: Vec<&str> = layout.spokes.iter().map(|s| s.name).collect();
    let toml = format!(
        r#"kubeconfig = "{kc}"

{accounts}[spire]
namespace = "{ns}"
server_binary = "{bin}"
server_socket = "{sock}"
server_port = {port}
agent_health_port = {health}
{services}"#,
        kc = tb.kubeconfig.display(),
        bin = server.binary.display(),
        sock = server.socket.display(),
        port = server.port,
        health = server.agent_health_port,
        services = layout.services,
        accounts = common::accounts_toml(&spokes),
    );
    std::fs::write(&f, toml).unwrap();
    Config::load(Some(&f), &[], sets).unwrap_or_else(|e| panic!("test config: {e}"))
}

fn run(config: &Config, ids: &[String], mode: Mode) -> engine::Summary {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ctx = Arc::new(Ctx::new(config.clone()));
        let graph = meshctl::phases::graph(&ctx).expect("graph builds");
        let mut opts = RunOptions::new(mode);
        opts.selection = Some(ids.iter().cloned().collect());
        engine::run(&graph, &opts, Arc::new(Quiet)).await
    })
}

fn assert_ok(s: &engine::Summary, what: &str) {
    assert!(s.ok(), "{what}: failed {:#?}, skipped {:#?}", s.failed, s.skipped);
}

fn rv(tb: &Testbed, ctx: &str, ns: &str, kind: &str, name: &str) -> String {
    tb.kubectl(ctx, &["-n", ns, "get", kind, name, "-o", "jsonpath={.metadata.resourceVersion}"])
}

/// Cleans up what the test made, whatever happened: the namespace in every cluster of the test
/// bed, the PV, and the agents' cluster-scoped RBAC (`<ns>-<agent sa>`) in each spoke.
struct Cleanup<'a> {
    tb: &'a Testbed,
    ns: String,
    pv: String,
    spokes: &'a [Spoke],
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for ctx in CLUSTERS {
            let _ = self.tb.kubectl_output(ctx, &["delete", "namespace", &self.ns, "--wait=false"], None);
        }
        let _ = self.tb.kubectl_output("shared", &["delete", "pv", &self.pv, "--wait=false"], None);
        for s in self.spokes {
            let n = format!("{}-{}", self.ns, s.sa);
            let _ = self.tb.kubectl_output(s.name, &["delete", "clusterrole,clusterrolebinding", &n, "--ignore-not-found"], None);
        }
    }
}

#[test]
fn spire_and_register_phases_on_the_test_bed() {
    spire_and_register_phases(&TWO_SPOKES);
}

#[test]
fn spire_and_register_phases_with_three_spokes_on_the_test_bed() {
    spire_and_register_phases(&THREE_SPOKES);
}

/// `spire` and `register` up, a no-op second up, a bundle rotation, a changed selector, and down
/// twice, for the spokes and services of `layout`, in a namespace of its own.
fn spire_and_register_phases(layout: &Layout) {
    let started = std::time::Instant::now();
    let lap = |what: &str| eprintln!("{}: {what} at {:.1}s", layout.tag, started.elapsed().as_secs_f64());
    let tb = testbed();
    let spokes = layout.spokes;
    let mut server = LocalServer::prepare();
    let work = temp_dir("spire-phases");
    // A namespace of our own so parallel tests (and other phases' tests) never collide; the
    // agents' ClusterRoles (`<ns>-<sa>`) and the PV follow from it.
    let ns = unique_name(layout.tag);
    let pv = unique_name(&format!("{}-data", layout.tag));
    let _cleanup = Cleanup { tb: &tb, ns: ns.clone(), pv: pv.clone(), spokes };
    let cfg = config(&tb, work.path(), &ns, &server, layout, &[]);

    // The configuration derives the names the table above spells out.
    let derived: Vec<[&str; 5]> =
        cfg.spokes.iter().map(|s| [s.name.as_str(), s.psat_cluster(), s.agent_service_account(), s.kubeconfig_configmap(), s.kubeconfig_key()]).collect();
    let want: Vec<[&str; 5]> = spokes.iter().map(|s| [s.name, s.cluster, s.sa, s.configmap, s.key]).collect();
    assert_eq!(derived, want, "spoke names derived by the configuration (name, psat cluster, agent SA, kubeconfig ConfigMap, key)");

    // What the kubeconfig phase leaves in the hub: the spokes' kubeconfig ConfigMaps; and the
    // volume the server's claim binds to (the test bed has no storage provisioner).
    tb.kubectl("shared", &["create", "namespace", &ns]);
    for s in spokes {
        tb.kubectl("shared", &["-n", &ns, "create", "configmap", s.configmap, &format!("--from-literal={}=apiVersion: v1", s.key)]);
    }
    let pv_manifest = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": { "name": pv },
        "spec": {
            "capacity": { "storage": "1Gi" }, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
            "hostPath": { "path": work.path().join("pv").display().to_string() },
            "claimRef": { "namespace": ns, "name": "spire-data-spire-server-0" }
        }
    });
    tb.kubectl_stdin("shared", &["apply", "-f", "-"], Some(&pv_manifest.to_string()));

    // Step ids from the configuration's spokes and services.
    use meshctl::phases::ids;
    let server_ids = vec![ids::spire_server()];
    let bundle_ids: Vec<String> = cfg.spokes.iter().map(|s| format!("spire/bundle-{}", s.name)).collect();
    let spoke_ids: Vec<String> = bundle_ids.iter().cloned().chain(cfg.spokes.iter().map(|s| ids::spire_agent(&s.name))).collect();
    let register_ids: Vec<String> =
        cfg.spokes.iter().map(|s| ids::register_node(&s.name)).chain(cfg.services.iter().map(|s| ids::register_service(&s.name))).collect();
    assert_eq!(register_ids.len(), spokes.len() + layout.workloads.len(), "{register_ids:?}");
    let all_ids: Vec<String> = server_ids.iter().chain(&spoke_ids).chain(&register_ids).cloned().collect();

    // ---- spire/server
    let s = run(&cfg, &server_ids, Mode::Up);
    assert_ok(&s, "spire/server up");
    assert_eq!(s.outcome("spire/server"), Some(&Outcome::Created));
    let conf = tb.kubectl("shared", &["-n", &ns, "get", "configmap", "spire-server", "-o", "jsonpath={.data.server\\.conf}"]);
    for s in spokes {
        assert!(conf.contains(&format!("\"{}\" = {{", s.cluster)), "{} not in server.conf:\n{conf}", s.cluster);
        assert!(conf.contains(&format!("service_account_allow_list = [\"{ns}:{}\"]", s.sa)), "{conf}");
        assert!(conf.contains(&format!("kube_config_file = \"/etc/kubeconfig/{}/{}\"", s.name, s.key)), "{conf}");
    }
    assert_eq!(conf.matches("service_account_allow_list").count(), spokes.len(), "one k8s_psat cluster per spoke:\n{conf}");
    assert!(conf.contains(&format!("trust_domain = \"{TD}\"")), "{conf}");
    let sts = tb.kubectl_json("shared", &["-n", &ns, "get", "statefulset", "spire-server"]);
    assert_eq!(sts["status"]["readyReplicas"], 1, "{}", sts["status"]);
    let volumes = sts["spec"]["template"]["spec"]["volumes"].to_string();
    for s in spokes {
        assert!(volumes.contains(&format!("\"name\":\"{}\"", s.configmap)), "ConfigMap {} not mounted: {volumes}", s.configmap);
    }
    let pod_ip = tb.kubectl("shared", &["-n", &ns, "get", "pod", "spire-server-0", "-o", "jsonpath={.status.podIP}"]);
    assert!(!pod_ip.trim().is_empty());

    // The server runs (locally) with the config the chart rendered; its k8sbundle notifier
    // publishes the real bundle into the hub's ConfigMap.
    server.start(&tb, &conf, spokes);
    let bundle = server.cli(&["bundle", "show", "-format", "pem"]);
    assert!(bundle.contains("BEGIN CERTIFICATE"), "{bundle}");
    wait_for("the k8sbundle notifier to publish the bundle into the hub", Duration::from_secs(60), Duration::from_millis(500), || {
        let cm = tb.kubectl_json("shared", &["-n", &ns, "get", "configmap", "spire-bundle"]);
        (cm["data"]["bundle.crt"].as_str().map(str::trim) == Some(bundle.trim())).then_some(())
    });

    lap("server up");
    // ---- bundles and agents
    let s = run(&cfg, &spoke_ids, Mode::Up);
    assert_ok(&s, "spire bundles and agents up");
    for id in &spoke_ids {
        assert_eq!(s.outcome(id), Some(&Outcome::Created), "{id} on the first run");
    }
    let hub_bundle = tb.kubectl_json("shared", &["-n", &ns, "get", "configmap", "spire-bundle"])["data"].clone();
    for s in spokes {
        let spoke = s.name;
        let copy = tb.kubectl_json(spoke, &["-n", &ns, "get", "configmap", "spire-bundle"]);
        assert_eq!(copy["data"], hub_bundle, "bundle in {spoke} differs from the hub's");
        assert_eq!(copy["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshctl");
        let ds = tb.kubectl_json(spoke, &["-n", &ns, "get", "daemonset", "spire-agent"]);
        assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], s.sa, "agent service account in {spoke}");
        let health = &ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"];
        assert_eq!(health.as_u64(), Some(u64::from(cfg.spire.agent_health_port)), "agent health port in {spoke}");
        assert!(ds["status"]["numberReady"].as_i64().unwrap() >= 1, "{spoke} DaemonSet not ready: {}", ds["status"]);
        let agent = tb.kubectl(spoke, &["-n", &ns, "get", "configmap", "spire-agent", "-o", "jsonpath={.data.agent\\.conf}"]);
        assert!(agent.contains(&format!("cluster = \"{}\"", s.cluster)), "{spoke}: {agent}");
        assert!(agent.contains(&format!("server_address = \"{}\"", pod_ip.trim())), "{spoke}: {agent}");
        tb.kubectl(spoke, &["get", "clusterrole,clusterrolebinding", &format!("{ns}-{}", s.sa)]);
    }

    lap("bundles and agents up");
    // ---- register
    assert!(server.entries().is_empty(), "the local server starts without entries");
    let s = run(&cfg, &register_ids, Mode::Up);
    assert_ok(&s, "register up");
    for id in &register_ids {
        assert_eq!(s.outcome(id), Some(&Outcome::Created), "{id} on the first run");
    }
    let live = server.entries();
    let got: BTreeSet<_> = live.keys().cloned().collect();
    assert_eq!(got, expected_entries(&ns, spokes, layout.workloads), "entries after register");

    lap("entries registered");
    // ---- a second run changes nothing: every step up to date, same resourceVersions/entries
    let mut watched = vec![("shared", "configmap", "spire-server"), ("shared", "configmap", "spire-bundle"), ("shared", "statefulset", "spire-server")];
    watched.extend(spokes.iter().map(|s| (s.name, "configmap", "spire-bundle")));
    watched.extend(spokes.iter().map(|s| (s.name, "daemonset", "spire-agent")));
    // Controllers still settle status fields (availability) for a moment after "ready"; only
    // meshctl's own writes may not move resourceVersions, so start from settled objects.
    let workloads = std::iter::once(("shared", "statefulset", "spire-server")).chain(spokes.iter().map(|s| (s.name, "daemonset", "spire-agent")));
    for (ctx, kind, name) in workloads {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let o = tb.kubectl_json(ctx, &["-n", &ns, "get", kind, name]);
            let st = &o["status"];
            let settled = if kind == "statefulset" {
                st["availableReplicas"] == o["spec"]["replicas"] && st["readyReplicas"] == o["spec"]["replicas"]
            } else {
                st["numberAvailable"] == st["desiredNumberScheduled"] && st["updatedNumberScheduled"] == st["desiredNumberScheduled"]
            };
            if settled && st["observedGeneration"] == o["metadata"]["generation"] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "timed out after 60s waiting for {kind} {name} in {ctx} to settle: status {}", o["status"]);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<String> = watched.iter().map(|(c, k, n)| rv(&tb, c, &ns, k, n)).collect();
    let s = run(&cfg, &all_ids, Mode::Up);
    assert_ok(&s, "second up");
    for id in &all_ids {
        assert_eq!(s.outcome(id), Some(&Outcome::UpToDate), "{id} on the second run");
    }
    let after: Vec<String> = watched.iter().map(|(c, k, n)| rv(&tb, c, &ns, k, n)).collect();
    assert_eq!(before, after, "resourceVersions of {watched:?}");
    assert_eq!(server.entries(), live, "entries changed on the second run");

    lap("settled + second up");
    // ---- a changed bundle in the hub is re-copied into every spoke
    let rotated = format!("{bundle}{bundle}");
    let patch = json!({ "data": { "bundle.crt": rotated } }).to_string();
    tb.kubectl("shared", &["-n", &ns, "patch", "configmap", "spire-bundle", "--type", "merge", "-p", &patch]);
    let s = run(&cfg, &bundle_ids, Mode::Up);
    assert_ok(&s, "bundle re-copy");
    for (id, sp) in bundle_ids.iter().zip(spokes) {
        assert!(matches!(s.outcome(id), Some(Outcome::Updated(_))), "{id}: {:?}", s.outcome(id));
        let copy = tb.kubectl_json(sp.name, &["-n", &ns, "get", "configmap", "spire-bundle"]);
        assert_eq!(copy["data"]["bundle.crt"], rotated, "bundle in {}", sp.name);
    }

    // ---- a changed selector updates exactly one entry
    assert_eq!(cfg.services[1].name, "yelb-appserver");
    let changed = config(&tb, work.path(), &ns, &server, layout, &["services.1.tier_label=middletier-v2".to_string()]);
    let s = run(&changed, &register_ids, Mode::Up);
    assert_ok(&s, "register with a changed tier");
    for id in &register_ids {
        let want_updated = id == "register/yelb-appserver";
        assert_eq!(matches!(s.outcome(id), Some(Outcome::Updated(_))), want_updated, "{id}: {:?}", s.outcome(id));
    }
    let now = server.entries();
    let got: BTreeSet<_> = now.keys().cloned().collect();
    let changed_workloads: Vec<Workload> =
        layout.workloads.iter().map(|&(p, sa, app, tier)| (p, sa, app, if app == "yelb-appserver" { "middletier-v2" } else { tier })).collect();
    assert_eq!(got, expected_entries(&ns, spokes, &changed_workloads));
    let ids_before: BTreeSet<&String> = live.values().map(|(id, _)| id).collect();
    let ids_after: BTreeSet<&String> = now.values().map(|(id, _)| id).collect();
    assert_eq!(ids_before, ids_after, "the entry is updated in place, not recreated");

    lap("rotation + changed selector");
    // ---- destroy: entries first, then the releases and copies
    let foreign = server.cli(&["entry", "create", "-spiffeID", &format!("spiffe://{TD}/yelbapp"), "-parentID", &format!("spiffe://{TD}/someone/else"), "-selector", "unix:uid:0", "-output", "json"]);
    assert!(foreign.contains("yelbapp"), "{foreign}");
    let s = run(&changed, &register_ids, Mode::Down);
    assert_ok(&s, "register down");
    for id in &register_ids {
        assert_eq!(s.outcome(id), Some(&Outcome::Destroyed), "{id} on down");
    }
    let left = server.entries();
    assert_eq!(left.len(), 1, "only the entry meshctl did not create is left: {left:?}");
    assert!(left.keys().next().unwrap().1.ends_with("/someone/else"));
    let s = run(&changed, &register_ids, Mode::Down);
    assert_ok(&s, "register down again (absent = success)");

    let s = run(&changed, &server_ids.iter().chain(&spoke_ids).cloned().collect::<Vec<_>>(), Mode::Down);
    assert_ok(&s, "spire down");
    for id in server_ids.iter().chain(&spoke_ids) {
        assert_eq!(s.outcome(id), Some(&Outcome::Destroyed), "{id} on down");
    }
    for sp in spokes {
        wait_for(&format!("the agent pod in {} to be gone", sp.name), Duration::from_secs(60), Duration::from_millis(500), || {
            tb.kubectl(sp.name, &["-n", &ns, "get", "pods", "-o", "name"]).trim().is_empty().then_some(())
        });
    }
    let helm_ls = |ctx: &str| {
        let mut c = tb.command("helm");
        c.args(["list", "--namespace", &ns, "--kube-context", ctx, "--short"]);
        let out = run_with_timeout(&mut c, Duration::from_secs(60));
        assert_success(&out, "helm list");
        String::from_utf8(out.stdout).unwrap()
    };
    for ctx in CLUSTERS {
        assert_eq!(helm_ls(ctx).trim(), "", "releases left in {ctx}");
    }
    for s in spokes {
        let out = tb.kubectl_output(s.name, &["-n", &ns, "get", "configmap", "spire-bundle"], None);
        assert!(!out.status.success(), "spire-bundle still in {}", s.name);
        let out = tb.kubectl_output(s.name, &["get", "clusterrole", &format!("{ns}-{}", s.sa)], None);
        assert!(!out.status.success(), "agent ClusterRole still in {}", s.name);
    }
    let s = run(&changed, &all_ids, Mode::Down);
    assert_ok(&s, "down again (absent = success)");
    for id in &all_ids {
        assert_eq!(s.outcome(id), Some(&Outcome::AlreadyGone), "{id} on the second down");
    }
    lap("down twice");
    eprintln!("{}: {} spokes, {:.1}s", layout.tag, spokes.len(), started.elapsed().as_secs_f64());
}
