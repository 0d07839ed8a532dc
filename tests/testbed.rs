//! Smoke tests of the local test bed: one per component, asserting on live state.
//! Needs a running test bed (`scripts/test` brings it up; or `scripts/testbed up` and
//! `source $MESHCTL_TESTBED_DIR/env`).

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
        assert_eq!(
            r["status"]["user"]["username"],
            format!("system:serviceaccount:{ns}:spire-agent"),
            "{ctx}: {r}"
        );
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

/// A Deployment gets a Running pod with a pod IP through kwok; `kubectl exec` runs the
/// mapped local command; `kubectl port-forward` reaches a local port through a PortForward.
#[test]
fn kwok_pods_exec_and_port_forward() {
    let tb = testbed();
    for ctx in CLUSTERS {
        let ns = tb.create_namespace(ctx, "tb-kwok");
        tb.kubectl(ctx, &["-n", &ns, "create", "deployment", "web", "--image=registry.invalid/web:1", "--port=8080"]);
        let (pod, ip) = running_pod(&tb, ctx, &ns, "web");
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
    let _server = spawn_logged(
        tb.command("spire-server").args(["run", "-config"]).arg(d.join("server.conf")),
        &d.join("server.log"),
    );
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
    let token = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .expect("token")
        .to_string();
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let workload_id = format!("spiffe://{td}/workload/testbed");
    let out = server(&[
        "entry", "create", "-parentID", &agent_id, "-spiffeID", &workload_id,
        "-selector", &format!("unix:uid:{uid}"),
    ]);
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
        tb.command("spire-agent")
            .args(["run", "-config"])
            .arg(d.join("agent.conf"))
            .args(["-joinToken", &token]),
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
    let body = wait_for("envoy /ready", Duration::from_secs(60), Duration::from_millis(300), || {
        match http_get(admin, "/ready") {
            Ok((200, b)) => Some(b),
            _ => None,
        }
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
    assert!(!text.contains("dead"), "{text}");
}
