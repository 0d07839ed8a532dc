//! Kill anywhere, rerun converges: `meshctl up` and `meshctl down` SIGKILLed (the whole process
//! group, helm included) at many points of their JSON event streams, each rerun resuming from
//! what the killed run left, on the test bed with the meshctl binary.
//!
//! 1. A clean `up` (from nothing) is the reference: its final state is read as data
//!    ([`snapshot`]) — CloudFormation stacks, RAM shares and invitations, IAM roles, VPCs,
//!    Transit Gateways and EKS clusters in every account of moto; the Kubernetes objects in
//!    meshctl's namespaces, `kube-system/aws-auth` and meshctl's cluster-scoped objects in every
//!    cluster; Helm releases with their values; SPIRE registration entries. Its event list is
//!    the plan of the kill points ([`plan_points`]). Then `down`, whose event list plans the
//!    kill points of step 4.
//! 2. `up` is started again and again, each run SIGKILLed when the next untried point's event
//!    appears on its stdout (not after a sleep), until a run gets to its end without meeting one:
//!    that run must exit 0. The state must then equal the clean run's (as data, after the
//!    normalization [`normalize`] documents) and hold no duplicates ([`duplicates`]).
//! 3. A third `up` changes nothing: every step up to date, every resourceVersion unchanged.
//! 4. The same for `down`: killed at points of the clean `down`'s events, rerun until one
//!    finishes (exit 0), then nothing of ours is left ([`leftovers`]).
//! 5. An `up` killed just before a CloudFormation change set is executed, then `down`: nothing
//!    left (the stack it leaves in REVIEW_IN_PROGRESS is deleted too).
//!
//! A point "passed" when the run after its kill saw no step fail. Prints "kill points tried:
//! N, passed: M" and the wall time; asserts only on state (tried ≥ 20 for up, ≥ 5 for down,
//! every tried point passed, the comparisons above).
//!
//! Two scopes: [`early_phases_on_any_test_bed`] runs `up --only stacks --only ram --only
//! kubeconfig --only aws-auth` (works on a kwok-only test bed); [`full_up_on_real_nodes`] runs
//! the whole `up` and needs the real nodes (fails without them, like tests/system.rs). They use
//! every account and cluster of the test bed, so they take turns.
//!
//! Knobs (environment): `MESHCTL_KILL_UP_POINTS` / `MESHCTL_KILL_DOWN_POINTS`: how many points
//! to plan at most (defaults per scope); the plan is printed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{testbed, Testbed};
use meshctl::steps::irsa::decode_policy;
use serde_json::{json, Map, Value};

/// One kill-anywhere run at a time: both use every account and cluster of the test bed.
static BED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// meshctl's namespaces in the clusters (the app's and SPIRE's).
const NAMESPACES: [&str; 2] = ["yelb", "spire"];

fn config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/testbed.toml")
}

// ============================================================================ the scopes

struct Scope {
    name: &'static str,
    /// The `up` command after the global flags.
    up: Vec<&'static str>,
    /// Longest a single run may take before the watchdog kills it (and the test fails).
    timeout: Duration,
    max_up_points: usize,
    max_down_points: usize,
    /// The SPIRE server runs at the end of `up`: its entries are part of the state.
    spire: bool,
}

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The AWS phases and the early cluster phases: what runs on a kwok-only test bed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_phases_on_any_test_bed() {
    let scope = Scope {
        name: "stacks, ram, kubeconfig, aws-auth",
        up: vec!["up", "--only", "stacks", "--only", "ram", "--only", "kubeconfig", "--only", "aws-auth"],
        timeout: Duration::from_secs(600),
        max_up_points: env_usize("MESHCTL_KILL_UP_POINTS", 60),
        max_down_points: env_usize("MESHCTL_KILL_DOWN_POINTS", 40),
        spire: false,
    };
    kill_anywhere(scope).await;
}

/// The whole `up` (SPIRE, registration entries, the app) on the test bed's real nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_up_on_real_nodes() {
    testbed().real_node_clusters();
    let scope = Scope {
        name: "the whole up",
        up: vec!["up"],
        timeout: Duration::from_secs(1800),
        max_up_points: env_usize("MESHCTL_KILL_UP_POINTS", 30),
        max_down_points: env_usize("MESHCTL_KILL_DOWN_POINTS", 8),
        spire: true,
    };
    kill_anywhere(scope).await;
}

// ============================================================================ running meshctl

/// One meshctl run as the test saw it.
struct Run {
    args: Vec<String>,
    events: Vec<Value>,
    summary: Option<Value>,
    /// SIGKILLed by the test (the process ended by that signal).
    killed: bool,
    timed_out: bool,
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0) && self.summary.as_ref().is_some_and(|s| s["ok"] == true)
    }

    /// `step: message` of every step that failed in this run.
    fn failures(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["state"] == "failed")
            .map(|e| format!("{}: {}", e["step"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
            .collect()
    }

    /// The end of the run, for messages.
    fn text(&self) -> String {
        let tail: Vec<String> = self.events.iter().rev().take(25).rev().map(|e| e.to_string()).collect();
        format!(
            "meshctl {}: exit {:?}{}{} after {:.1}s\nlast events:\n  {}\nsummary: {}\nstderr: {}",
            self.args.join(" "),
            self.code,
            if self.killed { " (killed by the test)" } else { "" },
            if self.timed_out { " (TIMED OUT)" } else { "" },
            self.elapsed.as_secs_f64(),
            tail.join("\n  "),
            self.summary.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "(none)".into()),
            self.stderr.trim()
        )
    }

    /// Outcomes of the summary that are not `up-to-date`.
    fn changed(&self) -> Vec<String> {
        let s = self.summary.as_ref().map(|s| s["done"].clone()).unwrap_or_default();
        s.as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["outcome"]["outcome"] != "up-to-date")
            .map(|d| format!("{} {}", d["step"].as_str().unwrap_or("?"), d["outcome"]))
            .collect()
    }
}

fn killpg(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

/// Runs `meshctl --config examples/testbed.toml --yes --output json <args>` in a process group
/// of its own, reading its stdout line by line; when `kill_now` says so for an event, the whole
/// group (meshctl and any helm it runs) gets SIGKILL at once. A watchdog kills it after
/// `timeout` (the run is then marked timed out).
fn meshctl(args: &[&str], timeout: Duration, mut kill_now: impl FnMut(&Value) -> bool) -> Run {
    let t0 = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.arg("--config").arg(config()).args(["--yes", "--output", "json"]).args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let finished = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (finished, timed_out) = (finished.clone(), timed_out.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while !finished.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    timed_out.store(true, Ordering::SeqCst);
                    killpg(pid);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut events = Vec::new();
    let mut summary = None;
    let mut sent_kill = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        if let Some(s) = v.get("summary") {
            summary = Some(s.clone());
            continue;
        }
        if !sent_kill && kill_now(&v) {
            killpg(pid);
            sent_kill = true;
        }
        events.push(v);
    }
    let status = child.wait().unwrap();
    finished.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    let run = Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        events,
        summary,
        killed: sent_kill && status.signal() == Some(libc::SIGKILL),
        timed_out: timed_out.load(Ordering::SeqCst),
        code: status.code(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: t0.elapsed(),
    };
    eprintln!(
        "  meshctl {}: {} after {:.1}s, {} events",
        args.join(" "),
        if run.killed { "killed".to_string() } else { format!("exit {:?}", run.code) },
        run.elapsed.as_secs_f64(),
        run.events.len()
    );
    run
}

/// A run to its end; panics unless it exits 0 with an ok summary.
fn meshctl_ok(args: &[&str], timeout: Duration) -> Run {
    let run = meshctl(args, timeout, |_| false);
    assert!(run.ok() && !run.timed_out, "{}", run.text());
    run
}

// ============================================================================ kill points

/// A point of an event stream: `<step> started`, `<step> progress <message>` (tokens holding a
/// digit — change set names, addresses, ARNs with account ids — become `*`), or `<step> done
/// <outcome>`.
fn event_key(e: &Value) -> Option<String> {
    let step = e["step"].as_str()?;
    match e["state"].as_str()? {
        "started" => Some(format!("{step} started")),
        "progress" => {
            let m = e["message"].as_str().unwrap_or("");
            let m: Vec<&str> = m.split(' ').map(|t| if t.chars().any(|c| c.is_ascii_digit()) { "*" } else { t }).collect();
            Some(format!("{step} progress {}", m.join(" ")))
        }
        "done" => Some(format!("{step} done {}", e["message"]["outcome"].as_str().unwrap_or("?"))),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct Point {
    key: String,
    phase: String,
}

/// The kill points of a run: the distinct points of its event list in order of appearance,
/// at most `max` of them — evenly spread, and the first of every phase always in.
fn plan_points(events: &[Value], max: usize) -> Vec<Point> {
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for e in events {
        if let Some(key) = event_key(e) {
            if seen.insert(key.clone()) {
                let phase = key.split('/').next().unwrap_or("").to_string();
                all.push(Point { key, phase });
            }
        }
    }
    if all.len() <= max {
        return all;
    }
    let mut keep: BTreeSet<usize> = (0..max).map(|i| i * all.len() / max).collect();
    let mut phases = BTreeSet::new();
    for (i, p) in all.iter().enumerate() {
        if phases.insert(p.phase.clone()) {
            keep.insert(i);
        }
    }
    keep.into_iter().map(|i| all[i].clone()).collect()
}

#[derive(Debug, Clone)]
enum Fate {
    Untried,
    /// Killed there in run `run`; `rerun` is what the next run made of it.
    Killed {
        run: usize,
        rerun: Option<Result<(), String>>,
    },
    /// Not met again before a run got to its end.
    NoLongerOccurs,
}

struct Chain {
    what: String,
    points: Vec<Point>,
    fates: Vec<Fate>,
    runs: usize,
    elapsed: Duration,
    /// The run that got to its end.
    last: Option<Run>,
}

impl Chain {
    fn tried(&self) -> usize {
        self.fates.iter().filter(|f| matches!(f, Fate::Killed { .. })).count()
    }
    fn passed(&self) -> usize {
        self.fates.iter().filter(|f| matches!(f, Fate::Killed { rerun: Some(Ok(())), .. })).count()
    }
    fn report(&self) -> String {
        let mut t =
            format!("{}: {} points planned, {} runs, {:.1}s\n", self.what, self.points.len(), self.runs, self.elapsed.as_secs_f64());
        for (p, f) in self.points.iter().zip(&self.fates) {
            let fate = match f {
                Fate::Untried => "not tried".to_string(),
                Fate::NoLongerOccurs => "skipped: no longer occurred".to_string(),
                Fate::Killed { run, rerun: Some(Ok(())) } => format!("killed in run {run}; rerun ok"),
                Fate::Killed { run, rerun: Some(Err(e)) } => format!("killed in run {run}; RERUN FAILED: {e}"),
                Fate::Killed { run, rerun: None } => format!("killed in run {run}; no rerun"),
            };
            t.push_str(&format!("  {:<90} {fate}\n", p.key));
        }
        t
    }
}

/// Runs `args` again and again; each run is killed at the first event that is an untried
/// point, so each rerun resumes from what the killed one left. Ends with the first run that
/// meets no untried point (or fails, or times out): the untried points are then skipped.
fn chain(what: &str, args: &[&str], points: Vec<Point>, timeout: Duration) -> Chain {
    eprintln!("== {what}: {} kill points", points.len());
    let t0 = Instant::now();
    let mut c =
        Chain { what: what.to_string(), fates: vec![Fate::Untried; points.len()], points, runs: 0, elapsed: Duration::ZERO, last: None };
    let mut previous: Option<usize> = None;
    loop {
        c.runs += 1;
        let mut hit = None;
        let run = {
            let (points, fates) = (&c.points, &c.fates);
            meshctl(args, timeout, |e| {
                let Some(key) = event_key(e) else { return false };
                hit = points.iter().zip(fates).position(|(p, f)| matches!(f, Fate::Untried) && p.key == key);
                hit.is_some()
            })
        };
        if let Some(p) = previous.take() {
            let failures = run.failures();
            let verdict = if !failures.is_empty() {
                Err(failures.join("; "))
            } else if !run.killed && !run.ok() {
                Err(format!("exit {:?}{}", run.code, if run.timed_out { " (timed out)" } else { "" }))
            } else {
                Ok(())
            };
            if let Fate::Killed { rerun, .. } = &mut c.fates[p] {
                *rerun = Some(verdict);
            }
        }
        match hit {
            Some(i) if run.killed => {
                eprintln!("  killed at [{i}] {}", c.points[i].key);
                c.fates[i] = Fate::Killed { run: c.runs, rerun: None };
                previous = Some(i);
            }
            _ => {
                for f in c.fates.iter_mut().filter(|f| matches!(f, Fate::Untried)) {
                    *f = Fate::NoLongerOccurs;
                }
                c.last = Some(run);
                break;
            }
        }
        if run.timed_out {
            c.last = Some(run);
            break;
        }
    }
    c.elapsed = t0.elapsed();
    c
}

// ============================================================================ the state as data

/// Everything of meshctl's, keyed `aws/<profile>/<kind>/<name>`, `k8s/<context>/<ns>/<Kind>/
/// <name>`, `helm/<context>/<ns>/<release>`, `spire/entry/<SPIFFE ID>`. A second object under
/// the same key is stored as `<key>#2` (see [`duplicates`]).
type State = BTreeMap<String, Value>;

struct Snapshot {
    state: State,
    /// resourceVersion of every Kubernetes object read (raw keys).
    versions: BTreeMap<String, String>,
}

fn put(state: &mut State, key: String, value: Value) {
    let mut k = key.clone();
    let mut n = 2;
    while state.contains_key(&k) {
        k = format!("{key}#{n}");
        n += 1;
    }
    state.insert(k, value);
}

/// Values that legitimately differ between two runs that made the same thing, each with the
/// symbol it is replaced by; see [`normalize`].
#[derive(Default)]
struct Symbols(Vec<(String, String)>);

impl Symbols {
    fn add(&mut self, raw: &str, symbol: String) {
        if raw.len() >= 7 && !self.0.iter().any(|(r, _)| r == raw) {
            self.0.push((raw.to_string(), symbol));
        }
    }
}

/// A physical id AWS (or moto) made up: `<type>-<≥ 8 hex digits>` (`subnet-0a1b…`, which
/// may be all digits), a run of ≥ 8 letters and digits holding both (CloudFormation's name
/// suffixes, UUIDs). Names chosen by meshctl (roles, clusters) and account ids are not.
fn generated(id: &str) -> bool {
    let hex_after_dash = id.split('-').skip(1).any(|part| {
        let run: String = part.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        run.len() >= 8 && run.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    });
    // CloudFormation's suffix for names it makes up: `<stack>-<logical id>-<12 of A-Z0-9>`,
    // sometimes letters only (`…-ClusterRole-OFCSJWODNCKX`).
    let cfn_suffix =
        id.rsplit_once('-').is_some_and(|(_, last)| last.len() >= 8 && last.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
    hex_after_dash
        || cfn_suffix
        || id
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|run| run.len() >= 8 && run.chars().any(|c| c.is_ascii_digit()) && run.chars().any(|c| c.is_ascii_alphabetic()))
}

async fn sdk(profile: &str, region: &str) -> aws_config::SdkConfig {
    meshctl::aws::sdk_loader().profile_name(profile).region(aws_config::Region::new(region.to_string())).load().await
}

fn policy(doc: Option<&str>) -> Value {
    doc.map(|d| decode_policy(d).unwrap_or_else(|| Value::String(d.to_string()))).unwrap_or(Value::Null)
}

/// The AWS side, every account of the test bed.
async fn aws_state(tb: &Testbed, state: &mut State, symbols: &mut Symbols) {
    for (profile, _) in &tb.accounts {
        let conf = sdk(profile, &tb.region).await;
        let p = profile.as_str();

        // ---- CloudFormation: stacks with their change sets
        let cfn = aws_sdk_cloudformation::Client::new(&conf);
        let stacks = cfn.describe_stacks().send().await.expect("DescribeStacks");
        for s in stacks.stacks() {
            let status = s.stack_status().map(|s| s.as_str()).unwrap_or("");
            if status == "DELETE_COMPLETE" {
                continue;
            }
            let name = s.stack_name().unwrap_or_default();
            let id = s.stack_id().unwrap_or_default();
            symbols.add(id, format!("<stack {p}/{name}>"));
            let res = cfn.list_stack_resources().stack_name(id).send().await.expect("ListStackResources");
            for r in res.stack_resource_summaries() {
                if let Some(phys) = r.physical_resource_id().filter(|i| generated(i)) {
                    symbols.add(phys, format!("<{name}.{}>", r.logical_resource_id().unwrap_or_default()));
                }
            }
            // moto answers ListChangeSets with every change set of the account: filtered here
            let sets = cfn.list_change_sets().stack_name(id).send().await.expect("ListChangeSets");
            let mut change_sets: Vec<String> = sets
                .summaries()
                .iter()
                .filter(|c| c.stack_id() == Some(id))
                .map(|c| {
                    format!("{} {}", c.status().map(|s| s.as_str()).unwrap_or("?"), c.execution_status().map(|s| s.as_str()).unwrap_or("?"))
                })
                .collect();
            change_sets.sort();
            let params: Map<String, Value> = s
                .parameters()
                .iter()
                .map(|x| (x.parameter_key().unwrap_or_default().to_string(), json!(x.parameter_value().unwrap_or_default())))
                .collect();
            let tags: Map<String, Value> =
                s.tags().iter().map(|t| (t.key().unwrap_or_default().to_string(), json!(t.value().unwrap_or_default()))).collect();
            let mut outputs: Vec<&str> = s.outputs().iter().filter_map(|o| o.output_key()).collect();
            outputs.sort();
            put(
                state,
                format!("aws/{p}/stack/{name}"),
                json!({"status": status, "parameters": params, "outputs": outputs, "tags": tags, "change_sets": change_sets}),
            );
        }

        // ---- RAM: shares owned (not DELETED) with principals and resources, shares received, invitations
        let ram = aws_sdk_ram::Client::new(&conf);
        let owned =
            ram.get_resource_shares().resource_owner(aws_sdk_ram::types::ResourceOwner::SelfValue).send().await.expect("GetResourceShares");
        for sh in owned.resource_shares() {
            let status = sh.status().map(|s| s.as_str()).unwrap_or("");
            if status == "DELETED" {
                continue;
            }
            let arn = sh.resource_share_arn().unwrap_or_default();
            let name = sh.name().unwrap_or_default();
            // (GetResourceShareAssociations: the test bed's ListPrincipals ignores the share filter)
            let assoc = |t: aws_sdk_ram::types::ResourceShareAssociationType| {
                ram.get_resource_share_associations().association_type(t).resource_share_arns(arn).send()
            };
            let pr =
                assoc(aws_sdk_ram::types::ResourceShareAssociationType::Principal).await.expect("GetResourceShareAssociations PRINCIPAL");
            let mut principals: Vec<String> =
                pr.resource_share_associations().iter().filter_map(|a| a.associated_entity().map(String::from)).collect();
            principals.sort();
            let rs =
                assoc(aws_sdk_ram::types::ResourceShareAssociationType::Resource).await.expect("GetResourceShareAssociations RESOURCE");
            let mut resources: Vec<String> = rs
                .resource_share_associations()
                .iter()
                .map(|a| format!("{} {}", a.associated_entity().unwrap_or_default(), a.status().map(|s| s.as_str()).unwrap_or("?")))
                .collect();
            resources.sort();
            let mut statuses: Vec<String> =
                pr.resource_share_associations().iter().map(|a| a.status().map(|s| s.as_str()).unwrap_or("?").to_string()).collect();
            statuses.sort();
            symbols.add(arn, format!("<ram-share {p}/{name}/{}>", principals.join(",")));
            put(
                state,
                format!("aws/{p}/ram-share/{name}/{}", principals.join(",")),
                json!({"status": status, "principals": principals, "principal_associations": statuses, "resources": resources}),
            );
        }
        let received = ram
            .get_resource_shares()
            .resource_owner(aws_sdk_ram::types::ResourceOwner::OtherAccounts)
            .send()
            .await
            .expect("GetResourceShares");
        for sh in received.resource_shares() {
            let status = sh.status().map(|s| s.as_str()).unwrap_or("");
            if status != "DELETED" {
                put(
                    state,
                    format!("aws/{p}/ram-received/{}/{}", sh.name().unwrap_or_default(), sh.owning_account_id().unwrap_or_default()),
                    json!({"status": status}),
                );
            }
        }
        let invitations = ram.get_resource_share_invitations().send().await.expect("GetResourceShareInvitations");
        for inv in invitations.resource_share_invitations() {
            let status = inv.status().map(|s| s.as_str()).unwrap_or("");
            put(
                state,
                format!(
                    "aws/{p}/ram-invitation/{}/{}",
                    inv.resource_share_name().unwrap_or_default(),
                    inv.sender_account_id().unwrap_or_default()
                ),
                json!({"status": status}),
            );
        }

        // ---- IAM roles (but the test bed's own): trust, attached and inline policies
        let iam = aws_sdk_iam::Client::new(&conf);
        let roles = iam.list_roles().send().await.expect("ListRoles");
        for r in roles.roles() {
            let name = r.role_name();
            if name == "meshctl-testbed" || name.starts_with("AWSServiceRole") {
                continue;
            }
            let attached = iam.list_attached_role_policies().role_name(name).send().await.expect("ListAttachedRolePolicies");
            let mut attached: Vec<&str> = attached.attached_policies().iter().filter_map(|a| a.policy_arn()).collect();
            attached.sort();
            let names = iam.list_role_policies().role_name(name).send().await.expect("ListRolePolicies");
            let mut inline = Map::new();
            for pol in names.policy_names() {
                let doc = iam.get_role_policy().role_name(name).policy_name(pol).send().await.expect("GetRolePolicy");
                inline.insert(pol.clone(), policy(Some(doc.policy_document())));
            }
            put(
                state,
                format!("aws/{p}/role/{name}"),
                json!({"trust": policy(r.assume_role_policy_document()), "attached": attached, "inline": inline}),
            );
        }

        // ---- what costs money, to count: VPCs, Transit Gateways and their attachments, EKS clusters
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let vpcs = ec2.describe_vpcs().send().await.expect("DescribeVpcs");
        for v in vpcs.vpcs().iter().filter(|v| v.is_default() != Some(true)) {
            put(
                state,
                format!("aws/{p}/vpc/{}", v.cidr_block().unwrap_or_default()),
                json!({"id": v.vpc_id(), "state": v.state().map(|s| s.as_str())}),
            );
        }
        let tgws = ec2.describe_transit_gateways().send().await.expect("DescribeTransitGateways");
        for t in tgws.transit_gateways().iter().filter(|t| t.state().map(|s| s.as_str()) != Some("deleted")) {
            let name = t.tags().iter().find(|t| t.key() == Some("Name")).and_then(|t| t.value()).unwrap_or_default();
            put(state, format!("aws/{p}/tgw/{name}"), json!({"id": t.transit_gateway_id(), "state": t.state().map(|s| s.as_str())}));
        }
        let atts = ec2.describe_transit_gateway_attachments().send().await.expect("DescribeTransitGatewayAttachments");
        for a in atts
            .transit_gateway_attachments()
            .iter()
            .filter(|a| !matches!(a.state().map(|s| s.as_str()), Some("deleted") | Some("deleting")))
        {
            put(
                state,
                format!("aws/{p}/tgw-attachment/{}", a.resource_id().unwrap_or_default()),
                json!({"tgw": a.transit_gateway_id(), "owner": a.resource_owner_id(), "state": a.state().map(|s| s.as_str())}),
            );
        }
        let eks = aws_sdk_eks::Client::new(&conf);
        let clusters = eks.list_clusters().send().await.expect("ListClusters");
        for name in clusters.clusters() {
            let c = eks.describe_cluster().name(name).send().await.expect("DescribeCluster").cluster.unwrap();
            let ngs = eks.list_nodegroups().cluster_name(name).send().await.expect("ListNodegroups");
            let addons = eks.list_addons().cluster_name(name).send().await.expect("ListAddons");
            let assocs = eks.list_pod_identity_associations().cluster_name(name).send().await.expect("ListPodIdentityAssociations");
            let mut pod_identity: Vec<String> = Vec::new();
            for a in assocs.associations() {
                let d = eks
                    .describe_pod_identity_association()
                    .cluster_name(name)
                    .association_id(a.association_id().unwrap_or_default())
                    .send()
                    .await
                    .expect("DescribePodIdentityAssociation");
                let d = d.association.unwrap();
                pod_identity.push(format!(
                    "{}/{} -> {}",
                    d.namespace().unwrap_or_default(),
                    d.service_account().unwrap_or_default(),
                    d.role_arn().unwrap_or_default()
                ));
            }
            pod_identity.sort();
            let mut addons: Vec<String> = addons.addons().to_vec();
            addons.sort();
            put(
                state,
                format!("aws/{p}/eks/{name}"),
                json!({"version": c.version(), "nodegroups": ngs.nodegroups(), "addons": addons, "pod_identity": pod_identity}),
            );
        }
    }
}

/// Metadata that is state: labels, annotations (but the Deployment revision counter, which
/// counts history), owners by kind and name.
fn meta(item: &Value) -> Value {
    let m = &item["metadata"];
    let mut annotations = m["annotations"].as_object().cloned().unwrap_or_default();
    annotations.remove("deployment.kubernetes.io/revision");
    let owners: Vec<String> = m["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| format!("{} {}", o["kind"].as_str().unwrap_or(""), o["name"].as_str().unwrap_or("")))
        .collect();
    json!({"labels": m["labels"], "annotations": annotations, "owners": owners})
}

/// A Kubernetes object as compared: see [`normalize`].
fn kube_object(kind: &str, item: &Value) -> Value {
    let mut spec = item["spec"].clone();
    match kind {
        "Secret" => json!({"type": item["type"]}),
        "ConfigMap" => json!({"meta": meta(item), "data": item["data"], "binaryData": item["binaryData"]}),
        "ServiceAccount" => json!({"meta": meta(item), "automount": item["automountServiceAccountToken"]}),
        "Service" => {
            if let Some(s) = spec.as_object_mut() {
                for k in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
                    s.remove(k);
                }
            }
            for port in spec["ports"].as_array_mut().into_iter().flatten() {
                if let Some(p) = port.as_object_mut() {
                    p.remove("nodePort");
                }
            }
            let lbs = item["status"]["loadBalancer"]["ingress"].as_array().map_or(0, Vec::len);
            json!({"meta": meta(item), "spec": spec, "load_balancer_addresses": lbs})
        }
        _ => {
            // A chart's `checksum/config` hashes its ConfigMap, which holds addresses that
            // change from run to run (the server's load balancer); the ConfigMap itself is
            // compared, with its addresses as symbols.
            if let Some(a) = spec["template"]["metadata"]["annotations"].as_object_mut() {
                for (k, v) in a.iter_mut().filter(|(k, _)| k.starts_with("checksum/")) {
                    *v = json!(format!("<hash of the {}>", k.trim_start_matches("checksum/")));
                }
            }
            let st = &item["status"];
            let ready = match kind {
                "DaemonSet" => st["desiredNumberScheduled"].as_i64().is_some_and(|d| d > 0 && st["numberReady"].as_i64() == Some(d)),
                _ => {
                    let want = spec["replicas"].as_i64().unwrap_or(1);
                    st["readyReplicas"].as_i64().unwrap_or(0) == want && st["updatedReplicas"].as_i64().unwrap_or(0) == want
                }
            };
            json!({"meta": meta(item), "spec": spec, "ready": ready})
        }
    }
}

/// The Kubernetes side, every cluster of the configuration.
fn kube_state(
    tb: &Testbed,
    contexts: &[&str],
    hub: &str,
    state: &mut State,
    versions: &mut BTreeMap<String, String>,
    symbols: &mut Symbols,
) {
    for ctx in contexts {
        let namespaces = tb.kubectl_json(ctx, &["get", "namespaces"]);
        for ns in namespaces["items"].as_array().into_iter().flatten() {
            let name = ns["metadata"]["name"].as_str().unwrap_or("");
            if NAMESPACES.contains(&name) {
                let key = format!("k8s/{ctx}/-/Namespace/{name}");
                versions.insert(key.clone(), ns["metadata"]["resourceVersion"].as_str().unwrap_or("").into());
                put(state, key, json!({"labels": ns["metadata"]["labels"]}));
            }
        }
        for ns in NAMESPACES {
            let pods = tb.kubectl_json(ctx, &["-n", ns, "get", "pods"]);
            for pod in pods["items"].as_array().into_iter().flatten() {
                let name = pod["metadata"]["name"].as_str().unwrap_or("");
                let owner = &pod["metadata"]["ownerReferences"][0];
                // generated pod names: <deployment>-<rs hash>-<id>, <daemonset>-<id>
                let base = match owner["kind"].as_str() {
                    Some("ReplicaSet") => name.rsplitn(3, '-').last().unwrap_or(name),
                    Some("DaemonSet") => owner["name"].as_str().unwrap_or(name),
                    _ => name,
                };
                if let Some(ip) = pod["status"]["podIP"].as_str() {
                    symbols.add(ip, format!("<pod-ip {ctx}/{ns}/{base}>"));
                }
            }
            let items =
                tb.kubectl_json(ctx, &["-n", ns, "get", "deployments,daemonsets,statefulsets,services,configmaps,secrets,serviceaccounts"]);
            for item in items["items"].as_array().into_iter().flatten() {
                let kind = item["kind"].as_str().unwrap_or("");
                let name = item["metadata"]["name"].as_str().unwrap_or("");
                if kind == "ConfigMap" && name == "kube-root-ca.crt" {
                    continue; // the cluster's, published in every namespace
                }
                versions.insert(format!("k8s/{ctx}/{ns}/{kind}/{name}"), item["metadata"]["resourceVersion"].as_str().unwrap_or("").into());
                if kind == "Secret" && name.starts_with("sh.helm.release.v1.") {
                    // Helm's release history, one Secret per revision: the release is compared
                    // under helm/, the history is not state
                    let release = name.trim_start_matches("sh.helm.release.v1.").rsplit_once(".v").map_or(name, |(r, _)| r);
                    state.insert(format!("k8s/{ctx}/{ns}/Secret/sh.helm.release.v1.{release}.v*"), json!({"type": item["type"]}));
                    continue;
                }
                if kind == "Service" {
                    for ip in item["spec"]["clusterIPs"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        symbols.add(ip, format!("<cluster-ip {ctx}/{ns}/{name}>"));
                    }
                    for ing in item["status"]["loadBalancer"]["ingress"].as_array().into_iter().flatten() {
                        for addr in [ing["ip"].as_str(), ing["hostname"].as_str()].into_iter().flatten() {
                            symbols.add(addr, format!("<lb {ctx}/{ns}/{name}>"));
                        }
                    }
                }
                if kind == "ConfigMap" && *ctx == hub && name == "spire-bundle" {
                    // the trust bundle: keys the SPIRE server generated; the spokes' copies must equal it
                    for (k, v) in item["data"].as_object().into_iter().flatten() {
                        if let Some(v) = v.as_str() {
                            symbols.add(v, format!("<trust bundle {k}>"));
                        }
                    }
                }
                put(state, format!("k8s/{ctx}/{ns}/{kind}/{name}"), kube_object(kind, item));
            }
        }
        let auth = tb.kubectl_json(ctx, &["-n", "kube-system", "get", "configmaps", "--field-selector=metadata.name=aws-auth"]);
        for cm in auth["items"].as_array().into_iter().flatten() {
            let key = format!("k8s/{ctx}/kube-system/ConfigMap/aws-auth");
            versions.insert(key.clone(), cm["metadata"]["resourceVersion"].as_str().unwrap_or("").into());
            put(state, key, json!({"data": cm["data"]}));
        }
        let cluster =
            tb.kubectl_json(ctx, &["get", "clusterroles,clusterrolebindings,storageclasses", "-l", "app.kubernetes.io/managed-by"]);
        for item in cluster["items"].as_array().into_iter().flatten() {
            if !matches!(item["metadata"]["labels"]["app.kubernetes.io/managed-by"].as_str(), Some("meshctl") | Some("Helm")) {
                continue;
            }
            let kind = item["kind"].as_str().unwrap_or("");
            let name = item["metadata"]["name"].as_str().unwrap_or("");
            let key = format!("k8s/{ctx}/-/{kind}/{name}");
            versions.insert(key.clone(), item["metadata"]["resourceVersion"].as_str().unwrap_or("").into());
            let mut v = item.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("status");
                o.insert("metadata".into(), meta(item));
            }
            put(state, key, v);
        }
    }
}

/// Helm releases (any status) with their user values, every cluster.
fn helm_state(tb: &Testbed, contexts: &[&str], state: &mut State) {
    for ctx in contexts {
        let mut c = tb.command("helm");
        c.args(["list", "--all-namespaces", "--all", "--output", "json", "--kube-context", ctx]);
        let out = common::run_with_timeout(&mut c, common::CMD_TIMEOUT);
        common::assert_success(&out, &format!("helm list in {ctx}"));
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        for r in list.as_array().into_iter().flatten() {
            let (name, ns) = (r["name"].as_str().unwrap_or(""), r["namespace"].as_str().unwrap_or(""));
            let mut c = tb.command("helm");
            c.args(["get", "values", name, "--namespace", ns, "--output", "json", "--kube-context", ctx]);
            let out = common::run_with_timeout(&mut c, common::CMD_TIMEOUT);
            let values: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            put(
                state,
                format!("helm/{ctx}/{ns}/{name}"),
                json!({"status": r["status"], "chart": r["chart"], "app_version": r["app_version"], "values": values}),
            );
        }
    }
}

/// The SPIRE server's registration entries (SPIFFE ID, parent, selectors), when it runs.
fn spire_state(tb: &Testbed, hub: &str, state: &mut State) -> bool {
    let pod = tb.kubectl_json(hub, &["-n", "spire", "get", "pods", "--field-selector=metadata.name=spire-server-0"]);
    if pod["items"].as_array().is_none_or(|a| a.is_empty()) {
        return false;
    }
    let out = tb.spire_server(hub, &["entry", "show", "-output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("entry show: {e}: {out}"));
    let id = |x: &Value| format!("spiffe://{}{}", x["trust_domain"].as_str().unwrap_or(""), x["path"].as_str().unwrap_or(""));
    for e in v["entries"].as_array().into_iter().flatten() {
        let mut selectors: Vec<String> = e["selectors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{}:{}", s["type"].as_str().unwrap_or(""), s["value"].as_str().unwrap_or("")))
            .collect();
        selectors.sort();
        put(state, format!("spire/entry/{}", id(&e["spiffe_id"])), json!({"parent": id(&e["parent_id"]), "selectors": selectors}));
    }
    true
}

/// Replaces every symbol's raw value in `s` where it stands alone (not inside a longer id,
/// name or address).
fn replace_symbols(s: &str, symbols: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (raw, sym) in symbols {
        if !out.contains(raw.as_str()) {
            continue;
        }
        let mut result = String::with_capacity(out.len());
        let mut last = 0;
        for (i, _) in out.match_indices(raw.as_str()) {
            if i < last {
                continue;
            }
            let mut back = out[..i].chars().rev();
            let (b1, b2) = (back.next(), back.next());
            let mut ahead = out[i + raw.len()..].chars();
            let (a1, a2) = (ahead.next(), ahead.next());
            // inside a longer id, name or address: a letter or digit beside it, or a dot
            // continuing a dotted number
            let stuck = |c: Option<char>, d: Option<char>| {
                c.is_some_and(|c| c.is_ascii_alphanumeric() || (c == '.' && d.is_some_and(|d| d.is_ascii_digit())))
            };
            result.push_str(&out[last..i]);
            result.push_str(if stuck(b1, b2) || stuck(a1, a2) { raw } else { sym });
            last = i + raw.len();
        }
        result.push_str(&out[last..]);
        out = result;
    }
    out
}

fn replace_value(v: &Value, symbols: &[(String, String)]) -> Value {
    match v {
        Value::String(s) => Value::String(replace_symbols(s, symbols)),
        Value::Array(a) => Value::Array(a.iter().map(|x| replace_value(x, symbols)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (replace_symbols(k, symbols), replace_value(x, symbols))).collect()),
        other => other.clone(),
    }
}

/// What legitimately differs between two runs that made the same thing is replaced by a
/// symbol naming where it comes from, so the comparison still sees whether it points at the
/// same thing:
/// - ids AWS (moto) generates — stack ids, the physical ids of stack resources (VPC, subnets,
///   route tables, security groups, Transit Gateway and its attachments, RAM share ARNs, Pod
///   Identity associations) — become `<stack.Logical>`: they are new with every creation and
///   appear in other stacks' parameters, shares' resources and the EC2 listings;
/// - pod IPs (the SPIRE server's address in the agents' values), ClusterIPs and load balancer
///   addresses (the callee's address in a caller's Envoy bootstrap) become `<pod-ip …>`,
///   `<cluster-ip …>`, `<lb …>`: the cluster allocates them anew;
/// - the hub's trust bundle becomes `<trust bundle>`: the server generates its keys, and each
///   spoke's copy must equal it;
/// - removed outright: uid, resourceVersion, creationTimestamp, generation, managedFields, the
///   Deployment revision annotation, every `status` but "ready" and the count of load balancer
///   addresses (history and timestamps, not state); Services' nodePorts (allocated);
///   Secrets' data (names and type only); Helm's per-revision Secrets collapse to one name and
///   release revisions are not compared (a rerun may upgrade to the same values); SPIRE entry
///   ids and timestamps; change set names (a timestamp), keeping each change set's status.
fn normalize(state: State, symbols: Symbols) -> State {
    let mut symbols = symbols.0;
    symbols.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    let mut out = State::new();
    for (k, v) in state {
        let base = k.split_once('#').map_or(k.as_str(), |(b, _)| b).to_string();
        let suffix = &k[base.len()..];
        out.insert(format!("{}{suffix}", replace_symbols(&base, &symbols)), replace_value(&v, &symbols));
    }
    out
}

async fn snapshot(tb: &Testbed, scope: &Scope) -> Snapshot {
    let t0 = Instant::now();
    let mut state = State::new();
    let mut versions = BTreeMap::new();
    let mut symbols = Symbols::default();
    aws_state(tb, &mut state, &mut symbols).await;
    kube_state(tb, &common::WALKTHROUGH, "shared", &mut state, &mut versions, &mut symbols);
    helm_state(tb, &common::WALKTHROUGH, &mut state);
    let spire = spire_state(tb, "shared", &mut state);
    assert!(!scope.spire || spire, "the SPIRE server pod spire-server-0 is not there after a whole up");
    let state = normalize(state, symbols);
    eprintln!("  state read: {} objects in {:.1}s", state.len(), t0.elapsed().as_secs_f64());
    Snapshot { state, versions }
}

/// Duplicates of one thing: a second stack of a name, a second RAM share of one name for the
/// same principals, a second SPIRE entry of a SPIFFE ID, a second VPC of a CIDR … (keys with
/// `#`), a Helm release of one name in two namespaces of a cluster, a stack with an unexecuted
/// (AVAILABLE) change set or more than one.
fn duplicates(state: &State) -> Vec<String> {
    let mut out: Vec<String> = state.keys().filter(|k| k.contains('#')).map(|k| format!("duplicate: {k}")).collect();
    let mut releases: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for k in state.keys().filter(|k| k.starts_with("helm/")) {
        let parts: Vec<&str> = k.splitn(4, '/').collect();
        if let [_, ctx, ns, name] = parts[..] {
            releases.entry((ctx.to_string(), name.to_string())).or_default().push(ns.to_string());
        }
    }
    for ((ctx, name), nss) in releases.into_iter().filter(|(_, n)| n.len() > 1) {
        out.push(format!("Helm release {name} in {ctx} in several namespaces: {nss:?}"));
    }
    for (k, v) in state.iter().filter(|(k, _)| k.contains("/stack/")) {
        let sets: Vec<&str> = v["change_sets"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if sets.len() > 1 || sets.iter().any(|s| s.ends_with("AVAILABLE")) {
            out.push(format!("{k}: change sets {sets:?}"));
        }
    }
    out
}

/// Differences between two states, one line each.
fn state_diff(want: &State, got: &State) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("missing: {k} = {}", short(v))),
            Some(g) if g != v => out.push(format!("differs: {k}\n    clean: {}\n    now:   {}", short(v), short(g))),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            out.push(format!("extra: {k} = {}", short(v)));
        }
    }
    out
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 600 {
        format!("{}…", &s[..s.char_indices().nth(600).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

/// What is left of ours after `down`: in moto (every account: stacks in any status but
/// DELETE_COMPLETE, VPCs, Transit Gateways, EKS clusters, active shares, roles) and in the
/// clusters (meshctl's namespaces, objects labelled meshctl's or Helm's, volumes, the access
/// roles' aws-auth mappings, Helm releases).
async fn leftovers(tb: &Testbed) -> Vec<String> {
    let mut left = common::aws_leftovers(tb).await;
    for ctx in common::WALKTHROUGH {
        left.extend(common::cluster_leftovers(tb, ctx, &NAMESPACES));
        let auth = tb.kubectl_json(ctx, &["-n", "kube-system", "get", "configmaps", "--field-selector=metadata.name=aws-auth"]);
        for cm in auth["items"].as_array().into_iter().flatten() {
            let roles = cm["data"]["mapRoles"].as_str().unwrap_or("");
            if roles.contains("-access-role") {
                left.push(format!("{ctx}: aws-auth maps an access role: {roles}"));
            }
        }
        let mut c = tb.command("helm");
        c.args(["list", "--all-namespaces", "--all", "--short", "--kube-context", ctx]);
        let out = common::run_with_timeout(&mut c, common::CMD_TIMEOUT);
        for r in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
            left.push(format!("{ctx}: Helm release {r}"));
        }
    }
    left
}

// ============================================================================ the test

async fn kill_anywhere(scope: Scope) {
    let _turn = BED.lock().await;
    let t0 = Instant::now();
    let tb = testbed();
    let up: Vec<&str> = scope.up.clone();
    let mut problems: Vec<String> = Vec::new();
    eprintln!("== kill anywhere, {}: clean start", scope.name);
    meshctl_ok(&["down"], scope.timeout);
    let left = leftovers(&tb).await;
    assert!(left.is_empty(), "the clean start left: {left:#?}");

    // ---- 1. the reference: a clean up, its state as data, its events; then down
    let clean_up = meshctl_ok(&up, scope.timeout);
    let clean = snapshot(&tb, &scope).await;
    let dups = duplicates(&clean.state);
    assert!(dups.is_empty(), "the clean run made duplicates: {dups:#?}");
    let clean_down = meshctl_ok(&["down"], scope.timeout);
    let left = leftovers(&tb).await;
    assert!(left.is_empty(), "the clean down left: {left:#?}");
    let clean_secs = t0.elapsed().as_secs_f64();

    // ---- 2. up, killed at every planned point in turn, each rerun resuming
    let up_points = plan_points(&clean_up.events, scope.max_up_points);
    let up_chain = chain(&format!("up ({})", scope.name), &up, up_points, scope.timeout);
    eprint!("{}", up_chain.report());
    let last = up_chain.last.as_ref().expect("the chain ends with a run");
    if !last.ok() {
        problems.push(format!("the up that was not killed did not finish:\n{}", last.text()));
    }
    let converged = snapshot(&tb, &scope).await;
    let diff = state_diff(&clean.state, &converged.state);
    if !diff.is_empty() {
        problems.push(format!("after the killed ups, the state differs from the clean run's:\n  {}", diff.join("\n  ")));
    }
    let dups = duplicates(&converged.state);
    if !dups.is_empty() {
        problems.push(format!("after the killed ups: {}", dups.join("\n  ")));
    }

    // ---- 3. a third up changes nothing
    let third = meshctl(&up, scope.timeout, |_| false);
    if !third.ok() {
        problems.push(format!("the third up failed:\n{}", third.text()));
    }
    let changed = third.changed();
    if !changed.is_empty() {
        problems.push(format!("the third up changed: {changed:?}"));
    }
    let after = snapshot(&tb, &scope).await;
    let diff = state_diff(&converged.state, &after.state);
    if !diff.is_empty() {
        problems.push(format!("the third up changed the state:\n  {}", diff.join("\n  ")));
    }
    if after.versions != converged.versions {
        let moved: Vec<String> = after
            .versions
            .iter()
            .filter(|(k, v)| converged.versions.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: {:?} -> {v}", converged.versions.get(k)))
            .chain(converged.versions.keys().filter(|k| !after.versions.contains_key(*k)).map(|k| format!("{k}: gone")))
            .collect();
        problems.push(format!("the third up wrote in the clusters (resourceVersions): {moved:#?}"));
    }

    // ---- 4. down, killed at its planned points, then a down to the end: nothing left
    let down_points = plan_points(&clean_down.events, scope.max_down_points);
    let down_chain = chain("down", &["down"], down_points, scope.timeout);
    eprint!("{}", down_chain.report());
    let last = down_chain.last.as_ref().expect("the chain ends with a run");
    if !last.ok() {
        problems.push(format!("the down that was not killed did not finish:\n{}", last.text()));
    }
    let left = leftovers(&tb).await;
    if !left.is_empty() {
        problems.push(format!("left after the killed downs: {left:#?}"));
    }

    // ---- 5. an up killed just before a change set is executed, then down: nothing left
    let review_point = clean_up.events.iter().filter_map(event_key).find(|k| k.contains(" progress CREATE_IN_PROGRESS"));
    if let Some(point) = review_point {
        eprintln!("== up killed at {point}, then down");
        let run = meshctl(&up, scope.timeout, |e| event_key(e).as_deref() == Some(point.as_str()));
        if !run.killed {
            problems.push(format!("the up meant to be killed at {point} was not:\n{}", run.text()));
        }
        let down = meshctl(&["down"], scope.timeout, |_| false);
        if !down.ok() {
            problems.push(format!("down after an up killed at {point} failed:\n{}", down.text()));
        }
        let left = leftovers(&tb).await;
        if !left.is_empty() {
            problems.push(format!("left by down after an up killed at {point}: {left:#?}"));
        }
    }

    // ---- the figures, then the verdict
    let (tried, passed) = (up_chain.tried(), up_chain.passed());
    let (down_tried, down_passed) = (down_chain.tried(), down_chain.passed());
    eprintln!("== kill anywhere, {}", scope.name);
    eprintln!("kill points tried: {}, passed: {}", tried + down_tried, passed + down_passed);
    eprintln!(
        "  up: planned {}, tried {tried}, passed {passed}, skipped {} ({} runs); down: planned {}, tried {down_tried}, passed {down_passed}, skipped {} ({} runs)",
        up_chain.points.len(),
        up_chain.points.len() - tried,
        up_chain.runs,
        down_chain.points.len(),
        down_chain.points.len() - down_tried,
        down_chain.runs
    );
    eprintln!(
        "wall time: {:.0}s (clean up + state + down {clean_secs:.0}s, up chain {:.0}s, down chain {:.0}s)",
        t0.elapsed().as_secs_f64(),
        up_chain.elapsed.as_secs_f64(),
        down_chain.elapsed.as_secs_f64()
    );
    if tried < 20 {
        problems.push(format!("only {tried} up kill points could be tried (want ≥ 20)"));
    }
    if down_tried < 5 {
        problems.push(format!("only {down_tried} down kill points could be tried (want ≥ 5)"));
    }
    for c in [&up_chain, &down_chain] {
        for (p, f) in c.points.iter().zip(&c.fates) {
            if let Fate::Killed { rerun: Some(Err(e)), .. } = f {
                problems.push(format!("{}: the rerun after the kill at {} failed: {e}", c.what, p.key));
            }
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n\n"));
}

#[test]
fn event_keys_hide_what_changes_between_runs() {
    let e = json!({"step": "stacks/frontend", "state": "progress", "message": "creating change set meshctl-1796074393 (CREATE)"});
    assert_eq!(event_key(&e).unwrap(), "stacks/frontend progress creating change set * (CREATE)");
    let e = json!({"step": "ram/backend", "state": "done", "message": {"outcome": "up-to-date"}});
    assert_eq!(event_key(&e).unwrap(), "ram/backend done up-to-date");
    assert_eq!(event_key(&json!({"step": "x/y", "state": "failed", "message": "boom"})), None);
}

#[test]
fn symbols_replace_whole_ids_and_addresses_only() {
    let symbols = vec![("10.0.1.5".to_string(), "<pod-ip a>".to_string()), ("vpc-0a1b2c3d4e".to_string(), "<s.Vpc>".to_string())];
    assert_eq!(replace_symbols("server 10.0.1.5:8081", &symbols), "server <pod-ip a>:8081");
    assert_eq!(replace_symbols("10.0.1.50 and 110.0.1.5", &symbols), "10.0.1.50 and 110.0.1.5");
    assert_eq!(replace_symbols("vpc-0a1b2c3d4e,vpc-0a1b2c3d4ef", &symbols), "<s.Vpc>,vpc-0a1b2c3d4ef");
    assert!(generated("subnet-88318318805621058") && generated("eks-cluster-backend-stack-ClusterRole-259MU6MRVNVS"));
    assert!(generated("eks-cluster-shared-services-stack-ClusterRole-OFCSJWODNCKX"));
    assert!(
        generated("vpc-0a1b2c3d4e5f60718")
            && generated("arn:aws:ram:us-east-2:111111111111:resource-share/6f1c2d3e-aaaa-bbbb-cccc-0123456789ab")
    );
    assert!(!generated("eks-cluster-frontend-node-role") && !generated("arn:aws:iam::111111111111:role/eks-cluster-frontend-access-role"));
}

#[test]
fn points_keep_the_first_of_every_phase_and_spread_the_rest() {
    let events: Vec<Value> =
        (0..50).map(|i| json!({"step": if i < 45 { format!("stacks/s{i}") } else { format!("ram/r{i}") }, "state": "started"})).collect();
    let p = plan_points(&events, 10);
    assert!(p.len() >= 10 && p.len() <= 12, "{p:?}");
    assert!(p.iter().any(|p| p.phase == "ram"), "{p:?}");
    assert_eq!(p[0].key, "stacks/s0 started");
}

// ============================================================================ helm killed midway

/// helm killed in the middle of an install, an upgrade and an uninstall (as a SIGKILLed meshctl
/// takes its helm with it) leaves the release `pending-install`, `pending-upgrade`,
/// `uninstalling`, on which helm itself refuses to go on. meshctl's upgrade recovers from each
/// (uninstall; rollback to the last deployed revision; uninstall finished) and ends `deployed`
/// with the wanted values; its uninstall finishes an interrupted one. Real helm, cluster
/// `frontend` of the test bed, a namespace of its own.
#[tokio::test]
async fn helm_releases_left_pending_by_a_killed_helm_are_recovered() {
    // Its release would count as left over to the other tests' "nothing of ours" checks.
    let _turn = BED.lock().await;
    let tb = testbed();
    let dir = common::temp_dir("kill-helm");
    let chart = dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: interrupted\nversion: 0.1.0\n").unwrap();
    // The Deployment never becomes available with an impossible nodeSelector: `helm --wait`
    // then stays in its operation until killed.
    std::fs::write(
        chart.join("templates/objects.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  v: {{ .Values.v | quote }}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: {{ .Release.Name }}}\n  \
         template:\n    metadata:\n      labels: {app: {{ .Release.Name }}}\n    spec:\n      nodeSelector: {{ toJson .Values.sel }}\n      \
         containers: [{name: pause, image: registry.k8s.io/pause:3.10}]\n",
    )
    .unwrap();
    let chart = chart.to_string_lossy().into_owned();
    let ns = common::unique_name("kill-helm");
    let (ctx, rel) = ("frontend", "interrupted");
    let helm = meshctl::helm::Helm::new(&tb.kubeconfig, ctx).with_binary(tb.bin("helm"));
    let hang = dir.path().join("hang.json");
    std::fs::write(&hang, meshctl::helm::owned(&json!({"v": "hang", "sel": {"meshctl.test/never": "x"}})).to_string()).unwrap();
    let hang = hang.to_string_lossy().into_owned();
    let status = || async { helm.status(rel, &ns).await.unwrap().map(|i| i.status) };
    // Starts helm with `args`, waits until the release is in `pending`, kills it.
    let killed_in = |args: Vec<&'static str>, pending: &'static str| {
        let (helm, ns, chart, hang) = (helm.clone(), ns.clone(), chart.clone(), hang.clone());
        let mut c = tb.command("helm");
        let args: Vec<String> = args
            .into_iter()
            .map(|a| match a {
                "CHART" => chart.clone(),
                "HANG" => hang.clone(),
                a => a.to_string(),
            })
            .collect();
        c.args(&args)
            .args(["--kube-context", ctx, "--namespace", &ns, "--wait", "--timeout", "600s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while helm.status(rel, &ns).await.unwrap().map(|i| i.status).as_deref() != Some(pending) {
                assert!(Instant::now() < deadline, "the release never reached {pending}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
    };
    let wanted = |v: &str| json!({"v": v, "sel": {}});
    let deployed_with = |v: &'static str| {
        let helm = helm.clone();
        let ns = ns.clone();
        async move {
            let info = helm.status(rel, &ns).await.unwrap().expect("installed");
            assert_eq!((info.status.as_str(), meshctl::helm::drift(&info, &json!({"v": v, "sel": {}}))), ("deployed", None), "{info:?}");
            info
        }
    };

    // 1. an install killed: pending-install → uninstalled, installed again
    killed_in(vec!["install", rel, "CHART", "--create-namespace", "--values", "HANG"], "pending-install").await;
    assert_eq!(status().await.as_deref(), Some("pending-install"));
    helm.upgrade_install(rel, &ns, &chart, None, None, &wanted("one"), None, false).await.expect("upgrade over pending-install");
    deployed_with("one").await;

    // 2. an upgrade killed: pending-upgrade → rolled back to the deployed revision, upgraded
    killed_in(vec!["upgrade", rel, "CHART", "--values", "HANG"], "pending-upgrade").await;
    assert_eq!(status().await.as_deref(), Some("pending-upgrade"));
    helm.upgrade_install(rel, &ns, &chart, None, None, &wanted("two"), None, false).await.expect("upgrade over pending-upgrade");
    let info = deployed_with("two").await;
    let mut c = tb.command("helm");
    c.args(["history", rel, "--kube-context", ctx, "--namespace", &ns, "--output", "json"]);
    let history: Value = serde_json::from_slice(&common::run_with_timeout(&mut c, common::CMD_TIMEOUT).stdout).unwrap();
    let descriptions: Vec<&str> = history.as_array().unwrap().iter().filter_map(|r| r["description"].as_str()).collect();
    assert!(
        descriptions.iter().any(|d| d.starts_with("Rollback to")),
        "rolled back before the upgrade: {descriptions:?} (revision {})",
        info.revision
    );

    // 3. an uninstall killed (a finalizer holds the ConfigMap): uninstalling → meshctl's
    //    uninstall finishes it; and over another one, an upgrade installs afresh
    let hold = |on: bool| {
        let patch = if on { r#"{"metadata":{"finalizers":["meshctl.test/hold"]}}"# } else { r#"{"metadata":{"finalizers":null}}"# };
        tb.kubectl(ctx, &["-n", &ns, "patch", "configmap", &format!("{rel}-cm"), "--type=merge", "-p", patch]);
    };
    hold(true);
    killed_in(vec!["uninstall", rel], "uninstalling").await;
    hold(false);
    helm.upgrade_install(rel, &ns, &chart, None, None, &wanted("three"), None, false).await.expect("upgrade over uninstalling");
    deployed_with("three").await;
    hold(true);
    killed_in(vec!["uninstall", rel], "uninstalling").await;
    hold(false);
    helm.uninstall(rel, &ns, false).await.expect("uninstall over uninstalling");
    assert_eq!(helm.status(rel, &ns).await.unwrap(), None);
    tb.delete_namespace(ctx, &ns);
}

/// States a `down` leaves when killed between two writes of one step (the chain meets them
/// only when the kill falls between the two): the spoke kubeconfig ConfigMaps deleted but not
/// yet the hub's spire namespace; a spoke's aws-auth mapping removed but not yet the
/// least-privilege ClusterRole and binding; the app's objects and inventory deleted but not
/// yet its namespace; a spoke's bundle copy deleted but not yet its spire namespace. The next
/// `down` finishes each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downs_killed_between_two_writes_of_a_step_are_finished() {
    let _turn = BED.lock().await;
    let tb = testbed();
    let timeout = Duration::from_secs(600);
    meshctl_ok(&["down"], timeout);
    meshctl_ok(&["up", "--only", "stacks", "--only", "ram", "--only", "kubeconfig", "--only", "aws-auth"], timeout);
    for cm in ["front-kubeconfig", "back-kubeconfig"] {
        tb.kubectl("shared", &["-n", "spire", "delete", "configmap", cm]);
    }
    let auth = tb.kubectl_json("frontend", &["-n", "kube-system", "get", "configmap", "aws-auth"]);
    let roles: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(auth["data"]["mapRoles"].as_str().unwrap()).unwrap();
    let kept: Vec<&serde_yaml_ng::Value> =
        roles.iter().filter(|r| !r["rolearn"].as_str().unwrap_or("").ends_with("-access-role")).collect();
    assert_eq!(kept.len() + 1, roles.len(), "meshctl mapped the access role: {roles:?}");
    let patch = json!({"data": {"mapRoles": serde_yaml_ng::to_string(&kept).unwrap()}}).to_string();
    tb.kubectl("frontend", &["-n", "kube-system", "patch", "configmap", "aws-auth", "--type=merge", "-p", &patch]);
    for ctx in ["frontend", "backend"] {
        for ns in NAMESPACES {
            // as meshctl creates them (KubeClient::ensure_namespace), their objects gone
            let manifest = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"app.kubernetes.io/managed-by": "meshctl"}}});
            tb.apply(ctx, &manifest.to_string());
        }
    }
    meshctl_ok(&["down"], timeout);
    let left = leftovers(&tb).await;
    assert!(left.is_empty(), "left: {left:#?}");
}
