//! Parsers for the Envoy admin endpoints that `meshctl verify` reads: `/clusters` (text and
//! `?format=json`), `/certs`, `/stats` (text and `?format=json`) and `/config_dump`.
//!
//! Everything here is a pure function from the response body to a small typed view, so it is
//! unit-tested on responses recorded from the real Envoy 1.40 of the test bed
//! (`tests/fixtures/envoy/`, recorded by `scripts/record-envoy-fixtures`). Only the fields the
//! checks need are extracted; the config dump is navigated as a `serde_json::Value` because
//! its full schema is the whole Envoy API.

use std::collections::BTreeMap;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::VerifyError;

fn parse_err(what: &str, message: impl std::fmt::Display) -> VerifyError {
    VerifyError::Parse { what: what.to_string(), message: message.to_string() }
}

// ---------------------------------------------------------------------------------------------
// /clusters
// ---------------------------------------------------------------------------------------------

/// One upstream host of a cluster as `/clusters` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostStatus {
    /// `ip:port`, or the path of a unix socket (`pipe`).
    pub address: String,
    /// Active connections to the host (`cx_active`).
    pub cx_active: u64,
    /// `health_flags` as Envoy prints it in the text format (`healthy`, `/failed_active_hc`, …).
    pub health_flags: String,
}

impl HostStatus {
    /// Envoy considers the host healthy.
    pub fn healthy(&self) -> bool {
        self.health_flags == "healthy"
    }
}

/// One cluster of `/clusters` with its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterStatus {
    pub name: String,
    pub hosts: Vec<HostStatus>,
}

/// Host-level keys of the `/clusters` text format (everything else is cluster level, such as
/// `default_priority::max_connections`).
const HOST_KEYS: &[&str] = &[
    "cx_active",
    "cx_connect_fail",
    "cx_total",
    "rq_active",
    "rq_error",
    "rq_pending_active",
    "rq_success",
    "rq_timeout",
    "rq_total",
    "hostname",
    "health_flags",
    "weight",
    "region",
    "zone",
    "sub_zone",
    "canary",
    "priority",
    "success_rate",
    "local_origin_success_rate",
];

/// Parses `/clusters` in either format (JSON when the body starts with `{`).
pub fn parse_clusters(body: &str) -> Result<Vec<ClusterStatus>, VerifyError> {
    if body.trim_start().starts_with('{') {
        parse_clusters_json(body)
    } else {
        Ok(parse_clusters_text(body))
    }
}

/// Parses the text format: `cluster::host::key::value` lines. Hosts may themselves contain
/// `::` (IPv6), so the cluster name is cut at the first `::` and the key and value at the last
/// two.
pub fn parse_clusters_text(body: &str) -> Vec<ClusterStatus> {
    let mut out: Vec<ClusterStatus> = Vec::new();
    for line in body.lines() {
        let Some((cluster, rest)) = line.split_once("::") else {
            continue;
        };
        let Some((middle, value)) = rest.rsplit_once("::") else {
            continue;
        };
        let Some((host, key)) = middle.rsplit_once("::") else {
            continue; // cluster-level `cluster::key::value`
        };
        if !HOST_KEYS.contains(&key) {
            continue;
        }
        let idx = match out.iter().position(|c| c.name == cluster) {
            Some(i) => i,
            None => {
                out.push(ClusterStatus { name: cluster.to_string(), hosts: Vec::new() });
                out.len() - 1
            }
        };
        let hosts = &mut out[idx].hosts;
        let h = match hosts.iter().position(|h| h.address == host) {
            Some(i) => i,
            None => {
                hosts.push(HostStatus { address: host.to_string(), ..HostStatus::default() });
                hosts.len() - 1
            }
        };
        match key {
            "cx_active" => hosts[h].cx_active = value.trim().parse().unwrap_or(0),
            "health_flags" => hosts[h].health_flags = value.trim().to_string(),
            _ => {}
        }
    }
    out
}

fn json_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn json_address(v: &Value) -> String {
    if let Some(sa) = v.get("socket_address") {
        let ip = sa.get("address").and_then(Value::as_str).unwrap_or("");
        let port = sa.get("port_value").and_then(json_u64).unwrap_or(0);
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    } else if let Some(p) = v.get("pipe") {
        p.get("path").and_then(Value::as_str).unwrap_or("").to_string()
    } else if let Some(s) = v.get("envoy_internal_address") {
        s.get("server_listener_name").and_then(Value::as_str).unwrap_or("").to_string()
    } else {
        String::new()
    }
}

/// Translates the JSON `health_status` into the text format's `health_flags`.
fn json_health_flags(v: Option<&Value>) -> String {
    let Some(hs) = v else {
        return "healthy".to_string();
    };
    const FLAGS: &[(&str, &str)] = &[
        ("failed_active_health_check", "/failed_active_hc"),
        ("failed_outlier_check", "/failed_outlier_check"),
        ("failed_active_degraded_check", "/degraded_active_hc"),
        ("pending_dynamic_removal", "/pending_dynamic_removal"),
        ("pending_active_hc", "/pending_active_hc"),
        ("excluded_via_immediate_hc_fail", "/excluded_via_immediate_hc_fail"),
        ("active_hc_timeout", "/active_hc_timeout"),
    ];
    let mut flags = String::new();
    for (key, flag) in FLAGS {
        if hs.get(*key).and_then(Value::as_bool).unwrap_or(false) {
            flags.push_str(flag);
        }
    }
    match hs.get("eds_health_status").and_then(Value::as_str) {
        None | Some("HEALTHY") | Some("UNKNOWN") => {}
        Some("DEGRADED") => flags.push_str("/degraded_eds_health"),
        Some(_) => flags.push_str("/failed_eds_health"),
    }
    if flags.is_empty() {
        "healthy".to_string()
    } else {
        flags
    }
}

/// Parses `/clusters?format=json`. Zero-valued stats carry no `value` (protobuf JSON).
pub fn parse_clusters_json(body: &str) -> Result<Vec<ClusterStatus>, VerifyError> {
    let v: Value = serde_json::from_str(body).map_err(|e| parse_err("/clusters?format=json", e))?;
    let statuses = v
        .get("cluster_statuses")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_err("/clusters?format=json", "no cluster_statuses array"))?;
    let mut out = Vec::new();
    for c in statuses {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let mut hosts = Vec::new();
        for h in c.get("host_statuses").and_then(Value::as_array).into_iter().flatten() {
            let address = h.get("address").map(json_address).unwrap_or_default();
            let cx_active = h
                .get("stats")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|s| s.get("name").and_then(Value::as_str) == Some("cx_active"))
                .map(|s| s.get("value").and_then(json_u64).unwrap_or(0))
                .unwrap_or(0);
            hosts.push(HostStatus { address, cx_active, health_flags: json_health_flags(h.get("health_status")) });
        }
        out.push(ClusterStatus { name, hosts });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// /certs
// ---------------------------------------------------------------------------------------------

/// One certificate as `/certs` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub serial_number: String,
    /// URI SANs (SPIFFE IDs).
    pub uris: Vec<String>,
    pub valid_from: Option<OffsetDateTime>,
    pub expiration_time: Option<OffsetDateTime>,
    pub days_until_expiration: Option<i64>,
}

/// One entry of `/certs`: a TLS context's CA certificates and certificate chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertContext {
    pub ca_cert: Vec<CertInfo>,
    pub cert_chain: Vec<CertInfo>,
}

fn parse_cert(v: &Value) -> CertInfo {
    let ts = |k: &str| v.get(k).and_then(Value::as_str).and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
    CertInfo {
        serial_number: v.get("serial_number").and_then(Value::as_str).unwrap_or("").to_string(),
        uris: v
            .get("subject_alt_names")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("uri").and_then(Value::as_str).map(str::to_string))
            .collect(),
        valid_from: ts("valid_from"),
        expiration_time: ts("expiration_time"),
        days_until_expiration: v.get("days_until_expiration").and_then(|d| match d {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }),
    }
}

/// Parses `/certs`.
pub fn parse_certs(body: &str) -> Result<Vec<CertContext>, VerifyError> {
    let v: Value = serde_json::from_str(body).map_err(|e| parse_err("/certs", e))?;
    let certs = v.get("certificates").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(certs
        .iter()
        .map(|c| {
            let list = |k: &str| c.get(k).and_then(Value::as_array).into_iter().flatten().map(parse_cert).collect::<Vec<_>>();
            CertContext { ca_cert: list("ca_cert"), cert_chain: list("cert_chain") }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// /stats
// ---------------------------------------------------------------------------------------------

/// Counters and gauges of `/stats` by full name (histograms are left out).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats(pub BTreeMap<String, u64>);

impl Stats {
    /// The value of a stat, 0 when Envoy does not show it.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }
    /// Whether Envoy shows the stat at all.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Parses `/stats` in either format (JSON when the body starts with `{`).
pub fn parse_stats(body: &str) -> Result<Stats, VerifyError> {
    if body.trim_start().starts_with('{') {
        parse_stats_json(body)
    } else {
        Ok(parse_stats_text(body))
    }
}

/// Parses the text format, `name: value` per line. Names may contain `:` (SPIFFE IDs in
/// `ssl.certificate.<secret>.expiration_unix_time_seconds`), so the line is cut at the last
/// `": "`; lines whose value is not an integer (histograms) are skipped.
pub fn parse_stats_text(body: &str) -> Stats {
    let mut m = BTreeMap::new();
    for line in body.lines() {
        if let Some((name, value)) = line.rsplit_once(": ") {
            if let Ok(v) = value.trim().parse::<u64>() {
                m.insert(name.to_string(), v);
            }
        }
    }
    Stats(m)
}

/// Parses `/stats?format=json`: `{"stats":[{"name":..,"value":..}, {"histograms":..}]}`.
pub fn parse_stats_json(body: &str) -> Result<Stats, VerifyError> {
    let v: Value = serde_json::from_str(body).map_err(|e| parse_err("/stats?format=json", e))?;
    let stats = v.get("stats").and_then(Value::as_array).ok_or_else(|| parse_err("/stats?format=json", "no stats array"))?;
    let mut m = BTreeMap::new();
    for s in stats {
        if let (Some(name), Some(value)) = (s.get("name").and_then(Value::as_str), s.get("value").and_then(json_u64)) {
            m.insert(name.to_string(), value);
        }
    }
    Ok(Stats(m))
}

// ---------------------------------------------------------------------------------------------
// /config_dump
// ---------------------------------------------------------------------------------------------

/// A subject-alternative-name matcher of a TLS validation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanMatcher {
    /// `exact` — the only kind that pins one SPIFFE ID.
    Exact(String),
    /// Any other matcher (`prefix`, `suffix`, `contains`, `safe_regex`), as `kind:value`.
    Other(String),
}

impl std::fmt::Display for SanMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SanMatcher::Exact(s) => f.write_str(s),
            SanMatcher::Other(s) => f.write_str(s),
        }
    }
}

/// Whether a TLS context was found on a listener (server side) or a cluster (client side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    Downstream,
    Upstream,
}

/// A listener or cluster that terminates or originates TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsEndpoint {
    pub side: TlsSide,
    /// Listener or cluster name.
    pub name: String,
    /// Prefix of its stats, with the trailing dot: `listener.0.0.0.0_15000.` or
    /// `cluster.<name>.`.
    pub stat_prefix: String,
    /// `active` or `warming` (a listener or cluster waiting for its SDS secrets), `static`.
    pub state: String,
    /// SAN matchers over all its TLS contexts (all filter chains).
    pub san_matchers: Vec<SanMatcher>,
    /// SDS secret names of its certificates (`tls_certificate_sds_secret_configs`).
    pub certificate_secrets: Vec<String>,
    /// SDS secret names of its validation contexts.
    pub validation_secrets: Vec<String>,
    /// Downstream only: `require_client_certificate`.
    pub require_client_certificate: bool,
    /// Upstream only: the ports of the cluster's endpoints.
    pub endpoint_ports: Vec<u16>,
}

/// Where a listener sends its connections: its port and the clusters its TCP proxies and
/// (inline) HTTP routes name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRoute {
    pub listener: String,
    pub address: String,
    pub port: u16,
    pub clusters: Vec<String>,
}

/// The TLS-relevant part of `/config_dump`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// Listeners with a `DownstreamTlsContext`.
    pub listeners: Vec<TlsEndpoint>,
    /// Clusters with an `UpstreamTlsContext`.
    pub clusters: Vec<TlsEndpoint>,
    /// Names of clusters without TLS.
    pub plain_clusters: Vec<String>,
    /// Every listener's port and the clusters it routes to.
    pub routes: Vec<ListenerRoute>,
}

impl TlsConfig {
    /// The clusters the listeners on `port` route to.
    pub fn clusters_routed_from_port(&self, port: u16) -> Vec<&str> {
        let mut out: Vec<&str> =
            self.routes.iter().filter(|r| r.port == port).flat_map(|r| r.clusters.iter().map(String::as_str)).collect();
        out.dedup();
        out
    }
}

/// The clusters a listener's filters send traffic to: `tcp_proxy.cluster`, its weighted
/// clusters, and the inline HTTP routes' `route.cluster` / weighted clusters.
fn routed_clusters(listener: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                let ty = m.get("@type").and_then(Value::as_str).unwrap_or("");
                if ty.ends_with("TcpProxy") {
                    if let Some(c) = m.get("cluster").and_then(Value::as_str) {
                        push_unique(out, c);
                    }
                }
                if let Some(route) = m.get("route").and_then(Value::as_object) {
                    if let Some(c) = route.get("cluster").and_then(Value::as_str) {
                        push_unique(out, c);
                    }
                }
                if let Some(wc) = m.get("weighted_clusters").and_then(|w| w.get("clusters")).and_then(Value::as_array) {
                    for c in wc.iter().filter_map(|c| c.get("name").and_then(Value::as_str)) {
                        push_unique(out, c);
                    }
                }
                for child in m.values() {
                    walk(child, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(chains) = listener.get("filter_chains") {
        walk(chains, &mut out);
    }
    if let Some(chain) = listener.get("default_filter_chain") {
        walk(chain, &mut out);
    }
    out
}

/// The ports of a cluster's `load_assignment` endpoints.
fn endpoint_ports(cluster: &Value) -> Vec<u16> {
    let mut out = Vec::new();
    for group in cluster.get("load_assignment").and_then(|l| l.get("endpoints")).and_then(Value::as_array).into_iter().flatten() {
        for ep in group.get("lb_endpoints").and_then(Value::as_array).into_iter().flatten() {
            let port = ep
                .get("endpoint")
                .and_then(|e| e.get("address"))
                .and_then(|a| a.get("socket_address"))
                .and_then(|s| s.get("port_value"))
                .and_then(json_u64);
            if let Some(p) = port.and_then(|p| u16::try_from(p).ok()) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Every object below `v` whose `@type` ends with `suffix` (`DownstreamTlsContext`, …).
fn find_typed<'a>(v: &'a Value, suffix: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if m.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with(suffix)) {
                out.push(v);
            }
            for child in m.values() {
                find_typed(child, suffix, out);
            }
        }
        Value::Array(a) => {
            for child in a {
                find_typed(child, suffix, out);
            }
        }
        _ => {}
    }
}

fn san_matchers_of(validation: &Value, out: &mut Vec<SanMatcher>) {
    for m in validation.get("match_typed_subject_alt_names").and_then(Value::as_array).into_iter().flatten() {
        if let Some(matcher) = m.get("matcher") {
            out.push(string_matcher(matcher));
        }
    }
    for m in validation.get("match_subject_alt_names").and_then(Value::as_array).into_iter().flatten() {
        out.push(string_matcher(m));
    }
}

fn string_matcher(m: &Value) -> SanMatcher {
    if let Some(e) = m.get("exact").and_then(Value::as_str) {
        return SanMatcher::Exact(e.to_string());
    }
    for kind in ["prefix", "suffix", "contains"] {
        if let Some(s) = m.get(kind).and_then(Value::as_str) {
            return SanMatcher::Other(format!("{kind}:{s}"));
        }
    }
    if let Some(r) = m.get("safe_regex").and_then(|r| r.get("regex")).and_then(Value::as_str) {
        return SanMatcher::Other(format!("regex:{r}"));
    }
    SanMatcher::Other(m.to_string())
}

fn tls_endpoint(side: TlsSide, name: String, stat_prefix: String, state: &str, obj: &Value) -> TlsEndpoint {
    let suffix = match side {
        TlsSide::Downstream => "DownstreamTlsContext",
        TlsSide::Upstream => "UpstreamTlsContext",
    };
    let mut contexts = Vec::new();
    find_typed(obj, suffix, &mut contexts);
    let mut ep = TlsEndpoint {
        side,
        name,
        stat_prefix,
        state: state.to_string(),
        san_matchers: Vec::new(),
        certificate_secrets: Vec::new(),
        validation_secrets: Vec::new(),
        require_client_certificate: false,
        endpoint_ports: if side == TlsSide::Upstream { endpoint_ports(obj) } else { Vec::new() },
    };
    for ctx in contexts {
        if ctx.get("require_client_certificate").and_then(Value::as_bool).unwrap_or(false) {
            ep.require_client_certificate = true;
        }
        let Some(common) = ctx.get("common_tls_context") else {
            continue;
        };
        for s in common.get("tls_certificate_sds_secret_configs").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = s.get("name").and_then(Value::as_str) {
                push_unique(&mut ep.certificate_secrets, n);
            }
        }
        if let Some(c) = common.get("combined_validation_context") {
            if let Some(d) = c.get("default_validation_context") {
                san_matchers_of(d, &mut ep.san_matchers);
            }
            if let Some(n) = c.get("validation_context_sds_secret_config").and_then(|s| s.get("name")).and_then(Value::as_str) {
                push_unique(&mut ep.validation_secrets, n);
            }
        }
        if let Some(vc) = common.get("validation_context") {
            san_matchers_of(vc, &mut ep.san_matchers);
        }
        if let Some(n) = common.get("validation_context_sds_secret_config").and_then(|s| s.get("name")).and_then(Value::as_str) {
            push_unique(&mut ep.validation_secrets, n);
        }
    }
    let mut seen = Vec::new();
    ep.san_matchers.retain(|m| {
        if seen.contains(m) {
            false
        } else {
            seen.push(m.clone());
            true
        }
    });
    ep
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// The stats scope of a listener: `listener.<stat_prefix>.` when set, else the address as
/// Envoy writes it (`0.0.0.0_15000`, `[::]_15000`).
fn listener_stat_prefix(l: &Value) -> String {
    if let Some(p) = l.get("stat_prefix").and_then(Value::as_str) {
        if !p.is_empty() {
            return format!("listener.{p}.");
        }
    }
    let sa = l.get("address").and_then(|a| a.get("socket_address"));
    let ip = sa.and_then(|s| s.get("address")).and_then(Value::as_str).unwrap_or("");
    let port = sa.and_then(|s| s.get("port_value")).and_then(json_u64).unwrap_or(0);
    if ip.contains(':') {
        format!("listener.[{ip}]_{port}.")
    } else {
        format!("listener.{ip}_{port}.")
    }
}

/// Extracts the TLS listeners and clusters from `/config_dump`.
pub fn parse_config_dump(body: &str) -> Result<TlsConfig, VerifyError> {
    let v: Value = serde_json::from_str(body).map_err(|e| parse_err("/config_dump", e))?;
    let configs = v.get("configs").and_then(Value::as_array).ok_or_else(|| parse_err("/config_dump", "no configs array"))?;
    let mut out = TlsConfig::default();
    for c in configs {
        let ty = c.get("@type").and_then(Value::as_str).unwrap_or("");
        if ty.ends_with("ListenersConfigDump") {
            let mut listeners: Vec<(&Value, &str)> = Vec::new();
            for l in c.get("static_listeners").and_then(Value::as_array).into_iter().flatten() {
                if let Some(l) = l.get("listener") {
                    listeners.push((l, "static"));
                }
            }
            for l in c.get("dynamic_listeners").and_then(Value::as_array).into_iter().flatten() {
                if let Some(l) = l.get("active_state").and_then(|s| s.get("listener")) {
                    listeners.push((l, "active"));
                } else if let Some(l) = l.get("warming_state").and_then(|s| s.get("listener")) {
                    listeners.push((l, "warming"));
                }
            }
            for (l, state) in listeners {
                let name = l.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                let sa = l.get("address").and_then(|a| a.get("socket_address"));
                out.routes.push(ListenerRoute {
                    listener: name.clone(),
                    address: sa.and_then(|s| s.get("address")).and_then(Value::as_str).unwrap_or("").to_string(),
                    port: sa.and_then(|s| s.get("port_value")).and_then(json_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                    clusters: routed_clusters(l),
                });
                let mut found = Vec::new();
                find_typed(l, "DownstreamTlsContext", &mut found);
                if !found.is_empty() {
                    out.listeners.push(tls_endpoint(TlsSide::Downstream, name, listener_stat_prefix(l), state, l));
                }
            }
        } else if ty.ends_with("ClustersConfigDump") {
            let mut clusters: Vec<(&Value, &str)> = Vec::new();
            for cl in c.get("static_clusters").and_then(Value::as_array).into_iter().flatten() {
                if let Some(cl) = cl.get("cluster") {
                    clusters.push((cl, "static"));
                }
            }
            for cl in c.get("dynamic_active_clusters").and_then(Value::as_array).into_iter().flatten() {
                if let Some(cl) = cl.get("cluster") {
                    clusters.push((cl, "active"));
                }
            }
            for cl in c.get("dynamic_warming_clusters").and_then(Value::as_array).into_iter().flatten() {
                if let Some(cl) = cl.get("cluster") {
                    clusters.push((cl, "warming"));
                }
            }
            for (cl, state) in clusters {
                let name = cl.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                let stat_name = cl.get("alt_stat_name").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(&name).to_string();
                let mut found = Vec::new();
                find_typed(cl, "UpstreamTlsContext", &mut found);
                if found.is_empty() {
                    out.plain_clusters.push(name);
                } else {
                    out.clusters.push(tls_endpoint(TlsSide::Upstream, name, format!("cluster.{stat_name}."), state, cl));
                }
            }
        }
    }
    Ok(out)
}
