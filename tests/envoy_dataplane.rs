//! The `envoy` provider's data plane on real binaries: the bootstraps meshctl renders and
//! applies run, unmodified, in real Envoy 1.40 processes, and carry mTLS with SPIFFE ID checks
//! between them.
//!
//! - `bootstraps_pass_envoy_validate`: every bootstrap meshctl renders for the walkthrough and
//!   the three-spoke example passes `envoy --mode validate`.
//! - `meshctls_bootstraps_carry_mtls_between_real_envoys` (needs the test bed and root):
//!   meshctl renders and applies the backend's and the frontend's objects (ConfigMaps and
//!   Services; no Deployment, so no pod starts) to the test bed's API servers in a fresh
//!   namespace; the test reads the `<service>-envoy` ConfigMaps back and runs each in its own
//!   network namespace — its own loopback, as a pod has — with the SPIRE agent's socket
//!   directory bind-mounted where the bootstrap expects it. A real spire-server and
//!   spire-agent issue the SVIDs (test-only entries with the `unix` attestor, under the SPIFFE
//!   IDs meshctl registers). The network around the pods stands in for Kubernetes and AWS:
//!   each pod's /etc/hosts carries its hostAliases and the Service FQDNs, an iptables
//!   REDIRECT sends a Service's port to the sidecar's inbound port (kube-proxy's job), and the
//!   appserver's load balancer address is routed to its pod (the NLB's job). Then real
//!   requests through the stand-in Yelb apps, a caller with the wrong SVID and one without a
//!   certificate refused, `meshctl verify` passing every check, and traffic still flowing
//!   after the SVIDs rotated.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use meshctl::config::Config;
use meshctl::kube::typed;
use meshctl::mesh::envoy::{bootstrap, upstream};
use meshctl::mesh::{AppObjects, Wait};
use meshctl::session::Session;
use meshctl::state::Silent;
use meshctl::topology::Topology;

const TD: &str = "am-multi-account-mesh";

// ------------------------------------------------------------------------------ validate

/// The bootstraps of every workload of a configuration, with made-up load balancer
/// addresses (one a DNS name, as an NLB's is, one an IP).
fn rendered_bootstraps(c: &Config) -> Vec<(String, String)> {
    let session = Session::new(c.clone()).unwrap();
    let topo = &session.topology;
    let settings = meshctl::mesh::envoy::settings(c).unwrap();
    let mut out = Vec::new();
    for (i, w) in topo.workloads.iter().enumerate() {
        let remote = if i % 2 == 0 { "internal-yelb-appserver-0123456789.elb.us-east-2.amazonaws.com" } else { "10.2.37.4" };
        let ups: Vec<_> = w.backends.iter().filter_map(|b| upstream(b, &w.account, &topo.namespace, Some(remote.to_string()))).collect();
        let b = bootstrap::bootstrap(w, &topo.bundle_id(), &topo.agent_socket, settings.ports, &ups);
        out.push((w.name.clone(), serde_yaml_ng::to_string(&b).unwrap()));
    }
    out
}

#[test]
fn bootstraps_pass_envoy_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let three = Config::load(Some(&root.join("examples/three-spokes.toml")), &[], &[]).unwrap();
    let dir = temp_dir("envoy-validate");
    let mut n = 0;
    for (label, c) in [("walkthrough", Config::default()), ("three-spokes", three)] {
        for (name, text) in rendered_bootstraps(&c) {
            let f = dir.path().join(format!("{label}-{name}.yaml"));
            std::fs::write(&f, &text).unwrap();
            let out = run_with_timeout(Command::new(bin("envoy")).args(["--mode", "validate", "-c"]).arg(&f), Duration::from_secs(60));
            assert!(
                out.status.success(),
                "{label}/{name}: envoy --mode validate:\n{}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert_eq!(n, 4 + 5, "four walkthrough workloads and five three-spoke ones");
}

// ------------------------------------------------------------------------------ network

/// `ip ...` (or another command), panicking with its output unless it succeeds.
fn run(args: &[&str]) -> String {
    let out = run_with_timeout(Command::new(args[0]).args(&args[1..]), Duration::from_secs(30));
    assert!(out.status.success(), "{}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

/// A network namespace standing for one pod, on the test's bridge; deleted on drop with its
/// /etc/netns files.
struct Pod {
    ns: String,
    ip: String,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns));
    }
}

/// The test's little network: a namespace holding a bridge, and the pods on it.
struct Lan {
    switch: String,
    id: String,
    next: u8,
}

impl Lan {
    fn new() -> Lan {
        // Interface names are limited to 15 characters: a short id.
        let id = format!("{:x}", std::process::id() % 0xfffff);
        let switch = format!("dpsw{id}");
        run(&["ip", "netns", "add", &switch]);
        in_ns(&switch, &["ip", "link", "add", "br0", "type", "bridge"]);
        in_ns(&switch, &["ip", "link", "set", "br0", "up"]);
        Lan { switch, id, next: 10 }
    }

    fn pod(&mut self, name: &str) -> Pod {
        let k = self.next;
        self.next += 1;
        let ns = format!("dp{}-{name}", self.id);
        let (a, b) = (format!("dp{}a{k}", self.id), format!("dp{}b{k}", self.id));
        let ip = format!("10.250.0.{k}");
        run(&["ip", "netns", "add", &ns]);
        let pod = Pod { ns: ns.clone(), ip: ip.clone() };
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        run(&["ip", "link", "set", &a, "netns", &ns]);
        run(&["ip", "link", "set", &b, "netns", &self.switch]);
        in_ns(&self.switch, &["ip", "link", "set", &b, "master", "br0"]);
        in_ns(&self.switch, &["ip", "link", "set", &b, "up"]);
        in_ns(&ns, &["ip", "link", "set", "lo", "up"]);
        in_ns(&ns, &["ip", "link", "set", &a, "name", "eth0"]);
        in_ns(&ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        in_ns(&ns, &["ip", "link", "set", "eth0", "up"]);
        pod
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.switch]).output();
    }
}

/// The pod's /etc/hosts (`ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts), as
/// the kubelet writes it: localhost, the hostAliases, plus the cluster DNS names the test
/// stands in for.
fn write_hosts(pod: &Pod, aliases: &[String], names: &[(String, String)]) {
    let dir = format!("/etc/netns/{}", pod.ns);
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = format!("127.0.0.1\tlocalhost\n{}\t{}\n", pod.ip, pod.ns);
    if !aliases.is_empty() {
        text.push_str(&format!("127.0.0.1\t{}\n", aliases.join(" ")));
    }
    for (name, ip) in names {
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    std::fs::write(format!("{dir}/hosts"), text).unwrap();
    std::fs::write(format!("{dir}/resolv.conf"), "nameserver 127.0.0.53\noptions ndots:5\n").unwrap();
}

/// A process group killed on drop, its output in a log file.
struct Proc {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc { child, log, name: name.to_string() }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        format!("---- {} ({})\n{}\n", self.name, self.log.display(), lines.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole group: the waiting shell and what it started.
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) on the process group this Proc started; no memory is shared.
        unsafe { libc::kill(group, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(100));
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A TCP port on the host's 127.0.0.1 that leads to 127.0.0.1:`port` inside a pod's network
/// namespace (what `kubectl port-forward` does for a pod): each connection is made from a
/// thread that entered the namespace.
struct Forward {
    port: u16,
}

impl Forward {
    fn new(ns: &str, port: u16) -> Forward {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap().port();
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(outer) = conn else { continue };
                let path = path.clone();
                std::thread::spawn(move || {
                    let Some(inner) = connect_in(&path, port) else { return };
                    relay(outer, inner);
                });
            }
        });
        Forward { port: local }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Connects to 127.0.0.1:`port` in the network namespace at `path`, from a thread that
/// entered it (a socket keeps the namespace it was made in).
fn connect_in(path: &str, port: u16) -> Option<TcpStream> {
    let path = path.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).ok()?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this (short-lived) thread only, with a valid namespace fd.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .join()
    .ok()
    .flatten()
}

fn relay(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let (mut a, mut b) = (a, b);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
}

/// GET through a forward: `(status, body)`.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    Ok((code, if chunked { dechunk(body) } else { body.to_string() }))
}

/// The body of a `Transfer-Encoding: chunked` response (the admin interface sends those).
fn dechunk(body: &str) -> String {
    let (mut rest, mut out) = (body.as_bytes(), Vec::new());
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol]).ok().and_then(|h| usize::from_str_radix(h.trim(), 16).ok());
        let data = &rest[eol + 2..];
        match size {
            Some(n) if n > 0 && data.len() >= n => {
                out.extend_from_slice(&data[..n]);
                rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A counter of an Envoy's `/stats`.
fn stat(admin: &Forward, name: &str) -> u64 {
    let (_, body) = get(admin.port, &format!("/stats?filter=^{}$", name.replace('.', "\\."))).unwrap_or_default();
    body.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

// ------------------------------------------------------------------------------ SPIRE

struct Spire {
    _server: Proc,
    _agent: Proc,
    dir: PathBuf,
    agent_id: String,
}

impl Spire {
    fn server_cli(&self, args: &[&str]) -> String {
        let mut all = vec![bin("spire-server").display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.push("-socketPath".into());
        all.push(self.dir.join("server.sock").display().to_string());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&refs)
    }

    /// The agent's socket directory: what the kubelet mounts at the bootstrap's path.
    fn socket_dir(&self) -> PathBuf {
        self.dir.join("sockets")
    }

    fn start(dir: &Path) -> Spire {
        std::fs::create_dir_all(dir.join("sockets")).unwrap();
        let port = free_port();
        let server_conf = format!(
            "server {{\n  bind_address = \"127.0.0.1\"\n  bind_port = \"{port}\"\n  socket_path = \"{sock}\"\n  trust_domain = \"{TD}\"\n  data_dir = \"{data}\"\n  log_level = \"INFO\"\n  default_x509_svid_ttl = \"1h\"\n  ca_ttl = \"24h\"\n}}\nplugins {{\n  DataStore \"sql\" {{ plugin_data {{ database_type = \"sqlite3\"\n connection_string = \"{data}/datastore.sqlite3\" }} }}\n  NodeAttestor \"join_token\" {{ plugin_data {{}} }}\n  KeyManager \"memory\" {{ plugin_data {{}} }}\n}}\n",
            sock = dir.join("server.sock").display(),
            data = dir.join("server-data").display()
        );
        std::fs::write(dir.join("server.conf"), server_conf).unwrap();
        let server = Proc::spawn(
            "spire-server",
            Command::new(bin("spire-server")).arg("run").arg("-config").arg(dir.join("server.conf")),
            dir.join("server.log"),
        );
        wait_for("spire-server healthy", Duration::from_secs(60), Duration::from_millis(300), || {
            Command::new(bin("spire-server"))
                .args(["healthcheck", "-socketPath"])
                .arg(dir.join("server.sock"))
                .output()
                .ok()
                .filter(|o| o.status.success())
        });
        let cli = |args: &[&str]| {
            let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            all.push("-socketPath".into());
            all.push(dir.join("server.sock").display().to_string());
            let out = run_with_timeout(Command::new(bin("spire-server")).args(&all), Duration::from_secs(30));
            assert_success(&out, &format!("spire-server {args:?}"));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let token = cli(&["token", "generate", "-spiffeID", &format!("spiffe://{TD}/dataplane-node")]);
        let token = token.trim().trim_start_matches("Token:").trim().to_string();
        let bundle = cli(&["bundle", "show"]);
        std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
        let agent_conf = format!(
            "agent {{\n  data_dir = \"{data}\"\n  log_level = \"INFO\"\n  server_address = \"127.0.0.1\"\n  server_port = \"{port}\"\n  socket_path = \"{sock}\"\n  trust_bundle_path = \"{bundle}\"\n  trust_domain = \"{TD}\"\n  join_token = \"{token}\"\n  sds {{\n    default_svid_name = \"default\"\n    default_bundle_name = \"ROOTCA\"\n    default_all_bundles_name = \"ALL\"\n  }}\n}}\nplugins {{\n  NodeAttestor \"join_token\" {{ plugin_data {{}} }}\n  KeyManager \"memory\" {{ plugin_data {{}} }}\n  WorkloadAttestor \"unix\" {{ plugin_data {{ discover_workload_path = true }} }}\n}}\n",
            data = dir.join("agent-data").display(),
            sock = dir.join("sockets/agent.sock").display(),
            bundle = dir.join("bundle.pem").display()
        );
        std::fs::write(dir.join("agent.conf"), agent_conf).unwrap();
        let agent = Proc::spawn(
            "spire-agent",
            Command::new(bin("spire-agent")).arg("run").arg("-config").arg(dir.join("agent.conf")),
            dir.join("agent.log"),
        );
        wait_for("spire-agent healthy", Duration::from_secs(60), Duration::from_millis(300), || {
            Command::new(bin("spire-agent"))
                .args(["healthcheck", "-socketPath"])
                .arg(dir.join("sockets/agent.sock"))
                .output()
                .ok()
                .filter(|o| o.status.success())
        });
        Spire { _server: server, _agent: agent, dir: dir.to_path_buf(), agent_id: format!("spiffe://{TD}/spire/agent/join_token/{token}") }
    }

    /// A workload entry: `spiffe_id` for the process started from `binary`, its SVIDs living
    /// `ttl` seconds.
    fn register(&self, spiffe_id: &str, binary: &Path, ttl: u32) {
        self.server_cli(&[
            "entry",
            "create",
            "-parentID",
            &self.agent_id,
            "-spiffeID",
            spiffe_id,
            "-selector",
            &format!("unix:path:{}", binary.display()),
            "-x509SVIDTTL",
            &ttl.to_string(),
        ]);
    }
}

// ------------------------------------------------------------------------------ the test

/// One running pod: its network namespace, its Envoy (and app), its admin interface.
struct RunningPod {
    pod: Pod,
    admin: Forward,
    procs: Vec<Proc>,
}

/// Starts `bootstrap` in Envoy inside `pod`, from its own copy of the envoy binary (the
/// `unix:path` the test's SPIRE entry selects), with the agent's socket directory mounted at
/// the directory the bootstrap names, as the kubelet mounts the hostPath volume.
fn start_envoy(pod: &Pod, name: &str, bootstrap_text: &str, spire: &Spire, dir: &Path, socket_path: &str) -> (Proc, PathBuf) {
    let binary = dir.join(format!("envoy-{name}"));
    std::fs::copy(bin("envoy"), &binary).unwrap();
    let conf = dir.join(format!("{name}-envoy.yaml"));
    std::fs::write(&conf, bootstrap_text).unwrap();
    let mount = Path::new(socket_path).parent().unwrap().display().to_string();
    std::fs::create_dir_all(&mount).unwrap();
    // Not `exec`: the wheel's Envoy exits when its parent does, so the shell waits for it.
    let script = format!(
        "mount --bind {src} {mount} && mount -o remount,bind,ro {mount} && {envoy} -c {conf} --base-id {base} --log-level info",
        src = spire.socket_dir().display(),
        envoy = binary.display(),
        conf = conf.display(),
        base = 100 + pod.ip.rsplit('.').next().unwrap().parse::<u32>().unwrap(),
    );
    let p = Proc::spawn(
        &format!("envoy {name}"),
        Command::new("ip").args(["netns", "exec", &pod.ns, "sh", "-c", &script]),
        dir.join(format!("{name}-envoy.log")),
    );
    (p, binary)
}

fn start_app(pod: &Pod, name: &str, dir: &Path) -> Proc {
    Proc::spawn(
        name,
        Command::new("ip").args(["netns", "exec", &pod.ns]).arg(bin("yelb-standin")).arg(name),
        dir.join(format!("{name}-app.log")),
    )
}

fn logs(pods: &BTreeMap<String, RunningPod>) -> String {
    pods.values().flat_map(|p| p.procs.iter().map(Proc::tail)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meshctls_bootstraps_carry_mtls_between_real_envoys() {
    let tb = testbed();
    let dir = temp_dir("dataplane");
    let app_ns = unique_name("dp");
    let toml = format!(
        "region = \"{}\"\nkubeconfig = \"{}\"\n[mesh]\napp_namespace = \"{app_ns}\"\n\n{}",
        tb.region,
        tb.kubeconfig.display(),
        common::accounts_toml(&["frontend", "backend"])
    );
    std::fs::write(dir.path().join("meshctl.toml"), &toml).unwrap();
    let config = Config::load(Some(&dir.path().join("meshctl.toml")), &[], &[]).unwrap();
    let session = Arc::new(Session::new(config.clone()).unwrap());
    let topo: &Topology = &session.topology;

    // 1. meshctl renders and decorates each spoke's objects and applies the ConfigMaps and
    //    Services (the backend first: the frontend's bootstrap needs the appserver's load
    //    balancer address).
    let mut rendered: BTreeMap<String, AppObjects> = BTreeMap::new();
    let mut lb_ip = String::new();
    for spoke in ["backend", "frontend"] {
        let kc = session.kube.cluster_client(spoke).await.unwrap();
        kc.ensure_namespace(&app_ns, &Default::default()).await.unwrap();
        let mut objs = meshctl::phases::yelb::render_app(&session, spoke).unwrap();
        let pending = session.mesh.decorate(&session, &mut objs, Wait::No, &Silent).await.unwrap();
        assert!(pending.is_empty(), "{spoke}: {pending:?}");
        for cm in &objs.mesh {
            kc.apply(&kc.resolve(cm.clone()).await.unwrap()).await.unwrap();
        }
        for wo in &objs.workloads {
            for svc in &wo.services {
                kc.apply(&typed(svc).unwrap()).await.unwrap();
            }
        }
        if spoke == "backend" {
            // The appserver is called from the frontend account: its mesh Service is an
            // internal NLB. The test stands in for the load balancer if the test bed gives it
            // no address.
            let svc_name = "yelb-appserver";
            let assigned = wait_lb(&tb, &app_ns, svc_name);
            lb_ip = match assigned {
                Some(ip) => ip,
                None => {
                    let ip = "10.251.0.7".to_string();
                    tb.kubectl(
                        "backend",
                        &[
                            "-n",
                            &app_ns,
                            "patch",
                            "service",
                            svc_name,
                            "--subresource=status",
                            "--type=merge",
                            "-p",
                            &format!("{{\"status\":{{\"loadBalancer\":{{\"ingress\":[{{\"ip\":\"{ip}\"}}]}}}}}}"),
                        ],
                    );
                    ip
                }
            };
        }
        rendered.insert(spoke.to_string(), objs);
    }

    // 2. The bootstraps, as the API servers store them.
    let mut bootstraps: BTreeMap<String, String> = BTreeMap::new();
    for w in &topo.workloads {
        let kc = session.kube.cluster_client(&w.account).await.unwrap();
        let cm: ConfigMap = kc.get_typed(&app_ns, &format!("{}-envoy", w.name)).await.unwrap().expect("bootstrap ConfigMap applied");
        bootstraps.insert(w.name.clone(), cm.data.unwrap()["envoy.yaml"].clone());
    }
    assert!(bootstraps["yelb-ui"].contains(&lb_ip), "the frontend dials the appserver's load balancer:\n{}", bootstraps["yelb-ui"]);

    // 3. SPIRE: the entries meshctl would register, selected by each Envoy's binary; short
    //    SVIDs so the test sees them rotate.
    let spire = Spire::start(&dir.path().join("spire"));
    let settings = meshctl::mesh::envoy::settings(&config).unwrap_or_else(|e| panic!("{e}"));

    // 4. The pods.
    let mut lan = Lan::new();
    let mut pods: BTreeMap<String, RunningPod> = BTreeMap::new();
    let mut ips: BTreeMap<String, String> = BTreeMap::new();
    let mut pod_of: BTreeMap<String, Pod> = BTreeMap::new();
    for w in &topo.workloads {
        let pod = lan.pod(&w.name.replace("yelb-", "").replace("redis-server", "redis"));
        ips.insert(w.name.clone(), pod.ip.clone());
        pod_of.insert(w.name.clone(), pod);
    }
    let fqdns: Vec<(String, String)> =
        topo.workloads.iter().map(|w| (format!("{}.{app_ns}.svc.cluster.local", w.name), ips[&w.name].clone())).collect();
    for w in &topo.workloads {
        let pod = pod_of.remove(&w.name).unwrap();
        let objs = &rendered[&w.account];
        let deployment = &objs.workloads.iter().find(|o| o.workload.name == w.name).unwrap().deployment;
        let aliases: Vec<String> = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.host_aliases.clone())
            .unwrap_or_default()
            .into_iter()
            .flat_map(|a| a.hostnames.unwrap_or_default())
            .collect();
        write_hosts(&pod, &aliases, &fqdns);
        if !w.callers.is_empty() {
            // kube-proxy: the Service port goes to the sidecar's inbound port; the NLB: its
            // address leads here too.
            in_ns(
                &pod.ns,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-p",
                    "tcp",
                    "--dport",
                    &w.port.to_string(),
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    &settings.ports.inbound.to_string(),
                ],
            );
        }
        if w.name == "yelb-appserver" {
            in_ns(&pod.ns, &["ip", "addr", "add", &format!("{lb_ip}/32"), "dev", "eth0"]);
        }
        let (envoy, binary) = start_envoy(&pod, &w.name, &bootstraps[&w.name], &spire, dir.path(), &topo.agent_socket);
        spire.register(&w.spiffe_id, &binary, 60);
        let app = start_app(&pod, &w.name, dir.path());
        let admin = Forward::new(&pod.ns, settings.ports.admin);
        pods.insert(w.name.clone(), RunningPod { pod, admin, procs: vec![envoy, app] });
    }
    // The frontend reaches the appserver's load balancer address through the network.
    in_ns(&pods["yelb-ui"].pod.ns, &["ip", "route", "add", &format!("{lb_ip}/32"), "via", &ips["yelb-appserver"]]);

    // 5. Every Envoy ready with its SVID (the health listener answers /ready from the admin).
    for (name, p) in &pods {
        let health = Forward::new(&p.pod.ns, settings.ports.health);
        let ready_with_svid = || {
            let ready = get(health.port, "/ready").map(|(c, _)| c == 200).unwrap_or(false);
            let certs = get(p.admin.port, "/certs").map(|(_, b)| b.contains(&topo.workload(name).unwrap().spiffe_id)).unwrap_or(false);
            if ready && certs {
                Ok(())
            } else {
                Err(logs(&pods))
            }
        };
        poll(&format!("{name}: Envoy ready with its SVID"), Duration::from_secs(90), Duration::from_millis(500), ready_with_svid);
    }

    // 6. Real requests: the UI proxies /api to the appserver, which calls the db and redis,
    //    every hop through both sidecars.
    let ui = Forward::new(&pods["yelb-ui"].pod.ns, 80);
    let (code, body) = get(ui.port, "/api/getvotes").unwrap();
    assert_eq!(code, 200, "ui → appserver → db/redis: {body}\n{}", logs(&pods));
    assert!(body.contains("\"db\":\"VOTES") && body.contains("PONG"), "the appserver reached both: {body}");
    let hs = |w: &str, name: &str| stat(&pods[w].admin, name);
    let inbound = |_w: &str| format!("listener.0.0.0.0_{}.ssl.handshake", settings.ports.inbound);
    let egress = |b: &str| format!("cluster.egress-{b}.ssl.handshake");
    assert!(hs("yelb-ui", &egress("yelb-appserver")) >= 1, "the frontend's egress to the appserver did mTLS");
    assert!(hs("yelb-appserver", &inbound("yelb-appserver")) >= 1, "the appserver's inbound did mTLS");
    for b in ["yelb-db", "redis-server"] {
        assert!(hs("yelb-appserver", &egress(b)) >= 1, "appserver → {b} did mTLS");
        assert!(hs(b, &inbound(b)) >= 1, "{b}'s inbound did mTLS");
    }

    // 7. `meshctl verify` on these Envoys: every check passes after traffic through the UI.
    let verify = || -> (bool, Vec<serde_json::Value>, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
        cmd.arg("--config").arg(dir.path().join("meshctl.toml")).args([
            "--output",
            "json",
            "verify",
            "--traffic",
            "--requests",
            "3",
            "--timeout",
            "30s",
        ]);
        for (name, p) in &pods {
            cmd.arg("--admin").arg(format!("{name}={}", p.admin.url()));
        }
        cmd.arg("--traffic-url").arg(format!("yelb-ui={}/api/getvotes", ui.url()));
        let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let results =
            text.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|r: &serde_json::Value| r.get("check").is_some()).collect();
        (out.status.success(), results, format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    };
    let (ok, results, text) = verify();
    let not_passing: Vec<&serde_json::Value> = results.iter().filter(|r| r["status"] != "pass").collect();
    assert!(ok && not_passing.is_empty(), "meshctl verify: {not_passing:#?}\n{text}");
    assert_eq!(results.len(), 4 * 6, "six checks for each of the four workloads");
    // scripts/bench's figure: verify without traffic on these four Envoys, printed, never
    // asserted.
    let mut took: Vec<Duration> = (0..10)
        .map(|_| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
            cmd.arg("--config").arg(dir.path().join("meshctl.toml")).args(["--output", "json", "verify"]);
            for (name, p) in &pods {
                cmd.arg("--admin").arg(format!("{name}={}", p.admin.url()));
            }
            let t0 = Instant::now();
            let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
            assert!(out.status.success(), "verify without traffic: {}", String::from_utf8_lossy(&out.stdout));
            t0.elapsed()
        })
        .collect();
    took.sort();
    println!(
        "bench verify median {:.1} ms   p95 {:.1} ms   ({} runs)",
        took[4].as_secs_f64() * 1e3,
        took[9].as_secs_f64() * 1e3,
        took.len()
    );

    // 8. Refused: a caller whose SVID the appserver does not allow (yelb-db's identity), and a
    //    caller presenting no certificate.
    let intruder = lan.pod("intruder");
    write_hosts(&intruder, &[], &fqdns);
    in_ns(&intruder.ns, &["ip", "route", "add", &format!("{lb_ip}/32"), "via", &ips["yelb-appserver"]]);
    let wrong = intruder_bootstrap(&lb_ip, &topo.agent_socket, &format!("spiffe://{TD}/yelbdb"), true);
    let (intruder_envoy, intruder_bin) = start_envoy(&intruder, "intruder", &wrong, &spire, dir.path(), &topo.agent_socket);
    spire.register(&format!("spiffe://{TD}/yelbdb"), &intruder_bin, 60);
    let intruder_admin = Forward::new(&intruder.ns, 9901);
    wait_for("intruder Envoy holds yelbdb's SVID", Duration::from_secs(60), Duration::from_millis(500), || {
        get(intruder_admin.port, "/certs").ok().filter(|(_, b)| b.contains("yelbdb"))
    });
    let san_before = hs("yelb-appserver", &format!("listener.0.0.0.0_{}.ssl.fail_verify_san", settings.ports.inbound));
    let entry = Forward::new(&intruder.ns, 10000);
    let refused = get(entry.port, "/api/getvotes");
    assert!(!matches!(refused, Ok((200, _))), "a caller with another SPIFFE ID got through: {refused:?}");
    let san_after = hs("yelb-appserver", &format!("listener.0.0.0.0_{}.ssl.fail_verify_san", settings.ports.inbound));
    assert!(san_after > san_before, "the appserver refused the SAN: fail_verify_san {san_before} → {san_after}");
    // Plain TLS without a client certificate.
    let nocert_before = hs("yelb-appserver", &format!("listener.0.0.0.0_{}.ssl.fail_verify_no_cert", settings.ports.inbound));
    let out = Command::new("ip")
        .args(["netns", "exec", &intruder.ns, "curl", "-sk", "--max-time", "5", &format!("https://{lb_ip}:4567/api/getvotes")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a caller without a certificate got an answer: {}", String::from_utf8_lossy(&out.stdout));
    let nocert_after = hs("yelb-appserver", &format!("listener.0.0.0.0_{}.ssl.fail_verify_no_cert", settings.ports.inbound));
    assert!(nocert_after > nocert_before, "fail_verify_no_cert {nocert_before} → {nocert_after}");
    drop(intruder_envoy);

    // The refusals show in the next verify: the appserver's failure counters are not zero
    // (a warning, as they did not rise during verify's own traffic).
    let (ok, results, text) = verify();
    let not_passing: Vec<(&str, &str, &str)> = results
        .iter()
        .filter(|r| r["status"] != "pass")
        .map(|r| (r["workload"].as_str().unwrap_or(""), r["check"].as_str().unwrap_or(""), r["status"].as_str().unwrap_or("")))
        .collect();
    assert!(ok, "warnings do not fail verify:\n{text}");
    assert_eq!(not_passing, vec![("yelb-appserver", "tls-failures", "warn")], "{text}");

    // 9. Rotation: each SVID lives 60 s and the agent renews it at half its life; after a
    //    new one is in use, traffic still flows.
    let serial = |w: &str| -> String {
        let (_, b) = get(pods[w].admin.port, "/certs").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        v["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
            .filter_map(|c| c["serial_number"].as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let before: BTreeMap<&str, String> = ["yelb-ui", "yelb-appserver"].into_iter().map(|w| (w, serial(w))).collect();
    for (w, s) in &before {
        assert!(!s.is_empty(), "{w}: /certs names its certificate's serial");
    }
    for w in ["yelb-ui", "yelb-appserver"] {
        wait_for(&format!("{w}'s SVID rotated"), Duration::from_secs(90), Duration::from_secs(2), || {
            (serial(w) != before[w]).then_some(())
        });
    }
    let handshakes_before = hs("yelb-appserver", &inbound("yelb-appserver"));
    let (code, body) = get(ui.port, "/api/getvotes").unwrap();
    assert_eq!(code, 200, "after rotation: {body}\n{}", logs(&pods));
    assert!(hs("yelb-appserver", &inbound("yelb-appserver")) > handshakes_before, "the request after rotation was a new mTLS handshake");

    for spoke in ["backend", "frontend"] {
        tb.delete_namespace(spoke, &app_ns);
    }
}

/// An Envoy that calls the appserver's load balancer address presenting `own_id` (or, with
/// `cert` false, no certificate), with an entry listener on 127.0.0.1:10000.
fn intruder_bootstrap(lb_ip: &str, socket: &str, own_id: &str, cert: bool) -> String {
    let sds = |name: &str| serde_json::json!({"name": name, "sds_config": {"resource_api_version": "V3", "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "spire_agent"}}]}}});
    let mut common = serde_json::json!({"combined_validation_context": {"default_validation_context": {}, "validation_context_sds_secret_config": sds(&format!("spiffe://{TD}"))}});
    if cert {
        common["tls_certificate_sds_secret_configs"] = serde_json::json!([sds(own_id)]);
    }
    let b = serde_json::json!({
        "node": {"id": "intruder", "cluster": "intruder"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {
            "listeners": [{
                "name": "entry",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "entry", "cluster": "target"}}]}],
            }],
            "clusters": [
                {"name": "target", "type": "STATIC", "connect_timeout": "2s",
                 "load_assignment": {"cluster_name": "target", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": lb_ip, "port_value": 4567}}}}]}]},
                 "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "common_tls_context": common}}},
                {"name": "spire_agent", "type": "STATIC", "connect_timeout": "1s",
                 "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": "spire_agent", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket}}}}]}]}},
            ],
        },
    });
    serde_yaml_ng::to_string(&b).unwrap()
}

/// The load balancer address the test bed gave the Service, if it gives one within a few
/// seconds.
fn wait_lb(tb: &Testbed, ns: &str, name: &str) -> Option<String> {
    for _ in 0..10 {
        let v = tb.kubectl_json("backend", &["-n", ns, "get", "service", name]);
        if let Some(ip) = v["status"]["loadBalancer"]["ingress"][0]["ip"].as_str() {
            return Some(ip.to_string());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}
