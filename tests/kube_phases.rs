//! The cluster-side phases that need no running pod, against the test bed's real API servers
//! (and moto for AWS): `meshctl token`, kubeconfig, aws-auth. Each test asserts on live state:
//! the phase applies, `plan` then reports up to date, a second run changes nothing
//! (resourceVersions unchanged), and `down` leaves the clusters as the test bed started them.
//! The phases whose pods run (spire, register, yelb) are proven together by the system test
//! (`tests/system.rs`). Needs a running test bed (`scripts/test`, or `scripts/testbed up` and
//! `source $MESHCTL_TESTBED_DIR/env`); without it every test panics saying so.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use meshctl::config::Config;
use meshctl::engine::{self, Event, EventKind, EventSink, Mode, Outcome, RunOptions, RunSummary, Status, StepId};
use meshctl::phases;
use meshctl::session::Session;

#[derive(Default)]
struct Sink {
    events: Mutex<Vec<Event>>,
}
impl EventSink for Sink {
    fn event(&self, e: &Event) {
        if !matches!(e.kind, EventKind::Started) {
            eprintln!("  {:<28} {}", e.step, serde_json::to_string(&e.kind).unwrap_or_default());
        }
        self.events.lock().unwrap().push(e.clone());
    }
}

/// The spokes of a test config: the walkthrough's two, or three (plus `analytics`, the test
/// bed's fourth cluster, with the services of examples/three-spokes.toml).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Spokes {
    Two,
    Three,
}

impl Spokes {
    /// The spoke accounts, each reached through the test-bed context of the same name.
    fn names(self) -> &'static [&'static str] {
        match self {
            Spokes::Two => &["frontend", "backend"],
            Spokes::Three => &["frontend", "backend", "analytics"],
        }
    }
}

/// A config for the test bed: every account through its existing context, unique namespaces
/// so parallel tests (and other phases' tests) never collide.
fn config(tb: &Testbed, spokes: Spokes, extra: &str) -> (Config, TempDir) {
    let dir = temp_dir("kp-config");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut toml = format!(
        r#"region = "{region}"
kubeconfig = "{kubeconfig}"
{extra}

{accounts}"#,
        region = tb.region,
        kubeconfig = tb.kubeconfig.display(),
        accounts = common::accounts_toml(spokes.names()),
    );
    if spokes == Spokes::Three {
        let example = std::fs::read_to_string(root.join("examples/three-spokes.toml")).unwrap();
        let services = &example[example.find("[[services]]").expect("services in the example")..];
        toml.push_str(services);
    }
    let path = dir.path().join("meshctl.toml");
    std::fs::write(&path, toml).unwrap();
    let c = Config::load(Some(&path), &[], &[]).unwrap_or_else(|e| panic!("config: {e}"));
    assert_eq!(c.spokes.len(), spokes.names().len());
    (c, dir)
}

async fn run(c: &Config, mode: Mode, ids: &[StepId]) -> RunSummary {
    run_events(c, mode, ids).await.0
}

/// Runs and also returns the progress messages, per step.
async fn run_events(c: &Config, mode: Mode, ids: &[StepId]) -> (RunSummary, Vec<(String, String)>) {
    eprintln!("== {mode:?} {ids:?}");
    let ctx = Arc::new(Session::new(c.clone()).expect("a valid configuration"));
    let graph = phases::graph(&ctx).expect("graph builds");
    let mut opts = RunOptions::new(mode);
    opts.selection = Some(ids.iter().cloned().collect::<BTreeSet<_>>());
    let sink = Arc::new(Sink::default());
    let summary = engine::run(&graph, &opts, sink.clone()).await;
    let progress = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Progress(m) => Some((e.step.to_string(), m.clone())),
            _ => None,
        })
        .collect();
    (summary, progress)
}

fn assert_ok(what: &str, s: &RunSummary) {
    assert!(s.ok(), "{what} failed: failed={:#?} skipped={:#?}", s.failed, s.skipped);
}

/// `plan` reports every selected step up to date.
async fn assert_planned_up_to_date(c: &Config, ids: &[StepId]) {
    let s = run(c, Mode::Plan, ids).await;
    assert_ok("plan", &s);
    for id in ids {
        assert_eq!(s.outcome(id.as_str()), Some(&Outcome::Checked(Status::UpToDate)), "{id} after up: {:?}", s.done);
    }
}

/// A second `up` finds every step up to date.
async fn assert_rerun_noop(c: &Config, ids: &[StepId]) {
    let s = run(c, Mode::Up, ids).await;
    assert_ok("second up", &s);
    for id in ids {
        assert_eq!(s.outcome(id.as_str()), Some(&Outcome::UpToDate), "{id} on the second run: {:?}", s.done);
    }
}

fn rv(tb: &Testbed, ctx: &str, args: &[&str]) -> String {
    let v = tb.kubectl_json(ctx, args);
    v["metadata"]["resourceVersion"].as_str().unwrap_or_else(|| panic!("{args:?}: {v}")).to_string()
}

fn absent(tb: &Testbed, ctx: &str, args: &[&str]) -> bool {
    let mut a = vec!["get"];
    a.extend(args);
    a.extend(["--ignore-not-found", "-o", "name"]);
    tb.kubectl(ctx, &a).trim().is_empty()
}

// ------------------------------------------------------------------------------ token

/// The token decodes to a presigned GetCallerIdentity URL that moto answers, with the
/// cluster header, as the profile's account.
#[tokio::test]
async fn token_presigned_url_answers_get_caller_identity() {
    let tb = testbed();
    for (profile, account) in &tb.accounts {
        let t = meshctl::aws::token::token("eks-cluster-test", None, Some(profile), &tb.region)
            .await
            .unwrap_or_else(|e| panic!("{profile}: {e}"));
        let url = meshctl::aws::token::url_from_token(&t.token).expect("a k8s-aws-v1 token");
        assert!(url.starts_with(&tb.moto_url), "the profile's endpoint_url is used: {url}");
        assert!(url.contains("X-Amz-Expires=60") && url.contains("x-k8s-aws-id"), "{url}");
        let rest = url.strip_prefix("http://").unwrap();
        let (hostport, path) = rest.split_at(rest.find('/').unwrap());
        let mut s = std::net::TcpStream::connect(hostport).unwrap();
        use std::io::{Read, Write};
        // moto routes a request by the credential scope of its Authorization header and
        // ignores query-string signatures (it sends such a GET to S3): restate the URL's own
        // X-Amz-Credential / SignedHeaders / Signature as that header, nothing else changes.
        let q = |k: &str| {
            url.split(['?', '&'])
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} in {url}"))
                .replace("%2F", "/")
                .replace("%3B", ";")
        };
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}, SignedHeaders={}, Signature={}",
            q("X-Amz-Credential"),
            q("X-Amz-SignedHeaders"),
            q("X-Amz-Signature")
        );
        write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nx-k8s-aws-id: eks-cluster-test\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200"), "{profile}: {body}");
        assert!(body.contains("GetCallerIdentityResponse") && body.contains(&format!("<Account>{account}</Account>")), "{profile}: {body}");
        let exec = meshctl::aws::token::exec_credential(&t);
        assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
        let exp = time::OffsetDateTime::parse(
            exec["status"]["expirationTimestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let ahead = exp - time::OffsetDateTime::now_utc();
        assert!(ahead > time::Duration::minutes(13) && ahead <= time::Duration::minutes(14), "{ahead}");
    }
    // AssumeRole first: the URL is signed with the assumed role's session.
    let frontend = tb.account("frontend");
    let role = format!("arn:aws:iam::{frontend}:role/meshctl-token-test");
    let t = meshctl::aws::token::token("c", Some(&role), Some("shared"), &tb.region).await.expect("assume role through moto");
    assert!(meshctl::aws::token::url_from_token(&t.token).unwrap().contains("X-Amz-Security-Token"));
}

// ------------------------------------------------------------------------------ kubeconfig

/// kube_context accounts: the contexts are checked, never written; the spoke kubeconfig
/// ConfigMaps carry each spoke's server, CA and the token file the SPIRE server's token
/// refresher keeps current — no credential, no exec plugin, no profile.
#[tokio::test]
async fn kubeconfig_phase_writes_spire_configmaps() {
    kubeconfig_spire_configmaps(Spokes::Two).await;
}

/// The same with three spokes: one ConfigMap per spoke, the third one included.
#[tokio::test]
async fn kubeconfig_phase_writes_spire_configmaps_three_spokes() {
    kubeconfig_spire_configmaps(Spokes::Three).await;
}

async fn kubeconfig_spire_configmaps(spokes: Spokes) {
    let tb = testbed();
    let ns = unique_name("kp-spire");
    let (c, _dir) = config(&tb, spokes, &format!("[spire]\nnamespace = \"{ns}\"\n"));
    let before = std::fs::read(&tb.kubeconfig).unwrap();
    let ids: Vec<StepId> = c
        .accounts()
        .map(|a| phases::ids::kubeconfig(&a.name))
        .chain([phases::ids::spire_namespace()])
        .chain(c.spokes.iter().map(|s| phases::ids::spire_kubeconfig(&s.name)))
        .collect();
    assert_ok("up", &run(&c, Mode::Up, &ids).await);
    assert_eq!(std::fs::read(&tb.kubeconfig).unwrap(), before, "kube_context accounts: the kubeconfig is not written");

    let labels = tb.kubectl_json("shared", &["get", "namespace", &ns]);
    assert_eq!(labels["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshctl");
    let kc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&before).unwrap();
    for spoke in &c.spokes {
        let cm = tb.kubectl_json("shared", &["-n", &ns, "get", "configmap", spoke.kubeconfig_configmap()]);
        let text = cm["data"][spoke.kubeconfig_key()].as_str().unwrap_or_else(|| panic!("{cm}"));
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
        let ctx = kc["contexts"].as_sequence().unwrap().iter().find(|x| x["name"].as_str() == Some(&spoke.name)).unwrap();
        let cluster_name = ctx["context"]["cluster"].as_str().unwrap();
        let want = kc["clusters"].as_sequence().unwrap().iter().find(|x| x["name"].as_str() == Some(cluster_name)).unwrap();
        assert_eq!(doc["clusters"][0]["cluster"]["server"], want["cluster"]["server"], "{text}");
        assert!(!doc["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap().is_empty());
        let user = &doc["users"][0]["user"];
        assert_eq!(user["tokenFile"].as_str(), Some(format!("/var/run/meshctl/spoke-tokens/{}.token", spoke.name).as_str()), "{text}");
        assert!(user.get("exec").is_none() && user.get("token").is_none(), "no credential at rest: {text}");
        assert!(!text.contains("profile"), "no profile: {text}");
    }
    let rvs: Vec<String> = c.spokes.iter().map(|s| rv(&tb, "shared", &["-n", &ns, "get", "configmap", s.kubeconfig_configmap()])).collect();
    assert_planned_up_to_date(&c, &ids).await;
    assert_rerun_noop(&c, &ids).await;
    let after: Vec<String> =
        c.spokes.iter().map(|s| rv(&tb, "shared", &["-n", &ns, "get", "configmap", s.kubeconfig_configmap()])).collect();
    assert_eq!(rvs, after, "a second run changes nothing");

    // Drift: an edited ConfigMap is reported and repaired.
    tb.kubectl(
        "shared",
        &[
            "-n",
            &ns,
            "patch",
            "configmap",
            c.spokes[0].kubeconfig_configmap(),
            "--type=merge",
            "-p",
            &format!("{{\"data\":{{\"{}\":\"x\"}}}}", c.spokes[0].kubeconfig_key()),
        ],
    );
    let s = run(&c, Mode::Plan, &ids).await;
    let edited = phases::ids::spire_kubeconfig(&c.spokes[0].name);
    assert!(matches!(s.outcome(edited.as_str()), Some(Outcome::Checked(Status::Drifted(_)))), "{:?}", s.done);
    for other in &c.spokes[1..] {
        let id = phases::ids::spire_kubeconfig(&other.name);
        assert_eq!(s.outcome(id.as_str()), Some(&Outcome::Checked(Status::UpToDate)), "only the edited spoke's step drifts");
    }
    assert_ok("repair", &run(&c, Mode::Up, &ids).await);
    assert_planned_up_to_date(&c, &ids).await;

    assert_ok("down", &run(&c, Mode::Down, &ids).await);
    wait_for("namespace deleted", Duration::from_secs(60), Duration::from_millis(500), || {
        absent(&tb, "shared", &["namespace", &ns]).then_some(())
    });
    assert_eq!(std::fs::read(&tb.kubeconfig).unwrap(), before);
    assert_ok("down again", &run(&c, Mode::Down, &ids).await);
}

/// Without kube_context: the context is merged into a kubeconfig file from EKS
/// DescribeCluster (moto), foreign entries kept, mode 0600, a backup kept; down removes it.
#[tokio::test]
async fn kubeconfig_context_merged_from_eks() {
    let tb = testbed();
    let dir = temp_dir("kp-kubeconfig");
    let file = dir.path().join("config");
    let foreign = "apiVersion: v1\nkind: Config\ncurrent-context: other\nclusters:\n- name: other\n  cluster:\n    server: https://example.invalid\ncontexts:\n- name: other\n  context: {cluster: other, user: other}\nusers:\n- name: other\n  user:\n    token: secret\n";
    std::fs::write(&file, foreign).unwrap();
    let cluster = unique_name("kp-eks");
    let c = Config::load(
        None,
        &[],
        &[format!("kubeconfig={}", file.display()), format!("hub.cluster_name={cluster}"), format!("region={}", tb.region)],
    )
    .unwrap();
    let conf = meshctl::aws::sdk_loader().profile_name("shared").region(aws_config::Region::new(tb.region.clone())).load().await;
    let eks = aws_sdk_eks::Client::new(&conf);
    eks.create_cluster()
        .name(&cluster)
        .role_arn(format!("arn:aws:iam::{}:role/kp-cluster-role", tb.account("shared")))
        .resources_vpc_config(aws_sdk_eks::types::VpcConfigRequest::builder().subnet_ids("subnet-00000000").build())
        .send()
        .await
        .expect("moto EKS CreateCluster");
    let described = eks.describe_cluster().name(&cluster).send().await.unwrap().cluster.unwrap();
    let ids = vec![phases::ids::kubeconfig("shared")];
    assert_ok("up", &run(&c, Mode::Up, &ids).await);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let entry = |list: &str| {
        doc[list]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|x| x["name"].as_str() == Some(&cluster))
            .cloned()
            .unwrap_or_else(|| panic!("{list}: {doc:?}"))
    };
    assert_eq!(entry("clusters")["cluster"]["server"].as_str(), described.endpoint.as_deref());
    let exec = entry("users")["user"]["exec"].clone();
    assert_eq!(exec["command"].as_str(), Some("meshctl"));
    let args: Vec<&str> = exec["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["token", "--cluster", cluster.as_str(), "--profile", "shared", "--region", tb.region.as_str()]);
    assert_eq!(doc["current-context"].as_str(), Some("other"), "current-context kept");
    let foreign_doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(foreign).unwrap();
    for list in ["clusters", "users", "contexts"] {
        assert!(doc[list].as_sequence().unwrap().contains(&foreign_doc[list][0]), "{list} kept the foreign entry");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(dir.path().join("config.bak")).unwrap(), foreign);
    let written = std::fs::read(&file).unwrap();
    assert_planned_up_to_date(&c, &ids).await;
    assert_rerun_noop(&c, &ids).await;
    assert_eq!(std::fs::read(&file).unwrap(), written, "a second run does not rewrite the file");
    assert_ok("down", &run(&c, Mode::Down, &ids).await);
    let after: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(after, foreign_doc, "down removes exactly our entries");
    let _ = eks.delete_cluster().name(&cluster).send().await;
}

// ------------------------------------------------------------------------------ aws-auth

/// A wait that times out names why the pods are not ready: a pod no node can take is
/// reported with the reason the real scheduler gave, found through the workload's selector.
#[tokio::test]
async fn pod_problems_name_the_scheduler_reason() {
    let tb = testbed();
    let (c, _dir) = config(&tb, Spokes::Two, "");
    let ns = tb.create_namespace("frontend", "podprob");
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stuck-0\n  namespace: {ns}\n  labels: {{app: stuck}}\n\
         spec:\n  nodeSelector: {{meshctl-test/no-such-node: \"true\"}}\n  containers:\n  - name: app\n    image: registry.invalid/app:1\n"
    );
    tb.kubectl_stdin("frontend", &["apply", "-f", "-"], Some(&pod));
    let client = Session::new(c).expect("a valid configuration").kube.client("frontend").await.expect("client for frontend");
    let selector = serde_json::from_value(serde_json::json!({ "matchLabels": { "app": "stuck" } })).unwrap();
    let mut problems = String::new();
    for _ in 0..60 {
        problems = meshctl::kube::wait::pod_problems(client.clone(), &ns, Some(&selector)).await;
        if problems.contains("Unschedulable") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tb.delete_namespace("frontend", &ns);
    assert!(problems.starts_with("; pod stuck-0 is Pending: Unschedulable: "), "{problems}");
    assert!(problems.contains("node affinity/selector"), "the scheduler's message: {problems}");
}

fn map_roles(tb: &Testbed, ctx: &str) -> String {
    tb.kubectl_json(ctx, &["-n", "kube-system", "get", "configmap", "aws-auth"])["data"]["mapRoles"].as_str().unwrap().to_string()
}

/// The access role is mapped to the least-privilege group next to the seeded node role,
/// whose text survives byte for byte; RBAC grants exactly TokenReview + pod/node reads;
/// down restores the ConfigMap's original text. Two spokes, then three (one after the other:
/// both edit the same aws-auth ConfigMaps); then the walkthrough's system:masters mapping.
#[tokio::test]
async fn aws_auth_maps_access_role_least_privilege() {
    let tb = testbed();
    for spokes in [Spokes::Two, Spokes::Three] {
        aws_auth_least_privilege(&tb, spokes).await;
    }

    // auth.access = system-masters maps the walkthrough's group; switching to it from
    // least privilege removes the ClusterRole and binding the earlier run made.
    let (least, _dir) = config(&tb, Spokes::Two, "");
    let (c, _dir2) = config(&tb, Spokes::Two, "[auth]\naccess = \"system-masters\"\n");
    let spoke = c.spokes[0].clone();
    let original = map_roles(&tb, &spoke.name);
    let ids = vec![phases::ids::aws_auth(&spoke.name)];
    assert_ok("up (least privilege)", &run(&least, Mode::Up, &ids).await);
    let s = run(&c, Mode::Plan, &ids).await;
    assert!(matches!(s.outcome(ids[0].as_str()), Some(Outcome::Checked(Status::Drifted(_)))), "switching the access level: {:?}", s.done);
    assert_ok("up (system-masters)", &run(&c, Mode::Up, &ids).await);
    assert!(absent(&tb, &spoke.name, &["clusterrole", "meshctl:spire-server"]), "the least-privilege ClusterRole is removed");
    assert!(absent(&tb, &spoke.name, &["clusterrolebinding", "meshctl:spire-server"]));
    let text = map_roles(&tb, &spoke.name);
    let list: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&text).unwrap();
    let role = format!("arn:aws:iam::{}:role/{}", tb.account(&spoke.name), spoke.access_role_name());
    let ours = list.iter().find(|e| e["rolearn"].as_str() == Some(&role)).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(ours["groups"][0].as_str(), Some("system:masters"));
    assert!(text.starts_with(&original));
    assert_planned_up_to_date(&c, &ids).await;
    assert_ok("down (system-masters)", &run(&c, Mode::Down, &ids).await);
    assert_eq!(map_roles(&tb, &spoke.name), original);
}

async fn aws_auth_least_privilege(tb: &Testbed, spokes: Spokes) {
    let (c, _dir) = config(tb, spokes, "");
    let ids: Vec<StepId> = c.spokes.iter().map(|s| phases::ids::aws_auth(&s.name)).collect();
    let original: BTreeMap<String, String> = c.spokes.iter().map(|s| (s.name.clone(), map_roles(tb, &s.name))).collect();
    assert_ok("up", &run(&c, Mode::Up, &ids).await);
    for s in &c.spokes {
        let text = map_roles(tb, &s.name);
        assert!(text.starts_with(&original[&s.name]), "{}: seeded entries kept byte for byte:\n{text}", s.name);
        assert!(text.contains(&format!("rolearn: arn:aws:iam::{}:role/{}-node-role", tb.account(&s.name), s.name)));
        let list: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&text).unwrap();
        let role = format!("arn:aws:iam::{}:role/{}", tb.account(&s.name), s.access_role_name());
        let ours = list.iter().find(|e| e["rolearn"].as_str() == Some(&role)).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(ours["groups"][0].as_str(), Some("meshctl:spire-server"));
        let cr = tb.kubectl_json(&s.name, &["get", "clusterrole", "meshctl:spire-server"]);
        assert_eq!(cr["rules"].as_array().unwrap().len(), 2, "{cr}");
        // The mapped group can do what the SPIRE server needs, and no more.
        let can = |verb: &str, res: &str| {
            tb.kubectl_output(&s.name, &["auth", "can-i", verb, res, "--as", "x", "--as-group", "meshctl:spire-server"], None)
                .status
                .success()
        };
        assert!(can("create", "tokenreviews.authentication.k8s.io") && can("list", "pods") && can("get", "nodes"));
        assert!(!can("create", "pods") && !can("get", "secrets") && !can("delete", "nodes"));
    }
    let rvs: Vec<String> = c.spokes.iter().map(|s| rv(tb, &s.name, &["-n", "kube-system", "get", "configmap", "aws-auth"])).collect();
    assert_planned_up_to_date(&c, &ids).await;
    assert_rerun_noop(&c, &ids).await;
    let after: Vec<String> = c.spokes.iter().map(|s| rv(tb, &s.name, &["-n", "kube-system", "get", "configmap", "aws-auth"])).collect();
    assert_eq!(rvs, after, "a second run changes nothing");
    assert_ok("down", &run(&c, Mode::Down, &ids).await);
    for s in &c.spokes {
        assert_eq!(map_roles(tb, &s.name), original[&s.name], "{}: down restores the seeded text", s.name);
        assert!(absent(tb, &s.name, &["clusterrole", "meshctl:spire-server"]));
        assert!(absent(tb, &s.name, &["clusterrolebinding", "meshctl:spire-server"]));
    }
}

/// A release of the name meshctl wants that someone else installed: meshctl's helm wrapper
/// neither upgrades nor uninstalls it (nothing changes: same revision, same values) unless
/// adopting it; adopted, it carries meshctl's mark and is meshctl's to remove.
#[tokio::test]
async fn a_foreign_helm_release_is_refused_then_adopted() {
    let tb = testbed();
    let dir = temp_dir("kp-helm");
    let chart = dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: foreign\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  who: {{ .Values.who | quote }}\n",
    )
    .unwrap();
    let ns = unique_name("kp-helm");
    let mut c = tb.command("helm");
    c.args([
        "install",
        "spire-server",
        chart.to_str().unwrap(),
        "--kube-context",
        "frontend",
        "-n",
        &ns,
        "--create-namespace",
        "--set",
        "who=someone-else",
    ]);
    assert_success(&run_with_timeout(&mut c, Duration::from_secs(120)), "helm install of the foreign release");

    let helm = meshctl::helm::Helm::new(&tb.kubeconfig, "frontend").with_binary(tb.bin("helm"));
    let before = helm.status("spire-server", &ns).await.unwrap().expect("installed");
    assert!(!meshctl::helm::is_ours(&before));
    let values = serde_json::json!({"who": "meshctl"});
    let chart_path = chart.to_string_lossy().into_owned();
    let refused = helm.upgrade_install("spire-server", &ns, &chart_path, None, None, &values, None, false).await.unwrap_err();
    assert!(matches!(refused, meshctl::helm::HelmError::Foreign { .. }), "{refused}");
    assert!(refused.to_string().contains("--adopt") && refused.to_string().contains("frontend"), "{refused}");
    let refused = helm.uninstall("spire-server", &ns, false).await.unwrap_err();
    assert!(matches!(refused, meshctl::helm::HelmError::Foreign { .. }), "{refused}");
    assert_eq!(helm.status("spire-server", &ns).await.unwrap(), Some(before.clone()), "nothing changed");

    helm.upgrade_install("spire-server", &ns, &chart_path, None, None, &values, None, true).await.unwrap();
    let adopted = helm.status("spire-server", &ns).await.unwrap().expect("installed");
    assert!(meshctl::helm::is_ours(&adopted), "{adopted:?}");
    assert_eq!(adopted.revision, before.revision + 1);
    assert_eq!(meshctl::helm::drift(&adopted, &values), None);
    helm.uninstall("spire-server", &ns, false).await.unwrap();
    assert_eq!(helm.status("spire-server", &ns).await.unwrap(), None);
    tb.delete_namespace("frontend", &ns);
}

/// Bring-your-own clusters: `up --from kubeconfig` does not ask for the stacks (there are
/// none: the clusters were made elsewhere) and starts at the kubeconfig phase; `--only` still
/// demands its earlier phases and exits 2 naming them. The contexts named here do not exist,
/// so the run stops at `kubeconfig/*` — after showing it never looked at a stack.
#[test]
fn up_from_kubeconfig_takes_earlier_phases_as_in_place() {
    let tb = testbed();
    let dir = temp_dir("kp-byo");
    let toml = format!(
        "region = \"{}\"\nkubeconfig = \"{}\"\n[hub]\nprofile = \"shared\"\nstack_name = \"made-elsewhere-hub\"\nkube_context = \"byo-missing-hub\"\n\
         [[spokes]]\nname = \"frontend\"\nstack_name = \"made-elsewhere-frontend\"\nkube_context = \"byo-missing-frontend\"\n\
         [[spokes]]\nname = \"backend\"\nstack_name = \"made-elsewhere-backend\"\nkube_context = \"byo-missing-backend\"\n",
        tb.region,
        tb.kubeconfig.display()
    );
    let config = dir.path().join("meshctl.toml");
    std::fs::write(&config, toml).unwrap();
    let meshctl = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"));
        c.arg("--config").arg(&config).args(["--output", "json", "--yes"]).args(args);
        run_with_timeout(&mut c, Duration::from_secs(120))
    };
    let only = meshctl(&["up", "--only", "kubeconfig"]);
    assert_eq!(only.status.code(), Some(2), "{}", String::from_utf8_lossy(&only.stderr));
    assert!(
        String::from_utf8_lossy(&only.stderr).contains("stacks/shared"),
        "names the missing stack: {}",
        String::from_utf8_lossy(&only.stderr)
    );

    let from = meshctl(&["up", "--from", "kubeconfig"]);
    let stdout = String::from_utf8_lossy(&from.stdout);
    let events: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let steps: BTreeSet<&str> = events.iter().filter_map(|e| e["step"].as_str()).collect();
    assert_eq!(from.status.code(), Some(1), "the missing contexts fail kubeconfig/*:\n{stdout}{}", String::from_utf8_lossy(&from.stderr));
    assert!(steps.iter().all(|s| !s.starts_with("stacks/") && !s.starts_with("ram/")), "no stack or share was looked at: {steps:?}");
    let failed = &events.last().unwrap()["summary"]["failed"];
    let failed: Vec<&str> = failed.as_array().unwrap().iter().filter_map(|f| f["step"].as_str()).collect();
    assert!(failed.contains(&"kubeconfig/shared"), "{failed:?}\n{stdout}");
    let message = events.last().unwrap()["summary"]["failed"][0]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("byo-missing"), "names the missing context: {message}");
}
