//! Unit tests of the parsers (on responses recorded from the real Envoy 1.40 of the test bed by
//! `scripts/record-envoy-fixtures`) and of the check logic and renderings.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::checks::{self, Snapshot};
use super::envoy::*;
use super::*;

const TD: &str = "am-multi-account-mesh";

macro_rules! fixture {
    ($p:literal) => {
        include_str!(concat!("../../tests/fixtures/envoy/", $p))
    };
}

const FE_CLUSTERS_TXT: &str = fixture!("healthy/frontend_clusters.txt");
const FE_CLUSTERS_JSON: &str = fixture!("healthy/frontend_clusters.json");
const FE_CERTS: &str = fixture!("healthy/frontend_certs.json");
const FE_STATS_TXT: &str = fixture!("healthy/frontend_stats.txt");
const FE_STATS_JSON: &str = fixture!("healthy/frontend_stats.json");
const FE_CONFIG: &str = fixture!("healthy/frontend_config_dump.json");
const APP_CLUSTERS_JSON: &str = fixture!("healthy/appserver_clusters.json");
const APP_CLUSTERS_TXT: &str = fixture!("healthy/appserver_clusters.txt");
const APP_CERTS: &str = fixture!("healthy/appserver_certs.json");
const APP_STATS_TXT: &str = fixture!("healthy/appserver_stats.txt");
const APP_STATS_JSON: &str = fixture!("healthy/appserver_stats.json");
const APP_CONFIG: &str = fixture!("healthy/appserver_config_dump.json");
const MISMATCH_APP_CONFIG: &str = fixture!("san-mismatch/appserver_config_dump.json");
const MISMATCH_APP_STATS: &str = fixture!("san-mismatch/appserver_stats.txt");
const MISMATCH_FE_STATS: &str = fixture!("san-mismatch/frontend_stats.txt");
const STOPPED_FE_CLUSTERS_TXT: &str = fixture!("agent-stopped/frontend_clusters.txt");
const STOPPED_FE_CLUSTERS_JSON: &str = fixture!("agent-stopped/frontend_clusters.json");

const SDS: &str = "static_cluster_sds_unix_socket";
const FE_EGRESS: &str = "cds_egress_am-multi-account-mesh_appserver_yelb_http_4567";

fn id(n: &str) -> String {
    format!("spiffe://{TD}/{n}")
}

/// The agent socket path of the recording (a temp dir).
fn sock() -> String {
    let c = parse_clusters(FE_CLUSTERS_TXT).unwrap();
    c.iter().find(|c| c.name == SDS).unwrap().hosts[0].address.clone()
}

fn frontend() -> Proxy {
    Proxy {
        name: "frontend".into(),
        cluster: "frontend".into(),
        namespace: "yelb".into(),
        pod_selector: "app=frontend".into(),
        admin_port: 9901,
        spiffe_id: id("frontend"),
        trust_domain: TD.into(),
        sds_socket: sock(),
        allowed_callers: vec![],
        backends: vec![Backend { name: "appserver".into(), spiffe_id: id("appserver"), port: 4567 }],
    }
}

fn appserver() -> Proxy {
    Proxy {
        name: "appserver".into(),
        cluster: "backend".into(),
        namespace: "yelb".into(),
        pod_selector: "app=appserver".into(),
        admin_port: 9901,
        spiffe_id: id("appserver"),
        trust_domain: TD.into(),
        sds_socket: sock(),
        allowed_callers: vec![id("frontend")],
        backends: vec![],
    }
}

/// A moment inside the recorded SVID's lifetime (it is short: SPIRE's default 1h).
fn recorded_now() -> OffsetDateTime {
    let certs = parse_certs(FE_CERTS).unwrap();
    certs[0].cert_chain[0].valid_from.unwrap() + time::Duration::minutes(1)
}

fn show(p: &str) -> String {
    format!("curl -s 'http://admin{p}'")
}

fn snapshot(clusters: &str, certs: &str, config: &str, stats: &str) -> Snapshot {
    Snapshot {
        clusters: parse_clusters(clusters).map_err(|e| e.to_string()),
        certs: parse_certs(certs).map_err(|e| e.to_string()),
        tls: parse_config_dump(config).map_err(|e| e.to_string()),
        stats_before: parse_stats(stats).map_err(|e| e.to_string()),
        stats_after: None,
    }
}

fn statuses(rs: &[CheckResult]) -> BTreeMap<CheckId, CheckStatus> {
    rs.iter().map(|r| (r.check, r.status)).collect()
}

// ------------------------------------------------------------------------------ parsers

#[test]
fn clusters_text_and_json_agree_on_the_sds_cluster() {
    for body in [FE_CLUSTERS_TXT, FE_CLUSTERS_JSON, APP_CLUSTERS_TXT, APP_CLUSTERS_JSON] {
        let c = parse_clusters(body).unwrap();
        let sds = c.iter().find(|c| c.name == SDS).expect("sds cluster");
        assert_eq!(sds.hosts.len(), 1);
        assert!(sds.hosts[0].address.ends_with("/agent.sock"), "{:?}", sds.hosts[0]);
        assert_eq!(sds.hosts[0].cx_active, 1);
        assert!(sds.hosts[0].healthy());
    }
    let text = parse_clusters_text(FE_CLUSTERS_TXT);
    let json = parse_clusters_json(FE_CLUSTERS_JSON).unwrap();
    let names = |v: &[ClusterStatus]| {
        let mut n: Vec<String> = v.iter().map(|c| c.name.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&text), names(&json));
    assert_eq!(names(&text), vec![FE_EGRESS.to_string(), SDS.to_string()]);
    let egress = text.iter().find(|c| c.name == FE_EGRESS).unwrap();
    assert!(egress.hosts[0].address.starts_with("127.0.0.1:"));
}

#[test]
fn clusters_after_the_agent_stopped_show_no_active_connection() {
    for body in [STOPPED_FE_CLUSTERS_TXT, STOPPED_FE_CLUSTERS_JSON] {
        let c = parse_clusters(body).unwrap();
        let sds = c.iter().find(|c| c.name == SDS).unwrap();
        assert_eq!(sds.hosts[0].cx_active, 0);
    }
}

#[test]
fn clusters_text_handles_ipv6_hosts_and_cluster_level_keys() {
    let body = "c1::default_priority::max_connections::1024\nc1::added_via_api::false\n\
                c1::[::1]:8080::cx_active::2\nc1::[::1]:8080::health_flags::/failed_active_hc\n";
    let c = parse_clusters_text(body);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].hosts.len(), 1);
    assert_eq!(c[0].hosts[0].address, "[::1]:8080");
    assert_eq!(c[0].hosts[0].cx_active, 2);
    assert!(!c[0].hosts[0].healthy());
}

#[test]
fn certs_show_the_svid_and_the_trust_domain_ca() {
    let fe = parse_certs(FE_CERTS).unwrap();
    assert_eq!(fe.len(), 1);
    assert_eq!(fe[0].cert_chain[0].uris, vec![id("frontend")]);
    assert_eq!(fe[0].ca_cert[0].uris, vec![format!("spiffe://{TD}")]);
    let c = &fe[0].cert_chain[0];
    let life = c.expiration_time.unwrap() - c.valid_from.unwrap();
    assert!(life > time::Duration::minutes(50) && life <= time::Duration::minutes(61), "{life}");
    assert!(c.days_until_expiration.is_some());
    let app = parse_certs(APP_CERTS).unwrap();
    assert_eq!(app[0].cert_chain[0].uris, vec![id("appserver")]);
    assert!(parse_certs("not json").is_err());
}

#[test]
fn stats_text_and_json_agree() {
    for (txt, json) in [(FE_STATS_TXT, FE_STATS_JSON), (APP_STATS_TXT, APP_STATS_JSON)] {
        let t = parse_stats(txt).unwrap();
        let j = parse_stats(json).unwrap();
        let ssl = |s: &Stats| -> BTreeMap<String, u64> {
            s.0.iter()
                .filter(|(k, _)| k.contains(".ssl.handshake") || k.contains(".ssl.fail_verify"))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        assert!(!ssl(&t).is_empty());
        assert_eq!(ssl(&t), ssl(&j));
    }
    let fe = parse_stats(FE_STATS_TXT).unwrap();
    assert_eq!(fe.get(&format!("cluster.{FE_EGRESS}.ssl.handshake")), 3);
    // names holding a SPIFFE ID (with ':') are kept whole
    assert!(fe.has(&format!("cluster.{FE_EGRESS}.ssl.certificate.spiffe://{TD}/frontend.expiration_unix_time_seconds")));
}

#[test]
fn config_dump_of_the_frontend_has_one_tls_egress_cluster() {
    let tls = parse_config_dump(FE_CONFIG).unwrap();
    assert!(tls.listeners.is_empty(), "{:?}", tls.listeners);
    assert_eq!(tls.clusters.len(), 1);
    let c = &tls.clusters[0];
    assert_eq!(c.name, FE_EGRESS);
    assert_eq!(c.stat_prefix, format!("cluster.{FE_EGRESS}."));
    assert_eq!(c.san_matchers, vec![SanMatcher::Exact(id("appserver"))]);
    assert_eq!(c.certificate_secrets, vec![id("frontend")]);
    assert_eq!(c.validation_secrets, vec![format!("spiffe://{TD}")]);
    assert_eq!(tls.plain_clusters, vec![SDS.to_string()]);
}

#[test]
fn config_dump_of_the_appserver_has_one_mtls_listener() {
    let tls = parse_config_dump(APP_CONFIG).unwrap();
    assert_eq!(tls.listeners.len(), 1);
    let l = &tls.listeners[0];
    assert_eq!(l.name, "lds_ingress_0.0.0.0_15000");
    assert!(l.stat_prefix.starts_with("listener.127.0.0.1_") && l.stat_prefix.ends_with('.'));
    assert!(l.require_client_certificate);
    assert_eq!(l.san_matchers, vec![SanMatcher::Exact(id("frontend"))]);
    let stats = parse_stats(APP_STATS_TXT).unwrap();
    assert_eq!(stats.get(&format!("{}ssl.handshake", l.stat_prefix)), 3);
    let mismatch = parse_config_dump(MISMATCH_APP_CONFIG).unwrap();
    assert_eq!(mismatch.listeners[0].san_matchers, vec![SanMatcher::Exact(id("intruder"))]);
}

#[test]
fn config_dump_reads_dynamic_listeners_and_untyped_matchers() {
    let body = serde_json::json!({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
         "dynamic_listeners": [{"name": "lds_ingress_0.0.0.0_15000", "warming_state": {"listener": {
            "name": "lds_ingress_0.0.0.0_15000",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15000}},
            "filter_chains": [{"transport_socket": {"name": "tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {"validation_context": {"match_subject_alt_names": [
                    {"exact": "spiffe://td/a"}, {"prefix": "spiffe://td/"}]}}}}}]}}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "dynamic_active_clusters": [{"cluster": {"name": "x", "alt_stat_name": "x_alt",
            "transport_socket_matches": [{"transport_socket": {"typed_config": {
              "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
              "common_tls_context": {}}}}]}}]}
    ]})
    .to_string();
    let tls = parse_config_dump(&body).unwrap();
    assert_eq!(tls.listeners[0].state, "warming");
    assert_eq!(tls.listeners[0].stat_prefix, "listener.0.0.0.0_15000.");
    assert_eq!(
        tls.listeners[0].san_matchers,
        vec![SanMatcher::Exact("spiffe://td/a".into()), SanMatcher::Other("prefix:spiffe://td/".into())]
    );
    assert_eq!(tls.clusters[0].stat_prefix, "cluster.x_alt.");
}

// ------------------------------------------------------------------------------ checks

#[test]
fn healthy_fixtures_pass_every_check() {
    let now = recorded_now();
    let fe = checks::evaluate(&frontend(), &snapshot(FE_CLUSTERS_JSON, FE_CERTS, FE_CONFIG, FE_STATS_TXT), now, &show, &GenericHints);
    let app = checks::evaluate(&appserver(), &snapshot(APP_CLUSTERS_TXT, APP_CERTS, APP_CONFIG, APP_STATS_JSON), now, &show, &GenericHints);
    for r in fe.iter().chain(app.iter()) {
        assert_eq!(r.status, CheckStatus::Pass, "{r:#?}");
    }
    assert_eq!(fe.len(), CheckId::ALL.len());
    let hs = fe.iter().find(|r| r.check == CheckId::Handshakes).unwrap();
    assert_eq!(hs.counters.get(&format!("cluster.{FE_EGRESS}.ssl.handshake")), Some(&3));
}

#[test]
fn stopped_agent_fails_sds_with_the_agent_hint() {
    let r = checks::check_sds(&frontend(), &parse_clusters(STOPPED_FE_CLUSTERS_JSON).unwrap(), &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.observed.contains("cx_active=0"), "{}", r.observed);
    let hint = r.hint.unwrap();
    assert!(hint.contains("SPIRE agent socket") && hint.contains("daemonset spire-agent"), "{hint}");
    assert!(hint.contains("curl -s 'http://admin/clusters'"), "{hint}");
}

#[test]
fn sds_fails_when_no_cluster_points_at_the_socket() {
    let mut w = frontend();
    w.sds_socket = "/run/spire/sockets/agent.sock".into();
    let r = checks::check_sds(&w, &parse_clusters(FE_CLUSTERS_TXT).unwrap(), &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.observed.contains("no cluster has a host at /run/spire/sockets/agent.sock"), "{}", r.observed);
    assert!(r.observed.contains(SDS), "{}", r.observed);
    assert!(r.hint.unwrap().contains("SDS cluster on that socket"));
}

#[test]
fn identity_fails_expired_warns_near_expiry_and_fails_on_missing_svid() {
    let certs = parse_certs(FE_CERTS).unwrap();
    let leaf = &certs[0].cert_chain[0];
    let (from, to) = (leaf.valid_from.unwrap(), leaf.expiration_time.unwrap());
    let w = frontend();
    assert_eq!(checks::check_identity(&w, &certs, recorded_now(), &show, &GenericHints).status, CheckStatus::Pass);
    let late = to - (to - from) / 20; // 5% left
    let r = checks::check_identity(&w, &certs, late, &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Warn, "{r:#?}");
    assert!(r.hint.unwrap().contains("rotated"));
    let r = checks::check_identity(&w, &certs, to + time::Duration::seconds(1), &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.observed.contains("expired at"), "{}", r.observed);
    // Another workload's SVID is not ours.
    let r = checks::check_identity(&appserver(), &certs, recorded_now(), &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.observed.contains(&id("frontend")) && r.hint.as_deref().unwrap().contains("entry show"));
    // Nothing loaded.
    let r = checks::check_identity(&w, &[], recorded_now(), &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.observed.contains("no certificate chain loaded") && r.observed.contains("no CA certificate loaded"));
}

#[test]
fn san_mismatch_fails_peers_naming_both_ids() {
    let tls = parse_config_dump(MISMATCH_APP_CONFIG).unwrap();
    let r = checks::check_peers(&appserver(), &tls, &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    let hint = r.hint.unwrap();
    assert!(hint.contains(&id("intruder")) && hint.contains(&id("frontend")), "{hint}");
    assert!(r.observed.contains(&id("intruder")));
    assert!(r.expected.contains(&id("frontend")));
}

/// The port of the recorded frontend's entry listener (the one that routes to its egress
/// cluster), as a backend's port: what meshctl's egress listeners look like.
fn entry_port(tls: &TlsConfig) -> u16 {
    tls.routes.iter().find(|r| r.clusters.iter().any(|c| c == FE_EGRESS)).map(|r| r.port).unwrap()
}

#[test]
fn egress_clusters_are_found_by_what_they_do_not_by_their_name() {
    let tls = parse_config_dump(FE_CONFIG).unwrap();
    // Renamed backend, same identity: found by the SAN its cluster requires.
    let mut w = frontend();
    w.backends[0].name = "something-else".into();
    let found: Vec<&str> = checks::clusters_for_backend(&tls, &w.backends[0]).iter().map(|c| c.name.as_str()).collect();
    assert_eq!(found, [FE_EGRESS]);
    assert_eq!(checks::check_peers(&w, &tls, &show, &GenericHints).status, CheckStatus::Pass);
    // Wrong SAN but the egress listener on the backend's port routes to it: found, and its
    // wrong SAN is what fails.
    let mut w = frontend();
    w.backends[0].spiffe_id = id("other");
    w.backends[0].port = entry_port(&tls);
    let found: Vec<&str> = checks::clusters_for_backend(&tls, &w.backends[0]).iter().map(|c| c.name.as_str()).collect();
    assert_eq!(found, [FE_EGRESS]);
}

#[test]
fn peers_fail_for_wrong_backend_id_and_missing_or_plain_egress() {
    let tls = parse_config_dump(FE_CONFIG).unwrap();
    let mut w = frontend();
    w.backends[0].spiffe_id = id("yelbapp");
    w.backends[0].port = entry_port(&tls);
    let r = checks::check_peers(&w, &tls, &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.hint.as_deref().unwrap().contains(&id("yelbapp")) && r.hint.as_deref().unwrap().contains(&id("appserver")));
    let mut w = frontend();
    w.backends[0].name = "redis-server".into();
    w.backends[0].spiffe_id = id("redis");
    w.backends[0].port = 6379;
    let r = checks::check_peers(&w, &tls, &show, &GenericHints);
    assert!(r.observed.contains("no egress cluster for backend redis-server"), "{}", r.observed);
    // The listener on the backend's port routes to a cluster without TLS.
    let mut plain = tls.clone();
    let egress = plain.clusters.remove(0);
    plain.plain_clusters.push(egress.name);
    let mut w = frontend();
    w.backends[0].port = entry_port(&tls);
    let r = checks::check_peers(&w, &plain, &show, &GenericHints);
    assert!(r.observed.contains("does not originate TLS"), "{}", r.observed);
    // A workload that must accept callers but terminates no TLS.
    let mut w = frontend();
    w.allowed_callers = vec![id("x")];
    let r = checks::check_peers(&w, &tls, &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.observed.contains("no listener terminates TLS"));
}

#[test]
fn handshakes_must_rise_with_traffic() {
    let w = frontend();
    let tls = parse_config_dump(FE_CONFIG).unwrap();
    let subjects = checks::subjects(&w, &tls);
    assert_eq!(subjects.len(), 1);
    let before = parse_stats(FE_STATS_TXT).unwrap();
    // no traffic: 3 > 0 passes; zero warns
    assert_eq!(checks::check_handshakes(&w, &subjects, &before, None, &show).status, CheckStatus::Pass);
    let r = checks::check_handshakes(&w, &subjects, &Stats::default(), None, &show);
    assert_eq!(r.status, CheckStatus::Warn);
    assert!(r.hint.unwrap().contains("--traffic"));
    // traffic that did not raise the counter fails
    let r = checks::check_handshakes(&w, &subjects, &before, Some(&before), &show);
    assert_eq!(r.status, CheckStatus::Fail);
    // risen
    let mut after = before.clone();
    *after.0.get_mut(&format!("cluster.{FE_EGRESS}.ssl.handshake")).unwrap() += 3;
    let r = checks::check_handshakes(&w, &subjects, &before, Some(&after), &show);
    assert_eq!(r.status, CheckStatus::Pass);
    assert!(r.observed.contains("3 → 6"), "{}", r.observed);
    assert_eq!(r.counters.values().copied().collect::<Vec<_>>(), vec![6]);
    // requests over a pooled connection: warn, not fail
    let mut pooled = before.clone();
    *pooled.0.get_mut(&format!("cluster.{FE_EGRESS}.upstream_rq_total")).unwrap() += 3;
    let r = checks::check_handshakes(&w, &subjects, &before, Some(&pooled), &show);
    assert_eq!(r.status, CheckStatus::Warn, "{r:#?}");
    // the recorded SAN mismatch: frontend counters 3 → 3 with connection errors
    let mismatch = parse_stats(MISMATCH_FE_STATS).unwrap();
    assert_eq!(checks::check_handshakes(&w, &subjects, &before, Some(&mismatch), &show).status, CheckStatus::Fail);
    let r = checks::check_tls_failures(&w, &subjects, &before, Some(&mismatch), &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.observed.contains("ssl.connection_error: 0 → 3"), "{}", r.observed);
}

#[test]
fn tls_failures_fail_when_non_zero_or_rising_and_warn_when_old() {
    let w = appserver();
    let tls = parse_config_dump(MISMATCH_APP_CONFIG).unwrap();
    let subjects = checks::subjects(&w, &tls);
    let stats = parse_stats(MISMATCH_APP_STATS).unwrap();
    let r = checks::check_tls_failures(&w, &subjects, &stats, None, &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.observed.contains("ssl.fail_verify_san: 3"), "{}", r.observed);
    let hint = r.hint.unwrap();
    assert!(
        hint.contains("presented a SPIFFE ID") && hint.contains("spiffe://am-multi-account-mesh/"),
        "names what the side accepts: {hint}"
    );
    let r = checks::check_tls_failures(&w, &subjects, &stats, Some(&stats), &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Warn);
    let healthy = parse_stats(APP_STATS_TXT).unwrap();
    let tls_ok = parse_config_dump(APP_CONFIG).unwrap();
    let r = checks::check_tls_failures(&w, &checks::subjects(&w, &tls_ok), &healthy, None, &show, &GenericHints);
    assert_eq!(r.status, CheckStatus::Pass);
}

#[test]
fn unreachable_admin_fails_admin_and_skips_the_rest() {
    let e = || Err::<(), String>("connect 127.0.0.1:1: refused".into());
    let snap = Snapshot {
        clusters: e().map(|_| vec![]),
        certs: e().map(|_| vec![]),
        tls: e().map(|_| TlsConfig::default()),
        stats_before: e().map(|_| Stats::default()),
        stats_after: None,
    };
    let rs = checks::evaluate(&frontend(), &snap, recorded_now(), &show, &GenericHints);
    let st = statuses(&rs);
    assert_eq!(st[&CheckId::Admin], CheckStatus::Fail);
    for id in &CheckId::ALL[1..] {
        assert_eq!(st[id], CheckStatus::Skip);
    }
    // Only /certs failing skips only identity; the rest still runs.
    let mut snap = snapshot(FE_CLUSTERS_JSON, FE_CERTS, FE_CONFIG, FE_STATS_TXT);
    snap.certs = Err("GET /certs answered 503".into());
    let st = statuses(&checks::evaluate(&frontend(), &snap, recorded_now(), &show, &GenericHints));
    assert_eq!(st[&CheckId::Admin], CheckStatus::Warn);
    assert_eq!(st[&CheckId::Identity], CheckStatus::Skip);
    assert_eq!(st[&CheckId::Sds], CheckStatus::Pass);
    assert_eq!(st[&CheckId::Handshakes], CheckStatus::Pass);
}

// ------------------------------------------------------------------------------ report

fn mixed_report() -> Report {
    let now = recorded_now();
    let mut results =
        checks::evaluate(&frontend(), &snapshot(STOPPED_FE_CLUSTERS_TXT, FE_CERTS, FE_CONFIG, FE_STATS_TXT), now, &show, &GenericHints);
    results.extend(checks::evaluate(
        &appserver(),
        &snapshot(APP_CLUSTERS_JSON, APP_CERTS, MISMATCH_APP_CONFIG, MISMATCH_APP_STATS),
        now,
        &show,
        &GenericHints,
    ));
    Report { results, ..Report::default() }
}

#[test]
fn report_renders_text_grouped_with_symbols_and_hints() {
    let r = mixed_report();
    assert!(!r.passed());
    let mut fails = r.failures();
    fails.sort();
    assert_eq!(
        fails,
        vec![
            ("appserver".to_string(), CheckId::Peers),
            ("appserver".to_string(), CheckId::TlsFailures),
            ("frontend".to_string(), CheckId::Sds),
        ]
    );
    let text = r.render_text(false);
    assert!(text.starts_with("frontend\n--------\nfrontend\n"), "{text}");
    assert!(text.contains("\nbackend\n-------\nappserver\n"), "{text}");
    assert!(text.contains("  ✖ SDS cluster to the SPIRE agent socket"), "{text}");
    assert!(text.contains("  ✔ Envoy holds the SVID spiffe://am-multi-account-mesh/frontend"), "{text}");
    assert!(text.contains("      hint: the SPIRE agent socket"), "{text}");
    assert!(text.contains("verify FAILED: 8 passed, 1 warnings, 3 failed, 0 skipped"), "{text}");
    let colored = r.render_text(true);
    assert!(colored.contains("\x1b[31m✖\x1b[0m"));
}

#[test]
fn report_json_lines_have_one_object_per_check_and_a_summary() {
    let r = mixed_report();
    let lines = r.to_json_lines();
    assert_eq!(lines.len(), r.results.len() + 1);
    let sds = &lines[1];
    assert_eq!(sds["workload"], "frontend");
    assert_eq!(sds["cluster"], "frontend");
    assert_eq!(sds["check"], "sds");
    assert_eq!(sds["status"], "fail");
    assert!(sds["hint"].as_str().unwrap().contains("spire-agent"));
    assert!(sds["expected"].as_str().unwrap().contains("cx_active ≥ 1"));
    let last = lines.last().unwrap();
    assert_eq!(last["summary"], serde_json::json!({"passed": 8, "warned": 1, "failed": 3, "skipped": 0}));
    for l in &lines {
        serde_json::to_string(l).unwrap();
    }
}

#[test]
fn report_junit_has_a_suite_per_workload_and_failures_with_hints() {
    let r = mixed_report();
    let x = r.to_junit();
    assert!(x.starts_with("<?xml"));
    assert!(x.contains("<testsuites name=\"meshctl verify\" tests=\"12\" failures=\"3\" skipped=\"0\">"), "{x}");
    assert!(x.contains("<testsuite name=\"frontend/frontend\" tests=\"6\" failures=\"1\""), "{x}");
    assert!(x.contains("<testsuite name=\"backend/appserver\" tests=\"6\" failures=\"2\""), "{x}");
    assert_eq!(x.matches("<testcase ").count(), 12);
    assert_eq!(x.matches("<failure ").count(), 3);
    assert!(x.contains("type=\"peers\""));
    // hint text is escaped
    assert!(x.contains("curl -s &apos;http://admin/config_dump&apos;"), "{x}");
    assert!(!x.contains("'http://admin"));
    assert_eq!(report::xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
}

// ------------------------------------------------------------------------------ flags and run

#[test]
fn default_args_match_the_flag_defaults() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        v: VerifyArgs,
    }
    let parsed = Cli::parse_from(["verify"]).v;
    let d = VerifyArgs::default();
    assert_eq!((parsed.requests, parsed.timeout.as_str()), (d.requests, d.timeout.as_str()));
    assert_eq!(parse_duration(&d.timeout).unwrap(), std::time::Duration::from_secs(30));
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("30s").unwrap(), std::time::Duration::from_secs(30));
    assert_eq!(parse_duration("2m").unwrap(), std::time::Duration::from_secs(120));
    assert_eq!(parse_duration("500ms").unwrap(), std::time::Duration::from_millis(500));
    assert_eq!(parse_duration("1h").unwrap(), std::time::Duration::from_secs(3600));
    assert_eq!(parse_duration("15").unwrap(), std::time::Duration::from_secs(15));
    for bad in ["", "s", "3x", "-1s", "0s"] {
        assert!(matches!(parse_duration(bad), Err(VerifyError::Usage(_))), "{bad}");
    }
}

#[test]
fn admin_flags_pick_named_workloads() {
    let ws = vec![frontend(), appserver()];
    let pairs = admin_transports(&["appserver=http://127.0.0.1:19001".into(), "frontend=http://127.0.0.1:19000/".into()], &ws).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].0.name, "appserver");
    assert_eq!(pairs[0].1.describe(), "http://127.0.0.1:19001");
    assert_eq!(pairs[1].1.show_command("/certs"), "curl -s 'http://127.0.0.1:19000/certs'");
    let e = admin_transports(&["db=http://x:1".into()], &ws).err().unwrap().to_string();
    assert!(e.contains("unknown workload \"db\"") && e.contains("frontend, appserver"), "{e}");
    assert!(admin_transports(&["frontend".into()], &ws).is_err());
    assert!(admin_transports(&["frontend=https://x:1".into()], &ws).is_err());
    assert!(admin_transports(&["frontend=http://a:1".into(), "frontend=http://b:1".into()], &ws).is_err());
}

/// Serves recorded bodies by path.
struct FakeAdmin(BTreeMap<&'static str, &'static str>);

#[async_trait::async_trait]
impl AdminTransport for FakeAdmin {
    async fn get(&self, path: &str) -> Result<String, VerifyError> {
        self.0
            .get(path)
            .map(|s| s.to_string())
            .ok_or_else(|| VerifyError::Admin { target: "fake".into(), message: format!("GET {path} answered 404") })
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}

#[tokio::test]
async fn run_reads_every_workload_and_writes_junit() {
    let fe = FakeAdmin(BTreeMap::from([
        (CLUSTERS_PATH, STOPPED_FE_CLUSTERS_JSON),
        (CERTS_PATH, FE_CERTS),
        (CONFIG_DUMP_PATH, FE_CONFIG),
        (STATS_PATH, FE_STATS_TXT),
    ]));
    let dead = FakeAdmin(BTreeMap::new());
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("verify.xml");
    let args = VerifyArgs { junit: Some(junit.clone()), timeout: "5s".into(), ..VerifyArgs::default() };
    let report = run(&args, vec![(frontend(), Box::new(fe)), (appserver(), Box::new(dead))], &GenericHints).await.unwrap();
    assert_eq!(report.results.len(), 12);
    assert_eq!(report.get("frontend", CheckId::Sds).unwrap().status, CheckStatus::Fail);
    assert_eq!(report.get("appserver", CheckId::Admin).unwrap().status, CheckStatus::Fail);
    assert_eq!(report.get("appserver", CheckId::Peers).unwrap().status, CheckStatus::Skip);
    assert_eq!(report.targets["frontend"], "fake");
    let x = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(x, report.to_junit());
    // --traffic without a URL is a usage error
    let args = VerifyArgs { traffic: true, timeout: "5s".into(), ..VerifyArgs::default() };
    let e = run(&args, vec![(frontend(), Box::new(FakeAdmin(BTreeMap::new())))], &GenericHints).await.err().unwrap();
    assert!(matches!(e, VerifyError::Usage(_)));
}
