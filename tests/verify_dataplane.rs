//! Data-plane test of `meshctl verify` on real binaries, all on 127.0.0.1: a spire-server
//! (trust domain am-multi-account-mesh, join-token node attestation, sqlite), a spire-agent
//! serving SDS on its unix socket with the `unix` workload attestor, and two Envoy 1.40 —
//! "frontend" calling "appserver" over mTLS — each fetching its SVID (secret = its SPIFFE ID)
//! and the trust bundle (secret = `spiffe://am-multi-account-mesh`) from the agent over SDS.
//! Both Envoys run as the same uid, so their registration entries are told apart by
//! `unix:path`: each runs from its own copy of the envoy binary.
//!
//! The Envoy and SPIRE configurations are the templates in `tests/fixtures/envoy/bed/`, shared
//! with `scripts/record-envoy-fixtures`.
//!
//! Binaries: `$MESHCTL_TESTBED_BIN`, else `$HOME/.cache/meshctl-testbed/bin` (envoy,
//! spire-server, spire-agent). A missing binary fails the test: it never skips.
//!
//! `port_forward_admin_through_testbed_pods_gives_the_same_checks` also needs the running test
//! bed (`scripts/testbed up`, `source $STATE/env`): it reaches the same two Envoys through pods
//! in the `frontend` cluster and the API server's pod port-forward (kwok maps it to the Envoys).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use meshctl::verify::envoy::{parse_certs, parse_clusters, parse_stats};
use meshctl::verify::{self, AdminTransport, Backend, CheckId, CheckStatus, GenericHints, HttpTarget, Proxy, Report, VerifyArgs};

const TD: &str = "am-multi-account-mesh";
const TPL_APPSERVER: &str = include_str!("fixtures/envoy/bed/appserver.yaml");
const TPL_FRONTEND: &str = include_str!("fixtures/envoy/bed/frontend.yaml");
const TPL_SDS: &str = include_str!("fixtures/envoy/bed/sds_cluster.yaml.part");
const TPL_SERVER: &str = include_str!("fixtures/envoy/bed/spire-server.conf");
const TPL_AGENT: &str = include_str!("fixtures/envoy/bed/spire-agent.conf");

fn id(name: &str) -> String {
    format!("spiffe://{TD}/{name}")
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("MESHCTL_TESTBED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/meshctl-testbed/bin"));
    let p = dir.join(name);
    if !p.exists() {
        panic!(
            "test-bed binary {} is missing: build the test bed first (scripts/testbed setup), or set \
             MESHCTL_TESTBED_BIN to a directory holding envoy, spire-server and spire-agent",
            p.display()
        );
    }
    p
}

/// Fills `@KEY@` placeholders; a line that is exactly `@SDS_CLUSTER@` becomes the SDS cluster.
fn fill(tpl: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::new();
    for line in tpl.lines() {
        if line == "@SDS_CLUSTER@" {
            out.push_str(TPL_SDS);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for (k, v) in vars {
        out = out.replace(&format!("@{k}@"), v);
    }
    assert!(!out.contains("@SDS_SOCKET@") && !out.contains("@TRUST_DOMAIN@"), "unfilled template");
    out
}

/// A child process killed on drop, its output in a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child =
            cmd.stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Proc { child, log }
    }
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Bed {
    dir: tempfile::TempDir,
    server_port: u16,
    fe_admin: u16,
    app_admin: u16,
    entry_port: u16,
    ingress_port: u16,
    appserver_allows: String,
    procs: Vec<(&'static str, Proc)>,
}

impl Bed {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn sock(&self) -> String {
        self.path("agent.sock").display().to_string()
    }
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DIR", self.dir.path().display().to_string()),
            ("SERVER_PORT", self.server_port.to_string()),
            ("TRUST_DOMAIN", TD.to_string()),
            ("SDS_SOCKET", self.sock()),
        ]
    }

    /// Runs `spire-server <sub> -socketPath … args`, panicking on failure; returns stdout.
    fn server_cli(&self, sub: &[&str], args: &[&str]) -> String {
        let out = Command::new(bin("spire-server")).args(sub).arg("-socketPath").arg(self.path("server.sock")).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "spire-server {sub:?} {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (name, p) in &self.procs {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            s.push_str(&format!("---- {name} ({})\n", p.log.display()));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    fn stop(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|(n, _)| *n == name) {
            let (_, mut p) = self.procs.remove(i);
            p.stop();
            // keep the log for diagnostics
            self.procs.push(("(stopped)", p));
        }
    }

    async fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("timed out after {timeout:?} waiting for {what}\n{}", self.logs());
    }

    fn start_agent(&mut self, token: Option<&str>) {
        let mut cmd = Command::new(bin("spire-agent"));
        cmd.arg("run").arg("-config").arg(self.path("agent.conf"));
        if let Some(t) = token {
            cmd.arg("-joinToken").arg(t);
        }
        let log = self.path(&format!("agent-{}.log", self.procs.len()));
        self.procs.push(("spire-agent", Proc::spawn(&mut cmd, log)));
    }

    async fn wait_agent(&self) {
        let sock = self.sock();
        let agent = bin("spire-agent");
        self.wait_for("spire-agent healthcheck", Duration::from_secs(60), || {
            Command::new(&agent).args(["healthcheck", "-socketPath", &sock]).output().map(|o| o.status.success()).unwrap_or(false)
        })
        .await;
    }

    fn start_envoy(&mut self, which: &'static str) {
        let mut vars = self.vars();
        let cfg = match which {
            "frontend" => {
                vars.extend([
                    ("ADMIN_PORT", self.fe_admin.to_string()),
                    ("ENTRY_PORT", self.entry_port.to_string()),
                    ("BACKEND_PORT", self.ingress_port.to_string()),
                    ("SPIFFE_ID", id("frontend")),
                    ("BACKEND_SAN", id("appserver")),
                ]);
                fill(TPL_FRONTEND, &vars)
            }
            _ => {
                vars.extend([
                    ("ADMIN_PORT", self.app_admin.to_string()),
                    ("INGRESS_PORT", self.ingress_port.to_string()),
                    ("SPIFFE_ID", id("appserver")),
                    ("ALLOWED_SAN", self.appserver_allows.clone()),
                ]);
                fill(TPL_APPSERVER, &vars)
            }
        };
        let cfg_path = self.path(&format!("{which}.yaml"));
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = self.path(&format!("{which}-{}.log", self.procs.len()));
        let mut cmd = Command::new(self.path(&format!("{which}-envoy")));
        cmd.arg("-c").arg(&cfg_path).args(["--disable-hot-restart", "-l", "info"]);
        self.procs.push((which, Proc::spawn(&mut cmd, log)));
    }

    /// Starts server, agent, entries and both Envoys; the appserver accepts `appserver_allows`.
    async fn start(appserver_allows: &str) -> Bed {
        // Resolve every binary first: a missing one fails here with a clear message.
        let envoy = bin("envoy");
        bin("spire-server");
        bin("spire-agent");
        // Short path: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("mv").tempdir_in("/tmp").unwrap();
        let mut bed = Bed {
            dir,
            server_port: free_port(),
            fe_admin: free_port(),
            app_admin: free_port(),
            entry_port: free_port(),
            ingress_port: free_port(),
            appserver_allows: appserver_allows.to_string(),
            procs: Vec::new(),
        };
        std::fs::create_dir_all(bed.path("server-data")).unwrap();
        std::fs::create_dir_all(bed.path("agent-data")).unwrap();
        std::fs::write(bed.path("server.conf"), fill(TPL_SERVER, &bed.vars())).unwrap();
        std::fs::write(bed.path("agent.conf"), fill(TPL_AGENT, &bed.vars())).unwrap();

        let mut cmd = Command::new(bin("spire-server"));
        cmd.arg("run").arg("-config").arg(bed.path("server.conf"));
        let log = bed.path("server.log");
        bed.procs.push(("spire-server", Proc::spawn(&mut cmd, log)));
        let server_sock = bed.path("server.sock");
        let server = bin("spire-server");
        bed.wait_for("spire-server healthcheck", Duration::from_secs(60), || {
            Command::new(&server)
                .arg("healthcheck")
                .arg("-socketPath")
                .arg(&server_sock)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .await;
        let bundle = bed.server_cli(&["bundle", "show"], &[]);
        std::fs::write(bed.path("bundle.pem"), bundle).unwrap();
        let token_out = bed.server_cli(&["token", "generate"], &["-spiffeID", &id("node")]);
        let token = token_out
            .lines()
            .find_map(|l| l.strip_prefix("Token:"))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|| panic!("no token in {token_out:?}"));
        bed.start_agent(Some(&token));
        bed.wait_agent().await;

        // Two copies of the envoy binary, so `unix:path` tells the workloads apart.
        let real = std::fs::canonicalize(&envoy).unwrap();
        for w in ["frontend", "appserver"] {
            let dst = bed.path(&format!("{w}-envoy"));
            if std::fs::hard_link(&real, &dst).is_err() {
                std::fs::copy(&real, &dst).unwrap();
            }
            let sel = format!("unix:path:{}", dst.display());
            bed.server_cli(&["entry", "create"], &["-parentID", &id("node"), "-spiffeID", &id(w), "-selector", &sel]);
        }
        bed.start_envoy("frontend");
        bed.start_envoy("appserver");
        bed.wait_svids().await;
        bed
    }

    /// Waits until both Envoys show their SVID in /certs.
    async fn wait_svids(&self) {
        for (w, port) in [("frontend", self.fe_admin), ("appserver", self.app_admin)] {
            let want = id(w);
            let t0 = Instant::now();
            loop {
                if let Ok(body) = admin_get(port, "/certs").await {
                    if let Ok(certs) = parse_certs(&body) {
                        if certs.iter().flat_map(|c| &c.cert_chain).any(|c| c.uris.contains(&want)) {
                            break;
                        }
                    }
                }
                if t0.elapsed() > Duration::from_secs(90) {
                    panic!("{w} Envoy never received its SVID {want} over SDS\n{}", self.logs());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Waits until a request through the frontend reaches the appserver.
    async fn wait_traffic(&self) {
        let t = HttpTarget::parse(&self.entry_url()).unwrap();
        let t0 = Instant::now();
        loop {
            if let Ok((200, _)) = t.get("/").await {
                return;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                panic!("no traffic passes frontend -> appserver\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn entry_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.entry_port)
    }

    fn transports(&self) -> Vec<(Proxy, Box<dyn AdminTransport>)> {
        verify::admin_transports(
            &[format!("frontend=http://127.0.0.1:{}", self.fe_admin), format!("appserver=http://127.0.0.1:{}", self.app_admin)],
            &workloads(&self.sock()),
        )
        .unwrap()
    }

    fn args(&self, traffic: bool) -> VerifyArgs {
        VerifyArgs {
            traffic,
            traffic_url: vec![format!("frontend={}", self.entry_url())],
            requests: 3,
            timeout: "20s".into(),
            ..VerifyArgs::default()
        }
    }

    async fn verify(&self, traffic: bool) -> Report {
        verify::run(&self.args(traffic), self.transports(), &GenericHints).await.unwrap()
    }
}

async fn admin_get(port: u16, path: &str) -> Result<String, String> {
    let t = HttpTarget::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    match t.get(path).await? {
        (200, body) => Ok(body),
        (s, body) => Err(format!("{s}: {body}")),
    }
}

/// The two workloads as the configuration would describe them.
fn workloads(sock: &str) -> Vec<Proxy> {
    let base = |name: &str, cluster: &str| Proxy {
        name: name.into(),
        cluster: cluster.into(),
        namespace: "yelb".into(),
        pod_selector: format!("app={name}"),
        admin_port: 9901,
        spiffe_id: id(name),
        trust_domain: TD.into(),
        sds_socket: sock.into(),
        allowed_callers: vec![],
        backends: vec![],
    };
    let mut fe = base("frontend", "frontend");
    fe.backends = vec![Backend { name: "appserver".into(), spiffe_id: id("appserver"), port: 4567 }];
    let mut app = base("appserver", "backend");
    app.allowed_callers = vec![id("frontend")];
    vec![fe, app]
}

fn failures(r: &Report) -> BTreeSet<(String, CheckId)> {
    r.failures().into_iter().collect()
}

/// Prints the report and asserts that exactly these (workload, check) pairs failed; returns the
/// rendered text for further messages.
fn assert_fails(r: &Report, expected: &[(&str, CheckId)]) -> String {
    let text = r.render_text(false);
    eprintln!("{text}");
    let expected: BTreeSet<_> = expected.iter().map(|(w, c)| (w.to_string(), *c)).collect();
    assert_eq!(failures(r), expected, "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_mesh_passes_every_check_with_traffic() {
    let bed = Bed::start(&id("frontend")).await;
    bed.wait_traffic().await;
    let report = bed.verify(true).await;
    let text = report.render_text(false);
    eprintln!("{text}");
    assert!(report.passed(), "{text}\n{}", bed.logs());
    for r in &report.results {
        assert_eq!(r.status, CheckStatus::Pass, "{}/{} is not a pass:\n{text}", r.workload, r.check);
    }
    assert_eq!(report.results.len(), 12, "{text}");
    // The handshake counters verify reports are those of /stats, read independently.
    for (w, port) in [("frontend", bed.fe_admin), ("appserver", bed.app_admin)] {
        let stats = parse_stats(&admin_get(port, "/stats").await.unwrap()).unwrap();
        let hs = report.get(w, CheckId::Handshakes).unwrap();
        assert!(!hs.counters.is_empty(), "{w}: no counters reported");
        for (name, v) in &hs.counters {
            assert!(name.ends_with("ssl.handshake"), "{name}");
            assert!(*v >= 3, "{w}: {name} = {v}, expected at least the 3 traffic requests");
            assert_eq!(stats.get(name), *v, "{w}: {name} differs from /stats");
        }
    }
    let fe_hs = report.get("frontend", CheckId::Handshakes).unwrap();
    assert!(fe_hs.counters.contains_key(&format!("cluster.cds_egress_{TD}_appserver_yelb_http_4567.ssl.handshake")));
    let app_hs = report.get("appserver", CheckId::Handshakes).unwrap();
    assert!(app_hs.counters.contains_key(&format!("listener.127.0.0.1_{}.ssl.handshake", bed.ingress_port)));
    // Renderings of the same results.
    let json = report.to_json_lines();
    assert_eq!(json.len(), 13);
    assert_eq!(json[12]["summary"]["passed"], 12);
    let junit = report.to_junit();
    assert_eq!(junit.matches("<testsuite ").count(), 2);
    assert!(!junit.contains("<failure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn san_mismatch_fails_peers_then_handshakes_and_tls_failures() {
    let bed = Bed::start(&id("intruder")).await;
    // Before traffic: only the peers check of the appserver fails.
    let before = bed.verify(false).await;
    let text = assert_fails(&before, &[("appserver", CheckId::Peers)]);
    let peers = before.get("appserver", CheckId::Peers).unwrap();
    let hint = peers.hint.as_deref().unwrap();
    assert!(hint.contains(&id("intruder")) && hint.contains(&id("frontend")), "{hint}\n{text}");
    // With traffic: no handshake completes, and the failure counters rise.
    let after = bed.verify(true).await;
    let text = assert_fails(
        &after,
        &[
            ("appserver", CheckId::Peers),
            ("appserver", CheckId::Handshakes),
            ("appserver", CheckId::TlsFailures),
            ("frontend", CheckId::Handshakes),
            ("frontend", CheckId::TlsFailures),
        ],
    );
    for ok in [CheckId::Sds, CheckId::Identity, CheckId::Peers] {
        assert_eq!(after.get("frontend", ok).unwrap().status, CheckStatus::Pass, "{text}");
    }
    let tf = after.get("appserver", CheckId::TlsFailures).unwrap();
    assert!(tf.observed.contains("ssl.fail_verify_san"), "{text}");
    let fe_tf = after.get("frontend", CheckId::TlsFailures).unwrap();
    assert!(fe_tf.observed.contains("ssl.connection_error"), "{text}");
    assert!(tf.hint.as_deref().unwrap().contains("a caller presented a SPIFFE ID outside"), "{text}");
    assert!(!after.passed());
    let junit = after.to_junit();
    assert!(junit.contains("<failure"), "{junit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_spire_agent_fails_sds() {
    let mut bed = Bed::start(&id("frontend")).await;
    bed.wait_traffic().await;
    bed.stop("spire-agent");
    // Envoy notices the closed stream at once; wait until no SDS connection is left.
    for port in [bed.fe_admin, bed.app_admin] {
        let sds_closed = || {
            let (_, body) = common::http_get(port, "/clusters?format=json").unwrap();
            let cl = parse_clusters(&body).unwrap();
            cl.iter().filter(|c| c.name == "static_cluster_sds_unix_socket").all(|c| c.hosts.iter().all(|h| h.cx_active == 0))
        };
        bed.wait_for("no SDS connection left", Duration::from_secs(30), sds_closed).await;
    }
    let report = bed.verify(false).await;
    let text = assert_fails(&report, &[("frontend", CheckId::Sds), ("appserver", CheckId::Sds)]);
    let sds = report.get("frontend", CheckId::Sds).unwrap();
    assert!(sds.observed.contains("cx_active=0"), "{text}");
    let hint = sds.hint.as_deref().unwrap();
    assert!(hint.contains("SPIRE agent socket") && hint.contains(&bed.sock()) && hint.contains("daemonset spire-agent"), "{hint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_svid_fails_identity() {
    let mut bed = Bed::start(&id("frontend")).await;
    // Delete the appserver's entry, restart the agent, and restart the appserver (its pod
    // restarting): it can no longer get an SVID.
    let show = bed.server_cli(&["entry", "show"], &["-spiffeID", &id("appserver")]);
    let entry_id = show
        .lines()
        .find_map(|l| l.trim().strip_prefix("Entry ID"))
        .map(|s| s.trim().trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| panic!("no entry id in {show}"));
    bed.server_cli(&["entry", "delete"], &["-entryID", &entry_id]);
    bed.stop("spire-agent");
    bed.stop("appserver");
    bed.start_agent(None);
    bed.wait_agent().await;
    // The agent learns of the deletion on its next sync (every few seconds): restart the
    // appserver until it comes up without an SVID.
    let port = bed.app_admin;
    let want = id("appserver");
    for restart in 1.. {
        bed.start_envoy("appserver");
        bed.wait_for("appserver admin", Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let certs = parse_certs(&admin_get(port, "/certs").await.unwrap()).unwrap();
        if !certs.iter().flat_map(|c| &c.cert_chain).any(|c| c.uris.contains(&want)) {
            break;
        }
        assert!(restart < 15, "appserver keeps getting an SVID after {restart} restarts\n{}", bed.logs());
        bed.stop("appserver");
    }
    let report = bed.verify(false).await;
    let text = report.render_text(false);
    eprintln!("{text}");
    let f = failures(&report);
    assert_eq!(f, BTreeSet::from([("appserver".to_string(), CheckId::Identity)]), "{text}\n{}", bed.logs());
    let idr = report.get("appserver", CheckId::Identity).unwrap();
    assert!(idr.hint.as_deref().unwrap().contains("entry show"), "{text}");
    // The frontend still holds its SVID.
    assert_eq!(report.get("frontend", CheckId::Identity).unwrap().status, CheckStatus::Pass, "{text}");
}

#[test]
fn unknown_admin_name_is_a_usage_error() {
    let err = verify::admin_transports(&["nosuch=http://127.0.0.1:1".into()], &workloads("/tmp/x.sock")).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("nosuch") && msg.contains("frontend, appserver"), "{msg}");
}

/// CheckStatus of every check, in report order.
fn statuses(r: &Report) -> Vec<(String, CheckId, CheckStatus)> {
    r.results.iter().map(|c| (c.workload.clone(), c.check, c.status)).collect()
}

/// A namespace of its own in a test-bed cluster, deleted on drop.
struct TestNamespace {
    tb: common::Testbed,
    context: &'static str,
    name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        self.tb.delete_namespace(self.context, &self.name);
    }
}

/// A pod standing for a workload on the cluster's kwok node (kwok runs nothing; the test bed
/// taints that node so only pods that ask for it land there), labelled as meshctl's
/// workloads are (`app` and `tier`).
fn workload_pod(ns: &str, name: &str, app: &str) -> String {
    let spec = "spec:\n  nodeSelector:\n    type: kwok\n  tolerations:\n  - {key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}\n  \
                containers:\n  - name: envoy\n    image: registry.invalid/envoy:1\n    ports:\n    - containerPort: 9901\n      name: admin\n";
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\n    tier: {app}\n{spec}")
}

/// kwok's namespaced PortForward for a pod: its port 9901 goes to 127.0.0.1:`local`.
fn admin_port_forward(ns: &str, pod: &str, local: u16) -> String {
    format!(
        "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: PortForward\nmetadata:\n  name: {pod}\n  namespace: {ns}\n\
         spec:\n  forwards:\n  - ports: [9901]\n    target:\n      address: 127.0.0.1\n      port: {local}\n"
    )
}

/// Waits until kwok reports the pod Running in the test bed's cluster `ctx`.
fn wait_pod_running(tb: &common::Testbed, ctx: &str, ns: &str, pod: &str) {
    common::wait_for(&format!("pod {ns}/{pod} Running"), Duration::from_secs(60), Duration::from_millis(500), || {
        let phase = tb.kubectl(ctx, &["-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
        (phase.trim() == "Running").then_some(())
    });
}

/// The in-cluster path on real API servers: the two Envoys of the healthy bed stand behind
/// pods, the frontend's in the test bed's `frontend` cluster and the appserver's in `backend`
/// (kwok maps each pod's port 9901 to its Envoy's admin port); verify reaches them through
/// each cluster's pod port-forward (`PortForwardAdmin`, kube-rs) and reports what it reports
/// through `HttpAdmin`; then `meshctl verify` without `--admin` does the same from a
/// configuration, each workload through its own account's kube_context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_admin_through_testbed_pods_gives_the_same_checks() {
    const CTX: &str = "frontend";
    let t0 = Instant::now();
    let tb = common::testbed();
    let bed = Bed::start(&id("frontend")).await;
    bed.wait_traffic().await;

    // one namespace name in both clusters (the config's app_namespace)
    let ns = TestNamespace { name: tb.create_namespace(CTX, "mv-pf"), context: CTX, tb: tb.clone() };
    tb.kubectl("backend", &["create", "namespace", &ns.name]);
    let _ns_backend = TestNamespace { name: ns.name.clone(), context: "backend", tb: tb.clone() };
    // (workload, pod, the cluster the pod is in, its Envoy's admin port)
    let pods = [("frontend", "frontend-0", "frontend", bed.fe_admin), ("appserver", "appserver-0", "backend", bed.app_admin)];
    for (app, pod, ctx, _) in pods {
        tb.kubectl_stdin(ctx, &["apply", "-f", "-"], Some(&workload_pod(&ns.name, pod, app)));
    }
    for (_, pod, ctx, _) in pods {
        wait_pod_running(&tb, ctx, &ns.name, pod);
    }
    for (_, pod, ctx, local) in pods {
        tb.kubectl_stdin(ctx, &["apply", "-f", "-"], Some(&admin_port_forward(&ns.name, pod, local)));
    }

    let mut clients = BTreeMap::new();
    for ctx in ["frontend", "backend"] {
        let kubeconfig = kube::config::Kubeconfig::read_from(&tb.kubeconfig).unwrap();
        let options = kube::config::KubeConfigOptions { context: Some(ctx.into()), ..Default::default() };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
        clients.insert(ctx, kube::Client::try_from(config).unwrap());
    }
    let in_ns: Vec<Proxy> = workloads(&bed.sock())
        .into_iter()
        .map(|mut w| {
            w.namespace = ns.name.clone();
            w
        })
        .collect();
    // the workload's cluster is its test-bed context
    let transport =
        |w: &Proxy| verify::PortForwardAdmin::for_workload(clients[w.cluster.as_str()].clone(), w).with_context(w.cluster.clone());

    // kwok sees a new PortForward a moment after it is created; until then the cluster-wide
    // mapping sends 9901 to 127.0.0.1:9901. Poll until each pod answers with its own Envoy
    // (its config path, from /server_info).
    for w in &in_ns {
        let want = bed.path(&format!("{}.yaml", w.name)).display().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = transport(w);
            let last = match tokio::time::timeout(Duration::from_secs(10), t.get("/server_info")).await {
                Ok(Ok(body)) if body.contains(&want) => {
                    let pod = format!("{}-0", w.name);
                    assert_eq!(t.pod(), Some(pod.as_str()));
                    let described = t.describe();
                    assert!(described.contains(&format!("{}/{pod}", ns.name)) && described.contains("9901"), "{described}");
                    let show = t.show_command("/certs");
                    assert_eq!(
                        show,
                        format!(
                            "kubectl --context {} -n {} exec {pod} -c envoy -- curl -s \
                             'http://localhost:9901/certs'",
                            w.cluster, ns.name
                        )
                    );
                    break;
                }
                Ok(Ok(body)) => format!("another admin interface answered: {body:.200}"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 10s".into(),
            };
            assert!(Instant::now() < deadline, "{}: never reached its Envoy through the pod port-forward: {last}\n{}", w.name, bed.logs());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!("port-forward reached both Envoys after {:?}", t0.elapsed());

    // The same checks through HttpAdmin and through the pods.
    let http = bed.verify(true).await;
    let http_text = http.render_text(false);
    let pf_targets: Vec<(Proxy, Box<dyn AdminTransport>)> =
        in_ns.iter().map(|w| (w.clone(), Box::new(transport(w)) as Box<dyn AdminTransport>)).collect();
    let pf = verify::run(&bed.args(true), pf_targets, &GenericHints).await.unwrap();
    let pf_text = pf.render_text(false);
    eprintln!("{pf_text}");
    assert!(pf.passed(), "{pf_text}\n{}", bed.logs());
    assert_eq!(pf.results.len(), 12, "{pf_text}");
    assert_eq!(statuses(&pf), statuses(&http), "through HttpAdmin:\n{http_text}\nthrough the pods:\n{pf_text}");
    for (w, pod, _, port) in pods {
        let target = &pf.targets[w];
        assert!(target.contains(&format!("{}/{pod} port 9901", ns.name)), "{w}: {target}");
        // The counters read through the pod: 3 more handshakes than through HttpAdmin, and
        // what /stats says directly.
        let stats = parse_stats(&admin_get(port, "/stats").await.unwrap()).unwrap();
        let hs = pf.get(w, CheckId::Handshakes).unwrap();
        let before = &http.get(w, CheckId::Handshakes).unwrap().counters;
        assert!(!hs.counters.is_empty(), "{w}: no counters reported");
        assert_eq!(hs.counters.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "{w}");
        for (name, v) in &hs.counters {
            assert!(*v >= before[name] + 3, "{w}: {name} = {v}, before {}", before[name]);
            assert_eq!(stats.get(name), *v, "{w}: {name} differs from /stats");
        }
    }
    eprintln!("verify through the pods done after {:?}", t0.elapsed());

    // A pod whose admin port leads nowhere, and a selector no pod matches: the admin check
    // fails fast, saying why (the port-forward's own error) and naming the pod.
    tb.kubectl_stdin(CTX, &["apply", "-f", "-"], Some(&workload_pod(&ns.name, "noadmin-0", "noadmin")));
    wait_pod_running(&tb, CTX, &ns.name, "noadmin-0");
    let closed = free_port();
    tb.kubectl_stdin(CTX, &["apply", "-f", "-"], Some(&admin_port_forward(&ns.name, "noadmin-0", closed)));
    let broken: Vec<Proxy> = ["noadmin", "nopod"]
        .iter()
        .map(|name| Proxy { name: name.to_string(), pod_selector: format!("app={name}"), cluster: CTX.into(), ..in_ns[1].clone() })
        .collect();
    // Until kwok sees the PortForward the cluster-wide mapping (127.0.0.1:9901) answers the
    // pod's port; poll until the error names the closed port.
    let refused = format!("127.0.0.1:{closed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let bad = loop {
        let targets: Vec<(Proxy, Box<dyn AdminTransport>)> =
            broken.iter().map(|w| (w.clone(), Box::new(transport(w)) as Box<dyn AdminTransport>)).collect();
        let bad = verify::run(&bed.args(false), targets, &GenericHints).await.unwrap();
        let admin = bad.get("noadmin", CheckId::Admin).unwrap();
        if admin.observed.contains(&refused) || Instant::now() > deadline {
            break bad;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let bad_text = assert_fails(&bad, &[("noadmin", CheckId::Admin), ("nopod", CheckId::Admin)]);
    let admin = bad.get("noadmin", CheckId::Admin).unwrap();
    assert!(
        admin.observed.contains(&format!("pod {}/noadmin-0:9901", ns.name))
            && admin.observed.contains(&refused)
            && admin.observed.contains("connection refused"),
        "{bad_text}"
    );
    assert!(
        admin.hint.as_deref().unwrap().contains(&format!("kubectl --context {CTX} -n {} exec noadmin-0 -c envoy", ns.name)),
        "{bad_text}"
    );
    let admin = bad.get("nopod", CheckId::Admin).unwrap();
    assert!(admin.observed.contains("no running pod matches app=nopod"), "{bad_text}");

    // The binary: `meshctl verify` without --admin, each workload in its account's cluster.
    let toml = format!(
        r#"region = "us-east-2"

{accounts}[mesh]
trust_domain = "{TD}"
app_namespace = "{ns}"

[spire]
agent_socket = "{sock}"

[[services]]
name = "frontend"
account = "frontend"
spiffe_path = "frontend"
app_label = "frontend"
port = 80
backends = ["appserver"]
image = "registry.invalid/frontend:1"

[[services]]
name = "appserver"
account = "backend"
spiffe_path = "appserver"
app_label = "appserver"
port = 4567
image = "registry.invalid/appserver:1"
"#,
        ns = ns.name,
        sock = bed.sock(),
        accounts = common::accounts_toml(&["frontend", "backend"]),
    );
    let cfg = bed.path("meshctl.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.arg("--config")
        .arg(&cfg)
        .args(["--output", "json", "verify", "--traffic", "--timeout", "30s"])
        .arg("--traffic-url")
        .arg(format!("frontend={}", bed.entry_url()))
        .env("KUBECONFIG", &tb.kubeconfig);
    let out = tokio::task::spawn_blocking(move || common::run_with_timeout(&mut cmd, Duration::from_secs(120))).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let checks: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("check").is_some()).collect();
    let bin_statuses: Vec<(String, String, String)> = checks
        .iter()
        .map(|c| {
            (
                c["workload"].as_str().unwrap().to_string(),
                c["check"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> =
        http.results.iter().map(|c| (c.workload.clone(), c.check.as_str().to_string(), c.status.as_str().to_string())).collect();
    assert_eq!(bin_statuses, want, "{stdout}\n{stderr}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["passed"], true, "{summary}");
    assert_eq!(summary["summary"]["passed"], 12, "{summary}");
    for w in ["frontend", "appserver"] {
        let hs = checks.iter().find(|c| c["workload"] == w && c["check"] == "handshakes").unwrap();
        let before = &pf.get(w, CheckId::Handshakes).unwrap().counters;
        let counters = hs["counters"].as_object().unwrap();
        assert_eq!(counters.len(), before.len(), "{w}: {hs}");
        for (name, v) in before {
            let now = counters[name.as_str()].as_u64().unwrap();
            assert!(now >= v + 3, "{w}: {name} = {now}, before {v}");
        }
    }

    // The same without a reachable admin interface: exit 1, and the hint runs kubectl in the
    // account's kube_context against the pod.
    let toml = toml.split("[[services]]").next().unwrap().to_string()
        + "[[services]]\nname = \"noadmin\"\naccount = \"frontend\"\nport = 80\nimage = \"docker.io/library/nginx:1.27\"\n";
    std::fs::write(&cfg, toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.arg("--config").arg(&cfg).args(["--output", "json", "verify", "--timeout", "30s"]).env("KUBECONFIG", &tb.kubeconfig);
    let out = tokio::task::spawn_blocking(move || common::run_with_timeout(&mut cmd, Duration::from_secs(120))).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let admin: serde_json::Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["check"] == "admin")
        .unwrap_or_else(|| panic!("no admin check in {stdout}\n{stderr}"));
    assert_eq!(admin["status"], "fail", "{admin}");
    let observed = admin["observed"].as_str().unwrap();
    assert!(observed.contains("connection refused"), "{admin}");
    let hint = admin["hint"].as_str().unwrap();
    assert!(hint.contains(&format!("kubectl --context {CTX} -n {} exec noadmin-0 -c envoy", ns.name)), "{admin}");
    eprintln!("meshctl verify (port-forward) done after {:?}", t0.elapsed());
}
