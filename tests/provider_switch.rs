//! Switching `mesh.provider` on a running setup, on the test bed (moto for AWS, the real
//! kube-apiservers and helm for the clusters): the `preflight`, `mesh` and `yelb` phases run
//! with `mesh.provider = "appmesh"`, then again with `"envoy"` (and back), and each time the
//! live state is exactly the selected provider's — the other one's mesh objects, controller,
//! CRDs, App Mesh mesh, RAM share, Cloud Map namespace and IRSA roles gone, the app
//! namespace's inventory listing exactly what is rendered — a second `up` makes no write
//! (resourceVersions and AWS state unchanged, no mutating AWS call), `plan` says up to date,
//! and `down` leaves nothing. Also the App Mesh provider on its own (up, rerun, down), and
//! `down` right after switching (the old mesh is removed too, after the app).
//!
//! Runs only what these phases need: SPIRE, the stacks and the kubeconfig steps are outside
//! the selection and count as done (the engine's selection rule); the EKS clusters the IRSA
//! steps read their OIDC issuer from are created in moto by the test.
//!
//! The appmesh-controller image cannot run here: the fixture chart
//! tests/fixtures/charts/appmesh-controller installs the App Mesh CRDs and a Deployment the
//! kwok node "runs", and a stand-in task plays the controller (and the cloud's load balancer
//! controller): it writes the virtual services' ARNs and the meshes' ARNs into their status,
//! puts App Mesh's finalizer on every App Mesh object while the controller's Deployment
//! exists, and clears it on deletion — only while that Deployment exists, and for a Mesh
//! only once no virtual node, service or router is left in the cluster, like the real one.
//! So an order that removed the controller before the objects would hang on finalizers.
//!
//! Needs a running test bed (`scripts/testbed up`, `source $MESHCTL_TESTBED_DIR/env`).
#![cfg(feature = "appmesh")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use meshctl::config::Config;
use meshctl::engine::{self, Event, EventKind, EventSink, Mode, Outcome, RunOptions, RunSummary, Status};
use meshctl::phases;
use meshctl::session::Session;

/// The tests share the cluster-scoped App Mesh CRDs (a teardown deletes them): one at a time.
static BED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The finalizer App Mesh's controller puts on its objects.
const FINALIZER: &str = "finalizers.appmesh.k8s.aws/aws-resources";
const APPMESH_GROUP: &str = "appmesh.k8s.aws";
const INVENTORY: &str = "meshctl-app-inventory";

/// Prints every event but starts (the outcomes are asserted from the summary).
struct Sink;
impl EventSink for Sink {
    fn event(&self, e: &Event) {
        if !matches!(e.kind, EventKind::Started) {
            eprintln!("  {:<34} {}", e.step, serde_json::to_string(&e.kind).unwrap_or_default());
        }
    }
}

/// While a test runs, new pods go to each cluster's kwok node: the real nodes are cordoned
/// and the kwok node's taint is lifted; both are put back on drop. These tests are about the
/// control plane a provider switch leaves (objects, AWS resources, writes); without SPIRE,
/// outside their selection, the envoy provider's sidecars could never get their SVIDs on a
/// real node, so its Deployments would never be ready. The data plane on real nodes is
/// tests/system.rs's.
struct PodsOnKwok {
    tb: Testbed,
    nodes: Vec<(String, String, bool)>,
}

impl PodsOnKwok {
    fn new(tb: &Testbed) -> PodsOnKwok {
        let mut nodes = Vec::new();
        for ctx in WALKTHROUGH {
            for n in tb.kubectl_json(ctx, &["get", "nodes"])["items"].as_array().into_iter().flatten() {
                let name = n["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let kwok = n["metadata"]["labels"][KWOK_NODE_LABEL.0].as_str() == Some(KWOK_NODE_LABEL.1);
                nodes.push((ctx.to_string(), name, kwok));
            }
        }
        let on = PodsOnKwok { tb: tb.clone(), nodes };
        for (ctx, name, kwok) in &on.nodes {
            if *kwok {
                on.tb.kubectl(ctx, &["taint", "nodes", name, &format!("{}:{}-", KWOK_TAINT.0, KWOK_TAINT.2)]);
            } else {
                on.tb.kubectl(ctx, &["cordon", name]);
            }
        }
        on
    }
}

impl Drop for PodsOnKwok {
    fn drop(&mut self) {
        for (ctx, name, kwok) in &self.nodes {
            let taint = format!("{}={}:{}", KWOK_TAINT.0, KWOK_TAINT.1, KWOK_TAINT.2);
            let args: Vec<&str> = if *kwok { vec!["taint", "nodes", name, &taint, "--overwrite"] } else { vec!["uncordon", name] };
            let out = self.tb.kubectl_output(ctx, &args, None);
            if !out.status.success() {
                eprintln!("{ctx}: kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

/// One test's names: unique, so nothing collides with another run's leftovers.
struct Bed {
    _kwok: PodsOnKwok,
    tb: Testbed,
    _dir: TempDir,
    prefix: String,
    app_ns: String,
    ctl_ns: String,
    mesh: String,
    share: String,
    cloudmap: String,
    appmesh: Config,
    envoy: Config,
}

impl Bed {
    async fn new() -> Bed {
        let tb = testbed();
        let dir = temp_dir("ps-config");
        let prefix = unique_name("ps");
        let app_ns = format!("{prefix}-yelb");
        let ctl_ns = format!("{prefix}-appmesh");
        let mesh = format!("{prefix}-mesh");
        let share = format!("{prefix}-share");
        let cloudmap = format!("{prefix}.local");
        let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts/appmesh-controller");
        let config = |provider: &str| {
            let toml = format!(
                r#"region = "{region}"
kubeconfig = "{kubeconfig}"

[mesh]
provider = "{provider}"
name = "{mesh}"
app_namespace = "{app_ns}"

[mesh.appmesh]
mesh_share = "{share}"
cloudmap_namespace = "{cloudmap}"

[mesh.appmesh.controller]
namespace = "{ctl_ns}"
chart_path = "{chart}"

[hub]
kube_context = "shared"
cluster_name = "{prefix}-shared"

[[spokes]]
name = "frontend"
kube_context = "frontend"
cluster_name = "{prefix}-frontend"

[[spokes]]
name = "backend"
kube_context = "backend"
cluster_name = "{prefix}-backend"
"#,
                region = tb.region,
                kubeconfig = tb.kubeconfig.display(),
                chart = chart.display(),
            );
            let path = dir.path().join(format!("{provider}.toml"));
            std::fs::write(&path, toml).unwrap();
            Config::load(Some(&path), &[], &[]).unwrap_or_else(|e| panic!("config: {e}"))
        };
        let (appmesh, envoy) = (config("appmesh"), config("envoy"));
        let bed = Bed { _kwok: PodsOnKwok::new(&tb), tb, _dir: dir, prefix, app_ns, ctl_ns, mesh, share, cloudmap, appmesh, envoy };
        // The EKS clusters whose OIDC issuers the IRSA roles trust (the stacks phase would make them).
        for a in bed.appmesh.accounts() {
            let eks = aws_sdk_eks::Client::new(&bed.sdk(&a.profile).await);
            eks.create_cluster()
                .name(&a.cluster_name)
                .role_arn(format!("arn:aws:iam::{}:role/{}-cluster-role", bed.tb.account(&a.profile), bed.prefix))
                .resources_vpc_config(aws_sdk_eks::types::VpcConfigRequest::builder().subnet_ids("subnet-00000000").build())
                .send()
                .await
                .unwrap_or_else(|e| panic!("moto EKS CreateCluster {}: {e:?}", a.cluster_name));
        }
        bed
    }

    async fn sdk(&self, profile: &str) -> aws_config::SdkConfig {
        meshctl::aws::sdk_loader().profile_name(profile).region(aws_config::Region::new(self.tb.region.clone())).load().await
    }

    fn contexts(&self) -> Vec<String> {
        self.appmesh.accounts().map(|a| a.kube_context.clone().unwrap()).collect()
    }

    fn spokes(&self) -> Vec<String> {
        self.appmesh.spokes.iter().map(|s| s.name.clone()).collect()
    }

    /// Removes the EKS clusters the test made.
    async fn drop_clusters(&self) {
        for a in self.appmesh.accounts() {
            let eks = aws_sdk_eks::Client::new(&self.sdk(&a.profile).await);
            let _ = eks.delete_cluster().name(&a.cluster_name).send().await;
        }
    }
}

/// `up`/`plan`/`down` of preflight, mesh and yelb with `c`: every other step counts as done.
async fn run(c: &Config, mode: Mode) -> (Arc<Session>, RunSummary) {
    eprintln!("== {mode:?} with mesh.provider = {}", c.mesh.provider);
    let session = Arc::new(Session::new(c.clone()).expect("a valid configuration"));
    let graph = phases::graph(&session).expect("graph builds");
    let mut opts = RunOptions::new(mode);
    opts.selection = Some(graph.ids_in_phases(&["preflight", "mesh", "yelb"]).into_iter().collect());
    let summary = engine::run(&graph, &opts, Arc::new(Sink)).await;
    eprintln!("== {mode:?}: {} mutating AWS calls: {:?}", session.aws.writes().count(), session.aws.writes().calls());
    (session, summary)
}

fn assert_ok(what: &str, s: &RunSummary) {
    assert!(s.ok(), "{what} failed: failed={:#?} skipped={:#?}", s.failed, s.skipped);
}

/// The ids the run covered.
fn ids(s: &RunSummary) -> Vec<String> {
    s.done.iter().map(|(id, _)| id.to_string()).collect()
}

/// `plan` finds every step up to date; a second `up` changes nothing: every step up to
/// date, no mutating AWS call, the same resourceVersions and AWS state.
async fn assert_converged(bed: &Bed, c: &Config, stand_in: &StandIn) {
    stand_in.settle().await;
    let rvs = resource_versions(bed);
    let aws = aws_state(bed).await;
    let (_, plan) = run(c, Mode::Plan).await;
    assert_ok("plan", &plan);
    for (id, o) in &plan.done {
        assert_eq!(o, &Outcome::Checked(Status::UpToDate), "plan: {id}");
    }
    let (session, again) = run(c, Mode::Up).await;
    assert_ok("second up", &again);
    for (id, o) in &again.done {
        assert_eq!(o, &Outcome::UpToDate, "second up: {id}");
    }
    assert_eq!(session.aws.writes().calls(), Vec::<String>::new(), "a second up calls no mutating AWS API");
    stand_in.settle().await;
    assert_eq!(resource_versions(bed), rvs, "a second up writes nothing in the clusters");
    assert_eq!(aws_state(bed).await, aws, "nor in AWS");
}

// ------------------------------------------------------------------------------ live state

/// `context/Kind/name → resourceVersion` of everything meshctl writes in the clusters: the app
/// and controller namespaces, their ConfigMaps, Deployments, Services, ServiceAccounts, the
/// App Mesh objects (while their kinds are served) and the CRDs.
fn resource_versions(bed: &Bed) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for ctx in bed.contexts() {
        let mut lists = Vec::new();
        for ns in [&bed.app_ns, &bed.ctl_ns] {
            lists.push(vec!["-n", ns.as_str(), "get", "configmaps,deployments,services,serviceaccounts"]);
            lists.push(vec!["get", "namespace", ns.as_str()]);
        }
        lists.push(vec!["get", "crd"]);
        if !app_mesh_crds(&bed.tb, &ctx).is_empty() {
            lists.push(vec![
                "-n",
                bed.app_ns.as_str(),
                "get",
                "virtualnodes.appmesh.k8s.aws,virtualservices.appmesh.k8s.aws,virtualrouters.appmesh.k8s.aws",
            ]);
            lists.push(vec!["get", "meshes.appmesh.k8s.aws"]);
        }
        for mut args in lists {
            args.extend(["-o", "json", "--ignore-not-found"]);
            let text = bed.tb.kubectl(&ctx, &args);
            if text.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let items = if v["kind"] == "List" { v["items"].as_array().cloned().unwrap_or_default() } else { vec![v] };
            for o in items {
                let key =
                    format!("{ctx}/{}/{}", o["kind"].as_str().unwrap_or_default(), o["metadata"]["name"].as_str().unwrap_or_default());
                out.insert(key, o["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// The App Mesh CRDs the cluster serves.
fn app_mesh_crds(tb: &Testbed, ctx: &str) -> Vec<String> {
    tb.kubectl(ctx, &["get", "crd", "-o", "name"]).lines().filter(|l| l.ends_with(APPMESH_GROUP)).map(str::to_string).collect()
}

fn namespace_labels(bed: &Bed, ctx: &str) -> BTreeMap<String, String> {
    let ns = bed.tb.kubectl_json(ctx, &["get", "namespace", &bed.app_ns]);
    serde_json::from_value(ns["metadata"]["labels"].clone()).unwrap()
}

/// The inventory's object lines and provider.
fn inventory(bed: &Bed, ctx: &str) -> (Vec<String>, String) {
    let cm = bed.tb.kubectl_json(ctx, &["-n", &bed.app_ns, "get", "configmap", INVENTORY]);
    assert_eq!(cm["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshctl", "{cm}");
    let lines = cm["data"]["objects"].as_str().unwrap().lines().map(str::to_string).collect();
    (lines, cm["data"]["provider"].as_str().unwrap().to_string())
}

fn absent(tb: &Testbed, ctx: &str, args: &[&str]) -> bool {
    let mut a = vec!["get"];
    a.extend(args);
    a.extend(["--ignore-not-found", "-o", "name"]);
    tb.kubectl(ctx, &a).trim().is_empty()
}

fn helm_releases(bed: &Bed, ctx: &str) -> String {
    let mut helm = bed.tb.command("helm");
    helm.args(["--kube-context", ctx, "-n", &bed.ctl_ns, "list", "-q", "--all"]);
    let out = run_with_timeout(&mut helm, Duration::from_secs(60));
    assert_success(&out, "helm list");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What meshctl's App Mesh provider made in AWS, as text: the hub's mesh, its RAM share, the
/// Cloud Map namespace, and per account the controller's IRSA role and the OIDC provider of
/// its cluster.
async fn aws_state(bed: &Bed) -> String {
    let mut out = Vec::new();
    let hub = bed.sdk("shared").await;
    let meshes = aws_sdk_appmesh::Client::new(&hub).list_meshes().send().await.expect("App Mesh ListMeshes");
    for m in meshes.meshes() {
        if m.mesh_name() == bed.mesh {
            out.push(format!("mesh {} owner {} version {}", m.mesh_name(), m.mesh_owner(), m.version()));
        }
    }
    let shares = aws_sdk_ram::Client::new(&hub)
        .get_resource_shares()
        .resource_owner(aws_sdk_ram::types::ResourceOwner::SelfValue)
        .name(&bed.share)
        .send()
        .await
        .expect("RAM GetResourceShares");
    for s in shares.resource_shares() {
        if s.status() != Some(&aws_sdk_ram::types::ResourceShareStatus::Deleted) {
            out.push(format!("share {} {:?} {:?}", s.name().unwrap_or_default(), s.status(), s.last_updated_time()));
        }
    }
    let cloudmap =
        aws_sdk_servicediscovery::Client::new(&bed.sdk("backend").await).list_namespaces().send().await.expect("Cloud Map ListNamespaces");
    for n in cloudmap.namespaces() {
        if n.name() == Some(bed.cloudmap.as_str()) {
            out.push(format!("cloudmap namespace {} {}", n.name().unwrap_or_default(), n.id().unwrap_or_default()));
        }
    }
    for a in bed.appmesh.accounts() {
        let iam = aws_sdk_iam::Client::new(&bed.sdk(&a.profile).await);
        let role = format!("{}-appmesh-controller", a.cluster_name);
        if let Ok(r) = iam.get_role().role_name(&role).send().await {
            let attached = iam.list_attached_role_policies().role_name(&role).send().await.unwrap();
            let policies: Vec<&str> = attached.attached_policies().iter().filter_map(|p| p.policy_arn()).collect();
            out.push(format!(
                "role {} {} {policies:?}",
                role,
                r.role().map(|r| r.assume_role_policy_document().unwrap_or_default()).unwrap_or_default()
            ));
        }
        let issuer = aws_sdk_eks::Client::new(&bed.sdk(&a.profile).await)
            .describe_cluster()
            .name(&a.cluster_name)
            .send()
            .await
            .unwrap()
            .cluster
            .and_then(|c| c.identity)
            .and_then(|i| i.oidc)
            .and_then(|o| o.issuer)
            .unwrap();
        let host = issuer.trim_start_matches("https://");
        for p in iam.list_open_id_connect_providers().send().await.unwrap().open_id_connect_provider_list() {
            if p.arn().unwrap_or_default().ends_with(host) {
                out.push(format!("oidc provider {}", p.arn().unwrap_or_default()));
            }
        }
    }
    out.join("\n")
}

// ------------------------------------------------------------------------------ assertions

/// The App Mesh provider's state: the controller (stand-in chart) with SDS and the IRSA
/// annotation, the Mesh and the labelled namespace in every cluster; the virtual nodes with
/// STRICT mTLS, the frontend's pointing at the backend's virtual service by ARN; the mesh,
/// share, Cloud Map namespace and roles in AWS; the inventory listing the App Mesh objects.
async fn assert_appmesh(bed: &Bed) {
    let c = &bed.appmesh;
    let tb = &bed.tb;
    let hub_id = tb.account("shared");
    for a in c.accounts() {
        let ctx = a.kube_context.as_deref().unwrap();
        let mut helm = tb.command("helm");
        helm.args(["--kube-context", ctx, "-n", &bed.ctl_ns, "get", "values", "appmesh-controller", "-o", "json"]);
        let out = run_with_timeout(&mut helm, Duration::from_secs(60));
        assert_success(&out, "helm get values");
        let values: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(values["sds"]["enabled"], true, "{values}");
        assert_eq!(values["accountId"], tb.account(&a.name));
        assert_eq!(
            values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"],
            format!("arn:aws:iam::{}:role/{}-appmesh-controller", tb.account(&a.name), a.cluster_name)
        );
        let mesh = tb.kubectl_json(ctx, &["get", "meshes.appmesh.k8s.aws", &bed.mesh]);
        assert_eq!(mesh["spec"]["meshOwner"], hub_id, "{mesh}");
        assert_eq!(mesh["spec"]["namespaceSelector"]["matchLabels"]["mesh"], bed.mesh.as_str());
    }
    for spoke in bed.spokes() {
        let labels = namespace_labels(bed, &spoke);
        assert_eq!(labels.get("mesh"), Some(&bed.mesh), "{labels:?}");
        assert_eq!(labels.get("appmesh.k8s.aws/sidecarInjectorWebhook").map(String::as_str), Some("enabled"));
        let (lines, provider) = inventory(bed, &spoke);
        assert_eq!(provider, "appmesh");
        let want = meshctl::phases::yelb::inventory(&Session::new(c.clone()).unwrap(), &spoke, &meshctl::state::Silent).await.unwrap();
        assert_eq!(lines, want.objects.iter().map(|k| k.line()).collect::<Vec<_>>(), "{spoke}: the inventory lists what is rendered");
        assert!(lines.iter().any(|l| l.starts_with("appmesh.k8s.aws/v1beta2 VirtualNode ")), "{lines:?}");
        for l in &lines {
            let parts: Vec<&str> = l.split(' ').collect();
            let kind = match parts[1] {
                "VirtualNode" => "virtualnodes.appmesh.k8s.aws",
                "VirtualService" => "virtualservices.appmesh.k8s.aws",
                "VirtualRouter" => "virtualrouters.appmesh.k8s.aws",
                other => other,
            };
            assert!(!absent(tb, &spoke, &["-n", &bed.app_ns, kind, parts[2]]), "{spoke}: {l} is listed but absent");
        }
    }
    let arn = format!("arn:aws:appmesh:{}:{hub_id}:mesh/{}/virtualService/yelb-appserver", tb.region, bed.mesh);
    let ui = tb.kubectl_json("frontend", &["-n", &bed.app_ns, "get", "virtualnodes.appmesh.k8s.aws", "yelb-ui"]);
    assert_eq!(ui["spec"]["backends"][0]["virtualService"]["virtualServiceARN"], arn.as_str(), "{ui}");
    let app = tb.kubectl_json("backend", &["-n", &bed.app_ns, "get", "virtualnodes.appmesh.k8s.aws", "yelb-appserver"]);
    assert_eq!(app["spec"]["listeners"][0]["tls"]["mode"], "STRICT", "{app}");
    assert!(absent(tb, "backend", &["-n", &bed.app_ns, "configmap", "yelb-appserver-envoy"]));
    let d = tb.kubectl_json("backend", &["-n", &bed.app_ns, "get", "deployment", "yelb-appserver"]);
    let containers: Vec<&str> =
        d["spec"]["template"]["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(containers, ["yelb-appserver"], "App Mesh's webhook injects the sidecar, meshctl does not");
    let aws = aws_state(bed).await;
    assert!(aws.contains(&format!("mesh {} owner {hub_id}", bed.mesh)), "{aws}");
    assert!(aws.contains(&format!("share {}", bed.share)), "{aws}");
    assert!(aws.contains(&format!("cloudmap namespace {}", bed.cloudmap)), "{aws}");
    for a in c.accounts() {
        assert!(aws.contains(&format!("role {}-appmesh-controller", a.cluster_name)), "{aws}");
    }
}

/// Nothing of App Mesh anywhere: no CRD (so no Mesh, virtual node, service or router), no
/// release, no controller namespace; no mesh, share, Cloud Map namespace, role or OIDC
/// provider in AWS.
async fn assert_no_appmesh(bed: &Bed) {
    for ctx in bed.contexts() {
        assert_eq!(app_mesh_crds(&bed.tb, &ctx), Vec::<String>::new(), "{ctx}: App Mesh CRDs left");
        assert!(
            bed.tb.kubectl(&ctx, &["api-resources", "--api-group", APPMESH_GROUP, "-o", "name"]).trim().is_empty(),
            "{ctx}: App Mesh kinds still served"
        );
        assert_eq!(helm_releases(bed, &ctx), "", "{ctx}: the controller's release is left");
        assert!(absent(&bed.tb, &ctx, &["namespace", &bed.ctl_ns]), "{ctx}: {} left", bed.ctl_ns);
    }
    assert_eq!(aws_state(bed).await, "", "App Mesh's AWS resources left");
}

/// The envoy provider's state: the namespace without App Mesh's labels, a bootstrap
/// ConfigMap per service and its Deployment with the `envoy` container, and the inventory
/// listing exactly these objects.
fn assert_envoy(bed: &Bed) {
    let tb = &bed.tb;
    let want: BTreeMap<&str, Vec<&str>> = [
        ("frontend", vec!["apps/v1 Deployment yelb-ui", "v1 ConfigMap yelb-ui-envoy", "v1 Service yelb-ui"]),
        (
            "backend",
            vec![
                "apps/v1 Deployment redis-server",
                "apps/v1 Deployment yelb-appserver",
                "apps/v1 Deployment yelb-db",
                "v1 ConfigMap redis-server-envoy",
                "v1 ConfigMap yelb-appserver-envoy",
                "v1 ConfigMap yelb-db-envoy",
                "v1 Service redis-server",
                "v1 Service yelb-appserver",
                "v1 Service yelb-db",
            ],
        ),
    ]
    .into();
    for spoke in bed.spokes() {
        let labels = namespace_labels(bed, &spoke);
        assert!(
            !labels.contains_key("mesh") && !labels.contains_key("appmesh.k8s.aws/sidecarInjectorWebhook"),
            "{spoke}: App Mesh's labels left: {labels:?}"
        );
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("meshctl"));
        let (lines, provider) = inventory(bed, &spoke);
        assert_eq!(provider, "envoy");
        assert_eq!(lines, want[spoke.as_str()], "{spoke}: the inventory lists exactly the envoy objects");
        for l in &lines {
            let parts: Vec<&str> = l.split(' ').collect();
            let obj = tb.kubectl_json(&spoke, &["-n", &bed.app_ns, "get", &parts[1].to_lowercase(), parts[2]]);
            if parts[1] == "Deployment" {
                let pod = &obj["spec"]["template"]["spec"];
                let names: Vec<&str> = pod["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
                assert_eq!(names, [parts[2], "envoy"], "{spoke}: {}", parts[2]);
                assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["configMap"]["name"] == format!("{}-envoy", parts[2])));
            }
            if parts[1] == "ConfigMap" {
                assert!(obj["data"]["envoy.yaml"].as_str().unwrap().contains("spiffe://"), "{spoke}: {}", parts[2]);
            }
        }
        // What App Mesh rendered and envoy does not is gone: the selector-less Service of the
        // remote backend's name in the frontend.
        if spoke == "frontend" {
            assert!(absent(tb, &spoke, &["-n", &bed.app_ns, "service", "yelb-appserver"]), "frontend: App Mesh's name Service left");
        }
    }
}

// ------------------------------------------------------------------------------ the stand-in

/// The App Mesh controller and the cloud's load balancer controller, played by the test.
struct StandIn {
    stop: Arc<AtomicBool>,
    /// Consecutive passes over every cluster that found nothing to do.
    quiet: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn appmesh_kind(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: APPMESH_GROUP.into(),
        version: "v1beta2".into(),
        api_version: format!("{APPMESH_GROUP}/v1beta2"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

impl StandIn {
    fn start(bed: &Bed) -> StandIn {
        let stop = Arc::new(AtomicBool::new(false));
        let quiet = Arc::new(AtomicU64::new(0));
        let session = Session::new(bed.appmesh.clone()).unwrap();
        let accounts: Vec<String> = bed.appmesh.accounts().map(|a| a.name.clone()).collect();
        let (app_ns, ctl_ns, mesh) = (bed.app_ns.clone(), bed.ctl_ns.clone(), bed.mesh.clone());
        let (region, hub_id) = (bed.tb.region.clone(), bed.tb.account("shared").to_string());
        let (s, q) = (stop.clone(), quiet.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let mut acted = 0;
                for a in &accounts {
                    let Ok(client) = session.kube.client(a).await else { continue };
                    acted += pass(&client, &app_ns, &ctl_ns, &mesh, &region, &hub_id).await;
                }
                if acted == 0 {
                    q.fetch_add(1, Ordering::SeqCst);
                } else {
                    q.store(0, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        StandIn { stop, quiet, task: Some(task) }
    }

    /// Waits until two passes in a row found nothing to do.
    async fn settle(&self) {
        self.quiet.store(0, Ordering::SeqCst);
        for _ in 0..600 {
            if self.quiet.load(Ordering::SeqCst) >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the controller stand-in did not settle");
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// One pass over a cluster; returns how many objects it changed.
async fn pass(client: &kube::Client, app_ns: &str, ctl_ns: &str, mesh: &str, region: &str, hub_id: &str) -> usize {
    let mut acted = 0;
    let controller = Api::<Deployment>::namespaced(client.clone(), ctl_ns).get_opt("appmesh-controller").await.ok().flatten().is_some();
    let pp = PatchParams::default();
    let kinds = [("VirtualNode", "virtualnodes"), ("VirtualService", "virtualservices"), ("VirtualRouter", "virtualrouters")];
    // Mesh members anywhere in the cluster hold the Mesh's finalizer.
    let mut members = 0;
    for (kind, plural) in kinds {
        if let Ok(l) = Api::<DynamicObject>::all_with(client.clone(), &appmesh_kind(kind, plural)).list(&ListParams::default()).await {
            members += l.items.len();
        }
    }
    let mut apis: Vec<(&str, Api<DynamicObject>)> =
        kinds.iter().map(|(k, p)| (*k, Api::<DynamicObject>::namespaced_with(client.clone(), app_ns, &appmesh_kind(k, p)))).collect();
    apis.push(("Mesh", Api::<DynamicObject>::all_with(client.clone(), &appmesh_kind("Mesh", "meshes"))));
    for (kind, api) in apis {
        let Ok(list) = api.list(&ListParams::default()).await else { continue };
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            if kind == "Mesh" && name != mesh {
                continue;
            }
            let finalizers = o.metadata.finalizers.clone().unwrap_or_default();
            let has = finalizers.iter().any(|x| x == FINALIZER);
            if o.metadata.deletion_timestamp.is_some() {
                if has && controller && (kind != "Mesh" || members == 0) {
                    // Only its own: the garbage collector's foregroundDeletion stays.
                    let rest: Vec<&String> = finalizers.iter().filter(|x| *x != FINALIZER).collect();
                    let _ = api.patch(&name, &pp, &Patch::Merge(serde_json::json!({"metadata": {"finalizers": rest}}))).await;
                    acted += 1;
                }
                continue;
            }
            if controller && !has {
                let _ = api.patch(&name, &pp, &Patch::Merge(serde_json::json!({"metadata": {"finalizers": [FINALIZER]}}))).await;
                acted += 1;
            }
            let status = match kind {
                "VirtualService" => {
                    let aws_name = o.data["spec"]["awsName"].as_str().unwrap_or(&name).to_string();
                    Some(("virtualServiceARN", format!("arn:aws:appmesh:{region}:{hub_id}:mesh/{mesh}/virtualService/{aws_name}")))
                }
                "Mesh" => Some(("meshARN", format!("arn:aws:appmesh:{region}:{hub_id}:mesh/{mesh}"))),
                _ => None,
            };
            if let Some((field, arn)) = status {
                if controller && o.data["status"][field].as_str() != Some(arn.as_str()) {
                    let _ = api.patch_status(&name, &pp, &Patch::Merge(serde_json::json!({"status": {field: arn}}))).await;
                    acted += 1;
                }
            }
        }
    }
    // The load balancer controller: every LoadBalancer Service gets a hostname.
    let services: Api<Service> = Api::namespaced(client.clone(), app_ns);
    if let Ok(list) = services.list(&ListParams::default()).await {
        for svc in list.items {
            let lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            let has =
                svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref()).is_some_and(|i| !i.is_empty());
            if lb && !has && svc.metadata.deletion_timestamp.is_none() {
                let name = svc.metadata.name.clone().unwrap_or_default();
                let host = format!("{name}-0123456789.{region}.elb.amazonaws.com");
                let _ = services
                    .patch_status(
                        &name,
                        &pp,
                        &Patch::Merge(serde_json::json!({"status": {"loadBalancer": {"ingress": [{"hostname": host}]}}})),
                    )
                    .await;
                acted += 1;
            }
        }
    }
    acted
}

// ------------------------------------------------------------------------------ tests

/// The App Mesh provider on its own (the walkthrough as written): up, every fact of its
/// state, plan up to date, a second up with zero writes, down leaving nothing, down again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appmesh_up_rerun_down() {
    let _one = BED.lock().await;
    let bed = Bed::new().await;
    let stand_in = StandIn::start(&bed);
    let (_, up) = run(&bed.appmesh, Mode::Up).await;
    assert_ok("up", &up);
    assert!(ids(&up).contains(&"mesh/controller-backend".to_string()) && ids(&up).contains(&"yelb/frontend".to_string()), "{:?}", ids(&up));
    assert!(!ids(&up).iter().any(|i| i.starts_with("mesh/retire-")), "envoy has no control plane to remove");
    stand_in.settle().await;
    assert_appmesh(&bed).await;
    assert_converged(&bed, &bed.appmesh, &stand_in).await;

    // A setup from a meshctl without the inventory gets one, and nothing else is written.
    let rvs = resource_versions(&bed);
    bed.tb.kubectl("backend", &["-n", &bed.app_ns, "delete", "configmap", INVENTORY]);
    let (_, plan) = run(&bed.appmesh, Mode::Plan).await;
    match plan.outcome("yelb/backend") {
        Some(Outcome::Checked(Status::Drifted(why))) => {
            assert_eq!(why, &format!("inventory {}/{INVENTORY}: missing; would list the 13 objects", bed.app_ns))
        }
        other => panic!("yelb/backend without its inventory: {other:?}"),
    }
    let (session, up) = run(&bed.appmesh, Mode::Up).await;
    assert_ok("up (inventory)", &up);
    assert!(session.aws.writes().calls().is_empty());
    let after = resource_versions(&bed);
    let changed: Vec<&String> = after.keys().filter(|k| rvs.get(*k) != after.get(*k)).collect();
    assert_eq!(changed, [&format!("backend/ConfigMap/{INVENTORY}")], "only the inventory is written");
    assert_appmesh(&bed).await;
    assert_converged(&bed, &bed.appmesh, &stand_in).await;

    let (_, down) = run(&bed.appmesh, Mode::Down).await;
    assert_ok("down", &down);
    for spoke in bed.spokes() {
        assert!(absent(&bed.tb, &spoke, &["namespace", &bed.app_ns]), "{spoke}: {} left", bed.app_ns);
    }
    assert_no_appmesh(&bed).await;
    let (_, again) = run(&bed.appmesh, Mode::Down).await;
    assert_ok("down again", &again);
    assert!(again.done.iter().all(|(id, o)| matches!(o, Outcome::AlreadyGone | Outcome::UpToDate) || panic!("{id}: {o:?}")));
    stand_in.stop().await;
    bed.drop_clusters().await;
}

/// `mesh.provider` from appmesh to envoy on a running setup converges: the app runs with
/// meshctl's Envoys, nothing of App Mesh is left in the clusters or in AWS, a second up writes
/// nothing. And back: App Mesh's objects return and the envoy ones go. Then down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_appmesh_to_envoy_and_back_converges() {
    let _one = BED.lock().await;
    let bed = Bed::new().await;
    let stand_in = StandIn::start(&bed);
    let (_, up) = run(&bed.appmesh, Mode::Up).await;
    assert_ok("up (appmesh)", &up);
    stand_in.settle().await;
    assert_appmesh(&bed).await;

    // Plan after switching: the app steps would delete App Mesh's objects, the retired
    // control plane would go.
    let (_, plan) = run(&bed.envoy, Mode::Plan).await;
    assert_ok("plan (switched)", &plan);
    match plan.outcome("yelb/backend") {
        Some(Outcome::Checked(Status::Drifted(why))) => assert!(
            why.contains("would delete VirtualNode redis-server, VirtualNode yelb-appserver, VirtualNode yelb-db, VirtualRouter yelb-appserver-router, VirtualService redis-server")
                && why.contains("(no longer rendered)"),
            "{why}"
        ),
        other => panic!("yelb/backend: {other:?}"),
    }
    assert_eq!(
        plan.outcome("yelb/frontend"),
        Some(&Outcome::Pending(vec![phases::ids::yelb("backend")])),
        "the caller waits for its callee"
    );
    assert_eq!(plan.outcome("mesh/retire-controller-backend"), Some(&Outcome::Checked(Status::Drifted("exists; would remove".into()))));
    assert_eq!(plan.outcome("mesh/retire-accept-frontend"), Some(&Outcome::Checked(Status::UpToDate)), "goes with the share");

    let (_, up) = run(&bed.envoy, Mode::Up).await;
    assert_ok("up (envoy)", &up);
    for id in [
        "yelb/frontend",
        "yelb/backend",
        "mesh/retire-appmesh",
        "mesh/retire-controller-shared",
        "mesh/retire-irsa-frontend",
        "mesh/retire-cloudmap",
        "mesh/retire-share",
    ] {
        assert!(matches!(up.outcome(id), Some(Outcome::Updated(_))), "{id}: {:?}", up.outcome(id));
    }
    stand_in.settle().await;
    assert_envoy(&bed);
    assert_no_appmesh(&bed).await;
    assert_converged(&bed, &bed.envoy, &stand_in).await;

    // And back.
    let (_, back) = run(&bed.appmesh, Mode::Up).await;
    assert_ok("up (back to appmesh)", &back);
    stand_in.settle().await;
    assert_appmesh(&bed).await;
    for spoke in bed.spokes() {
        let (lines, _) = inventory(&bed, &spoke);
        assert!(!lines.iter().any(|l| l.starts_with("v1 ConfigMap ")), "{spoke}: {lines:?}");
        for name in ["yelb-ui-envoy", "yelb-appserver-envoy", "yelb-db-envoy", "redis-server-envoy"] {
            assert!(absent(&bed.tb, &spoke, &["-n", &bed.app_ns, "configmap", name]), "{spoke}: {name} left");
        }
    }
    let svc = bed.tb.kubectl_json("backend", &["-n", &bed.app_ns, "get", "service", "yelb-appserver"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP", "App Mesh's Service again: {svc}");
    assert_converged(&bed, &bed.appmesh, &stand_in).await;

    let (_, down) = run(&bed.appmesh, Mode::Down).await;
    assert_ok("down", &down);
    for spoke in bed.spokes() {
        assert!(absent(&bed.tb, &spoke, &["namespace", &bed.app_ns]));
    }
    assert_no_appmesh(&bed).await;
    stand_in.stop().await;
    bed.drop_clusters().await;
}

/// `down` right after switching the configuration (no `up` in between): the app goes first —
/// App Mesh's objects too, listed in the inventory, while the controller still clears their
/// finalizers — then the old control plane in the order `up` would remove it, then nothing
/// is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_right_after_switching_removes_the_old_mesh_too() {
    let _one = BED.lock().await;
    let bed = Bed::new().await;
    let stand_in = StandIn::start(&bed);
    let (_, up) = run(&bed.appmesh, Mode::Up).await;
    assert_ok("up (appmesh)", &up);
    stand_in.settle().await;
    let (_, down) = run(&bed.envoy, Mode::Down).await;
    assert_ok("down (switched)", &down);
    for id in [
        "yelb/frontend",
        "yelb/backend",
        "mesh/retire-resource-backend",
        "mesh/retire-controller-backend",
        "mesh/retire-appmesh",
        "mesh/retire-share",
    ] {
        assert_eq!(down.outcome(id), Some(&Outcome::Destroyed), "{id}");
    }
    assert_eq!(down.outcome("mesh/retire-accept-frontend"), Some(&Outcome::AlreadyGone), "goes with the share");
    for spoke in bed.spokes() {
        assert!(absent(&bed.tb, &spoke, &["namespace", &bed.app_ns]));
    }
    assert_no_appmesh(&bed).await;
    stand_in.stop().await;
    bed.drop_clusters().await;
}
