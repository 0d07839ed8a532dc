//! `meshctl verify`: turns the walkthrough's manual `curl localhost:9901/...` looks into a
//! verdict. For every meshed workload it reads the Envoy admin interface and checks
//!
//! 1. `sds` — the SDS cluster toward the SPIRE agent socket is connected and healthy;
//! 2. `identity` — `/certs` holds the workload's SVID and the trust-domain CA, valid;
//! 3. `peers` — the TLS contexts accept exactly the allowed SPIFFE IDs;
//! 4. `handshakes` — `ssl.handshake` counters (rising after `--traffic`);
//! 5. `tls-failures` — `ssl.connection_error` / `ssl.fail_verify_*` counters,
//!
//! plus `admin` (the admin interface answers). Every check runs and is reported even after
//! another failed; only checks whose input could not be read are skipped, with the reason.
//!
//! Layout: `envoy` parses admin output (pure), `checks` judges one workload (pure), `report`
//! renders text / JSON lines / JUnit, `transport` reaches the admin interface, and `run` here
//! does the I/O: read every workload concurrently (each under `--timeout`), send traffic, read
//! `/stats` again, judge.

pub mod checks;
pub mod envoy;
pub mod report;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

pub use checks::Snapshot;
pub use report::{CheckId, CheckResult, CheckStatus, Report, ReportSummary};
pub use transport::{AdminTransport, HttpAdmin, HttpTarget, PortForwardAdmin};

/// A workload and how to reach its Envoy admin interface.
pub type AdminTarget = (Proxy, Box<dyn AdminTransport>);

/// Flags of `meshctl verify`.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// NAME=URL: reach a workload's Envoy admin directly (repeatable)
    #[arg(long = "admin", value_name = "NAME=URL")]
    pub admin: Vec<String>,
    /// send traffic through the mesh first and require handshake counters to rise
    #[arg(long)]
    pub traffic: bool,
    /// NAME=URL to request for traffic (repeatable); e.g. frontend=http://127.0.0.1:10000/
    #[arg(long = "traffic-url", value_name = "NAME=URL")]
    pub traffic_url: Vec<String>,
    /// requests sent to each --traffic-url (each on a new connection)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub requests: u32,
    /// write a JUnit XML report to FILE
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// time allowed per workload (and per traffic request), e.g. 30s, 2m, 500ms
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

impl Default for VerifyArgs {
    /// The same values as the flags' defaults.
    fn default() -> Self {
        VerifyArgs { admin: Vec::new(), traffic: false, traffic_url: Vec::new(), requests: 3, junit: None, timeout: "30s".into() }
    }
}

/// One meshed workload to verify (built from the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proxy {
    /// e.g. `yelb-ui`
    pub name: String,
    /// account/cluster role name, e.g. `frontend` (for grouping)
    pub cluster: String,
    /// `yelb`
    pub namespace: String,
    /// `app=yelb-ui`
    pub pod_selector: String,
    /// 9901
    pub admin_port: u16,
    /// `spiffe://am-multi-account-mesh/frontend`
    pub spiffe_id: String,
    /// `am-multi-account-mesh`
    pub trust_domain: String,
    /// `/run/spire/sockets/agent.sock`
    pub sds_socket: String,
    /// SPIFFE IDs its TLS listener must accept (exactly).
    pub allowed_callers: Vec<String>,
    /// Egress TLS clusters.
    pub backends: Vec<Backend>,
}

/// A backend a workload calls over mTLS. Its egress cluster is found by what it does (the
/// cluster the egress listener on its port routes to, or the TLS cluster that accepts its
/// SPIFFE ID), never by a naming pattern.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backend {
    /// The backend's workload name (`yelb-appserver`), for messages.
    pub name: String,
    pub spiffe_id: String,
    pub port: u16,
}

/// What a failed check suggests to fix, in the words of the provider that configured the
/// Envoy (meshctl's own bootstrap, App Mesh virtual nodes, ...). The defaults speak of Envoy
/// configuration in general.
pub trait Hints: Send + Sync {
    /// No cluster reaches the SPIRE agent socket.
    fn sds_not_configured(&self, workload: &str, socket: &str) -> String {
        format!("the Envoy of {workload} is not set up to fetch its secrets from the SPIRE agent at {socket}: it needs an SDS cluster on that socket")
    }
    /// No SVID for the workload's SPIFFE ID.
    fn svid_missing(&self, workload: &str, spiffe_id: &str) -> String {
        format!(
            "no SPIRE registration entry matches {workload} or the agent has not issued it: check `spire-server entry show -spiffeID {spiffe_id}` \
             in the spire-server pod against the pod's namespace, service account, labels and container name"
        )
    }
    /// The inbound listener accepts the wrong SPIFFE IDs.
    fn listener_sans(&self, workload: &str) -> String {
        format!("fix the SAN matchers of {workload}'s inbound TLS listener")
    }
    /// The workload has callers but no listener terminates TLS.
    fn no_tls_listener(&self, workload: &str) -> String {
        format!("{workload} has callers but no listener with a DownstreamTlsContext")
    }
    /// No egress cluster for a backend.
    fn egress_missing(&self, workload: &str, backend: &str) -> String {
        format!("{workload}'s Envoy has no TLS cluster for backend {backend}")
    }
    /// The egress cluster to a backend does not originate TLS.
    fn egress_plaintext(&self, workload: &str, backend: &str) -> String {
        format!("traffic from {workload} to {backend} leaves in plain text: its cluster needs an UpstreamTlsContext")
    }
    /// The egress cluster accepts the wrong SPIFFE IDs.
    fn egress_sans(&self, workload: &str, backend: &str) -> String {
        format!("fix the SAN matchers of {workload}'s TLS cluster to {backend}")
    }
    /// A caller sent no certificate.
    fn no_client_cert(&self) -> String {
        "the caller does not originate mTLS: its egress cluster must present its SVID".into()
    }
}

/// The default hints, for Envoys meshctl did not configure.
pub struct GenericHints;

impl Hints for GenericHints {}

/// Errors of `meshctl verify` that stop it from producing a report. Check failures are not
/// errors: they are in the [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A flag value could not be understood (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The admin interface could not be reached or answered with an error status.
    #[error("Envoy admin {target}: {message}")]
    Admin { target: String, message: String },
    /// An admin response could not be parsed.
    #[error("cannot parse {what}: {message}")]
    Parse { what: String, message: String },
    /// The Kubernetes API failed while locating or port-forwarding to the pod.
    #[error("{0}")]
    Kube(String),
    /// The JUnit report could not be written.
    #[error("writing {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Parses `30s`, `2m`, `1h`, `500ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, VerifyError> {
    let t = s.trim();
    let bad = || VerifyError::Usage(format!("invalid duration {s:?}: expected e.g. 30s, 2m, 500ms"));
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "m" | "min" | "mins" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Splits `NAME=URL`.
pub fn parse_name_url(flag: &str, spec: &str) -> Result<(String, String), VerifyError> {
    match spec.split_once('=') {
        Some((n, u)) if !n.is_empty() && !u.is_empty() => Ok((n.to_string(), u.to_string())),
        _ => Err(VerifyError::Usage(format!("--{flag} {spec:?}: expected NAME=URL, e.g. frontend=http://127.0.0.1:19000"))),
    }
}

/// Builds the (workload, transport) pairs for `--admin NAME=URL`: NAME is a workload name, and
/// only the named workloads are returned, in flag order. An unknown or repeated NAME is a usage
/// error listing the allowed names.
pub fn admin_transports(specs: &[String], workloads: &[Proxy]) -> Result<Vec<AdminTarget>, VerifyError> {
    let mut out: Vec<AdminTarget> = Vec::new();
    for spec in specs {
        let (name, url) = parse_name_url("admin", spec)?;
        let Some(w) = workloads.iter().find(|w| w.name == name) else {
            let known: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
            return Err(VerifyError::Usage(format!(
                "--admin {spec}: unknown workload {name:?}; known workloads: {}",
                if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
            )));
        };
        if out.iter().any(|(o, _)| o.name == name) {
            return Err(VerifyError::Usage(format!("--admin {name}=… given twice")));
        }
        out.push((w.clone(), Box::new(HttpAdmin::new(url.as_str())?)));
    }
    Ok(out)
}

/// Admin paths read for each workload.
pub const CLUSTERS_PATH: &str = "/clusters?format=json";
pub const CERTS_PATH: &str = "/certs";
pub const CONFIG_DUMP_PATH: &str = "/config_dump";
pub const STATS_PATH: &str = "/stats";

async fn read_parsed<T>(t: &dyn AdminTransport, path: &str, parse: impl FnOnce(&str) -> Result<T, VerifyError>) -> Result<T, String> {
    let body = t.get(path).await.map_err(|e| e.to_string())?;
    parse(&body).map_err(|e| e.to_string())
}

async fn read_snapshot(t: &dyn AdminTransport) -> Snapshot {
    let (clusters, certs, tls, stats) = futures::join!(
        read_parsed(t, CLUSTERS_PATH, envoy::parse_clusters),
        read_parsed(t, CERTS_PATH, envoy::parse_certs),
        read_parsed(t, CONFIG_DUMP_PATH, envoy::parse_config_dump),
        read_parsed(t, STATS_PATH, envoy::parse_stats),
    );
    Snapshot { clusters, certs, tls, stats_before: stats, stats_after: None }
}

fn timed_out(d: Duration) -> String {
    format!("no answer within the --timeout of {}", humanize(d))
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Sends the `--traffic-url` requests: `requests` GETs to each URL, each on a new connection,
/// URLs concurrently. Returns one line per request; failures are reported, not fatal (a broken
/// mesh is what verify is for).
pub async fn send_traffic(targets: &[(String, HttpTarget)], requests: u32, timeout: Duration) -> Vec<String> {
    let per_target = targets.iter().map(|(name, t)| async move {
        let mut lines = Vec::new();
        for _ in 0..requests.max(1) {
            let res = tokio::time::timeout(timeout, t.get(&t.path_and_query)).await;
            let what = match res {
                Ok(Ok((status, _))) => status.to_string(),
                Ok(Err(e)) => format!("error: {e}"),
                Err(_) => format!("error: {}", timed_out(timeout)),
            };
            lines.push(format!("{name}: GET http://{}:{}{} → {what}", t.host, t.port, t.path_and_query));
        }
        lines
    });
    futures::future::join_all(per_target).await.into_iter().flatten().collect()
}

/// Runs every check on every workload and returns the report (and writes `--junit` when
/// given). Workloads are read concurrently, each within `--timeout`. With `--traffic`, the
/// `--traffic-url` requests are sent after all workloads were read once, then `/stats` is read
/// again. Only bad flags and an unwritable JUnit file are errors; everything the mesh does
/// wrong is in the report.
pub async fn run(args: &VerifyArgs, workloads: Vec<AdminTarget>, hints: &dyn Hints) -> Result<Report, VerifyError> {
    let timeout = parse_duration(&args.timeout)?;
    let mut traffic_targets = Vec::new();
    for spec in &args.traffic_url {
        let (name, url) = match spec.split_once('=') {
            Some((n, u)) if !n.contains("://") => (n.to_string(), u.to_string()),
            _ => (spec.clone(), spec.clone()),
        };
        let t = HttpTarget::parse(&url).map_err(|e| VerifyError::Usage(format!("--traffic-url {spec}: {e}")))?;
        traffic_targets.push((name, t));
    }
    if args.traffic && traffic_targets.is_empty() {
        return Err(VerifyError::Usage("--traffic needs at least one --traffic-url NAME=URL to send requests to".into()));
    }
    if workloads.is_empty() {
        return Err(VerifyError::Usage("no workloads to verify".into()));
    }

    let mut snaps: Vec<Option<Snapshot>> = futures::future::join_all(
        workloads.iter().map(|(_, t)| async move { tokio::time::timeout(timeout, read_snapshot(t.as_ref())).await.ok() }),
    )
    .await;

    let mut report = Report::default();
    if args.traffic {
        report.traffic = send_traffic(&traffic_targets, args.requests, timeout).await;
        let afters = futures::future::join_all(workloads.iter().zip(snaps.iter()).map(|((_, t), s)| async move {
            if s.is_none() {
                return None;
            }
            Some(match tokio::time::timeout(timeout, read_parsed(t.as_ref(), STATS_PATH, envoy::parse_stats)).await {
                Ok(r) => r,
                Err(_) => Err(timed_out(timeout)),
            })
        }))
        .await;
        for (s, a) in snaps.iter_mut().zip(afters) {
            if let (Some(s), Some(a)) = (s.as_mut(), a) {
                s.stats_after = Some(a);
            }
        }
    }

    let now = OffsetDateTime::now_utc();
    for ((w, t), snap) in workloads.iter().zip(snaps) {
        report.targets.insert(w.name.clone(), t.describe());
        let show = |p: &str| t.show_command(p);
        let snap = snap.unwrap_or_else(|| {
            let e = timed_out(timeout);
            Snapshot { clusters: Err(e.clone()), certs: Err(e.clone()), tls: Err(e.clone()), stats_before: Err(e), stats_after: None }
        });
        report.results.extend(checks::evaluate(w, &snap, now, &show, hints));
    }

    if let Some(path) = &args.junit {
        std::fs::write(path, report.to_junit()).map_err(|source| VerifyError::Io { path: path.clone(), source })?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
