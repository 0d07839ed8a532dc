//! Smoke tests of the local test bed: one per component, asserting on live state.
//! Needs a running test bed (`scripts/test` brings it up; or `scripts/testbed up` and
//! `source $MESHCTL_TESTBED_DIR/env`).
//!
//! The `real_*` tests cover the real nodes (kubelet + kube-proxy + containerd per cluster in
//! its VPC range, CoreDNS, the local-path provisioner under the EBS CSI driver's name, the
//! LoadBalancer stand-in and the locally built images); see tests/README.md, "The real nodes".

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// moto answers STS GetCallerIdentity through each profile with that profile's account id.
#[test]
fn moto_sts_caller_identity_per_profile() {
    let tb = testbed();
    let script = "import boto3, sys\n\
                  print(boto3.Session(profile_name=sys.argv[1]).client('sts').get_caller_identity()['Account'])";
    let mut seen = BTreeSet::new();
    for (profile, want) in &tb.accounts {
        let mut c = tb.command("testbed-python");
        c.args(["-c", script, profile]);
        c.env("AWS_CONFIG_FILE", &tb.aws_config_file);
        c.env("AWS_SHARED_CREDENTIALS_FILE", &tb.aws_credentials_file);
        c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").env_remove("AWS_PROFILE");
        let out = run_with_timeout(&mut c, Duration::from_secs(60));
        assert_success(&out, &format!("GetCallerIdentity with profile {profile}"));
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(&got, want, "profile {profile} answered account {got}");
        assert_eq!(got.len(), 12, "account id {got}");
        seen.insert(got);
    }
    assert_eq!(seen.len(), CLUSTERS.len(), "distinct account ids: {seen:?}");
    // the endpoint in the config file is the test bed's moto
    let conf = std::fs::read_to_string(&tb.aws_config_file).unwrap();
    assert!(conf.contains(&format!("endpoint_url = {}", tb.moto_url)), "{conf}");
}

/// Every apiserver serves /version and authenticates a projected SA token via TokenReview.
#[test]
fn apiservers_version_and_token_review() {
    let tb = testbed();
    for ctx in CLUSTERS {
        let v: serde_json::Value = serde_json::from_str(&tb.kubectl(ctx, &["get", "--raw", "/version"])).unwrap();
        assert_eq!(v["major"], "1", "{ctx} /version: {v}");
        assert!(v["gitVersion"].as_str().unwrap().starts_with("v1.34."), "{ctx} /version: {v}");

        let ns = tb.create_namespace(ctx, "tb-token");
        tb.kubectl(ctx, &["-n", &ns, "create", "serviceaccount", "spire-agent"]);
        let token = tb.kubectl(ctx, &["-n", &ns, "create", "token", "spire-agent", "--audience", "spire-server"]);
        let review = |token: &str| {
            let body = serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token.trim(), "audiences": ["spire-server"]}
            });
            let out = tb.kubectl_stdin(ctx, &["create", "-f", "-", "-o", "json"], Some(&body.to_string()));
            serde_json::from_str::<serde_json::Value>(&out).unwrap()
        };
        let r = review(&token);
        assert_eq!(r["status"]["authenticated"], true, "{ctx}: {r}");
        assert_eq!(r["status"]["user"]["username"], format!("system:serviceaccount:{ns}:spire-agent"), "{ctx}: {r}");
        assert_eq!(r["status"]["audiences"][0], "spire-server", "{ctx}: {r}");
        // a token of another cluster (other signing key) must not authenticate here
        let other = if ctx == "shared" { "frontend" } else { "shared" };
        let foreign = tb.kubectl(other, &["-n", "default", "create", "token", "default", "--audience", "spire-server"]);
        let r = review(&foreign);
        assert_ne!(r["status"]["authenticated"], true, "{ctx} accepted a token of {other}: {r}");
        tb.delete_namespace(ctx, &ns);
    }
}

/// The aws-auth ConfigMap is seeded with one node-role mapping, like EKS.
#[test]
fn aws_auth_configmap_seeded() {
    let tb = testbed();
    for ctx in CLUSTERS {
        let cm = tb.kubectl_json(ctx, &["-n", "kube-system", "get", "configmap", "aws-auth"]);
        let roles = cm["data"]["mapRoles"].as_str().unwrap_or_else(|| panic!("{ctx}: {cm}"));
        let want = format!("rolearn: arn:aws:iam::{}:role/{ctx}-node-role", tb.account(ctx));
        assert!(roles.contains(&want), "{ctx}: {roles}");
        assert!(roles.contains("username: system:node:{{EC2PrivateDNSName}}"), "{ctx}: {roles}");
        assert!(roles.contains("- system:nodes"), "{ctx}: {roles}");
    }
}

fn running_pod(tb: &Testbed, ctx: &str, ns: &str, app: &str) -> (String, String) {
    wait_for(&format!("{ctx}/{ns} pod of {app} Running with an IP"), Duration::from_secs(90), Duration::from_millis(500), || {
        let pods = tb.kubectl_json(ctx, &["-n", ns, "get", "pods", "-l", &format!("app={app}")]);
        pods["items"].as_array()?.iter().find_map(|p| {
            let ip = p["status"]["podIP"].as_str().unwrap_or("");
            (p["status"]["phase"] == "Running" && !ip.is_empty())
                .then(|| (p["metadata"]["name"].as_str().unwrap().to_string(), ip.to_string()))
        })
    })
}

/// A Deployment placed on the kwok node (its taint tolerated) gets a Running pod with a pod IP
/// through kwok; `kubectl exec` runs the mapped local command; `kubectl port-forward` reaches a
/// local port through a PortForward.
#[test]
fn kwok_pods_exec_and_port_forward() {
    let tb = testbed();
    for ctx in CLUSTERS {
        let ns = tb.create_namespace(ctx, "tb-kwok");
        let mut spec = kwok_placement();
        spec["containers"] = serde_json::json!([{
            "name": "web", "image": "registry.invalid/web:1", "ports": [{"containerPort": 8080}]
        }]);
        let deploy = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec}
            }
        });
        tb.apply(ctx, &deploy.to_string());
        let (pod, ip) = running_pod(&tb, ctx, &ns, "web");
        let on = tb.kubectl(ctx, &["-n", &ns, "get", "pod", &pod, "-o", "jsonpath={.spec.nodeName}"]);
        assert_eq!(on, format!("{ctx}-node-0"), "{ctx}: the kwok pod is not on the kwok node");
        assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ctx}: pod IP {ip}");
        assert_ne!(ip, "127.0.0.1", "{ctx}: pod got the node IP");
        let deploy = tb.kubectl_json(ctx, &["-n", &ns, "get", "deployment", "web"]);
        assert_eq!(deploy["status"]["readyReplicas"], 1, "{ctx}: {deploy}");

        // exec -> local process (ClusterExec testbed-local)
        let out = tb.kubectl(ctx, &["-n", &ns, "exec", &pod, "--", "echo", "hello", ctx]);
        assert_eq!(out.trim(), format!("hello {ctx}"));

        // port-forward pod:7070 -> 127.0.0.1:<local> through a namespaced PortForward named after
        // the pod (7070 is not in the cluster-wide ClusterPortForward, so only this object maps it)
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut b = [0u8; 4];
                if s.read_exact(&mut b).is_ok() && &b == b"ping" {
                    let _ = s.write_all(b"pong");
                }
            }
        });
        let pf = format!(
            "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: PortForward\nmetadata:\n  name: {pod}\n  namespace: {ns}\n\
             spec:\n  forwards:\n  - ports: [7070]\n    target:\n      port: {local}\n      address: 127.0.0.1\n"
        );
        tb.kubectl_stdin(ctx, &["apply", "-f", "-"], Some(&pf));
        // kwok sees the PortForward a moment after apply, and kubectl port-forward exits on the
        // first failed stream: retry with a fresh kubectl each time
        let reply = wait_for(&format!("{ctx}: port-forward round trip"), Duration::from_secs(60), Duration::from_secs(1), || {
            let mut child = ChildGuard(
                tb.command("kubectl")
                    .args(["--context", ctx, "-n", &ns, "port-forward", &format!("pod/{pod}"), ":7070"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            // keep reading end open until done: kubectl dies of EPIPE when it logs the connection
            let mut out = BufReader::new(child.0.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).ok()?;
            // "Forwarding from 127.0.0.1:41234 -> 7070"
            let port: u16 = line.split("127.0.0.1:").nth(1)?.split_whitespace().next()?.parse().ok()?;
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"ping").ok()?;
            let mut b = [0u8; 4];
            s.read_exact(&mut b).ok()?;
            Some(b)
        });
        assert_eq!(&reply, b"pong", "{ctx}");
        tb.delete_namespace(ctx, &ns);
    }
}

fn write(path: &std::path::Path, s: &str) {
    std::fs::write(path, s).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// spire-server passes its healthcheck; a join-token agent attests and fetches an X.509-SVID
/// for a registration entry with a unix:uid selector.
#[test]
fn spire_join_token_agent_fetches_x509_svid() {
    let tb = testbed();
    let dir = temp_dir("tb-spire");
    let d = dir.path();
    let port = free_port();
    let td = "am-multi-account-mesh";
    let server_sock = d.join("server.sock");
    let agent_sock = d.join("agent.sock");
    write(
        &d.join("server.conf"),
        &format!(
            r#"server {{
  bind_address = "127.0.0.1"
  bind_port = "{port}"
  socket_path = "{sock}"
  trust_domain = "{td}"
  data_dir = "{d}/server-data"
  log_level = "DEBUG"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{d}/server-data/datastore.sqlite3"
    }}
  }}
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"#,
            sock = server_sock.display(),
            d = d.display()
        ),
    );
    let _server = spawn_logged(tb.command("spire-server").args(["run", "-config"]).arg(d.join("server.conf")), &d.join("server.log"));
    let sock = server_sock.to_str().unwrap().to_string();
    let server = |args: &[&str]| -> std::process::Output {
        let mut c = tb.command("spire-server");
        c.args(args).args(["-socketPath", &sock]);
        run_with_timeout(&mut c, Duration::from_secs(30))
    };
    wait_for("spire-server healthcheck", Duration::from_secs(60), Duration::from_millis(500), || {
        server(&["healthcheck"]).status.success().then_some(())
    });
    let out = server(&["healthcheck"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Server is healthy"), "{out:?}");

    let agent_id = format!("spiffe://{td}/agent/testbed");
    let out = server(&["token", "generate", "-spiffeID", &agent_id, "-ttl", "600"]);
    assert_success(&out, "spire-server token generate");
    let token = String::from_utf8_lossy(&out.stdout).split_whitespace().last().expect("token").to_string();
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let workload_id = format!("spiffe://{td}/workload/testbed");
    let out = server(&["entry", "create", "-parentID", &agent_id, "-spiffeID", &workload_id, "-selector", &format!("unix:uid:{uid}")]);
    assert_success(&out, "spire-server entry create");
    let out = server(&["entry", "show", "-spiffeID", &workload_id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("unix:uid:{uid}")), "{out:?}");

    write(
        &d.join("agent.conf"),
        &format!(
            r#"agent {{
  data_dir = "{d}/agent-data"
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "{port}"
  socket_path = "{sock}"
  trust_domain = "{td}"
  insecure_bootstrap = true
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"#,
            d = d.display(),
            sock = agent_sock.display()
        ),
    );
    let _agent = spawn_logged(
        tb.command("spire-agent").args(["run", "-config"]).arg(d.join("agent.conf")).args(["-joinToken", &token]),
        &d.join("agent.log"),
    );
    let svid_dir = d.join("svid");
    std::fs::create_dir_all(&svid_dir).unwrap();
    let asock = agent_sock.to_str().unwrap().to_string();
    let out = wait_for("spire-agent api fetch x509", Duration::from_secs(90), Duration::from_secs(1), || {
        let mut c = tb.command("spire-agent");
        c.args(["api", "fetch", "x509", "-socketPath", &asock, "-write"]).arg(&svid_dir);
        let out = run_with_timeout(&mut c, Duration::from_secs(30));
        out.status.success().then_some(out)
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&workload_id), "fetch x509 output: {text}");
    let pem = std::fs::read_to_string(svid_dir.join("svid.0.pem")).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    // the agent itself was attested through the join token (and its token alias is the parent)
    let out = server(&["agent", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("spiffe://{td}/spire/agent/join_token/{token}")), "{text}");
    assert!(text.contains("Attestation type  : join_token"), "{text}");
}

/// Envoy starts with an admin listener and answers /ready with LIVE.
#[test]
fn envoy_admin_ready() {
    let tb = testbed();
    let dir = temp_dir("tb-envoy");
    let admin = free_port();
    let cfg = dir.path().join("envoy.yaml");
    write(
        &cfg,
        &format!(
            "admin:\n  address:\n    socket_address: {{address: 127.0.0.1, port_value: {admin}}}\n\
             static_resources: {{}}\n"
        ),
    );
    let out = run_with_timeout(tb.command("envoy").arg("--version"), Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1.40."), "{out:?}");
    let base_id = (std::process::id() % 60000).to_string();
    let _envoy = spawn_logged(
        tb.command("envoy").arg("-c").arg(&cfg).args(["--base-id", &base_id, "--log-level", "info"]),
        &dir.path().join("envoy.log"),
    );
    let body = wait_for("envoy /ready", Duration::from_secs(60), Duration::from_millis(300), || match http_get(admin, "/ready") {
        Ok((200, b)) => Some(b),
        _ => None,
    });
    assert!(body.contains("LIVE"), "/ready: {body:?}");
}

/// helm installs and uninstalls a trivial chart in the frontend cluster.
#[test]
fn helm_install_uninstall_frontend() {
    let tb = testbed();
    let dir = temp_dir("tb-helm");
    let chart = dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    write(&chart.join("Chart.yaml"), "apiVersion: v2\nname: tb-smoke\nversion: 0.1.0\n");
    write(&chart.join("values.yaml"), "greeting: hello\n");
    write(
        &chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    );
    let ns = unique_name("tb-helm");
    let helm = |args: &[&str]| {
        let mut c = tb.command("helm");
        c.args(args).args(["--kube-context", "frontend", "-n", &ns]);
        for (k, sub) in [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")] {
            c.env(k, dir.path().join(sub));
        }
        let out = run_with_timeout(&mut c, Duration::from_secs(120));
        assert_success(&out, &format!("helm {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    helm(&["install", "smoke", chart.to_str().unwrap(), "--create-namespace", "--wait", "--timeout", "60s", "--set", "greeting=hi"]);
    let cm = tb.kubectl_json("frontend", &["-n", &ns, "get", "configmap", "smoke-cm"]);
    assert_eq!(cm["data"]["greeting"], "hi", "{cm}");
    let list: serde_json::Value = serde_json::from_str(&helm(&["list", "-o", "json"])).unwrap();
    assert_eq!(list[0]["name"], "smoke", "{list}");
    assert_eq!(list[0]["status"], "deployed", "{list}");
    helm(&["uninstall", "smoke", "--wait"]);
    let out = tb.kubectl_output("frontend", &["-n", &ns, "get", "configmap", "smoke-cm"], None);
    assert!(!out.status.success(), "configmap still there after uninstall");
    tb.delete_namespace("frontend", &ns);
}

/// `scripts/testbed status` reports every component alive.
#[test]
fn testbed_status_all_alive() {
    let tb = testbed();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_with_timeout(
        Command::new(root.join("scripts/testbed")).arg("status").env("MESHCTL_TESTBED_DIR", &tb.dir),
        Duration::from_secs(30),
    );
    assert_success(&out, "scripts/testbed status");
    let text = String::from_utf8_lossy(&out.stdout);
    for c in CLUSTERS {
        for comp in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"] {
            assert!(text.contains(&format!("{c}-{comp}")), "{text}");
        }
    }
    for c in &tb.nodes {
        for comp in ["mountns", "containerd", "kubelet", "kube-proxy", "lb-controller"] {
            assert!(text.contains(&format!("{c}-{comp} ")), "{text}");
        }
    }
    assert!(!text.contains("dead"), "{text}");
}

// ------------------------------------------------------------------ real nodes

/// Debian's busybox-static 1.35: its `wget -T` (timeout) crashes (SIGSEGV) on every request,
/// so the tests call wget without it (kubectl's own timeout bounds the call).
const BUSYBOX: &str = "docker.io/library/busybox:1.36";
const POD_READY: Duration = Duration::from_secs(120);

/// Every image the test bed imports into each node's containerd, under these exact names.
const NODE_IMAGES: [&str; 13] = [
    "registry.k8s.io/pause:3.10",
    "docker.io/library/busybox:1.36",
    "ghcr.io/spiffe/spire-server:1.13.3",
    "ghcr.io/spiffe/spire-agent:1.13.3",
    "docker.io/envoyproxy/envoy:v1.40.0",
    "registry.k8s.io/coredns/coredns:v1.13.2",
    "docker.io/rancher/local-path-provisioner:v0.0.30",
    "docker.io/mreferre/yelb-ui:0.7",
    "docker.io/mreferre/yelb-appserver:0.5",
    "docker.io/mreferre/yelb-db:0.5",
    "docker.io/library/redis:4.0.2",
    "docker.io/meshctl/report-worker:0.1",
    "public.ecr.aws/aws-cli/aws-cli:2.15.62",
];

/// A pod of one container (no node placement: the scheduler puts it on the real node).
fn pod_json(ns: &str, name: &str, image: &str, command: Option<&[&str]>, labels: serde_json::Value) -> String {
    let mut c = serde_json::json!({"name": "main", "image": image});
    if let Some(cmd) = command {
        c["command"] = serde_json::json!(cmd);
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [c]}
    })
    .to_string()
}

/// A busybox pod that sleeps (a shell to `kubectl exec` into), Ready.
fn shell_pod(tb: &Testbed, ctx: &str, ns: &str, name: &str) {
    tb.apply(ctx, &pod_json(ns, name, BUSYBOX, Some(&["sleep", "3600"]), serde_json::json!({"app": name})));
    tb.wait_pod_ready(ctx, ns, name, POD_READY);
}

fn service_json(ns: &str, name: &str, type_: &str, port: u16, target: u16, selector: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": type_, "selector": {"app": selector},
                 "ports": [{"name": "p", "port": port, "targetPort": target, "protocol": "TCP"}]}
    })
    .to_string()
}

fn exec_output(tb: &Testbed, ctx: &str, ns: &str, pod: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["-n", ns, "exec", pod, "--"];
    args.extend_from_slice(cmd);
    tb.kubectl_output(ctx, &args, None)
}

/// `kubectl exec` into a pod; panics unless the command succeeds; stdout.
fn exec(tb: &Testbed, ctx: &str, ns: &str, pod: &str, cmd: &[&str]) -> String {
    let out = exec_output(tb, ctx, ns, pod, cmd);
    assert_success(&out, &format!("{ctx}: kubectl exec {pod} -- {}", cmd.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pod_ip(tb: &Testbed, ctx: &str, ns: &str, pod: &str) -> String {
    tb.kubectl(ctx, &["-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
}

/// true when `ip` is in the cluster's pod range 10.<n>.128.0/17 (inside its VPC, as with the
/// EKS VPC CNI)
fn in_pod_range(ctx: &str, ip: &str) -> bool {
    let o: Vec<u8> = ip.split('.').filter_map(|x| x.parse().ok()).collect();
    o.len() == 4 && o[0] == 10 && o[1] == vpc_index(ctx) && o[2] >= 128
}

fn need_clusters(tb: &Testbed, want: &[&str]) {
    let have = tb.real_node_clusters();
    for w in want {
        assert!(have.iter().any(|h| h == w), "this test needs a real node in {w}; the test bed has them in {have:?}");
    }
}

/// Each real node is Ready under its EKS-style name with the node IP of its VPC, runs kubelet
/// v1.34 on containerd; the kwok node beside it is tainted; the `kubernetes` Service points at
/// the API servers' address.
#[test]
fn real_nodes_ready_with_vpc_addresses() {
    let tb = testbed();
    for ctx in tb.real_node_clusters() {
        let name = tb.node_name(&ctx);
        let node = tb.kubectl_json(&ctx, &["get", "node", &name]);
        let ready =
            node["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready")).map(|c| c["status"].clone());
        assert_eq!(ready, Some("True".into()), "{ctx}: node {name} not Ready: {}", node["status"]);
        let addresses = node["status"]["addresses"].as_array().unwrap();
        assert!(
            addresses.iter().any(|a| a["type"] == "InternalIP" && a["address"] == node_ip(&ctx).as_str()),
            "{ctx}: {name} addresses {addresses:?}, want InternalIP {}",
            node_ip(&ctx)
        );
        let info = &node["status"]["nodeInfo"];
        assert!(info["kubeletVersion"].as_str().unwrap().starts_with("v1.34."), "{ctx}: {info}");
        assert!(info["containerRuntimeVersion"].as_str().unwrap().starts_with("containerd://"), "{ctx}: {info}");
        assert_eq!(node["metadata"]["labels"]["topology.kubernetes.io/region"], tb.region.as_str(), "{ctx}");

        let kwok = tb.kubectl_json(&ctx, &["get", "node", &format!("{ctx}-node-0")]);
        let taints = kwok["spec"]["taints"].as_array().cloned().unwrap_or_default();
        assert!(taints.iter().any(|t| t["key"] == KWOK_TAINT.0 && t["effect"] == KWOK_TAINT.2), "{ctx}: kwok node not tainted: {taints:?}");

        let slices = tb.kubectl_json(&ctx, &["-n", "default", "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes"]);
        assert_eq!(
            slices["items"][0]["endpoints"][0]["addresses"][0],
            tb.api_ip.as_str(),
            "{ctx}: the kubernetes Service's endpoint is not the API servers' address: {slices}"
        );
    }
}

/// A pod is scheduled to the real node (not to the tainted kwok node), runs with an IP of the
/// cluster's VPC, and `kubectl exec` / `kubectl logs` reach its container through the kubelet.
#[test]
fn real_node_pod_runs_with_exec_and_logs() {
    let tb = testbed();
    for ctx in tb.real_node_clusters() {
        let ns = tb.create_namespace(&ctx, "tb-real");
        tb.apply(
            &ctx,
            &pod_json(
                &ns,
                "bb",
                BUSYBOX,
                Some(&["sh", "-c", "echo started-$(hostname); exec sleep 3600"]),
                serde_json::json!({"app": "bb"}),
            ),
        );
        tb.wait_pod_ready(&ctx, &ns, "bb", POD_READY);
        let pod = tb.kubectl_json(&ctx, &["-n", &ns, "get", "pod", "bb"]);
        assert_eq!(pod["spec"]["nodeName"], tb.node_name(&ctx).as_str(), "{ctx}: {}", pod["spec"]);
        let ip = pod["status"]["podIP"].as_str().unwrap_or("");
        assert!(in_pod_range(&ctx, ip), "{ctx}: pod IP {ip} not in 10.{}.128.0/17", vpc_index(&ctx));
        // the container's own view: its hostname and PID 1 (kwok would run these on the host)
        assert_eq!(exec(&tb, &ctx, &ns, "bb", &["hostname"]).trim(), "bb", "{ctx}");
        let pid1 = exec(&tb, &ctx, &ns, "bb", &["cat", "/proc/1/cmdline"]).replace('\0', " ");
        assert_eq!(pid1.trim(), "sleep 3600", "{ctx}: PID 1 of the container");
        let ifs = exec(&tb, &ctx, &ns, "bb", &["ip", "-4", "-o", "addr", "show", "eth0"]);
        assert!(ifs.contains(&format!("inet {ip}/17")), "{ctx}: eth0 in the pod: {ifs}");
        let logs = tb.kubectl(&ctx, &["-n", &ns, "logs", "bb"]);
        assert_eq!(logs.trim(), "started-bb", "{ctx}: kubectl logs");
        tb.delete_namespace(&ctx, &ns);
    }
}

/// A pod in frontend reaches a pod IP in shared (as a SPIRE agent in a spoke dials the
/// spire-server-0 pod IP in the hub): routed through the "Transit Gateway", no address
/// translation (the server sees the caller's pod IP).
#[test]
fn real_pod_to_pod_across_clusters() {
    let tb = testbed();
    need_clusters(&tb, &["shared", "frontend"]);
    let ns_s = tb.create_namespace("shared", "tb-xc");
    let ns_f = tb.create_namespace("frontend", "tb-xc");
    // the server: the yelb-db stand-in (line protocol on 5432, logs each peer)
    tb.apply("shared", &pod_json(&ns_s, "db", "docker.io/mreferre/yelb-db:0.5", None, serde_json::json!({"app": "db"})));
    shell_pod(&tb, "frontend", &ns_f, "client");
    tb.wait_pod_ready("shared", &ns_s, "db", POD_READY);
    let server = pod_ip(&tb, "shared", &ns_s, "db");
    let client = pod_ip(&tb, "frontend", &ns_f, "client");
    assert!(in_pod_range("shared", &server), "server pod IP {server}");
    assert!(in_pod_range("frontend", &client), "client pod IP {client}");
    let reply = wait_for("frontend pod -> shared pod IP", Duration::from_secs(30), Duration::from_secs(1), || {
        let out = exec_output(&tb, "frontend", &ns_f, "client", &["sh", "-c", &format!("echo PING | nc -w 5 {server} 5432")]);
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(reply, "PONG yelb-db");
    let logs = tb.kubectl("shared", &["-n", &ns_s, "logs", "db"]);
    assert!(logs.contains(&format!("{client}:")), "the server saw another source than the client's pod IP {client}:\n{logs}");
    // and the other node's address (the node IP of shared) answers too
    let out = exec_output(&tb, "frontend", &ns_f, "client", &["ping", "-c", "1", "-W", "5", &node_ip("shared")]);
    assert_success(&out, "frontend pod pings the shared node IP");
    tb.delete_namespace("shared", &ns_s);
    tb.delete_namespace("frontend", &ns_f);
}

/// CoreDNS answers Service names in every real-node cluster (an unknown name is NXDOMAIN) and
/// the nodes' EC2 private DNS names, and pods reach the API server through the `kubernetes`
/// Service by name.
#[test]
fn real_cluster_dns_resolves_services() {
    let tb = testbed();
    for ctx in tb.real_node_clusters() {
        let ns = tb.create_namespace(&ctx, "tb-dns");
        tb.apply(&ctx, &service_json(&ns, "dns-probe", "ClusterIP", 80, 8080, "nothing"));
        let cluster_ip = tb.kubectl(&ctx, &["-n", &ns, "get", "service", "dns-probe", "-o", "jsonpath={.spec.clusterIP}"]);
        shell_pod(&tb, &ctx, &ns, "client");
        let resolv = exec(&tb, &ctx, &ns, "client", &["cat", "/etc/resolv.conf"]);
        let dns_ip = format!("10.{}.0.10", 96 + vpc_index(&ctx) as u16);
        assert!(resolv.contains(&format!("nameserver {dns_ip}")), "{ctx}: {resolv}");
        let fqdn = format!("dns-probe.{ns}.svc.cluster.local");
        let out = exec(&tb, &ctx, &ns, "client", &["nslookup", &fqdn]);
        assert!(out.contains(&format!("Address: {cluster_ip}")), "{ctx}: nslookup {fqdn} (want {cluster_ip}):\n{out}");
        let missing = exec_output(&tb, &ctx, &ns, "client", &["nslookup", &format!("no-such-service.{ns}.svc.cluster.local")]);
        assert!(
            !missing.status.success() && String::from_utf8_lossy(&missing.stdout).contains("NXDOMAIN"),
            "{ctx}: an unknown Service name resolved: {}",
            String::from_utf8_lossy(&missing.stdout)
        );
        // EC2 private DNS names of the nodes (the VPC resolver's), as the SPIRE agent's k8s
        // workload attestor dials its kubelet: this node's and another cluster's
        for other in [ctx.as_str(), if ctx == "shared" { "frontend" } else { "shared" }] {
            if !tb.nodes.iter().any(|n| n == other) {
                continue;
            }
            let name = tb.node_name(other);
            let out = exec(&tb, &ctx, &ns, "client", &["nslookup", &name]);
            assert!(out.contains(&format!("Address: {}", node_ip(other))), "{ctx}: nslookup {name}:\n{out}");
        }
        let version =
            exec(&tb, &ctx, &ns, "client", &["wget", "-q", "-O", "-", "--no-check-certificate", "https://kubernetes.default.svc/version"]);
        assert!(version.contains("\"gitVersion\": \"v1.34."), "{ctx}: /version through the kubernetes Service: {version}");
        tb.delete_namespace(&ctx, &ns);
    }
}

/// A LoadBalancer Service in backend gets an address of backend's VPC (10.2.255.0/24) from the
/// stand-in controller, and a pod in frontend connects to <address>:<service port>.
#[test]
fn real_load_balancer_reachable_from_another_cluster() {
    let tb = testbed();
    need_clusters(&tb, &["backend", "frontend"]);
    let ns_b = tb.create_namespace("backend", "tb-lb");
    let ns_f = tb.create_namespace("frontend", "tb-lb");
    tb.apply("backend", &pod_json(&ns_b, "db", "docker.io/mreferre/yelb-db:0.5", None, serde_json::json!({"app": "lb-db"})));
    tb.apply("backend", &service_json(&ns_b, "lb-db", "LoadBalancer", 80, 5432, "lb-db"));
    shell_pod(&tb, "frontend", &ns_f, "client");
    tb.wait_pod_ready("backend", &ns_b, "db", POD_READY);
    let lb = wait_for("backend LoadBalancer address", Duration::from_secs(60), Duration::from_millis(500), || {
        let ip = tb.kubectl("backend", &["-n", &ns_b, "get", "service", "lb-db", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]);
        (!ip.is_empty()).then_some(ip)
    });
    assert!(lb.starts_with("10.2.255."), "LoadBalancer address {lb} not in backend's 10.2.255.0/24");
    let reply = wait_for("frontend pod -> backend LoadBalancer", Duration::from_secs(30), Duration::from_secs(1), || {
        let out = exec_output(&tb, "frontend", &ns_f, "client", &["sh", "-c", &format!("echo PING | nc -w 5 {lb} 80")]);
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(reply, "PONG yelb-db", "via {lb}:80");
    // nothing listens on another port of that address
    let out = exec_output(&tb, "frontend", &ns_f, "client", &["sh", "-c", &format!("echo PING | nc -w 3 {lb} 81")]);
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty(), "{lb}:81 answered");
    tb.delete_namespace("backend", &ns_b);
    tb.delete_namespace("frontend", &ns_f);
}

/// Storage as on EKS: no default StorageClass; a class with provisioner ebs.csi.aws.com
/// (WaitForFirstConsumer, type gp3, as meshctl creates) gets a real volume once a pod uses the
/// claim, and a claim without a class stays Pending.
#[test]
fn real_ebs_storage_class_binds_and_no_default_class() {
    let tb = testbed();
    let nodes = tb.real_node_clusters();
    for ctx in &nodes {
        let classes = tb.kubectl_json(ctx, &["get", "storageclass"]);
        for sc in classes["items"].as_array().unwrap() {
            assert_ne!(
                sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"], "true",
                "{ctx}: a default StorageClass exists: {}",
                sc["metadata"]["name"]
            );
        }
    }
    let ctx = if nodes.iter().any(|n| n == "frontend") { "frontend".to_string() } else { nodes[0].clone() };
    let ctx = ctx.as_str();
    let ns = tb.create_namespace(ctx, "tb-pvc");
    let sc = unique_name("tb-gp3");
    tb.apply(
        ctx,
        &serde_json::json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": sc},
            "provisioner": "ebs.csi.aws.com",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
            "parameters": {"type": "gp3"}
        })
        .to_string(),
    );
    let pvc = |name: &str, class: Option<&str>| {
        let mut spec = serde_json::json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(c) = class {
            spec["storageClassName"] = c.into();
        }
        serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": name, "namespace": ns}, "spec": spec})
        .to_string()
    };
    tb.apply(ctx, &pvc("data", Some(&sc)));
    tb.apply(ctx, &pvc("noclass", None));
    // WaitForFirstConsumer: nothing is provisioned before a pod uses the claim
    std::thread::sleep(Duration::from_secs(2));
    let phase = |name: &str| tb.kubectl(ctx, &["-n", &ns, "get", "pvc", name, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase("data"), "Pending", "{ctx}: bound before any pod used it");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "writer", "namespace": ns},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX,
                            "command": ["sh", "-c", "echo persisted > /data/f; exec sleep 3600"],
                            "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]
        }
    });
    tb.apply(ctx, &pod.to_string());
    tb.wait_pod_ready(ctx, &ns, "writer", POD_READY);
    assert_eq!(phase("data"), "Bound", "{ctx}");
    let pv_name = tb.kubectl(ctx, &["-n", &ns, "get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    let pv = tb.kubectl_json(ctx, &["get", "pv", &pv_name]);
    assert_eq!(pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"], "ebs.csi.aws.com", "{pv}");
    assert_eq!(pv["spec"]["storageClassName"], sc.as_str(), "{pv}");
    assert_eq!(exec(&tb, ctx, &ns, "writer", &["cat", "/data/f"]).trim(), "persisted");
    // the claim without a class: nothing provisions it, nothing binds it
    std::thread::sleep(Duration::from_secs(3));
    let noclass = tb.kubectl_json(ctx, &["-n", &ns, "get", "pvc", "noclass"]);
    assert_eq!(noclass["status"]["phase"], "Pending", "{ctx}: {noclass}");
    assert!(noclass["spec"]["volumeName"].is_null(), "{ctx}: {noclass}");
    assert!(noclass["spec"]["storageClassName"].is_null(), "{ctx}: a default class was applied: {noclass}");
    tb.kubectl(ctx, &["delete", "namespace", &ns, "--wait=true", "--timeout=60s"]);
    let _ = tb.kubectl_output(ctx, &["delete", "storageclass", &sc, "--wait=false"], None);
}

/// Each node's containerd holds every locally built image under its fully qualified name.
#[test]
fn real_node_images_imported() {
    let tb = testbed();
    for ctx in tb.real_node_clusters() {
        let names = tb.ctr(&ctx, &["images", "ls", "-q"]);
        let have: BTreeSet<&str> = names.lines().map(str::trim).collect();
        for want in NODE_IMAGES {
            assert!(have.contains(want), "{ctx}: {want} missing from the node's containerd: {have:?}");
        }
    }
}

/// The Yelb stand-ins as pods behind Services named as the walkthrough's: yelb-ui -> (HTTP)
/// yelb-appserver -> (TCP) yelb-db and redis-server answers 200, reached from a pod by Service
/// name and from here through `kubectl port-forward` to the ui pod; without redis-server the
/// same request answers 502 naming it.
#[test]
fn real_yelb_standins_chain() {
    let tb = testbed();
    let nodes = tb.real_node_clusters();
    let ctx = if nodes.iter().any(|n| n == "backend") { "backend".to_string() } else { nodes[0].clone() };
    let ctx = ctx.as_str();
    let ns = tb.create_namespace(ctx, "tb-yelb");
    // the short names of the walkthrough's manifests: the runtime fully qualifies them
    for (name, image, port) in [
        ("redis-server", "redis:4.0.2", 6379u16),
        ("yelb-db", "mreferre/yelb-db:0.5", 5432),
        ("yelb-appserver", "mreferre/yelb-appserver:0.5", 4567),
        ("yelb-ui", "mreferre/yelb-ui:0.7", 80),
    ] {
        tb.apply(ctx, &pod_json(&ns, name, image, None, serde_json::json!({"app": name})));
        tb.apply(ctx, &service_json(&ns, name, "ClusterIP", port, port, name));
    }
    shell_pod(&tb, ctx, &ns, "client");
    for name in ["redis-server", "yelb-db", "yelb-appserver", "yelb-ui"] {
        tb.wait_pod_ready(ctx, &ns, name, POD_READY);
    }
    let body = wait_for("yelb-ui -> appserver -> db + redis", Duration::from_secs(30), Duration::from_secs(1), || {
        let out = exec_output(&tb, ctx, &ns, "client", &["wget", "-q", "-O", "-", "http://yelb-ui/api/getvotes"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["service"], "yelb-appserver", "{v}");
    assert_eq!(v["redis"], "+PONG", "{v}");
    assert!(v["db"].as_str().unwrap_or("").starts_with("VOTES "), "{v}");

    // port-forward from this machine to the ui pod (API server -> kubelet -> pod); a fresh
    // kubectl per try (it exits on the first failed stream)
    let via_port_forward = |path: &str| -> Option<(u16, String)> {
        let mut child = ChildGuard(
            tb.command("kubectl")
                .args(["--context", ctx, "-n", &ns, "port-forward", "pod/yelb-ui", ":80"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).ok()?;
        // "Forwarding from 127.0.0.1:41234 -> 80"
        let port: u16 = line.split("127.0.0.1:").nth(1)?.split_whitespace().next()?.parse().ok()?;
        http_get(port, path).ok()
    };
    let (code, body) =
        wait_for("port-forward to yelb-ui", Duration::from_secs(30), Duration::from_secs(1), || via_port_forward("/api/getstats"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"db\":\"STATS "), "{body}");

    // the chain is live: without redis-server the appserver answers 502, naming it (once the
    // Service has no endpoint left)
    tb.kubectl(ctx, &["-n", &ns, "delete", "pod", "redis-server", "--wait=true"]);
    let body = wait_for("502 from yelb-ui without redis-server", Duration::from_secs(30), Duration::from_secs(1), || {
        via_port_forward("/api/getvotes").and_then(|(code, body)| (code == 502).then_some(body))
    });
    assert!(body.contains("redis-server (redis-server:6379)"), "{body}");
    tb.delete_namespace(ctx, &ns);
}

/// Host paths are per node, as on EKS where every node is its own host: a frontend pod and a
/// backend pod write into hostPath /run/spire/<dir> (as the SPIRE agents of two spokes write
/// their socket to /run/spire/sockets) and each sees only its own file; a second pod on the same
/// node sees the first one's (as the Envoys see their agent's socket); the host's /run/spire
/// sees neither: each node's view lives under $STATE/nodes/<c>/host.
#[test]
fn real_node_host_paths_are_per_node() {
    let tb = testbed();
    need_clusters(&tb, &["frontend", "backend"]);
    let sub = unique_name("tb-hostpath");
    let dir = format!("/run/spire/{sub}");
    let pod = |ns: &str, name: &str, script: &str, read_only: bool| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", script],
                                "volumeMounts": [{"name": "host", "mountPath": "/shared", "readOnly": read_only}]}],
                "volumes": [{"name": "host", "hostPath": {"path": dir, "type": "DirectoryOrCreate"}}]
            }
        })
        .to_string()
    };
    let mut namespaces = Vec::new();
    for ctx in ["frontend", "backend"] {
        let ns = tb.create_namespace(ctx, "tb-hostpath");
        tb.apply(ctx, &pod(&ns, "writer", &format!("echo {ctx} > /shared/{ctx}.txt; exec sleep 3600"), false));
        namespaces.push((ctx, ns));
    }
    for (ctx, ns) in &namespaces {
        tb.wait_pod_ready(ctx, ns, "writer", POD_READY);
    }
    for (ctx, ns) in &namespaces {
        let ls = exec(&tb, ctx, ns, "writer", &["ls", "/shared"]);
        let files: Vec<&str> = ls.split_whitespace().collect();
        assert_eq!(files, vec![format!("{ctx}.txt")], "{ctx}: hostPath {dir} holds {files:?}: the nodes share it");
        let on_node = tb.dir.join("nodes").join(ctx).join("host/run/spire").join(&sub).join(format!("{ctx}.txt"));
        let text =
            std::fs::read_to_string(&on_node).unwrap_or_else(|e| panic!("{ctx}: the node's {dir} is not {}: {e}", on_node.display()));
        assert_eq!(text.trim(), *ctx);
    }
    // the same node: a second pod mounting the same directory read-only sees the writer's file
    let (ctx, ns) = &namespaces[0];
    tb.apply(ctx, &pod(ns, "reader", "exec sleep 3600", true));
    tb.wait_pod_ready(ctx, ns, "reader", POD_READY);
    assert_eq!(exec(&tb, ctx, ns, "reader", &["cat", "/shared/frontend.txt"]).trim(), "frontend");
    let denied = exec_output(&tb, ctx, ns, "reader", &["touch", "/shared/x"]);
    assert!(!denied.status.success(), "{ctx}: a read-only hostPath mount was writable");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} exists on the host: a node's hostPath leaked into the host's mount namespace");
    for (ctx, ns) in &namespaces {
        tb.delete_namespace(ctx, ns);
    }
}

// ------------------------------------------------------------------ EKS authentication

const AWS_CLI_IMAGE: &str = "public.ecr.aws/aws-cli/aws-cli:2.15.62";

/// Runs a Python script with boto3 against moto (the test bed's AWS profiles); stdout.
fn boto3(tb: &Testbed, script: &str, args: &[&str]) -> String {
    let mut c = tb.command("testbed-python");
    c.arg("-c").arg(script).args(args);
    c.env("AWS_CONFIG_FILE", &tb.aws_config_file);
    c.env("AWS_SHARED_CREDENTIALS_FILE", &tb.aws_credentials_file);
    c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").env_remove("AWS_PROFILE");
    let out = run_with_timeout(&mut c, Duration::from_secs(120));
    assert_success(&out, "boto3 script against moto");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// IAM and EKS as meshctl's stacks make them (templates/hub.yaml, hub-peer.yaml, spoke.yaml),
/// under unique names: in the hub account the SPIRE server role (trusts pods.eks.amazonaws.com),
/// an EKS cluster with the Pod Identity agent add-on and the association <ns>/spire-server ->
/// that role, and the role's permission to assume three of the four spoke roles; in the spoke
/// account four access roles trusting the hub account with aws:PrincipalArn = the SPIRE role
/// (one names another role instead), a CONFIG_MAP cluster and an API cluster whose access entry
/// for the access role has AmazonEKSClusterAdminPolicy. Prints the names as JSON.
const EKS_AUTH_SETUP: &str = r#"
import boto3, json, sys
u, ns = sys.argv[1], sys.argv[2]
hub, spoke = boto3.Session(profile_name="shared"), boto3.Session(profile_name="frontend")
hub_acct = hub.client("sts").get_caller_identity()["Account"]
iam_h, iam_s, eks_h, eks_s = hub.client("iam"), spoke.client("iam"), hub.client("eks"), spoke.client("eks")
doc = lambda statements: json.dumps({"Version": "2012-10-17", "Statement": statements})
actions = ["sts:AssumeRole", "sts:TagSession"]
spire = iam_h.create_role(RoleName=f"{u}-spire-server", AssumeRolePolicyDocument=doc(
    [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": actions}]))["Role"]["Arn"]
def access_role(name, principal):
    return iam_s.create_role(RoleName=name, AssumeRolePolicyDocument=doc([{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{hub_acct}:root"}, "Action": actions,
        "Condition": {"ArnLike": {"aws:PrincipalArn": principal}}}]))["Role"]["Arn"]
r = {"spire": spire,
     "ok": access_role(f"{u}-access-role", spire),
     "other_trust": access_role(f"{u}-other-trust", f"arn:aws:iam::{hub_acct}:role/{u}-someone-else"),
     "unmapped": access_role(f"{u}-unmapped", spire),
     "not_permitted": access_role(f"{u}-not-permitted", spire)}
for k in ("ok", "other_trust", "unmapped"):
    iam_h.put_role_policy(RoleName=f"{u}-spire-server", PolicyName=f"assume-{k}",
                          PolicyDocument=doc([{"Effect": "Allow", "Action": actions, "Resource": r[k]}]))
vpc = {"subnetIds": [], "securityGroupIds": []}
eks_h.create_cluster(name=f"{u}-hub", roleArn=f"arn:aws:iam::{hub_acct}:role/{u}-cluster", resourcesVpcConfig=vpc)
eks_h.create_addon(clusterName=f"{u}-hub", addonName="eks-pod-identity-agent")
eks_h.create_pod_identity_association(clusterName=f"{u}-hub", namespace=ns, serviceAccount="spire-server", roleArn=spire)
eks_s.create_cluster(name=f"{u}-spoke", roleArn=r["ok"], resourcesVpcConfig=vpc)
eks_s.create_cluster(name=f"{u}-spoke-api", roleArn=r["ok"], resourcesVpcConfig=vpc, accessConfig={"authenticationMode": "API"})
eks_s.create_access_entry(clusterName=f"{u}-spoke-api", principalArn=r["ok"])
eks_s.associate_access_policy(clusterName=f"{u}-spoke-api", principalArn=r["ok"], accessScope={"type": "cluster"},
                              policyArn="arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy")
print(json.dumps(r))
"#;

const EKS_AUTH_CLEANUP: &str = r#"
import boto3, sys
u = sys.argv[1]
for profile, clusters in (("shared", ["hub"]), ("frontend", ["spoke", "spoke-api"])):
    eks = boto3.Session(profile_name=profile).client("eks")
    for c in clusters:
        try: eks.delete_cluster(name=f"{u}-{c}")
        except Exception as e: print(e)
"#;

/// Edits kube-system/aws-auth's mapRoles of `ctx` with `f` (read, change, replace: optimistic
/// concurrency on the resourceVersion).
fn edit_aws_auth(tb: &Testbed, ctx: &str, f: impl Fn(&str) -> String) {
    let mut cm = tb.kubectl_json(ctx, &["-n", "kube-system", "get", "configmap", "aws-auth"]);
    let roles = cm["data"]["mapRoles"].as_str().unwrap_or("").to_string();
    cm["data"]["mapRoles"] = f(&roles).into();
    tb.kubectl_stdin(ctx, &["replace", "-f", "-"], Some(&cm.to_string()));
}

/// The spoke API server's view of a token: (kubectl auth whoami as that token, the TokenReview
/// the admin gets for it: status.authenticated, status.error).
fn eks_token_outcome(tb: &Testbed, ctx: &str, token: &str) -> (std::process::Output, serde_json::Value) {
    let whoami = tb.kubectl_output(ctx, &["--token", token, "auth", "whoami", "-o", "json"], None);
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}
    });
    let review: serde_json::Value =
        serde_json::from_str(&tb.kubectl_stdin(ctx, &["create", "-f", "-", "-o", "json"], Some(&body.to_string()))).unwrap();
    (whoami, review["status"].clone())
}

/// The SPIRE server's token refresher, end to end on the test bed: meshctl's chart renders the
/// `token-init` container (image public.ecr.aws/aws-cli/aws-cli:2.15.62, `aws eks get-token
/// --role-arn ...` per spoke) into a pod of the hub cluster whose service account has a Pod
/// Identity association; the tokens it writes authenticate at the frontend API server with the
/// user and groups that aws-auth (CONFIG_MAP cluster) or the access entry (API cluster: cluster
/// admin = system:masters) maps the access role to, and only when every IAM link holds: a trust
/// policy naming another role, an access role the SPIRE role may not assume, a role missing
/// from aws-auth, a cluster name that does not exist, and a token shown to another spoke's API
/// server are refused, each with the reason of its broken link.
#[test]
fn eks_tokens_of_the_spire_refresher_authenticate_at_the_spoke() {
    let tb = testbed();
    need_clusters(&tb, &["shared"]);
    let u = unique_name("tbauth");
    let ns = tb.create_namespace("shared", "tb-eksauth");
    tb.kubectl("shared", &["-n", &ns, "create", "serviceaccount", "spire-server"]);
    let r: serde_json::Value = serde_json::from_str(boto3(&tb, EKS_AUTH_SETUP, &[&u, &ns]).trim()).unwrap();
    let role = |k: &str| r[k].as_str().unwrap().to_string();
    let spoke_acct = tb.account("frontend").to_string();

    // aws-auth of the frontend API server: meshctl's kind of entry for the access role (with
    // templates), and the roles whose refusal must come from IAM, not from a missing mapping
    let username = "spire-{{AccountID}}-{{SessionName}}";
    let ours: String = ["ok", "other_trust", "not_permitted"]
        .iter()
        .map(|k| format!("- rolearn: {}\n  username: \"{username}\"\n  groups:\n  - {u}-readers\n", role(k)))
        .collect();
    edit_aws_auth(&tb, "frontend", |roles| format!("{roles}{}{ours}", if roles.ends_with('\n') || roles.is_empty() { "" } else { "\n" }));

    // the pod: token-init exactly as the chart renders it, then a container that keeps the files
    let chart_dir = temp_dir("tb-eksauth");
    let spokes = [
        ("ok", format!("{u}-spoke"), role("ok")),
        ("api", format!("{u}-spoke-api"), role("ok")),
        ("other-trust", format!("{u}-spoke"), role("other_trust")),
        ("not-permitted", format!("{u}-spoke"), role("not_permitted")),
        ("unmapped", format!("{u}-spoke"), role("unmapped")),
        ("no-cluster", format!("{u}-no-such-cluster"), role("ok")),
    ];
    let values = serde_json::json!({
        "tokenRefresher": {
            "image": AWS_CLI_IMAGE,
            "spokes": spokes.iter().map(|(f, c, r)| serde_json::json!({"file": format!("{f}.token"), "cluster": c, "roleArn": r})).collect::<Vec<_>>()
        }
    });
    let values_file = chart_dir.path().join("values.json");
    write(&values_file, &values.to_string());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut helm = tb.command("helm");
    helm.args(["template", "spire", root.join("charts/spire-server").to_str().unwrap(), "-n", &ns]).args([
        "--show-only",
        "templates/statefulset.yaml",
        "-f",
        values_file.to_str().unwrap(),
    ]);
    for (k, sub) in [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")] {
        helm.env(k, chart_dir.path().join(sub));
    }
    let out = run_with_timeout(&mut helm, Duration::from_secs(60));
    assert_success(&out, "helm template charts/spire-server");
    let sts: serde_json::Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    let spec = &sts["spec"]["template"]["spec"];
    let init = spec["initContainers"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "token-init")).expect("token-init").clone();
    assert_eq!(init["image"], AWS_CLI_IMAGE);
    let dir = init["volumeMounts"][0]["mountPath"].as_str().unwrap().to_string();
    let volume = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "spoke-tokens").unwrap().clone();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "refresher", "namespace": ns},
        "spec": {
            "serviceAccountName": "spire-server",
            "terminationGracePeriodSeconds": 1,
            "initContainers": [init],
            "containers": [{"name": "main", "image": AWS_CLI_IMAGE, "command": ["sleep", "3600"],
                            "volumeMounts": [{"name": "spoke-tokens", "mountPath": dir}]}],
            "volumes": [volume]
        }
    });
    tb.apply("shared", &pod.to_string());
    tb.wait_pod_ready("shared", &ns, "refresher", POD_READY);
    let init_log = tb.kubectl("shared", &["-n", &ns, "logs", "refresher", "-c", "token-init"]);
    let token = |file: &str| {
        let t = exec(&tb, "shared", &ns, "refresher", &["cat", &format!("{dir}/{file}.token")]);
        assert!(t.starts_with("k8s-aws-v1."), "{file}: {t:?}\n{init_log}");
        t
    };

    // aws-auth: the mapped user, its templates expanded, its groups; the session's ARN in extra
    let (whoami, review) = eks_token_outcome(&tb, "frontend", &token("ok"));
    assert_success(&whoami, "kubectl auth whoami with the refresher's token (aws-auth)");
    let me: serde_json::Value = serde_json::from_slice(&whoami.stdout).unwrap();
    let info = &me["status"]["userInfo"];
    assert_eq!(info["username"], format!("spire-{spoke_acct}-EKSGetTokenAuth"), "{me}");
    let groups: BTreeSet<&str> = info["groups"].as_array().unwrap().iter().filter_map(|g| g.as_str()).collect();
    assert!(groups.contains(format!("{u}-readers").as_str()) && groups.contains("system:authenticated"), "{me}");
    assert!(!groups.contains("system:masters"), "{me}");
    let session_arn = format!("arn:aws:sts::{spoke_acct}:assumed-role/{u}-access-role/EKSGetTokenAuth");
    assert_eq!(info["extra"]["arn"][0], session_arn.as_str(), "{me}");
    assert_eq!(review["authenticated"], true, "{review}");
    let as_token = |t: &str, args: &[&str]| {
        let mut a = vec!["--token", t];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&tb.kubectl_output("frontend", &a, None).stdout).trim().to_string()
    };
    assert_eq!(as_token(&token("ok"), &["auth", "can-i", "list", "secrets", "-n", "kube-system"]), "no");

    // access entries (authentication mode API): EKS's default username, cluster admin
    let (whoami, _) = eks_token_outcome(&tb, "frontend", &token("api"));
    assert_success(&whoami, "kubectl auth whoami with the refresher's token (access entry)");
    let me: serde_json::Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(me["status"]["userInfo"]["username"], session_arn.as_str(), "{me}");
    assert!(me["status"]["userInfo"]["groups"].as_array().unwrap().iter().any(|g| g == "system:masters"), "{me}");
    assert_eq!(as_token(&token("api"), &["auth", "can-i", "list", "secrets", "-n", "kube-system"]), "yes");

    // every broken link: Unauthorized, and the reason in the TokenReview's error
    let refused = |ctx: &str, file: &str, why: &str| {
        let (whoami, review) = eks_token_outcome(&tb, ctx, &token(file));
        assert!(!whoami.status.success(), "{file} at {ctx}: accepted: {}", String::from_utf8_lossy(&whoami.stdout));
        assert!(String::from_utf8_lossy(&whoami.stderr).contains("Unauthorized"), "{file}: {}", String::from_utf8_lossy(&whoami.stderr));
        assert_ne!(review["authenticated"], true, "{file}: {review}");
        let error = review["error"].as_str().unwrap_or("");
        assert!(error.contains(why), "{file} at {ctx}: refused for another reason than {why:?}: {review}");
    };
    refused("frontend", "other-trust", &format!("the trust policy of {} does not allow {}", role("other_trust"), role("spire")));
    refused("frontend", "not-permitted", &format!("{} is not allowed sts:AssumeRole on {}", role("spire"), role("not_permitted")));
    refused("frontend", "unmapped", &format!("{} is not mapped in kube-system/aws-auth of frontend", role("unmapped")));
    refused("frontend", "no-cluster", &format!("no EKS cluster {u}-no-such-cluster in account {spoke_acct}"));
    // the right token at another spoke's API server: that account has no such cluster
    refused("backend", "ok", &format!("no EKS cluster {u}-spoke in account {}", tb.account("backend")));

    edit_aws_auth(&tb, "frontend", |roles| roles.replace(&ours, ""));
    boto3(&tb, EKS_AUTH_CLEANUP, &[&u]);
    tb.delete_namespace("shared", &ns);
}
