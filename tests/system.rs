//! The system test: README's "Try it on one machine" sequence, with the `meshctl` binary, on
//! the test bed with real nodes — for the walkthrough's configuration and for three spokes:
//!
//! 1. `meshctl up` exits 0;
//! 2. real requests through the stand-in apps (UI → appserver across accounts → db and redis;
//!    for three spokes also report-worker → appserver from the third account) succeed;
//! 3. `meshctl verify --traffic` exits 0 with every check passing;
//! 4. a planted fault — the appserver's sidecar holding yelb-db's SVID — turns its identity
//!    check and its callers' TLS checks ✖ with hints naming the SPIFFE IDs; `up` repairs it and
//!    `verify` passes again;
//! 5. `meshctl up` again makes no change (every step up to date; resourceVersions of the app
//!    objects, the Helm releases and the stacks unchanged);
//! 6. `meshctl down` exits 0 and nothing of ours is left in moto or in any cluster.
//!
//! Both runs use the same accounts and clusters, so they take turns.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{clean_start, http_get, json_lines, meshctl, poll, run_ok, testbed, text, wait_for, Testbed};
use serde_json::Value;

/// One system run at a time: both use every account and cluster of the test bed.
static BED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TD: &str = "am-multi-account-mesh";
const NS: &str = "yelb";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The verify results (one per check) of a run.
fn checks(out: &Output) -> Vec<Value> {
    json_lines(out).into_iter().filter(|v| v.get("check").is_some()).collect()
}

fn not_passing(results: &[Value]) -> Vec<(String, String, String)> {
    results
        .iter()
        .filter(|r| r["status"] != "pass")
        .map(|r| {
            (
                r["workload"].as_str().unwrap_or("").to_string(),
                r["check"].as_str().unwrap_or("").to_string(),
                r["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The address of a LoadBalancer Service (the test bed's stand-in assigns one from the
/// cluster's VPC range; the host routes it to the node).
fn lb_address(tb: &Testbed, ctx: &str, svc: &str) -> String {
    let v = tb.kubectl_json(ctx, &["-n", NS, "get", "service", svc]);
    let ing = &v["status"]["loadBalancer"]["ingress"][0];
    ing["ip"]
        .as_str()
        .or(ing["hostname"].as_str())
        .unwrap_or_else(|| panic!("{ctx}: Service {svc} has no load balancer address: {v}"))
        .to_string()
}

/// The pod IP of a workload (VPC addresses, routed from the host as from another VPC).
fn pod_ip(tb: &Testbed, ctx: &str, app: &str) -> String {
    let v = tb.kubectl_json(ctx, &["-n", NS, "get", "pods", "-l", &format!("app={app}"), "--field-selector=status.phase=Running"]);
    v["items"][0]["status"]["podIP"].as_str().unwrap_or_else(|| panic!("{ctx}: no running {app} pod: {v}")).to_string()
}

/// `(url name, url)` of the requests that cross every hop of the configuration.
fn entry_points(tb: &Testbed, three_spokes: bool) -> Vec<(String, String)> {
    let mut out = vec![("yelb-ui".to_string(), format!("http://{}/api/getvotes", lb_address(tb, "frontend", "yelb-ui")))];
    if three_spokes {
        out.push(("report-worker".to_string(), format!("http://{}:8080/api/getvotes", pod_ip(tb, "analytics", "report-worker"))));
    }
    out
}

/// One GET from this machine; `(status, body)`.
fn get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let (host, port) = hostport.split_once(':').map(|(h, p)| (h, p.parse().unwrap())).unwrap_or((hostport, 80));
    http_get_host(host, port, &path).unwrap_or((0, String::new()))
}

fn http_get_host(host: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    if host == "127.0.0.1" {
        return http_get(port, path);
    }
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&format!("{host}:{port}").parse().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

fn verify(config: &Path, entries: &[(String, String)]) -> Output {
    let mut args: Vec<String> = ["verify", "--traffic", "--requests", "3", "--timeout", "60s"].iter().map(|s| s.to_string()).collect();
    for (name, url) in entries {
        args.push("--traffic-url".into());
        args.push(format!("{name}={url}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    meshctl(config, &refs, Duration::from_secs(300))
}

/// resourceVersions of everything meshctl keeps in the clusters: the app namespace's objects,
/// SPIRE's, and the Helm release records.
fn resource_versions(tb: &Testbed, contexts: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for ctx in contexts {
        for ns in [NS, "spire"] {
            let v =
                tb.kubectl_json(ctx, &["-n", ns, "get", "deployments,daemonsets,statefulsets,services,configmaps,secrets,serviceaccounts"]);
            for item in v["items"].as_array().into_iter().flatten() {
                let name =
                    format!("{ctx}/{ns}/{}/{}", item["kind"].as_str().unwrap_or(""), item["metadata"]["name"].as_str().unwrap_or(""));
                if name.ends_with("/kube-root-ca.crt") {
                    continue;
                }
                out.insert(name, item["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string());
            }
        }
    }
    out
}

/// Plants the fault: the appserver's sidecar asks SPIRE for yelb-db's identity, and an entry
/// lets its pod have it. Returns the entry id, to remove it again.
fn plant_wrong_svid(tb: &Testbed) -> String {
    let entries: Value = serde_json::from_str(
        &tb.spire_server("shared", &["entry", "show", "-spiffeID", &format!("spiffe://{TD}/yelbapp"), "-output", "json"]),
    )
    .unwrap();
    let entry = &entries["entries"][0];
    let parent = entry["parent_id"].clone();
    let parent = format!("spiffe://{}{}", parent["trust_domain"].as_str().unwrap(), parent["path"].as_str().unwrap());
    let mut args: Vec<String> =
        ["entry", "create", "-spiffeID", &format!("spiffe://{TD}/yelbdb"), "-parentID", &parent].iter().map(|s| s.to_string()).collect();
    for sel in entry["selectors"].as_array().unwrap() {
        args.push("-selector".into());
        args.push(format!("{}:{}", sel["type"].as_str().unwrap(), sel["value"].as_str().unwrap()));
    }
    args.extend(["-output".into(), "json".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let created: Value = serde_json::from_str(&tb.spire_server("shared", &refs)).unwrap();
    let id = created["results"][0]["entry"]["id"].as_str().unwrap_or_else(|| panic!("entry create: {created}")).to_string();
    let cm = tb.kubectl_json("backend", &["-n", NS, "get", "configmap", "yelb-appserver-envoy"]);
    let bootstrap = cm["data"]["envoy.yaml"].as_str().unwrap();
    // Only the sidecar's own certificate: the validation context stays the trust domain's.
    let planted = bootstrap.replace(&format!("name: spiffe://{TD}/yelbapp"), &format!("name: spiffe://{TD}/yelbdb"));
    assert_ne!(planted, bootstrap, "the bootstrap names its own SVID:\n{bootstrap}");
    let patch = serde_json::json!({"data": {"envoy.yaml": planted}}).to_string();
    tb.kubectl("backend", &["-n", NS, "patch", "configmap", "yelb-appserver-envoy", "--type=merge", "-p", &patch]);
    tb.kubectl("backend", &["-n", NS, "rollout", "restart", "deployment/yelb-appserver"]);
    tb.kubectl("backend", &["-n", NS, "rollout", "status", "deployment/yelb-appserver", "--timeout=300s"]);
    id
}

/// Nothing of ours in the clusters: namespaces, Helm-managed or meshctl-managed objects
/// (RBAC, the StorageClass), volumes.
fn assert_clusters_empty(tb: &Testbed, contexts: &[&str]) {
    let left: Vec<String> = contexts.iter().flat_map(|ctx| common::cluster_leftovers(tb, ctx, &[NS, "spire"])).collect();
    assert!(left.is_empty(), "objects of ours left: {left:#?}");
}

async fn system(example: &str, three_spokes: bool) {
    let _turn = BED.lock().await;
    let tb = testbed();
    tb.real_node_clusters();
    let config = root().join("examples").join(example);
    let contexts: Vec<&str> = if three_spokes { common::CLUSTERS.to_vec() } else { common::WALKTHROUGH.to_vec() };
    clean_start();

    // 1. up
    let t0 = Instant::now();
    let up = run_ok(&config, &["--yes", "up"]);
    eprintln!("up: {:.0}s, {} steps", t0.elapsed().as_secs_f64(), up["done"].as_array().map_or(0, Vec::len));

    // 2. real requests across every hop
    let entries = entry_points(&tb, three_spokes);
    for (name, url) in &entries {
        let (code, body) = wait_for(&format!("{name}: {url}"), Duration::from_secs(120), Duration::from_secs(2), || {
            Some(get(url)).filter(|(c, _)| *c == 200)
        });
        assert_eq!(code, 200);
        assert!(body.contains("\"db\":\"VOTES") && body.contains("PONG"), "{name}: the appserver reached yelb-db and redis: {body}");
    }

    // 3. verify: every check passes after traffic
    let out = verify(&config, &entries);
    let results = checks(&out);
    let workloads = if three_spokes { 5 } else { 4 };
    assert!(out.status.success() && not_passing(&results).is_empty(), "verify: {:?}\n{}", not_passing(&results), text(&out));
    assert_eq!(results.len(), workloads * 6, "six checks per workload:\n{}", text(&out));

    // 4. the planted fault: the appserver presents yelb-db's identity
    let planted = plant_wrong_svid(&tb);
    // The fault is live once the UI's egress refuses the appserver's certificate: until
    // kube-proxy (the load balancer's stand-in) follows the new pod, as an NLB takes a moment
    // to register a target, requests fail to connect instead and no handshake is counted.
    // `verify --traffic` sends its own requests each time it runs.
    let (out, results) = poll("the UI's egress refusing the planted SVID", Duration::from_secs(180), Duration::from_secs(3), || {
        let out = verify(&config, &entries);
        let results = checks(&out);
        let refused = results.iter().any(|r| r["workload"] == "yelb-ui" && r["check"] == "tls-failures" && r["status"] == "fail");
        if refused {
            Ok((out, results))
        } else {
            Err(text(&out))
        }
    });
    assert_eq!(out.status.code(), Some(1), "verify fails on a wrong SVID:\n{}", text(&out));
    let failed = not_passing(&results);
    let get_check = |w: &str, c: &str| results.iter().find(|r| r["workload"] == w && r["check"] == c).cloned().unwrap_or_default();
    let identity = get_check("yelb-appserver", "identity");
    assert_eq!(identity["status"], "fail", "{failed:?}\n{}", text(&out));
    assert!(
        identity["observed"].as_str().unwrap_or("").contains(&format!("spiffe://{TD}/yelbdb")),
        "observed names the SVID held: {identity}"
    );
    assert!(identity["hint"].as_str().is_some_and(|h| !h.is_empty()), "a hint: {identity}");
    let caller = get_check("yelb-ui", "tls-failures");
    assert_eq!(caller["status"], "fail", "the UI's egress refuses the appserver's certificate: {failed:?}\n{}", text(&out));
    assert!(caller["observed"].as_str().unwrap_or("").contains("fail_verify_san"), "{caller}");
    assert!(caller["hint"].as_str().is_some_and(|h| h.contains("yelbapp")), "the hint names the expected SPIFFE ID: {caller}");
    // Repair: the entry goes, and `up` puts meshctl's bootstrap back.
    tb.spire_server("shared", &["entry", "delete", "-entryID", &planted]);
    let repair = run_ok(&config, &["--yes", "up"]);
    let changed: Vec<&Value> = repair["done"].as_array().unwrap().iter().filter(|d| d["outcome"]["outcome"] != "up-to-date").collect();
    assert!(changed.iter().any(|d| d["step"] == "yelb/backend"), "up repaired the drifted bootstrap: {changed:?}");
    for (name, url) in &entries {
        wait_for(&format!("{name} after the repair: {url}"), Duration::from_secs(120), Duration::from_secs(2), || {
            Some(get(url)).filter(|(c, _)| *c == 200)
        });
    }
    let out = verify(&config, &entries);
    assert!(out.status.success(), "verify after the repair:\n{}", text(&out));

    // 5. up again: nothing to do, nothing written
    let before = resource_versions(&tb, &contexts);
    let again = run_ok(&config, &["--yes", "up"]);
    let changed: Vec<&Value> = again["done"].as_array().unwrap().iter().filter(|d| d["outcome"]["outcome"] != "up-to-date").collect();
    assert!(changed.is_empty(), "a second up changed: {changed:#?}");
    assert_eq!(resource_versions(&tb, &contexts), before, "a second up wrote nothing in the clusters");

    // 6. down: nothing left
    run_ok(&config, &["--yes", "down"]);
    assert_clusters_empty(&tb, &contexts);
    let left = common::aws_leftovers(&tb).await;
    assert!(left.is_empty(), "left in moto after down: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_up_verify_rerun_down_on_real_nodes() {
    system("testbed.toml", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_spokes_up_verify_rerun_down_on_real_nodes() {
    system("testbed-three-spokes.toml", true).await;
}

/// A failing third spoke leaves the other two fully served: `analytics`' base stack name is
/// taken by a stack meshctl did not create, so `stacks/analytics` is refused. Every step that
/// fails or is skipped is the third spoke's; the SPIRE server runs, the two walkthrough spokes'
/// agents attest, real requests cross every hop of theirs and every `verify --traffic` check
/// of their four workloads passes (the third spoke's `report-worker`, never deployed, fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_third_spoke_leaves_the_other_two_fully_served() {
    let _turn = BED.lock().await;
    let tb = testbed();
    tb.real_node_clusters();
    let three = root().join("examples/testbed-three-spokes.toml");
    let conf = meshctl::aws::sdk_loader().profile_name("analytics").region(aws_config::Region::new(tb.region.clone())).load().await;
    let cfn = aws_sdk_cloudformation::Client::new(&conf);
    // A foreign stack an earlier failed run left would make the clean start refuse it.
    let foreign = |s: &aws_sdk_cloudformation::types::Stack| !s.tags().iter().any(|t| t.key() == Some(meshctl::names::TAG_MANAGED_BY));
    if let Ok(d) = cfn.describe_stacks().stack_name("eks-cluster-analytics-stack").send().await {
        if d.stacks().iter().any(foreign) {
            cfn.delete_stack().stack_name("eks-cluster-analytics-stack").send().await.expect("DeleteStack (an earlier run's)");
        }
    }
    clean_start();
    let theirs = r#"{"Resources": {"TheirVpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.93.0.0/16"}}}}"#;
    cfn.create_stack().stack_name("eks-cluster-analytics-stack").template_body(theirs).send().await.expect("CreateStack (theirs)");

    let out = meshctl(&three, &["--yes", "up"], Duration::from_secs(1800));
    let s = common::summary(&out);
    let failed: Vec<&str> = s["failed"].as_array().unwrap().iter().map(|f| f["step"].as_str().unwrap()).collect();
    assert_eq!(failed, ["stacks/analytics"], "{}", text(&out));
    assert_eq!(out.status.code(), Some(2), "refused as not meshctl's: exit 2\n{}", text(&out));
    let skipped: Vec<&str> = s["skipped"].as_array().unwrap().iter().map(|f| f["step"].as_str().unwrap()).collect();
    assert!(
        !skipped.is_empty() && skipped.iter().all(|id| id.contains("analytics")),
        "only the third spoke's steps are skipped: {skipped:?}"
    );
    let done: Vec<&str> = s["done"].as_array().unwrap().iter().map(|d| d["step"].as_str().unwrap()).collect();
    for id in ["spire/server", "spire/agent-frontend", "spire/agent-backend", "yelb/frontend", "yelb/backend"] {
        assert!(done.contains(&id), "{id} done: {done:?}");
    }

    let entries = entry_points(&tb, false);
    for (name, url) in &entries {
        let (code, body) = wait_for(&format!("{name}: {url}"), Duration::from_secs(120), Duration::from_secs(2), || {
            Some(get(url)).filter(|(c, _)| *c == 200)
        });
        assert!(code == 200 && body.contains("\"db\":\"VOTES") && body.contains("PONG"), "{name}: {body}");
    }
    // verify checks every configured workload: only the third spoke's (never deployed) fails.
    let out = verify(&three, &entries);
    let results = checks(&out);
    let served: Vec<&Value> = results.iter().filter(|r| r["workload"] != "report-worker").collect();
    assert_eq!(served.len(), 4 * 6, "six checks for each of the four walkthrough workloads:\n{}", text(&out));
    let failing: Vec<_> = not_passing(&results).into_iter().filter(|(w, _, _)| w != "report-worker").collect();
    assert!(failing.is_empty(), "the two spokes are fully served: {failing:?}\n{}", text(&out));

    cfn.delete_stack().stack_name("eks-cluster-analytics-stack").send().await.expect("DeleteStack (theirs)");
    clean_start();
    assert_clusters_empty(&tb, &common::CLUSTERS);
    let left = common::aws_leftovers(&tb).await;
    assert!(left.is_empty(), "left in moto after down: {left:#?}");
}
