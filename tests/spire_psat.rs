//! Cross-cluster node attestation on real parts: SPIRE agents of two spoke clusters attest
//! with `k8s_psat` to a SPIRE server of the hub, every part real except the AWS credential.
//!
//! What is real:
//! - the server is a real `spire-server` 1.13 process running the `server.conf` meshctl
//!   renders: meshctl's [`server_values`] through `helm template` of meshctl's embedded server
//!   chart with the test bed's `helm`, taken from the rendered ConfigMap;
//! - the spoke kubeconfigs the server's TokenReviews use are the ones meshctl's kubeconfig
//!   phase writes into the `<spoke>-kubeconfig` ConfigMaps ([`spire_entry`] with the spoke's
//!   endpoint read from its kube context, as the phase does for `kube_context` accounts);
//! - each agent is a real `spire-agent` process running the `agent.conf` of the agent chart
//!   that meshctl's [`Helm`] installs into the spoke with meshctl's [`agent_values`] (the
//!   server address is 127.0.0.1, where this machine's server listens);
//! - each agent's `k8s_psat` token is minted by its own spoke's API server with the
//!   TokenRequest API, bound to the agent pod the chart's DaemonSet created, with the audience
//!   and lifetime of the DaemonSet's projected token volume — what the kubelet does;
//! - every TokenReview (and pod / node read) goes from the server process over the network to
//!   the spoke's real kube-apiserver (10.255.255.1:<port>);
//! - the node entries are registered with meshctl's own [`entries::ensure`] (the register
//!   phase's code), through the server CLI on the server's admin socket.
//!
//! What stands in, and why:
//! - **Credentials.** On EKS the server's spoke kubeconfigs read a token file the chart's
//!   refresher fills with an EKS token of the spoke's access role, which aws-auth maps to the
//!   group bound to meshctl's least-privilege ClusterRole. The test bed has no IAM
//!   authenticator, so the token file holds instead a service-account token of the spoke
//!   (TokenRequest) for a service account bound to a ClusterRole with exactly the rules of
//!   meshctl's least-privilege role ([`rbac`]) — so the server runs with no more than meshctl
//!   grants it (stricter than the test bed's admin token, which would also do). Only the
//!   file's content is the test bed's; the kubeconfig around it is meshctl's.
//! - **The pod around each process** ("kubelet-lite"): each volume mount of the chart's
//!   container is a directory of this machine, filled as the kubelet would (ConfigMap keys,
//!   the projected token, empty dirs); the configuration's file paths are rewritten to those
//!   directories and nothing else is changed, apart from listening on 127.0.0.1 (not 0.0.0.0)
//!   with a free health-check port per process (the agents of both spokes share this
//!   machine). The server's port is the configuration's `spire.server_port` (a free one), so
//!   meshctl renders it, as the agents' `spire.server_port`. Each process runs in a private
//!   mount namespace (`unshare --mount`) whose `/var/run/secrets/kubernetes.io/serviceaccount`
//!   holds its pod's service-account token, CA and namespace, with `KUBERNETES_SERVICE_HOST`
//!   / `_PORT` set: the server's `k8sbundle` notifier and the agent's `k8s` workload attestor
//!   use the in-cluster configuration. The server's identity is the chart's `spire-server`
//!   service account with the chart's Role (the rendered objects minus the StatefulSet are
//!   applied to the hub), so the notifier really publishes the bundle into the hub's
//!   `spire-bundle` ConfigMap, and the agents trust that bundle (what the bundle phase copies).
//! - The agent DaemonSets are placed on the kwok node (`nodeSelector` / `tolerations`, chart
//!   values meshctl does not set): the pod objects exist, nothing starts on a real node.
//!
//! Asserted (state only: the server's agent list and entries, agent exit, SVIDs fetched):
//! 1. the frontend and backend agents attest, with exactly the agent IDs `k8s_psat` forms,
//!    `spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID>` (the UID of the node of the
//!    DaemonSet pod, read from the spoke), selectors naming that pod; meshctl's node entries
//!    (`spiffe://<td>/ns/<ns>/sa/<agent sa>`, selectors `k8s_psat:cluster|agent_ns|agent_sa`)
//!    select exactly their spoke's agent: the server's own selector match, and an SVID of a
//!    probe entry parented on each node entry is served by that spoke's agent only;
//! 2. a token of a service account outside `service_account_allow_list` is refused (the same
//!    agent configuration that attests with the agent's token);
//! 3. an agent claiming the wrong cluster (backend's configuration, with a token the frontend
//!    minted for backend's allowed service account name) is refused;
//! 4. a spoke missing from the server's configuration (analytics) is refused; and, as the
//!    control, attests once the server runs meshctl's three-spoke configuration.
//!
//! Needs the running test bed (kwok-only is enough) and root (mount namespaces); about a
//! minute, most of it the refused agents' retries before they give up.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use meshctl::config::{Account, Config};
use meshctl::helm::Helm;
use meshctl::kube::kubeconfig_file::{endpoint_of_context, read_doc, Endpoint};
use meshctl::phases::aws_auth::rbac;
use meshctl::phases::kubeconfig::spire_entry;
use meshctl::spire::charts::{
    agent_values, server_values, SpokeAccess, AGENT_CHART, AGENT_DAEMONSET, BUNDLE_CONFIGMAP, BUNDLE_KEY, SERVER_CHART, SERVER_CONFIGMAP,
    SERVER_CONTAINER, SERVER_STATEFULSET,
};
use meshctl::spire::entries::{self, EntryCli, Plan};
use serde_json::{json, Value};

/// The agent chart's container.
const AGENT_CONTAINER: &str = "spire-agent";
/// Where a pod's own service-account credentials are (fixed in client-go's in-cluster config).
const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Keys whose values are HTTP paths, not files.
const NOT_FILES: [&str; 2] = ["live_path", "ready_path"];
/// Attestation refused: the agent gives up (at once on PermissionDenied, after about a minute
/// of retries on other errors).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(180);
const READY_TIMEOUT: Duration = Duration::from_secs(90);

// ------------------------------------------------------------------------------------------------
// the scene

struct Scene {
    tb: Testbed,
    /// A fresh namespace (`spire.namespace`) in every cluster.
    ns: String,
    root: TempDir,
    rt: tokio::runtime::Runtime,
    /// API server and CA of each context of the test bed's kubeconfig.
    endpoints: BTreeMap<String, Endpoint>,
}

/// Removes what the test created in the clusters (processes are killed by their guards, which
/// are dropped before this).
struct Cleanup {
    tb: Testbed,
    ns: String,
    releases: Vec<(String, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (ctx, release) in &self.releases {
            let mut c = self.tb.command("helm");
            c.args(["uninstall", release, "--namespace", &self.ns, "--kube-context", ctx]);
            let _ = run_with_timeout(&mut c, CMD_TIMEOUT);
        }
        for ctx in CLUSTERS {
            let name = access_role_name(&self.ns);
            let _ = self.tb.kubectl_output(ctx, &["delete", "clusterrolebinding,clusterrole", &name, "--ignore-not-found"], None);
            self.tb.delete_namespace(ctx, &self.ns);
        }
    }
}

fn access_role_name(ns: &str) -> String {
    format!("{ns}-spire-server-access")
}

impl Scene {
    fn endpoint(&self, ctx: &str) -> &Endpoint {
        &self.endpoints[ctx]
    }

    fn ca_pem(&self, ctx: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(&self.endpoint(ctx).ca_data).expect("certificate-authority-data is base64")
    }

    /// (host, port) of a context's API server.
    fn api_host_port(&self, ctx: &str) -> (String, String) {
        let server = &self.endpoint(ctx).server;
        let hp = server.strip_prefix("https://").unwrap_or_else(|| panic!("{ctx}: server {server} is not https"));
        let (h, p) = hp.rsplit_once(':').unwrap_or_else(|| panic!("{ctx}: server {server} has no port"));
        (h.to_string(), p.trim_end_matches('/').to_string())
    }

    /// `kubectl create token`: a TokenRequest of `sa`, optionally bound to a pod.
    fn create_token(&self, ctx: &str, sa: &str, audience: Option<&str>, seconds: Option<i64>, pod: Option<&Value>) -> String {
        let mut args: Vec<String> = vec!["-n".into(), self.ns.clone(), "create".into(), "token".into(), sa.into()];
        if let Some(a) = audience {
            args.extend(["--audience".into(), a.into()]);
        }
        if let Some(s) = seconds {
            args.extend(["--duration".into(), format!("{s}s")]);
        }
        if let Some(p) = pod {
            args.extend([
                "--bound-object-kind".into(),
                "Pod".into(),
                "--bound-object-name".into(),
                str_at(p, "/metadata/name").into(),
                "--bound-object-uid".into(),
                str_at(p, "/metadata/uid").into(),
            ]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.tb.kubectl(ctx, &a).trim().to_string()
    }

    /// The status of a TokenReview of `token` by `ctx`'s API server.
    fn token_review(&self, ctx: &str, token: &str, audience: &str) -> Value {
        let tr =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": [audience]}});
        let out = self.tb.kubectl_stdin(ctx, &["create", "-f", "-", "-o", "json"], Some(&tr.to_string()));
        serde_json::from_str::<Value>(&out).unwrap()["status"].clone()
    }

    /// A pod's own service-account files, as the kubelet mounts them at [`SA_MOUNT`].
    fn pod_identity(&self, dir: &Path, ctx: &str, sa: &str, pod: Option<&Value>) -> PathBuf {
        let d = dir.join("pod-identity");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("token"), self.create_token(ctx, sa, None, Some(3600), pod)).unwrap();
        std::fs::write(d.join("ca.crt"), self.ca_pem(ctx)).unwrap();
        std::fs::write(d.join("namespace"), &self.ns).unwrap();
        d
    }

    /// Runs `program args` as a process of a pod of cluster `ctx`: a private mount namespace
    /// whose [`SA_MOUNT`] holds `identity`, and the in-cluster API server environment.
    fn run_in_pod(&self, ctx: &str, identity: &Path, program: &Path, args: &[String], env: &[(String, String)], log: &Path) -> ChildGuard {
        let script = format!(
            "set -e; mount -t tmpfs tmpfs \"$(readlink -f /var/run)\"; mkdir -p {SA_MOUNT}; cp \"$MESHCTL_POD_IDENTITY\"/* {SA_MOUNT}/; exec \"$@\""
        );
        let (host, port) = self.api_host_port(ctx);
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", &script, "sh"])
            .arg(program)
            .args(args)
            .env("MESHCTL_POD_IDENTITY", identity)
            .env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_PORT", port);
        for (k, v) in env {
            cmd.env(k, v);
        }
        spawn_logged(&mut cmd, log)
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {pointer} in {v:#}"))
}

/// meshctl's configuration for the test bed: the hub and `spokes` through their kube
/// contexts, SPIRE in namespace `ns`, the server on `port`, the agents' health checks (a host
/// port of their pods) on `health_port`, so that agent pods of other tests on the same kwok
/// node do not keep ours Pending.
fn config(ns: &str, port: u16, health_port: u16, spokes: &[&str]) -> Config {
    let dir = temp_dir("psat-cfg");
    let f = dir.path().join("meshctl.toml");
    let spire = format!("[spire]\nnamespace = \"{ns}\"\nserver_port = {port}\nagent_health_port = {health_port}\n");
    std::fs::write(&f, format!("{}{spire}", accounts_toml(spokes))).unwrap();
    Config::load(Some(&f), &[], &[]).unwrap_or_else(|e| panic!("config: {e}"))
}

// ------------------------------------------------------------------------------------------------
// kubelet-lite: a container's mounts as directories of this machine

/// The volume mounts of one container of a pod spec, each a directory under `root`.
struct PodFs {
    root: PathBuf,
    /// (mountPath, volume name), longest path first.
    mounts: Vec<(String, String)>,
    volumes: BTreeMap<String, Value>,
}

impl PodFs {
    fn new(root: &Path, spec: &Value, container: &str) -> PodFs {
        let c = spec["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == container))
            .unwrap_or_else(|| panic!("no container {container} in {spec:#}"));
        let mut mounts: Vec<(String, String)> = c["volumeMounts"]
            .as_array()
            .map(|ms| {
                ms.iter().map(|m| (str_at(m, "/mountPath").trim_end_matches('/').to_string(), str_at(m, "/name").to_string())).collect()
            })
            .unwrap_or_default();
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let volumes = spec["volumes"]
            .as_array()
            .map(|vs| vs.iter().map(|v| (str_at(v, "/name").to_string(), v.clone())).collect())
            .unwrap_or_default();
        for (_, name) in &mounts {
            std::fs::create_dir_all(root.join(name)).unwrap();
        }
        PodFs { root: root.to_path_buf(), mounts, volumes }
    }

    fn dir(&self, volume: &str) -> PathBuf {
        self.root.join(volume)
    }

    /// The volume holding a container path, and the path inside it.
    fn locate<'a, 'p>(&'a self, path: &'p str) -> Option<(&'a str, &'p str)> {
        self.mounts.iter().find_map(|(m, v)| {
            if path == m {
                Some((v.as_str(), ""))
            } else {
                path.strip_prefix(m.as_str()).and_then(|r| r.strip_prefix('/')).map(|r| (v.as_str(), r))
            }
        })
    }

    /// Where a container path is on this machine; panics when no volume holds it (the
    /// process would write into its image, or read a file nothing provides).
    fn host(&self, path: &str, what: &str) -> PathBuf {
        let (v, rel) =
            self.locate(path).unwrap_or_else(|| panic!("{what}: {path} is on no volume of the container (mounts {:?})", self.mounts));
        if rel.is_empty() {
            self.dir(v)
        } else {
            self.dir(v).join(rel)
        }
    }

    fn mount_path(&self, volume: &str) -> Option<&str> {
        self.mounts.iter().find(|(_, v)| v == volume).map(|(m, _)| m.as_str())
    }
}

/// A SPIRE configuration as the process runs it here: every file path moved onto its volume's
/// directory, listening on 127.0.0.1, the health checks on `health_port`. Nothing else changes.
fn localize(conf: &str, fs: &PodFs, health_port: u16, what: &str) -> String {
    let mut in_health = false;
    let mut out = Vec::new();
    for line in conf.lines() {
        let t = line.trim_start();
        if t.starts_with("health_checks") {
            in_health = true;
        } else if line == "}" {
            in_health = false;
        }
        let mut line = line.to_string();
        if let Some((key, value)) = t.split_once(" = ") {
            let key = key.trim();
            if let Some(v) = value.trim().strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                if v.starts_with('/') && !NOT_FILES.contains(&key) {
                    let host = fs.host(v, &format!("{what} {key}"));
                    line = line.replacen(v, &host.to_string_lossy(), 1);
                } else if key == "bind_address" {
                    line = line.replacen(v, "127.0.0.1", 1);
                } else if key == "bind_port" && in_health {
                    line = line.replacen(v, &health_port.to_string(), 1);
                }
            }
        }
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// The container's `args`, paths moved as [`localize`] does.
fn localize_args(container: &Value, fs: &PodFs) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap())
                .map(|s| if s.starts_with('/') { fs.host(s, "args").to_string_lossy().into_owned() } else { s.to_string() })
                .collect()
        })
        .unwrap_or_default()
}

fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["containers"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == name)).unwrap_or_else(|| panic!("no container {name}"))
}

// ------------------------------------------------------------------------------------------------
// the server

/// `helm template` of an embedded chart with `values`, release `release` in namespace `ns`.
fn helm_template(tb: &Testbed, chart: &meshctl::helm::EmbeddedChart, release: &str, ns: &str, values: &Value) -> Vec<Value> {
    let dir = chart.materialize().unwrap();
    let vf = dir.path().join("values.json");
    std::fs::write(&vf, serde_json::to_vec(values).unwrap()).unwrap();
    let mut c = tb.command("helm");
    c.args(["template", release]).arg(dir.path().join(chart.name)).args(["--namespace", ns, "--values"]).arg(&vf);
    let out = run_with_timeout(&mut c, CMD_TIMEOUT);
    assert_success(&out, &format!("helm template {}", chart.name));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("{kind} {name} not rendered"))
}

/// The `k8s_psat` clusters of a server.conf: name → (allow list, kube_config_file).
fn psat_clusters(conf: &str) -> BTreeMap<String, (Vec<String>, String)> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_psat = false;
    for line in conf.lines() {
        let t = line.trim();
        if t.starts_with("NodeAttestor \"k8s_psat\"") {
            in_psat = true;
            continue;
        }
        if !in_psat {
            continue;
        }
        if t.starts_with("KeyManager") || t.starts_with("Notifier") || t.starts_with("BundlePublisher") || t.starts_with("DataStore") {
            break;
        }
        if let Some(name) = t.strip_suffix(" = {").and_then(|n| n.strip_prefix('"')).and_then(|n| n.strip_suffix('"')) {
            current = Some(name.to_string());
            out.insert(name.to_string(), (Vec::new(), String::new()));
        } else if let (Some(c), Some((k, v))) = (&current, t.split_once(" = ")) {
            let e = out.get_mut(c).unwrap();
            match k {
                "service_account_allow_list" => e.0 = serde_json::from_str(v).unwrap_or_else(|err| panic!("allow list {v}: {err}")),
                "kube_config_file" => e.1 = serde_json::from_str(v).unwrap(),
                _ => {}
            }
        }
    }
    out
}

struct Server {
    child: ChildGuard,
    socket: PathBuf,
    log: PathBuf,
    bin: PathBuf,
}

impl Server {
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(&self.bin);
        c.args(args).arg("-socketPath").arg(&self.socket);
        run_with_timeout(&mut c, CMD_TIMEOUT)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-output", "json"]);
        let out = self.cli(&a);
        assert_success(&out, &format!("spire-server {}", a.join(" ")));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Attested agents: SPIFFE ID → selectors (`type:value`).
    fn agents(&self, selectors: &[String]) -> BTreeMap<String, BTreeSet<String>> {
        let mut args = vec!["agent", "list"];
        for s in selectors {
            args.extend(["-selector", s.as_str()]);
        }
        if !selectors.is_empty() {
            args.extend(["-matchSelectorsOn", "superset"]);
        }
        let v = self.json(&args);
        v["agents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| {
                        let id = format!("spiffe://{}{}", str_at(a, "/id/trust_domain"), str_at(a, "/id/path"));
                        let sel = a["selectors"]
                            .as_array()
                            .map(|s| s.iter().map(|s| format!("{}:{}", str_at(s, "/type"), str_at(s, "/value"))).collect())
                            .unwrap_or_default();
                        (id, sel)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The server CLI on the local admin socket: the register phase's [`EntryCli`], here instead
/// of a kube exec into the server pod.
struct LocalCli<'a>(&'a Server);

#[async_trait::async_trait]
impl EntryCli for LocalCli<'_> {
    async fn run(&self, args: Vec<String>) -> Result<String, meshctl::error::Error> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.0.cli(&a);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(meshctl::error::Error::other(format!("spire-server {}: {}", a.join(" "), String::from_utf8_lossy(&out.stderr))))
        }
    }
}

/// The server chart as meshctl renders it for `c`: its values (with the test bed's account
/// ids in the access role ARNs) through `helm template`.
fn server_docs(tb: &Testbed, c: &Config) -> Vec<Value> {
    let access: Vec<SpokeAccess> = c
        .spokes
        .iter()
        .map(|sp| SpokeAccess { spoke: sp.clone(), access_role_arn: meshctl::names::access_role_arn(c, sp, tb.account(&sp.name)) })
        .collect();
    helm_template(tb, &SERVER_CHART, &c.spire.server_release, &c.spire.namespace, &server_values(c, &access))
}

/// Starts the server as meshctl renders it for `c`, its volumes under `dir` (kept across
/// restarts, as the server's claim is).
fn start_server(s: &Scene, c: &Config, dir: &Path, log_name: &str) -> Server {
    let tb = &s.tb;
    let docs = server_docs(tb, c);
    let sts = find(&docs, "StatefulSet", SERVER_STATEFULSET);
    let spec = &sts["spec"]["template"]["spec"];
    let fs = PodFs::new(dir, spec, SERVER_CONTAINER);
    let conf = str_at(find(&docs, "ConfigMap", SERVER_CONFIGMAP), "/data/server.conf").to_string();

    // meshctl's k8s_psat clusters: one per spoke, the spoke's agent service account allowed,
    // its kubeconfig the key the kubeconfig phase writes, in the ConfigMap mounted there.
    let clusters = psat_clusters(&conf);
    assert_eq!(
        clusters.keys().cloned().collect::<BTreeSet<_>>(),
        c.spokes.iter().map(|s| s.psat_cluster().to_string()).collect(),
        "{conf}"
    );
    let refresher = container(spec, "token-refresher");
    let refresher_fs = PodFs::new(&dir.join("refresher"), spec, "token-refresher");
    let refresher_env = refresher["env"].as_array().unwrap();
    let env_of = |k: &str| {
        refresher_env
            .iter()
            .find(|e| e["name"] == k)
            .map(|e| str_at(e, "/value").to_string())
            .unwrap_or_else(|| panic!("refresher env {k}"))
    };
    let refreshed: Vec<String> = env_of("SPOKES").split_whitespace().map(str::to_string).collect();
    for spoke in &c.spokes {
        let (allow, kc_path) = &clusters[spoke.psat_cluster()];
        assert_eq!(allow, &vec![format!("{}:{}", s.ns, spoke.agent_service_account())], "allow list of {}", spoke.psat_cluster());
        let (volume, key) =
            fs.locate(kc_path).unwrap_or_else(|| panic!("kube_config_file {kc_path} of {} is on no volume", spoke.psat_cluster()));
        assert_eq!(str_at(&fs.volumes[volume], "/configMap/name"), spoke.kubeconfig_configmap(), "volume of {kc_path}");
        assert_eq!(key, spoke.kubeconfig_key(), "{kc_path}: the kubeconfig phase writes key {}", spoke.kubeconfig_key());

        // The kubeconfig phase's ConfigMap content for this spoke, its token file on this
        // machine: where the refresher beside the server writes this spoke's token.
        let ep = s.endpoint(spoke.kube_context.as_deref().unwrap());
        let text = spire_entry(c, spoke, ep).standalone();
        let mut kc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let user = kc["users"][0]["user"].as_mapping_mut().unwrap();
        assert_eq!(user.len(), 1, "the server's kubeconfig user holds only a token file: {text}");
        let token_file = user["tokenFile"].as_str().unwrap().to_string();
        let (tv, tfile) = fs.locate(&token_file).unwrap_or_else(|| panic!("tokenFile {token_file} is on no volume of the server"));
        let rmount = refresher_fs.mount_path(tv).unwrap_or_else(|| panic!("the refresher does not mount volume {tv} of {token_file}"));
        assert_eq!(env_of("DIR"), rmount, "the refresher writes where the server reads");
        assert!(
            refreshed.iter().any(|r| r.starts_with(&format!("{tfile}|{}|", spoke.cluster_name))),
            "the refresher writes no {tfile} for cluster {} ({refreshed:?})",
            spoke.cluster_name
        );
        let host_token = fs.host(&token_file, "tokenFile");
        std::fs::write(&host_token, access_token(s, spoke)).unwrap();
        user.insert("tokenFile".into(), host_token.to_string_lossy().into_owned().into());
        std::fs::write(fs.dir(volume).join(key), serde_yaml_ng::to_string(&kc).unwrap()).unwrap();
    }

    let local = localize(&conf, &fs, free_port(), "server.conf");
    let cfg_volume = fs
        .volumes
        .values()
        .find(|v| v["configMap"]["name"] == SERVER_CONFIGMAP)
        .map(|v| str_at(v, "/name").to_string())
        .expect("the server's config volume");
    std::fs::write(fs.dir(&cfg_volume).join("server.conf"), &local).unwrap();
    let server_container = container(spec, SERVER_CONTAINER);
    let mut args = vec!["run".to_string()];
    args.extend(localize_args(server_container, &fs));
    let identity = s.pod_identity(dir, "shared", str_at(spec, "/serviceAccountName"), None);
    let log = s.root.path().join(log_name);
    let bin = tb.bin("spire-server");
    let child = s.run_in_pod("shared", &identity, &bin, &args, &[], &log);
    let mut srv = Server { child, socket: fs.host(&c.spire.server_socket, "spire.server_socket"), log, bin };
    wait_for("the SPIRE server to be healthy", READY_TIMEOUT, Duration::from_millis(500), || {
        if let Ok(Some(st)) = srv.child.0.try_wait() {
            panic!("spire-server exited ({st}):\n{}\n--- server.conf:\n{local}", srv.log_tail());
        }
        srv.cli(&["healthcheck"]).status.success().then_some(())
    });
    srv
}

/// The spoke credential of the server: a token of a service account with exactly meshctl's
/// least-privilege rules (see the module doc).
fn access_token(s: &Scene, spoke: &Account) -> String {
    let ctx = spoke.kube_context.as_deref().unwrap();
    let name = access_role_name(&s.ns);
    let (mut role, _) = rbac();
    role.metadata.name = Some(name.clone());
    let mut role = serde_json::to_value(&role).unwrap();
    role["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
    role["kind"] = json!("ClusterRole");
    let sa = "spire-server-access";
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": s.ns}},
        role,
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": s.ns}]},
    ]});
    s.tb.apply(ctx, &objects.to_string());
    s.create_token(ctx, sa, None, Some(7200), None)
}

// ------------------------------------------------------------------------------------------------
// agents

/// An agent DaemonSet installed into a spoke by meshctl's chart and values: its pod and the
/// agent.conf the cluster holds.
struct Installed {
    ctx: String,
    daemonset: Value,
    pod: Value,
    conf: String,
}

fn install_agent(s: &Scene, c: &Config, spoke: &Account) -> Installed {
    let ctx = spoke.kube_context.clone().unwrap();
    let mut values = agent_values(c, spoke, "127.0.0.1");
    let placement = kwok_placement();
    values["nodeSelector"] = placement["nodeSelector"].clone();
    values["tolerations"] = placement["tolerations"].clone();
    let chart = AGENT_CHART.materialize().unwrap();
    let helm = Helm::new(&s.tb.kubeconfig, &ctx).with_binary(s.tb.bin("helm"));
    let path = chart.path().join(AGENT_CHART.name);
    s.rt.block_on(helm.upgrade_install(&c.spire.agent_release, &s.ns, &path.to_string_lossy(), None, None, &values, None, false))
        .unwrap_or_else(|e| panic!("helm install of the agent into {ctx}: {e}"));
    let daemonset = s.tb.kubectl_json(&ctx, &["-n", &s.ns, "get", "daemonset", AGENT_DAEMONSET]);
    let selector: Vec<String> = daemonset["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    let selector = selector.join(",");
    let pod = wait_for(&format!("a pod of DaemonSet {AGENT_DAEMONSET} in {ctx}"), READY_TIMEOUT, Duration::from_millis(500), || {
        let pods = s.tb.kubectl_json(&ctx, &["-n", &s.ns, "get", "pods", "-l", &selector]);
        pods["items"].as_array().and_then(|ps| ps.iter().find(|p| p["spec"]["nodeName"].is_string()).cloned())
    });
    let cm_name = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["configMap"]["name"].as_str())
        .find(|n| *n != BUNDLE_CONFIGMAP)
        .expect("the agent's config volume")
        .to_string();
    let cm = s.tb.kubectl_json(&ctx, &["-n", &s.ns, "get", "configmap", &cm_name]);
    let conf = str_at(&cm, "/data/agent.conf").to_string();
    Installed { ctx, daemonset, pod, conf }
}

/// A pod of the agent DaemonSet's template running as service account `sa`, on the node of
/// the DaemonSet's pod (set directly: the template's host port is taken there); no labels, so
/// the DaemonSet does not adopt it.
fn impostor_pod(s: &Scene, inst: &Installed, name: &str, sa: &str) -> Value {
    s.tb.kubectl(&inst.ctx, &["-n", &s.ns, "create", "serviceaccount", sa]);
    let mut spec = inst.daemonset["spec"]["template"]["spec"].clone();
    spec["serviceAccountName"] = json!(sa);
    spec["nodeName"] = inst.pod["spec"]["nodeName"].clone();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": s.ns}, "spec": spec});
    s.tb.apply(&inst.ctx, &pod.to_string());
    wait_for(&format!("pod {name} scheduled"), READY_TIMEOUT, Duration::from_millis(500), || {
        let p = s.tb.kubectl_json(&inst.ctx, &["-n", &s.ns, "get", "pod", name]);
        p["spec"]["nodeName"].is_string().then_some(p)
    })
}

struct Agent {
    name: String,
    child: ChildGuard,
    socket: PathBuf,
    log: PathBuf,
    /// The k8s_psat token it presents.
    token: String,
}

impl Agent {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.0.try_wait().unwrap()
    }
}

/// Runs a spire-agent as container `spire-agent` of `pod` (in `ctx`) with `conf` (an
/// agent.conf as installed): its volumes filled as the kubelet would — the configuration,
/// `bundle` for the bundle ConfigMap (what the bundle phase copies from the hub), the
/// projected k8s_psat token minted by `ctx` for the pod's service account and bound to the pod.
fn run_agent(s: &Scene, name: &str, ctx: &str, pod: &Value, conf: &str, bundle: &str) -> Agent {
    let dir = s.root.path().join(name);
    let spec = &pod["spec"];
    let fs = PodFs::new(&dir, spec, AGENT_CONTAINER);
    let sa = str_at(spec, "/serviceAccountName");
    let mut token = String::new();
    for (volume, v) in &fs.volumes {
        if fs.mount_path(volume).is_none() || fs.mount_path(volume) == Some(SA_MOUNT) {
            continue;
        }
        if let Some(cm) = v["configMap"]["name"].as_str() {
            if cm == BUNDLE_CONFIGMAP {
                std::fs::write(fs.dir(volume).join(BUNDLE_KEY), bundle).unwrap();
            }
            // The agent's own ConfigMap: written below, localized.
        } else if let Some(sources) = v["projected"]["sources"].as_array() {
            for src in sources {
                let t = &src["serviceAccountToken"];
                assert!(t.is_object(), "{name}: unexpected projected source {src}");
                token = s.create_token(ctx, sa, t["audience"].as_str(), t["expirationSeconds"].as_i64(), Some(pod));
                std::fs::write(fs.dir(volume).join(str_at(t, "/path")), &token).unwrap();
            }
        }
    }
    assert!(!token.is_empty(), "{name}: the pod has no projected service-account token");
    let c = container(spec, AGENT_CONTAINER);
    let args = localize_args(c, &fs);
    let conf_file = PathBuf::from(&args[args.iter().position(|a| a == "-config").expect("-config") + 1]);
    std::fs::write(&conf_file, localize(conf, &fs, free_port(), &format!("{name} agent.conf"))).unwrap();
    let socket_path =
        conf.lines().find_map(|l| l.trim().strip_prefix("socket_path = ")).map(|v| v.trim_matches('"').to_string()).expect("socket_path");
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    let v = match e["value"].as_str() {
                        Some(v) => v.to_string(),
                        None => match e.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
                            Some("spec.nodeName") => str_at(spec, "/nodeName").to_string(),
                            other => panic!("{name}: env {e} ({other:?})"),
                        },
                    };
                    (str_at(e, "/name").to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let identity = s.pod_identity(&dir, ctx, sa, Some(pod));
    let mut all = vec!["run".to_string()];
    all.extend(args);
    let log = s.root.path().join(format!("{name}.log"));
    let child = s.run_in_pod(ctx, &identity, &s.tb.bin("spire-agent"), &all, &env, &log);
    Agent { name: name.to_string(), child, socket: fs.host(&socket_path, "socket_path"), log, token }
}

/// The agent ID k8s_psat gives the agent of `pod`: its cluster and its node's UID.
fn expected_agent_id(s: &Scene, c: &Config, spoke: &Account, inst: &Installed) -> String {
    let node = s.tb.kubectl_json(&inst.ctx, &["get", "node", str_at(&inst.pod, "/spec/nodeName")]);
    format!("spiffe://{}/spire/agent/k8s_psat/{}/{}", c.mesh.trust_domain, spoke.psat_cluster(), str_at(&node, "/metadata/uid"))
}

fn wait_attested(srv: &Server, agent: &mut Agent, id: &str) -> BTreeSet<String> {
    wait_for(&format!("agent {} to attest as {id}", agent.name), READY_TIMEOUT, Duration::from_millis(500), || {
        if let Some(st) = agent.exited() {
            panic!("agent {} exited ({st}):\n{}\n--- server:\n{}", agent.name, tail(&agent.log), srv.log_tail());
        }
        srv.agents(&[]).remove(id)
    })
}

fn wait_refused(agent: &mut Agent) {
    let st = wait_for(&format!("agent {} to give up", agent.name), REFUSAL_TIMEOUT, Duration::from_millis(500), || agent.exited());
    assert!(!st.success(), "agent {} exited with success", agent.name);
    let socket_served = std::os::unix::net::UnixStream::connect(&agent.socket).is_ok();
    assert!(!socket_served, "agent {} serves its Workload API", agent.name);
}

/// SPIFFE IDs of the X.509-SVIDs the agent serves to this process.
fn fetch_ids(s: &Scene, agent: &Agent) -> Option<BTreeSet<String>> {
    let mut c = s.tb.command("spire-agent");
    c.args(["api", "fetch", "x509", "-output", "json", "-socketPath"]).arg(&agent.socket);
    let out = run_with_timeout(&mut c, CMD_TIMEOUT);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v["svids"].as_array()?.iter().filter_map(|s| s["spiffe_id"].as_str().map(str::to_string)).collect())
}

// ------------------------------------------------------------------------------------------------

#[test]
fn spoke_agents_attest_with_k8s_psat_to_the_hub_server_meshctl_renders() {
    let tb = testbed();
    let ns = unique_name("psat");
    let _cleanup = Cleanup {
        tb: tb.clone(),
        ns: ns.clone(),
        releases: ["frontend", "backend", "analytics"].iter().map(|c| (c.to_string(), "spire-agent".to_string())).collect(),
    };
    let doc = read_doc(&tb.kubeconfig).unwrap();
    let endpoints = CLUSTERS.iter().map(|c| (c.to_string(), endpoint_of_context(&doc, c, &tb.kubeconfig).unwrap())).collect();
    let s = Scene {
        tb: tb.clone(),
        ns: ns.clone(),
        root: temp_dir("psat"),
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        endpoints,
    };
    for ctx in CLUSTERS {
        tb.kubectl(ctx, &["create", "namespace", &ns]);
    }
    let (port, health_port) = (free_port(), free_port());
    let c = config(&ns, port, health_port, &["frontend", "backend"]);
    let c3 = config(&ns, port, health_port, &["frontend", "backend", "analytics"]);
    assert_eq!(c.spire.agent_release, "spire-agent");
    let td = c.mesh.trust_domain.clone();

    // The hub: the server chart's objects but its StatefulSet (the server runs here), so the
    // server's service account, Role and the empty spire-bundle ConfigMap exist as helm would
    // create them.
    let hub_docs = server_docs(&tb, &c);
    let hub_objects: Vec<&Value> = hub_docs.iter().filter(|d| d["kind"] != "StatefulSet").collect();
    tb.apply("shared", &json!({"apiVersion": "v1", "kind": "List", "items": hub_objects}).to_string());

    let server_dir = s.root.path().join("server");
    let srv = start_server(&s, &c, &server_dir, "server.log");

    // The k8sbundle notifier publishes the trust bundle into the hub's ConfigMap.
    let bundle = wait_for("the bundle in the hub's spire-bundle ConfigMap", READY_TIMEOUT, Duration::from_millis(500), || {
        let cm = tb.kubectl_json("shared", &["-n", &ns, "get", "configmap", BUNDLE_CONFIGMAP]);
        cm["data"][BUNDLE_KEY].as_str().filter(|b| b.contains("BEGIN CERTIFICATE")).map(str::to_string)
    });

    // 1. frontend and backend agents, as meshctl installs them, attest.
    let (front, back) = (&c.spokes[0], &c.spokes[1]);
    let fi = install_agent(&s, &c, front);
    let bi = install_agent(&s, &c, back);
    let mut fa = run_agent(&s, "frontend", &fi.ctx, &fi.pod, &fi.conf, &bundle);
    let mut ba = run_agent(&s, "backend", &bi.ctx, &bi.pod, &bi.conf, &bundle);
    let (fid, bid) = (expected_agent_id(&s, &c, front, &fi), expected_agent_id(&s, &c, back, &bi));
    let fsel = wait_attested(&srv, &mut fa, &fid);
    let bsel = wait_attested(&srv, &mut ba, &bid);
    assert_eq!(srv.agents(&[]).into_keys().collect::<BTreeSet<_>>(), [fid.clone(), bid.clone()].into(), "the attested agents");
    for (spoke, inst, sel) in [(front, &fi, &fsel), (back, &bi, &bsel)] {
        let want = entries::node_entry(&c, spoke);
        assert!(
            sel.is_superset(&want.selectors),
            "{} agent selectors {sel:?} lack meshctl's node entry selectors {:?}",
            spoke.name,
            want.selectors
        );
        assert!(sel.contains(&format!("k8s_psat:agent_pod_name:{}", str_at(&inst.pod, "/metadata/name"))), "{sel:?}");
        assert!(sel.contains(&format!("k8s_psat:agent_pod_uid:{}", str_at(&inst.pod, "/metadata/uid"))), "{sel:?}");
    }

    // meshctl's node entries, registered by the register phase's code, select exactly their
    // spoke's agent.
    let cli = LocalCli(&srv);
    for (spoke, id) in [(front, &fid), (back, &bid)] {
        let want = entries::node_entry(&c, spoke);
        assert_eq!(want.spiffe_id, format!("spiffe://{td}/ns/{ns}/sa/{}", spoke.agent_service_account()));
        s.rt.block_on(entries::ensure(&cli, &want)).unwrap_or_else(|e| panic!("registering {}: {}", want.spiffe_id, e.chain()));
        let live = s.rt.block_on(entries::show(&cli, Some(&want.spiffe_id))).unwrap();
        assert!(matches!(entries::plan(&want, &live), Plan::UpToDate { .. }), "{live:?}");
        let selectors: Vec<String> = want.selectors.iter().cloned().collect();
        assert_eq!(
            srv.agents(&selectors).into_keys().collect::<Vec<_>>(),
            vec![id.clone()],
            "agents matching the node entry of {}",
            spoke.name
        );
        // A probe workload (this test process, unix uid) under the node entry.
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        let probe = format!("spiffe://{td}/psat-probe/{}", spoke.name);
        s.rt.block_on(
            cli.run(
                ["entry", "create", "-spiffeID", &probe, "-parentID", &want.spiffe_id, "-selector", &format!("unix:uid:{uid}")]
                    .map(String::from)
                    .to_vec(),
            ),
        )
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    }
    for (agent, spoke) in [(&fa, front), (&ba, back)] {
        let want: BTreeSet<String> = [format!("spiffe://{td}/psat-probe/{}", spoke.name)].into();
        wait_for(&format!("agent {} to serve exactly its probe SVID", agent.name), READY_TIMEOUT, Duration::from_millis(500), || {
            (fetch_ids(&s, agent).as_ref() == Some(&want)).then_some(())
        });
    }

    // 2. A service account outside the allow list, with the configuration that attests.
    let intruder = impostor_pod(&s, &fi, "spire-agent-intruder", "intruder");
    let mut ia = run_agent(&s, "intruder", &fi.ctx, &intruder, &fi.conf, &bundle);
    let review = s.token_review("frontend", &ia.token, "spire-server");
    assert_eq!(review["authenticated"], true, "the intruder's token is valid in frontend: {review}");
    assert_eq!(review["user"]["username"], format!("system:serviceaccount:{ns}:intruder"));

    // 3. Backend's configuration (cluster backend-k8s-cluster), with a token the frontend
    // minted for the service account name backend allows.
    let impostor = impostor_pod(&s, &fi, "spire-agent-impostor", back.agent_service_account());
    let mut wa = run_agent(&s, "wrong-cluster", &fi.ctx, &impostor, &bi.conf, &bundle);
    assert!(bi.conf.contains(&format!("cluster = \"{}\"", back.psat_cluster())), "{}", bi.conf);
    assert_eq!(s.token_review("frontend", &wa.token, "spire-server")["authenticated"], true, "valid where it was minted");
    assert_ne!(s.token_review("backend", &wa.token, "spire-server")["authenticated"], true, "not valid in the cluster it claims");

    // 4. analytics: a spoke the server is not configured for (meshctl's three-spoke
    // configuration renders its agent).
    let analytics = &c3.spokes[2];
    let ai = install_agent(&s, &c3, analytics);
    let mut aa = run_agent(&s, "analytics", &ai.ctx, &ai.pod, &ai.conf, &bundle);
    assert_eq!(s.token_review("analytics", &aa.token, "spire-server")["authenticated"], true);

    for a in [&mut ia, &mut wa, &mut aa] {
        wait_refused(a);
    }
    assert_eq!(srv.agents(&[]).into_keys().collect::<BTreeSet<_>>(), [fid.clone(), bid.clone()].into(), "only the two agents attested");
    assert!(fa.exited().is_none() && ba.exited().is_none(), "the attested agents still run");

    // Control of 4: the server as meshctl renders it for three spokes (same volumes) attests
    // the same analytics agent.
    drop(srv);
    let srv = start_server(&s, &c3, &server_dir, "server3.log");
    let aid = expected_agent_id(&s, &c3, analytics, &ai);
    let mut aa = run_agent(&s, "analytics-configured", &ai.ctx, &ai.pod, &ai.conf, &bundle);
    let asel = wait_attested(&srv, &mut aa, &aid);
    assert!(asel.is_superset(&entries::node_entry(&c3, analytics).selectors), "{asel:?}");
    assert_eq!(srv.agents(&[]).into_keys().collect::<BTreeSet<_>>(), [fid, bid, aid].into(), "the attested agents");
}
