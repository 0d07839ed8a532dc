//! The verify checks as pure functions from what one workload's Envoy admin interface showed
//! (a [`Snapshot`]) to one [`CheckResult`] per check. No I/O here: `run` in `mod.rs` fills the
//! snapshot, these functions judge it, so every pass / warn / fail / skip path is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use super::envoy::{CertContext, CertInfo, ClusterStatus, SanMatcher, Stats, TlsConfig, TlsEndpoint, TlsSide};
use super::report::{CheckId, CheckResult, CheckStatus};
use super::{Hints, Proxy};

/// What was read from one workload's admin interface. Each endpoint is read independently;
/// an `Err` holds why it could not be read, and only the checks that need it are skipped.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub clusters: Result<Vec<ClusterStatus>, String>,
    pub certs: Result<Vec<CertContext>, String>,
    pub tls: Result<TlsConfig, String>,
    pub stats_before: Result<Stats, String>,
    /// `Some` when traffic was sent between the two `/stats` reads.
    pub stats_after: Option<Result<Stats, String>>,
}

/// Builds the command a hint shows for an admin path (`curl …` or `kubectl exec … curl …`).
pub type ShowCommand<'a> = &'a dyn Fn(&str) -> String;

/// Counters whose rise means a TLS failure.
pub const FAILURE_COUNTERS: [&str; 4] = ["ssl.connection_error", "ssl.fail_verify_san", "ssl.fail_verify_error", "ssl.fail_verify_no_cert"];

/// Runs every check on one workload's snapshot. The result has one entry per [`CheckId`].
pub fn evaluate(w: &Proxy, snap: &Snapshot, now: OffsetDateTime, show: ShowCommand<'_>, provider: &dyn Hints) -> Vec<CheckResult> {
    let errors: Vec<&String> =
        [snap.clusters.as_ref().err(), snap.certs.as_ref().err(), snap.tls.as_ref().err(), snap.stats_before.as_ref().err()]
            .into_iter()
            .flatten()
            .collect();
    let mut admin = CheckResult::new(w, CheckId::Admin, "Envoy admin interface answers");
    admin.expected = "/clusters, /certs, /config_dump and /stats answer".into();
    if errors.len() == 4 {
        admin.status = CheckStatus::Fail;
        admin.observed = errors[0].clone();
        admin.hint = Some(format!(
            "the Envoy admin interface of {} is not reachable: is the pod running with its envoy \
             sidecar, and is the admin port {} right? try `{}`",
            w.name,
            w.admin_port,
            show("/ready")
        ));
        let mut out = vec![admin];
        for id in &CheckId::ALL[1..] {
            out.push(skip(w, *id, "Envoy admin interface unreachable"));
        }
        return out;
    }
    if errors.is_empty() {
        admin.observed = "all endpoints answered".into();
    } else {
        admin.status = CheckStatus::Warn;
        admin.observed = errors.iter().map(|e| e.as_str()).collect::<Vec<_>>().join("; ");
        admin.hint = Some(format!("some admin endpoints failed; try `{}`", show("/help")));
    }
    let mut out = vec![admin];
    out.push(match &snap.clusters {
        Ok(c) => check_sds(w, c, show, provider),
        Err(e) => skip(w, CheckId::Sds, &format!("/clusters unreadable: {e}")),
    });
    out.push(match &snap.certs {
        Ok(c) => check_identity(w, c, now, show, provider),
        Err(e) => skip(w, CheckId::Identity, &format!("/certs unreadable: {e}")),
    });
    match &snap.tls {
        Ok(tls) => {
            out.push(check_peers(w, tls, show, provider));
            let subjects = subjects(w, tls);
            out.push(match &snap.stats_before {
                Ok(before) => check_handshakes(w, &subjects, before, stats_after(snap), show),
                Err(e) => skip(w, CheckId::Handshakes, &format!("/stats unreadable: {e}")),
            });
            out.push(match &snap.stats_before {
                Ok(before) => check_tls_failures(w, &subjects, before, stats_after(snap), show, provider),
                Err(e) => skip(w, CheckId::TlsFailures, &format!("/stats unreadable: {e}")),
            });
        }
        Err(e) => {
            let why = format!("/config_dump unreadable: {e}");
            out.push(skip(w, CheckId::Peers, &why));
            out.push(skip(w, CheckId::Handshakes, &why));
            out.push(skip(w, CheckId::TlsFailures, &why));
        }
    }
    // A failed `/stats` read after traffic leaves the counters of before.
    if let Some(Err(e)) = &snap.stats_after {
        for r in out.iter_mut() {
            if matches!(r.check, CheckId::Handshakes | CheckId::TlsFailures) && r.status != CheckStatus::Skip {
                *r = skip(w, r.check, &format!("/stats unreadable after traffic: {e}"));
            }
        }
    }
    out
}

fn stats_after(snap: &Snapshot) -> Option<&Stats> {
    match &snap.stats_after {
        Some(Ok(s)) => Some(s),
        _ => None,
    }
}

fn skip(w: &Proxy, id: CheckId, why: &str) -> CheckResult {
    let mut r = CheckResult::new(w, id, description(w, id));
    r.status = CheckStatus::Skip;
    r.observed = why.to_string();
    r
}

/// The positive description of a check, as it reads after ✔.
pub fn description(w: &Proxy, id: CheckId) -> String {
    match id {
        CheckId::Admin => "Envoy admin interface answers".into(),
        CheckId::Sds => format!("SDS cluster to the SPIRE agent socket {} is connected and healthy", w.sds_socket),
        CheckId::Identity => format!("Envoy holds the SVID {} and the {} CA, both valid", w.spiffe_id, w.trust_domain),
        CheckId::Peers => "mTLS contexts accept exactly the allowed SPIFFE IDs".into(),
        CheckId::Handshakes => "mTLS handshakes are counted on the TLS listener and egress clusters".into(),
        CheckId::TlsFailures => "no TLS handshake or peer-verification failures".into(),
    }
}

fn normalize_socket(s: &str) -> &str {
    s.strip_prefix("unix://").unwrap_or(s)
}

/// Check 1: a cluster with a host at the agent socket, `cx_active ≥ 1`, healthy.
pub fn check_sds(w: &Proxy, clusters: &[ClusterStatus], show: ShowCommand<'_>, provider: &dyn Hints) -> CheckResult {
    let mut r = CheckResult::new(w, CheckId::Sds, description(w, CheckId::Sds));
    let sock = normalize_socket(&w.sds_socket);
    r.expected = format!("a cluster with host {sock}, cx_active ≥ 1, health_flags healthy");
    let hits: Vec<(&ClusterStatus, &super::envoy::HostStatus)> =
        clusters.iter().flat_map(|c| c.hosts.iter().map(move |h| (c, h))).filter(|(_, h)| normalize_socket(&h.address) == sock).collect();
    if hits.is_empty() {
        let pipes: Vec<String> = clusters
            .iter()
            .flat_map(|c| c.hosts.iter().map(move |h| (c, h)))
            .filter(|(_, h)| h.address.starts_with('/') || h.address.starts_with('@'))
            .map(|(c, h)| format!("{}::{}", c.name, h.address))
            .collect();
        r.status = CheckStatus::Fail;
        r.observed = if pipes.is_empty() {
            format!("no cluster has a host at {sock}, and none has a unix-socket host")
        } else {
            format!("no cluster has a host at {sock}; unix-socket hosts: {}", pipes.join(", "))
        };
        r.hint = Some(format!("{}. Look: `{}`", provider.sds_not_configured(&w.name, sock), show("/clusters")));
        return r;
    }
    let good = hits.iter().find(|(_, h)| h.cx_active >= 1 && h.healthy());
    let (c, h) = good.copied().unwrap_or(hits[0]);
    r.observed = format!(
        "{}::{} cx_active={} health_flags={}",
        c.name,
        h.address,
        h.cx_active,
        if h.health_flags.is_empty() { "?" } else { &h.health_flags }
    );
    r.counters.insert(format!("{}::{}::cx_active", c.name, h.address), h.cx_active);
    if good.is_none() {
        r.status = CheckStatus::Fail;
        r.hint = Some(format!(
            "the SPIRE agent socket {sock} is not reachable from Envoy: is the SPIRE agent running \
             on this node and mounting its socket into the pod? Check `kubectl --context {} -n spire \
             get daemonset spire-agent` and `kubectl --context {} -n spire logs daemonset/spire-agent`; \
             look: `{}`",
            w.cluster,
            w.cluster,
            show("/clusters")
        ));
    }
    r
}

fn fmt_time(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_else(|| "?".into())
}

fn fmt_dur(d: time::Duration) -> String {
    let s = d.whole_seconds();
    if s.abs() >= 86_400 {
        format!("{}d{}h", s / 86_400, (s % 86_400) / 3600)
    } else if s.abs() >= 3600 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else if s.abs() >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Validity of one certificate: Fail when expired or not yet valid, Warn when less than 10% of
/// its lifetime remains.
fn validity(c: &CertInfo, now: OffsetDateTime) -> (CheckStatus, String) {
    let (Some(from), Some(to)) = (c.valid_from, c.expiration_time) else {
        return match c.days_until_expiration {
            Some(d) if d < 0 => (CheckStatus::Fail, format!("expired {} days ago", -d)),
            _ => (CheckStatus::Pass, "validity period not shown".into()),
        };
    };
    if now >= to {
        return (CheckStatus::Fail, format!("expired at {}", fmt_time(Some(to))));
    }
    if now < from {
        return (CheckStatus::Fail, format!("not valid before {}", fmt_time(Some(from))));
    }
    let total = to - from;
    let left = to - now;
    let text = format!("expires {} ({} of {} left)", fmt_time(Some(to)), fmt_dur(left), fmt_dur(total));
    if left * 10 < total {
        (CheckStatus::Warn, text)
    } else {
        (CheckStatus::Pass, text)
    }
}

fn worst(a: CheckStatus, b: CheckStatus) -> CheckStatus {
    let rank = |s: CheckStatus| match s {
        CheckStatus::Pass => 0,
        CheckStatus::Skip => 1,
        CheckStatus::Warn => 2,
        CheckStatus::Fail => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// Check 2: `/certs` has a chain whose URI SAN is the workload's SPIFFE ID and a CA for the
/// trust domain, neither expired; warns under 10% remaining lifetime.
pub fn check_identity(w: &Proxy, certs: &[CertContext], now: OffsetDateTime, show: ShowCommand<'_>, provider: &dyn Hints) -> CheckResult {
    let mut r = CheckResult::new(w, CheckId::Identity, description(w, CheckId::Identity));
    let td_id = format!("spiffe://{}", w.trust_domain);
    r.expected = format!("cert_chain with URI SAN {}, ca_cert with URI SAN {td_id}, valid", w.spiffe_id);
    let chain_sans: BTreeSet<&str> =
        certs.iter().flat_map(|c| c.cert_chain.iter()).flat_map(|c| c.uris.iter().map(String::as_str)).collect();
    let ca_sans: BTreeSet<&str> = certs.iter().flat_map(|c| c.ca_cert.iter()).flat_map(|c| c.uris.iter().map(String::as_str)).collect();
    let svid = certs.iter().flat_map(|c| c.cert_chain.iter()).find(|c| c.uris.contains(&w.spiffe_id));
    let ca = certs.iter().flat_map(|c| c.ca_cert.iter()).find(|c| c.uris.contains(&td_id));
    let mut status = CheckStatus::Pass;
    let mut observed = Vec::new();
    let mut hints = Vec::new();
    match svid {
        Some(c) => {
            let (s, text) = validity(c, now);
            status = worst(status, s);
            observed.push(format!("cert_chain {} (serial {}) {text}", w.spiffe_id, c.serial_number));
            if s != CheckStatus::Pass {
                hints.push(format!(
                    "the SVID is not being rotated: the SPIRE agent renews it at half its lifetime; \
                     check the agent logs (`kubectl --context {} -n spire logs daemonset/spire-agent`)",
                    w.cluster
                ));
            }
        }
        None => {
            status = CheckStatus::Fail;
            observed.push(if chain_sans.is_empty() {
                "no certificate chain loaded".to_string()
            } else {
                format!("cert_chain URI SANs {:?}, none is {}", chain_sans.iter().collect::<Vec<_>>(), w.spiffe_id)
            });
            hints.push(format!("Envoy holds no SVID for {}: {}", w.spiffe_id, provider.svid_missing(&w.name, &w.spiffe_id)));
        }
    }
    match ca {
        Some(c) => {
            let (s, text) = validity(c, now);
            status = worst(status, s);
            observed.push(format!("ca_cert {td_id} {text}"));
            if s == CheckStatus::Fail {
                hints.push("the trust bundle holds an expired CA: check the SPIRE server CA (`spire-server bundle show`)".into());
            }
        }
        None => {
            status = CheckStatus::Fail;
            observed.push(if ca_sans.is_empty() {
                "no CA certificate loaded".to_string()
            } else {
                format!("ca_cert URI SANs {:?}, none is {td_id}", ca_sans.iter().collect::<Vec<_>>())
            });
            hints.push(format!(
                "Envoy has no trust bundle for {td_id}: the validation trust SDS secret must be named \
                 {td_id} and the SPIRE agent must serve it"
            ));
        }
    }
    r.status = status;
    r.observed = observed.join("; ");
    if status != CheckStatus::Pass {
        hints.push(format!("look: `{}`", show("/certs")));
        r.hint = Some(hints.join("; "));
    }
    r
}

fn exact_set(matchers: &[SanMatcher]) -> BTreeSet<String> {
    matchers
        .iter()
        .filter_map(|m| match m {
            SanMatcher::Exact(s) => Some(s.clone()),
            SanMatcher::Other(_) => None,
        })
        .collect()
}

fn show_matchers(matchers: &[SanMatcher]) -> String {
    if matchers.is_empty() {
        "any peer of the trust bundle (no SAN matcher)".into()
    } else {
        format!("[{}]", matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", "))
    }
}

/// The TLS egress clusters that carry traffic to a backend, found by what they do: the TLS
/// clusters the listeners on the backend's port route to (meshctl's egress listeners), else
/// the TLS clusters whose SAN matchers accept exactly the backend's SPIFFE ID — narrowed,
/// when there are several, to those whose endpoints are on the backend's port (App Mesh puts
/// every backend's SAN on every egress cluster).
pub fn clusters_for_backend<'a>(tls: &'a TlsConfig, b: &super::Backend) -> Vec<&'a TlsEndpoint> {
    let routed = tls.clusters_routed_from_port(b.port);
    let by_route: Vec<&TlsEndpoint> = tls.clusters.iter().filter(|c| routed.contains(&c.name.as_str())).collect();
    if !by_route.is_empty() {
        return by_route;
    }
    let by_san: Vec<&TlsEndpoint> =
        tls.clusters.iter().filter(|c| c.san_matchers.iter().any(|m| matches!(m, SanMatcher::Exact(id) if id == &b.spiffe_id))).collect();
    let on_port: Vec<&TlsEndpoint> = by_san.iter().copied().filter(|c| c.endpoint_ports.contains(&b.port)).collect();
    if by_san.len() > 1 && !on_port.is_empty() {
        on_port
    } else {
        by_san
    }
}

/// Plain (non-TLS) clusters the listeners on the backend's port route to.
fn plain_clusters_for_backend<'a>(tls: &'a TlsConfig, b: &super::Backend) -> Vec<&'a str> {
    let routed = tls.clusters_routed_from_port(b.port);
    tls.plain_clusters.iter().map(String::as_str).filter(|c| routed.contains(c)).collect()
}

/// Check 3: the inbound TLS listener accepts exactly `allowed_callers`; each backend's egress
/// TLS cluster requires the backend's SPIFFE ID.
pub fn check_peers(w: &Proxy, tls: &TlsConfig, show: ShowCommand<'_>, provider: &dyn Hints) -> CheckResult {
    let mut r = CheckResult::new(w, CheckId::Peers, description(w, CheckId::Peers));
    let allowed: BTreeSet<String> = w.allowed_callers.iter().cloned().collect();
    let mut observed = Vec::new();
    let mut expected = Vec::new();
    let mut hints = Vec::new();
    let mut ok = true;

    if allowed.is_empty() {
        expected.push("no mTLS listener (no allowed callers)".to_string());
    } else {
        expected.push(format!("inbound listener accepts exactly [{}]", allowed.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    if tls.listeners.is_empty() && !allowed.is_empty() {
        ok = false;
        observed.push("no listener terminates TLS".into());
        hints.push(format!(
            "{} must serve mTLS to [{}]: {}",
            w.name,
            allowed.iter().cloned().collect::<Vec<_>>().join(", "),
            provider.no_tls_listener(&w.name)
        ));
    }
    for l in &tls.listeners {
        let exact = exact_set(&l.san_matchers);
        let has_other = l.san_matchers.iter().any(|m| matches!(m, SanMatcher::Other(_)));
        observed.push(format!("listener {} accepts {}", l.name, show_matchers(&l.san_matchers)));
        if exact != allowed || has_other || l.san_matchers.is_empty() {
            ok = false;
            let unexpected: Vec<String> = exact.difference(&allowed).cloned().collect();
            let missing: Vec<String> = allowed.difference(&exact).cloned().collect();
            hints.push(format!(
                "listener {} accepts {} but {} must accept exactly [{}] (unexpected: [{}], missing: [{}]): {}",
                l.name,
                show_matchers(&l.san_matchers),
                w.name,
                allowed.iter().cloned().collect::<Vec<_>>().join(", "),
                unexpected.join(", "),
                missing.join(", "),
                provider.listener_sans(&w.name)
            ));
        }
        if !l.require_client_certificate {
            ok = false;
            observed.push(format!("listener {} does not require a client certificate", l.name));
            hints.push(format!(
                "listener {} does not require a client certificate, so callers are not authenticated: {}",
                l.name,
                provider.listener_sans(&w.name)
            ));
        }
    }
    for b in &w.backends {
        expected.push(format!("egress to {} requires {}", b.name, b.spiffe_id));
        let cls = clusters_for_backend(tls, b);
        if cls.is_empty() {
            ok = false;
            let plain = plain_clusters_for_backend(tls, b);
            if plain.is_empty() {
                observed.push(format!("no egress cluster for backend {}", b.name));
                hints.push(provider.egress_missing(&w.name, &b.name));
            } else {
                observed.push(format!("egress cluster {} to {} does not originate TLS", plain.join(", "), b.name));
                hints.push(provider.egress_plaintext(&w.name, &b.name));
            }
        }
        for c in cls {
            observed.push(format!("cluster {} requires {}", c.name, show_matchers(&c.san_matchers)));
            let exact = exact_set(&c.san_matchers);
            if !exact.contains(&b.spiffe_id) {
                ok = false;
                hints.push(format!(
                    "cluster {} requires {} but backend {} is {}: {}",
                    c.name,
                    show_matchers(&c.san_matchers),
                    b.name,
                    b.spiffe_id,
                    provider.egress_sans(&w.name, &b.name)
                ));
            }
        }
    }
    r.observed = if observed.is_empty() { "no TLS listener and no backends".into() } else { observed.join("; ") };
    r.expected = expected.join("; ");
    if !ok {
        r.status = CheckStatus::Fail;
        hints.push(format!("look: `{}`", show("/config_dump")));
        r.hint = Some(hints.join("; "));
    }
    r
}

/// A TLS listener or egress cluster whose counters checks 4 and 5 read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub side: TlsSide,
    pub name: String,
    /// `listener.<addr>.` / `cluster.<name>.`
    pub stat_prefix: String,
    /// The workload at the other end (a backend's name), for an egress cluster.
    pub peer: Option<String>,
    /// The SPIFFE IDs the configuration lets this side accept from its peer.
    pub accepts: Vec<String>,
}

/// The listeners (when the workload has allowed callers) and backend clusters to count on.
pub fn subjects(w: &Proxy, tls: &TlsConfig) -> Vec<Subject> {
    let mut out = Vec::new();
    if !w.allowed_callers.is_empty() {
        for l in &tls.listeners {
            out.push(Subject {
                side: TlsSide::Downstream,
                name: l.name.clone(),
                stat_prefix: l.stat_prefix.clone(),
                peer: None,
                accepts: w.allowed_callers.clone(),
            });
        }
    }
    for b in &w.backends {
        for c in clusters_for_backend(tls, b) {
            let s = Subject {
                side: TlsSide::Upstream,
                name: c.name.clone(),
                stat_prefix: c.stat_prefix.clone(),
                peer: Some(b.name.clone()),
                accepts: vec![b.spiffe_id.clone()],
            };
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

fn kind(s: &Subject) -> &'static str {
    match s.side {
        TlsSide::Downstream => "listener",
        TlsSide::Upstream => "cluster",
    }
}

/// Check 4: `ssl.handshake` on each subject; with traffic it must have risen, without traffic
/// a zero is a warning.
pub fn check_handshakes(w: &Proxy, subjects: &[Subject], before: &Stats, after: Option<&Stats>, show: ShowCommand<'_>) -> CheckResult {
    let mut r = CheckResult::new(w, CheckId::Handshakes, description(w, CheckId::Handshakes));
    if subjects.is_empty() {
        r.status = CheckStatus::Skip;
        r.observed = "no TLS listener with allowed callers and no TLS egress cluster".into();
        return r;
    }
    r.expected = if after.is_some() {
        "ssl.handshake rises on every TLS listener and egress cluster after traffic".into()
    } else {
        "ssl.handshake > 0 on every TLS listener and egress cluster".into()
    };
    let mut observed = Vec::new();
    let mut hints = Vec::new();
    let mut status = CheckStatus::Pass;
    for s in subjects {
        let name = format!("{}ssl.handshake", s.stat_prefix);
        let b = before.get(&name);
        match after {
            None => {
                r.counters.insert(name.clone(), b);
                observed.push(format!("{name}: {b}"));
                if b == 0 {
                    status = worst(status, CheckStatus::Warn);
                    hints.push(format!("no mTLS handshake yet on {} {}: no traffic has passed; run with --traffic", kind(s), s.name));
                }
            }
            Some(a) => {
                let v = a.get(&name);
                r.counters.insert(name.clone(), v);
                observed.push(format!("{name}: {b} → {v}"));
                if v <= b {
                    // An upstream pool may carry the requests over an established mTLS connection.
                    let rq = format!("{}upstream_rq_total", s.stat_prefix);
                    let reused = s.side == TlsSide::Upstream
                        && b > 0
                        && a.get(&rq) > before.get(&rq)
                        && FAILURE_COUNTERS
                            .iter()
                            .all(|f| a.get(&format!("{}{f}", s.stat_prefix)) == before.get(&format!("{}{f}", s.stat_prefix)));
                    if reused {
                        status = worst(status, CheckStatus::Warn);
                        hints.push(format!(
                            "requests to {} reused an established mTLS connection ({rq}: {} → {}), so no new handshake was counted",
                            s.name,
                            before.get(&rq),
                            a.get(&rq)
                        ));
                    } else {
                        status = CheckStatus::Fail;
                        hints.push(match s.side {
                            TlsSide::Downstream => format!(
                                "no caller completed an mTLS handshake with listener {} during the traffic: \
                                 the callers' requests did not arrive or their TLS failed (see tls-failures and the peers check)",
                                s.name
                            ),
                            TlsSide::Upstream => format!(
                                "no mTLS handshake to {} during the traffic: the requests did not go through \
                                 this cluster or its TLS handshakes failed (see tls-failures)",
                                s.name
                            ),
                        });
                    }
                }
            }
        }
    }
    r.status = status;
    r.observed = observed.join("; ");
    if status != CheckStatus::Pass {
        hints.push(format!("look: `{}`", show("/stats?filter=ssl")));
        r.hint = Some(hints.join("; "));
    }
    r
}

/// Check 5: TLS failure counters. Without traffic any non-zero counter fails; with traffic a
/// counter that rose fails and one that is non-zero but unchanged warns.
pub fn check_tls_failures(
    w: &Proxy,
    subjects: &[Subject],
    before: &Stats,
    after: Option<&Stats>,
    show: ShowCommand<'_>,
    provider: &dyn Hints,
) -> CheckResult {
    let mut r = CheckResult::new(w, CheckId::TlsFailures, description(w, CheckId::TlsFailures));
    if subjects.is_empty() {
        r.status = CheckStatus::Skip;
        r.observed = "no TLS listener with allowed callers and no TLS egress cluster".into();
        return r;
    }
    r.expected = format!("{} {}", FAILURE_COUNTERS.join(", "), if after.is_some() { "do not rise during traffic" } else { "are 0" });
    let mut status = CheckStatus::Pass;
    let mut bad = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    let mut causes: BTreeMap<&str, Vec<&Subject>> = BTreeMap::new();
    for s in subjects {
        for f in FAILURE_COUNTERS {
            let name = format!("{}{f}", s.stat_prefix);
            let b = before.get(&name);
            let (v, rose) = match after {
                Some(a) => (a.get(&name), a.get(&name) > b),
                None => (b, b > 0),
            };
            r.counters.insert(name.clone(), v);
            if rose {
                status = CheckStatus::Fail;
                bad.push(if after.is_some() { format!("{name}: {b} → {v}") } else { format!("{name}: {v}") });
                causes.entry(f).or_default().push(s);
            } else if v > 0 {
                status = worst(status, CheckStatus::Warn);
                bad.push(format!("{name}: {v} (unchanged)"));
            }
        }
    }
    r.observed = if bad.is_empty() { "all failure counters are 0 or unchanged".into() } else { bad.join("; ") };
    for (f, subjects) in &causes {
        if *f == "ssl.fail_verify_san" {
            for s in subjects {
                hints.push(match (&s.side, &s.peer) {
                    (TlsSide::Upstream, Some(peer)) => format!(
                        "{} {}: {peer} presented a SPIFFE ID other than {}: its sidecar holds another SVID \
                         (see {peer}'s identity check) or its SPIRE entry names another ID",
                        kind(s),
                        s.name,
                        s.accepts.join(", ")
                    ),
                    _ => format!(
                        "{} {}: a caller presented a SPIFFE ID outside [{}]: a caller the configuration does not allow, \
                         or a caller's sidecar holding another SVID (see the callers' identity checks)",
                        kind(s),
                        s.name,
                        s.accepts.join(", ")
                    ),
                });
            }
            continue;
        }
        let on = subjects.iter().map(|s| format!("{} {}", kind(s), s.name)).collect::<Vec<_>>().join(", ");
        hints.push(match *f {
            "ssl.fail_verify_error" => format!(
                "{on}: the peer's certificate does not verify against the trust bundle \
                 (other trust domain or stale bundle; check `spire-server bundle show`)"
            ),
            "ssl.fail_verify_no_cert" => format!("{on}: the peer sent no certificate ({})", provider.no_client_cert()),
            _ => format!(
                "{on}: TLS handshakes failed; on a client this is usually the server rejecting our SVID \
                 (check the server's SAN matchers and its fail_verify_* counters)"
            ),
        });
    }
    if status == CheckStatus::Warn {
        hints.push("failures happened before this run, none during it".into());
    }
    r.status = status;
    if status != CheckStatus::Pass {
        hints.push(format!("look: `{}`", show("/stats?filter=ssl")));
        r.hint = Some(hints.join("; "));
    }
    r
}
