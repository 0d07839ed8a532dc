//! Shared helpers for integration tests that run against the local test bed
//! (`scripts/testbed up`, then `source $MESHCTL_TESTBED_DIR/env`).
//!
//! Use with `mod common;` in a test file. Everything here is std + serde_json.
//! Missing test bed => panic with a clear message: tests never skip silently.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kube contexts (and AWS profiles) of the test bed's clusters/accounts: the walkthrough's
/// three, then `analytics`, the third spoke of the three-spoke tests.
pub const CLUSTERS: [&str; 4] = ["shared", "frontend", "backend", "analytics"];

/// The walkthrough's accounts (the built-in default configuration's profiles).
pub const WALKTHROUGH: [&str; 3] = ["shared", "frontend", "backend"];

/// Default timeout of `kubectl` / `helm` calls made through these helpers.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Testbed {
    /// State dir of the running test bed (`MESHCTL_TESTBED_DIR`).
    pub dir: PathBuf,
    /// Cached binaries (`MESHCTL_TESTBED_BIN`): kubectl, helm, spire-server, envoy, ...
    pub bin_dir: PathBuf,
    /// Kubeconfig with one context per cluster of [`CLUSTERS`] (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// moto server endpoint (`MESHCTL_TESTBED_MOTO_URL`), e.g. `http://127.0.0.1:40123`.
    pub moto_url: String,
    /// `(profile, account id)` for shared, frontend, backend, analytics.
    pub accounts: [(String, String); 4],
    pub aws_config_file: PathBuf,
    pub aws_credentials_file: PathBuf,
    pub region: String,
    /// Clusters that have a real node (`MESHCTL_TESTBED_NODES`; kubelet + kube-proxy +
    /// containerd in the cluster's VPC range). Tests of real pods fail when it is empty.
    pub nodes: Vec<String>,
    /// Address of every API server (`MESHCTL_TESTBED_API_IP`), reachable from nodes and pods.
    pub api_ip: String,
}

fn need(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "test bed not running: run scripts/testbed up and source $STATE/env \
             (environment variable {var} is not set; scripts/test does both)"
        ),
    }
}

/// The running test bed, from the environment written by `scripts/testbed up`.
/// Panics when the environment is missing or the test bed is not reachable.
pub fn testbed() -> Testbed {
    let dir = PathBuf::from(need("MESHCTL_TESTBED_DIR"));
    let tb = Testbed {
        bin_dir: PathBuf::from(need("MESHCTL_TESTBED_BIN")),
        kubeconfig: PathBuf::from(need("KUBECONFIG")),
        moto_url: need("MESHCTL_TESTBED_MOTO_URL"),
        accounts: [
            ("shared".into(), need("MESHCTL_TESTBED_ACCOUNT_SHARED")),
            ("frontend".into(), need("MESHCTL_TESTBED_ACCOUNT_FRONTEND")),
            ("backend".into(), need("MESHCTL_TESTBED_ACCOUNT_BACKEND")),
            ("analytics".into(), need("MESHCTL_TESTBED_ACCOUNT_ANALYTICS")),
        ],
        aws_config_file: PathBuf::from(need("AWS_CONFIG_FILE")),
        aws_credentials_file: PathBuf::from(need("AWS_SHARED_CREDENTIALS_FILE")),
        region: std::env::var("MESHCTL_TESTBED_REGION").unwrap_or_else(|_| "us-east-2".into()),
        nodes: std::env::var("MESHCTL_TESTBED_NODES").unwrap_or_default().split_whitespace().map(str::to_string).collect(),
        api_ip: std::env::var("MESHCTL_TESTBED_API_IP").unwrap_or_else(|_| "127.0.0.1".into()),
        dir,
    };
    if !tb.dir.join("env").is_file() || !tb.kubeconfig.is_file() {
        panic!(
            "test bed not running: run scripts/testbed up and source $STATE/env \
             ({} has no env/kubeconfig)",
            tb.dir.display()
        );
    }
    tb
}

/// Path of a cached test-bed binary, e.g. `bin("spire-server")`. Panics when missing.
pub fn bin(name: &str) -> PathBuf {
    testbed().bin(name)
}

impl Testbed {
    pub fn bin(&self, name: &str) -> PathBuf {
        let p = self.bin_dir.join(name);
        assert!(p.exists(), "{} missing: run scripts/testbed setup", p.display());
        p
    }

    /// Account id of an AWS profile (`shared` / `frontend` / `backend` / `analytics`).
    pub fn account(&self, profile: &str) -> &str {
        self.accounts.iter().find(|(p, _)| p == profile).map(|(_, a)| a.as_str()).unwrap_or_else(|| panic!("unknown profile {profile}"))
    }

    /// A `Command` for a cached binary with the test-bed environment (PATH first).
    pub fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin(name));
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", self.bin_dir.display()));
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// `kubectl --context <context> <args>`; returns the output whatever the exit code.
    pub fn kubectl_output(&self, context: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.command("kubectl");
        c.arg("--context").arg(context).args(args);
        run_with_timeout_input(&mut c, stdin.map(str::as_bytes), CMD_TIMEOUT)
    }

    /// `kubectl --context <context> <args>`; panics (with stderr) unless it succeeds; returns stdout.
    pub fn kubectl(&self, context: &str, args: &[&str]) -> String {
        self.kubectl_stdin(context, args, None)
    }

    /// Like [`Testbed::kubectl`], feeding `stdin` (e.g. a manifest for `apply -f -`).
    pub fn kubectl_stdin(&self, context: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_output(context, args, stdin);
        assert_success(&out, &format!("kubectl --context {context} {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `spire-server <args>` in the server pod of the hub cluster `hub` (namespace `spire`);
    /// panics unless it succeeds; returns stdout.
    pub fn spire_server(&self, hub: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", "spire", "exec", "spire-server-0", "-c", "spire-server", "--", "/opt/spire/bin/spire-server"];
        all.extend_from_slice(args);
        self.kubectl(hub, &all)
    }

    /// `kubectl ... -o json` parsed.
    pub fn kubectl_json(&self, context: &str, args: &[&str]) -> serde_json::Value {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["-o", "json"]);
        let s = self.kubectl(context, &a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("kubectl {args:?}: bad JSON ({e}): {s}"))
    }

    /// Creates a fresh namespace `<prefix>-<unique>` in `context` and returns its name.
    pub fn create_namespace(&self, context: &str, prefix: &str) -> String {
        let ns = unique_name(prefix);
        self.kubectl(context, &["create", "namespace", &ns]);
        ns
    }

    /// Deletes a namespace without waiting for finalization.
    pub fn delete_namespace(&self, context: &str, ns: &str) {
        let _ = self.kubectl_output(context, &["delete", "namespace", ns, "--wait=false"], None);
    }

    /// The clusters with a real node; panics (the test fails) when the test bed runs without.
    pub fn real_node_clusters(&self) -> Vec<String> {
        assert!(
            !self.nodes.is_empty(),
            "the test bed runs without real nodes (MESHCTL_TESTBED_NODES is empty): \
             scripts/testbed up gives shared, frontend, backend and analytics one each by default"
        );
        self.nodes.clone()
    }

    /// Kubernetes node name of a cluster's real node, EKS-style:
    /// `ip-10-<n>-0-10.<region>.compute.internal` (n = 0 shared, 1 frontend, 2 backend, 3 analytics).
    pub fn node_name(&self, cluster: &str) -> String {
        format!("ip-10-{}-0-10.{}.compute.internal", vpc_index(cluster), self.region)
    }

    /// containerd socket of a cluster's real node (for `ctr --address <it> -n k8s.io ...`).
    pub fn containerd_socket(&self, cluster: &str) -> PathBuf {
        self.dir.join("nodes").join(cluster).join("containerd/containerd.sock")
    }

    /// `ctr --address <node socket> -n k8s.io <args>` on a cluster's real node; stdout.
    pub fn ctr(&self, cluster: &str, args: &[&str]) -> String {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.containerd_socket(cluster)).args(["-n", "k8s.io"]).args(args);
        let out = run_with_timeout(&mut c, CMD_TIMEOUT);
        assert_success(&out, &format!("ctr (node of {cluster}) {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies `manifest` (JSON or YAML) in `context`.
    pub fn apply(&self, context: &str, manifest: &str) {
        self.kubectl_stdin(context, &["apply", "-f", "-"], Some(manifest));
    }

    /// Waits until pod `ns/name` is Ready; panics with its status (and events) after `timeout`.
    pub fn wait_pod_ready(&self, context: &str, ns: &str, name: &str, timeout: Duration) {
        let secs = format!("--timeout={}s", timeout.as_secs());
        let out = self.kubectl_output(context, &["-n", ns, "wait", "--for=condition=Ready", &format!("pod/{name}"), &secs], None);
        if !out.status.success() {
            let describe = self.kubectl_output(context, &["-n", ns, "describe", "pod", name], None);
            panic!(
                "{context}: pod {ns}/{name} not Ready after {timeout:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&describe.stdout)
            );
        }
    }
}

/// VPC index of a test-bed cluster: its VPC is 10.<n>.0.0/16 (meshctl's default configuration).
pub fn vpc_index(cluster: &str) -> u8 {
    match cluster {
        "shared" => 0,
        "frontend" => 1,
        "backend" => 2,
        "analytics" => 3,
        other => panic!("unknown test-bed cluster {other}"),
    }
}

/// Address of a cluster's real node: 10.<n>.0.10.
pub fn node_ip(cluster: &str) -> String {
    format!("10.{}.0.10", vpc_index(cluster))
}

/// The kwok (fake) node's label: `nodeSelector` value that puts a pod on it.
pub const KWOK_NODE_LABEL: (&str, &str) = ("type", "kwok");

/// Taint of the kwok node when its cluster has a real node (ordinary workloads go to the
/// real node, as on EKS): pods meant for kwok (exec / port-forward mapped to local processes)
/// tolerate it with [`kwok_placement`].
pub const KWOK_TAINT: (&str, &str, &str) = ("kwok.x-k8s.io/node", "fake", "NoSchedule");

/// `nodeSelector` + `tolerations` (JSON, for a pod spec) that put a pod on the kwok node.
pub fn kwok_placement() -> serde_json::Value {
    serde_json::json!({
        "nodeSelector": { KWOK_NODE_LABEL.0: KWOK_NODE_LABEL.1 },
        "tolerations": [{ "key": KWOK_TAINT.0, "operator": "Exists", "effect": KWOK_TAINT.2 }],
    })
}

/// The same as YAML lines for a pod spec indented by `indent` spaces.
pub fn kwok_placement_yaml(indent: usize) -> String {
    let p = " ".repeat(indent);
    format!(
        "{p}nodeSelector:\n{p}  {}: {}\n{p}tolerations:\n{p}- key: {}\n{p}  operator: Exists\n{p}  effect: {}\n",
        KWOK_NODE_LABEL.0, KWOK_NODE_LABEL.1, KWOK_TAINT.0, KWOK_TAINT.2
    )
}

/// The `[hub]` and `[[spokes]]` tables of a test-bed configuration: every account reached
/// through the test bed's kubeconfig context of its own name; profile, cluster and CIDR derive
/// from the name as in any configuration.
pub fn accounts_toml(spokes: &[&str]) -> String {
    let mut toml = String::from("[hub]\nkube_context = \"shared\"\n\n");
    for name in spokes {
        toml.push_str(&format!("[[spokes]]\nname = \"{name}\"\nkube_context = \"{name}\"\n\n"));
    }
    toml
}

/// A name unique within this machine run: `<prefix>-<pid>-<counter><time>` (DNS-1123 safe).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() % 1_000_000;
    format!("{prefix}-{}-{}{t}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A free TCP port on 127.0.0.1 (bind to port 0, then release it), never one this test
/// process was given before: the kernel may hand a released port out again, and two parts of
/// one test (a SPIRE server, an Envoy listener) would then race for it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A fresh empty directory under the system temp dir (short path: unix sockets fit).
/// Removed when the returned guard drops.
pub fn temp_dir(prefix: &str) -> TempDir {
    let p = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills (and reaps) a child process when dropped.
pub struct ChildGuard(pub Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout/stderr to `log` (a file); killed when the guard drops.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> ChildGuard {
    let f = std::fs::File::create(log).unwrap();
    let f2 = f.try_clone().unwrap();
    let child = cmd.stdin(Stdio::null()).stdout(f).stderr(f2).spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    ChildGuard(child)
}

/// Runs `cmd` to completion, killing it after `timeout` (then panics).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    run_with_timeout_input(cmd, None, timeout)
}

/// Runs `cmd` with optional stdin bytes, capturing stdout and stderr, killing it after `timeout`.
pub fn run_with_timeout_input(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let te = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = te.join().unwrap_or_default();
            panic!("timed out after {timeout:?}: {cmd:?}\nstderr: {}", String::from_utf8_lossy(&stderr));
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: to.join().unwrap_or_default(), stderr: te.join().unwrap_or_default() }
}

/// Panics with the command's stdout/stderr unless it exited 0.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` every `every` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    poll(what, timeout, every, || f().ok_or_else(String::new))
}

/// Like [`wait_for`], `f` saying what it saw instead (`Err`): the panic after `timeout` shows
/// the last of it.
pub fn poll<T>(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}{}",
                if last.is_empty() { String::new() } else { format!("; last seen:\n{last}") }
            );
        }
        thread::sleep(every);
    }
}

/// Starts from nothing, whatever an earlier run left: `meshctl down` with every spoke the test
/// bed has (a spoke a two-spoke configuration does not name keeps its Transit Gateway
/// attachment, and the hub stack cannot be deleted while it is there).
pub fn clean_start() {
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/testbed-three-spokes.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.arg("--config").arg(&all).args(["--yes", "down"]);
    assert_success(&run_with_timeout(&mut cmd, Duration::from_secs(1800)), "initial meshctl down (every spoke)");
}

// ---------------------------------------------------------------- the meshctl binary, JSON output

/// Runs the meshctl binary with `--output json` against `config`.
pub fn meshctl(config: &Path, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.arg("--config").arg(config).args(["--output", "json"]).args(args);
    let t0 = Instant::now();
    let out = run_with_timeout(&mut cmd, timeout);
    eprintln!("meshctl {}: exit {:?} after {:.1}s", args.join(" "), out.status.code(), t0.elapsed().as_secs_f64());
    out
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The summary line of an engine run.
pub fn summary(out: &Output) -> serde_json::Value {
    json_lines(out).into_iter().rev().find_map(|v| v.get("summary").cloned()).unwrap_or_else(|| panic!("no summary line:\n{}", text(out)))
}

/// `meshctl <args>` must exit 0 with an ok summary.
pub fn run_ok(config: &Path, args: &[&str]) -> serde_json::Value {
    let out = meshctl(config, args, Duration::from_secs(1800));
    let s = summary(&out);
    assert!(out.status.success() && s["ok"] == true, "meshctl {}: exit {:?}\n{}", args.join(" "), out.status.code(), text(&out));
    s
}

/// Minimal HTTP/1.1 GET (Connection: close) on 127.0.0.1:port; returns (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {buf:?}")))?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// What is left of meshctl's in the test bed's moto, every account: stacks (not
/// DELETE_COMPLETE), non-default VPCs, Transit Gateways, EKS clusters, active RAM shares owned,
/// IAM roles (but the test bed's own). Empty when `down` left nothing.
pub async fn aws_leftovers(tb: &Testbed) -> Vec<String> {
    let mut left = Vec::new();
    for (profile, _) in &tb.accounts {
        let conf = meshctl::aws::sdk_loader().profile_name(profile).region(aws_config::Region::new(tb.region.clone())).load().await;
        let mut add = |what: &str, names: Vec<String>| left.extend(names.into_iter().map(|n| format!("{profile}: {what} {n}")));
        let cfn = aws_sdk_cloudformation::Client::new(&conf);
        let stacks = cfn.describe_stacks().send().await.expect("CloudFormation DescribeStacks");
        add(
            "stack",
            stacks
                .stacks()
                .iter()
                .filter(|s| s.stack_status().map(|s| s.as_str()) != Some("DELETE_COMPLETE"))
                .map(|s| s.stack_name().unwrap_or_default().to_string())
                .collect(),
        );
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let vpcs = ec2.describe_vpcs().send().await.expect("EC2 DescribeVpcs");
        add(
            "VPC",
            vpcs.vpcs()
                .iter()
                .filter(|v| v.is_default() != Some(true))
                .map(|v| format!("{} {}", v.vpc_id().unwrap_or_default(), v.cidr_block().unwrap_or_default()))
                .collect(),
        );
        let tgws = ec2.describe_transit_gateways().send().await.expect("EC2 DescribeTransitGateways");
        add(
            "Transit Gateway",
            tgws.transit_gateways()
                .iter()
                .filter(|t| t.state().map(|s| s.as_str()) != Some("deleted"))
                .map(|t| t.transit_gateway_id().unwrap_or_default().to_string())
                .collect(),
        );
        let eks = aws_sdk_eks::Client::new(&conf);
        add("EKS cluster", eks.list_clusters().send().await.expect("EKS ListClusters").clusters().to_vec());
        let ram = aws_sdk_ram::Client::new(&conf);
        let shares = ram
            .get_resource_shares()
            .resource_owner(aws_sdk_ram::types::ResourceOwner::SelfValue)
            .send()
            .await
            .expect("RAM GetResourceShares");
        add(
            "RAM share",
            shares
                .resource_shares()
                .iter()
                .filter(|s| s.status().map(|s| s.as_str()) == Some("ACTIVE"))
                .map(|s| s.name().unwrap_or_default().to_string())
                .collect(),
        );
        let iam = aws_sdk_iam::Client::new(&conf);
        let roles = iam.list_roles().send().await.expect("IAM ListRoles");
        add(
            "IAM role",
            roles
                .roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .filter(|n| n != "meshctl-testbed" && !n.starts_with("AWSServiceRole"))
                .collect(),
        );
    }
    left
}

/// What is left of meshctl's in one test bed cluster: the namespaces it creates (`namespaces`,
/// with their phase), the cluster-scoped and labelled objects meshctl or Helm manage (RBAC, the
/// StorageClass, ConfigMaps, Secrets), every PersistentVolume. Empty after a `down`.
///
/// Another test's namespace that is still being deleted (tests delete theirs without waiting)
/// is waited out first, for up to two minutes: what it holds is not meshctl's leftover.
pub fn cluster_leftovers(tb: &Testbed, ctx: &str, namespaces: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    let terminating = |ns: &serde_json::Value| -> Vec<String> {
        ns["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["status"]["phase"] == "Terminating")
            .filter_map(|n| n["metadata"]["name"].as_str())
            .filter(|n| !namespaces.contains(n))
            .map(str::to_string)
            .collect()
    };
    let mut ns = tb.kubectl_json(ctx, &["get", "namespaces"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !terminating(&ns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        ns = tb.kubectl_json(ctx, &["get", "namespaces"]);
    }
    for n in ns["items"].as_array().into_iter().flatten() {
        let name = n["metadata"]["name"].as_str().unwrap_or("");
        if namespaces.contains(&name) {
            left.push(format!("{ctx}: namespace {name} ({})", n["status"]["phase"].as_str().unwrap_or("")));
        }
    }
    let kinds = "clusterroles,clusterrolebindings,storageclasses,persistentvolumes,configmaps,secrets";
    let managed = tb.kubectl_json(ctx, &["get", kinds, "-A", "-l", "app.kubernetes.io/managed-by"]);
    for i in managed["items"].as_array().into_iter().flatten() {
        if matches!(i["metadata"]["labels"]["app.kubernetes.io/managed-by"].as_str(), Some("meshctl") | Some("Helm")) {
            left.push(format!("{ctx}: {} {}", i["kind"].as_str().unwrap_or(""), i["metadata"]["name"].as_str().unwrap_or("")));
        }
    }
    let pvs = tb.kubectl_json(ctx, &["get", "persistentvolumes"]);
    for pv in pvs["items"].as_array().into_iter().flatten() {
        left.push(format!("{ctx}: PersistentVolume {}", pv["metadata"]["name"].as_str().unwrap_or("")));
    }
    left
}
