//! Property test over the configuration: no configuration reaches apply time broken.
//!
//! Configurations are generated as `meshctl.toml` text (regions, VPC CIDRs with odd prefixes
//! and overlaps, account and spoke names, cluster and stack names up to and past their
//! limits, node keys, services with ports, backends, protocols, labels, SPIFFE paths and
//! images, SPIRE TTLs, ports, sockets and releases, `[mesh.envoy]` ports and timeouts). For
//! each one, either
//!
//! - `Config::load` or the provider's validation (`Session::new`) refuses it with a
//!   `ConfigError` that names a key (exit 2, nothing contacted), or
//! - everything `up` computes offline succeeds and is acceptable to what receives it: the
//!   step graph builds; every stack spec renders with a valid stack name and parameters that
//!   meet the template's own constraints, subnets carved inside the VPC, IAM/EKS names within
//!   their limits; the SPIRE chart values render (release names, volume names, ports, mount
//!   paths, socket paths, durations as SPIRE reads them) and registration entries are
//!   distinct; every Envoy bootstrap renders with distinct listener addresses and every
//!   referenced cluster defined; the app manifests render, are decorated by the envoy
//!   provider, and are valid Kubernetes objects (names, labels, ports, containers, volumes,
//!   mounts) without two objects of one name in a cluster.
//!
//! The rules checked on the second branch are the ones AWS, Kubernetes, Helm, SPIRE and
//! Envoy apply themselves, written down here independently of meshctl's validation: a
//! configuration that passes validation and breaks one of them is a hole (an apply-time
//! failure instead of exit 2).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use toml::Table;

use meshctl::config::{Config, ConfigError};
use meshctl::mesh::envoy::{self, bootstrap};
use meshctl::names::{access_role_arn, spire_server_role_name};
use meshctl::phases::{self, stacks};
use meshctl::session::Session;
use meshctl::spire::{charts, entries};

// ------------------------------------------------------------------------ generators

/// Mostly a valid choice, sometimes an odd one.
fn mostly<T: std::fmt::Debug + Clone + 'static>(
    good: impl Strategy<Value = T> + 'static,
    odd: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![100 => good, 1 => odd].boxed()
}

fn s(v: &[&'static str]) -> BoxedStrategy<String> {
    select(v.to_vec()).prop_map(str::to_string).boxed()
}

fn opt<T: std::fmt::Debug + Clone + 'static>(st: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
    proptest::option::weighted(0.3, st).boxed()
}

fn region() -> BoxedStrategy<String> {
    mostly(
        s(&["us-east-2", "eu-west-1", "us-gov-west-1", "cn-north-1", "ap-southeast-4", "il-central-1"]),
        s(&["US-EAST-2", "us-east", "us-east-2a", "", "us--east-2", "useast2", " us-east-2", "us-east-2-"]),
    )
}

fn account_name() -> BoxedStrategy<String> {
    mostly(
        prop_oneof![
            6 => s(&["frontend", "backend", "analytics", "front", "back", "data", "x"]),
            2 => "[a-z][a-z0-9-]{0,14}[a-z0-9]".boxed(),
            1 => "[a-z]{46,58}".boxed(),
        ],
        s(&["Bad", "-x", "a_b", "", "x-", "shared"]),
    )
}

fn cluster_name() -> BoxedStrategy<String> {
    mostly(
        prop_oneof![4 => "[a-z][a-z0-9-]{0,20}", 1 => "[a-zA-Z0-9][a-zA-Z0-9_-]{45,56}"],
        s(&["-x", "a.b", "", "_x", "eks-cluster-frontend", "eks-cluster-shared"]),
    )
}

fn stack_name() -> BoxedStrategy<String> {
    mostly(prop_oneof![4 => "[a-zA-Z][a-zA-Z0-9-]{0,30}", 1 => "[a-zA-Z][a-zA-Z0-9-]{60,127}"], s(&["1stack", "a_b", "", "a.b"]))
}

fn cidr() -> BoxedStrategy<String> {
    let net = |first: Vec<u8>, prefix: BoxedStrategy<u8>| {
        (select(first), 0u8..=255, 0u8..=255, prefix).prop_map(|(a, b, c, p)| {
            let ip = u32::from_be_bytes([a, b, c, 0]);
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            format!("{}/{p}", std::net::Ipv4Addr::from(ip & mask))
        })
    };
    mostly(
        prop_oneof![12 => net(vec![10, 10, 10, 172, 192, 100, 11], (16u8..=24).boxed()), 1 => (1u8..=9).prop_map(|n| format!("10.{n}.0.0/16"))],
        prop_oneof![
            net(vec![10, 0, 127, 169, 224, 250, 172], prop_oneof![8u8..=15, 25u8..=30].boxed()),
            net(vec![0, 127, 169, 224, 250], (16u8..=24).boxed()),
            s(&["10.1.0.0", "10.1.0.1/16", "10.1.0.0/16/1", "abc", "", "300.1.0.0/16"]),
        ],
    )
}

fn port() -> BoxedStrategy<i64> {
    mostly(
        prop_oneof![3 => select(vec![80i64, 443, 4567, 5432, 6379, 8081, 9090, 3000]), 1 => 1i64..=65535],
        select(vec![0i64, 65536, -1, 8080, 10250, 15443, 9901, 15021]),
    )
}

fn ttl(good: &[&'static str]) -> BoxedStrategy<String> {
    mostly(
        s(good),
        s(&["0h", "30s", "", "1d", "1.5h", "99999999999999999h", "2562048h", "1000000h", "18446744073709551615s", "h", "24h", "1h"]),
    )
}

fn socket() -> BoxedStrategy<String> {
    mostly(
        s(&["/run/spire/sockets/agent.sock", "/run/spire/agent-sockets/api.sock", "/tmp/spire-server/private/api.sock"]),
        prop_oneof![
            s(&[
                "",
                "agent.sock",
                "/agent.sock",
                "/etc/envoy/agent.sock",
                "/run/spire/config/agent.sock",
                "/run/spire/data/api.sock",
                "/etc/agent.sock",
                "/run/spire/sockets/",
                "/run/spire/so ckets/agent.sock"
            ]),
            "/[a-z]{100,120}/agent\\.sock".boxed(),
        ],
    )
}

fn image() -> BoxedStrategy<String> {
    mostly(
        s(&[
            "docker.io/x/app:1.0",
            "registry.example.com:5000/team/app:2",
            "ghcr.io/o/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ]),
        s(&["nope", "", "x/y:", "a b:1"]),
    )
}

fn namespace(good: &[&'static str]) -> BoxedStrategy<String> {
    mostly(prop_oneof![3 => s(good), 1 => "[a-z][a-z0-9-]{0,20}[a-z0-9]".boxed()], s(&["spire", "yelb", "Bad", "", "a.b", "kube-system"]))
}

fn release() -> BoxedStrategy<String> {
    mostly(prop_oneof![4 => s(&["spire-server", "spire-agent", "r"]), 1 => "[a-z]{50,56}".boxed()], s(&["Bad", "", "-r"]))
}

#[derive(Debug, Clone)]
struct GenAccount {
    name: Option<String>,
    profile: Option<String>,
    cluster_name: Option<String>,
    stack_name: Option<String>,
    vpc_cidr: Option<String>,
    kubernetes_version: Option<String>,
    instance_type: Option<String>,
    node_count: Option<i64>,
    disk_size: Option<i64>,
    kube_context: Option<String>,
    psat_cluster: Option<String>,
    agent_service_account: Option<String>,
    kubeconfig_configmap: Option<String>,
    kubeconfig_key: Option<String>,
    access_role_name: Option<String>,
}

fn account(hub: bool) -> impl Strategy<Value = GenAccount> {
    let name = if hub { opt(account_name()) } else { account_name().prop_map(Some).boxed() };
    let spoke_only = |st: BoxedStrategy<String>| if hub { Just(None).boxed() } else { opt(st) };
    (
        (name, opt(mostly("[a-z][a-z0-9-]{3,12}", s(&["shared", "frontend", "a b"]))), opt(cluster_name()), opt(stack_name()), opt(cidr())),
        (
            opt(mostly(s(&["1.32", "1.33", "1.34", "1.35"]), s(&["1.29", "1.34.4", "", "v1.34"]))),
            opt(mostly(s(&["t3.medium", "m7g.2xlarge", "u-6tb1.112xlarge", "c5n.18xlarge"]), s(&["t3", "T3.medium", "", "t3.medium.x"]))),
            opt(mostly(1i64..=100, select(vec![0i64, 101, 4_294_967_296, -1]))),
            opt(mostly(20i64..=16384, select(vec![0i64, 19, 16385, -5]))),
            opt(mostly("ctx-[a-z]{6}", s(&["", "shared", "frontend"]))),
        ),
        (
            spoke_only(mostly("[a-z][a-z_-]{2,8}[0-9]", s(&["Bad", "a.b", "", "frontend-k8s-cluster"]))),
            spoke_only(mostly("(spire-agent-|agents\\.)[a-z]{4,8}", s(&["Bad", "", "spire-agent-front"]))),
            spoke_only(mostly("(kubeconfig-|kc\\.)[a-z]{4,8}", s(&["Bad_", "", "front-kubeconfig"]))),
            spoke_only(mostly(s(&["frontend.conf", "kc", "a_b-c.conf"]), s(&[".", "..", "..x", "a/b", ""]))),
            spoke_only(mostly(prop_oneof!["[A-Za-z][A-Za-z0-9+=,.@_-]{0,20}", "[a-z]{60,64}"], s(&["", "a b", "a/b"]))),
        ),
    )
        .prop_map(
            |(
                (name, profile, cluster_name, stack_name, vpc_cidr),
                (kubernetes_version, instance_type, node_count, disk_size, kube_context),
                (psat_cluster, agent_service_account, kubeconfig_configmap, kubeconfig_key, access_role_name),
            )| GenAccount {
                name,
                profile,
                cluster_name,
                stack_name,
                vpc_cidr,
                kubernetes_version,
                instance_type,
                node_count,
                disk_size,
                kube_context,
                psat_cluster,
                agent_service_account,
                kubeconfig_configmap,
                kubeconfig_key,
                access_role_name,
            },
        )
}

#[derive(Debug, Clone)]
struct GenService {
    name: String,
    /// Index into the spokes (modulo their number), or a name that is no spoke.
    account: Result<usize, String>,
    spiffe_path: Option<String>,
    app_label: Option<String>,
    tier_label: Option<String>,
    port: i64,
    protocol: Option<String>,
    /// Indices into the services (modulo their number).
    backends: Vec<usize>,
    load_balancer_port: Option<i64>,
    image: Option<String>,
}

fn label_value() -> BoxedStrategy<String> {
    mostly(
        prop_oneof![3 => s(&["frontend", "middletier", "cache", "batch", "v1.2"]), 1 => "[a-z]([a-z0-9.-]{0,10}[a-z0-9])?".boxed()],
        prop_oneof![s(&["Upper_Case", "a..b", "", "-x"]), "[a-z]{30}\\.[a-z]{30}\\.[a-z]{10}".boxed()],
    )
}

fn service() -> impl Strategy<Value = GenService> {
    (
        mostly(
            prop_oneof![4 => s(&["yelb-ui", "yelb-appserver", "yelb-db", "redis-server", "api", "worker"]), 1 => "[a-z][a-z0-9-]{0,10}[a-z0-9]".boxed(), 1 => "[a-z]{55,63}".boxed()],
            s(&["envoy", "1db", "x-public", "Bad", ""]),
        ),
        mostly((0usize..4).prop_map(Ok), s(&["shared", "nowhere"]).prop_map(Err)),
        opt(mostly("[a-z]{2,6}(/[a-z_.]{2,6})?", s(&["spire/server", "spire/agent/x", "ns/spire/sa/spire-agent-front", "a//b", "../x", "", "frontend", "yelbapp"]))),
        opt(label_value()),
        opt(label_value()),
        port(),
        opt(mostly(s(&["http", "tcp"]), s(&["udp"]))),
        proptest::collection::vec(1usize..6, 0..3),
        opt(port()),
        proptest::option::weighted(0.97, image()),
    )
        .prop_map(|(name, account, spiffe_path, app_label, tier_label, port, protocol, backends, load_balancer_port, image)| GenService {
            name,
            account,
            spiffe_path,
            app_label,
            tier_label,
            port,
            protocol,
            backends,
            load_balancer_port,
            image,
        })
}

/// `[mesh.envoy]`: inbound_port, admin_port, health_port, image, load_balancer_timeout_seconds.
type GenEnvoy = (Option<i64>, Option<i64>, Option<i64>, Option<String>, Option<i64>);
/// `[spire]`: svid_ttl, ca_ttl, server_port, agent_health_port, server_release, agent_release.
type GenSpire = (Option<String>, Option<String>, Option<i64>, Option<i64>, Option<String>, Option<String>);
/// `[spire]`: agent_socket, server_socket, namespace, server_image, server_address, server_binary.
type GenSpireMore = (Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

#[derive(Debug, Clone)]
struct Gen {
    region: Option<String>,
    mesh: (Option<String>, Option<String>, Option<String>),
    envoy: GenEnvoy,
    network: (Option<String>, Option<String>),
    spire: GenSpire,
    spire_more: GenSpireMore,
    hub: GenAccount,
    spokes: Vec<GenAccount>,
    services: Option<Vec<GenService>>,
}

fn config() -> impl Strategy<Value = Gen> {
    (
        opt(region()),
        (
            opt(mostly(s(&["envoy"]), s(&["appmesh", "linkerd"]))),
            opt(mostly(s(&["example.org", "am-multi-account-mesh", "td_1.x"]), s(&["Bad", "spiffe://x", ""]))),
            opt(namespace(&["yelb", "apps", "mesh"])),
        ),
        (
            opt(port()),
            opt(port()),
            opt(port()),
            opt(mostly(s(&["docker.io/envoyproxy/envoy:v1.40.0"]), s(&["docker.io/envoyproxy/envoy"]))),
            opt(mostly(1i64..=3600, select(vec![0i64, i64::MAX, -1]))),
        ),
        (
            opt(mostly(
                prop_oneof![s(&["tgw-shared", "my tgw"]), "[a-z]{250,256}".boxed()],
                prop_oneof![s(&[""]), "[a-z]{257,300}".boxed()],
            )),
            opt(mostly(
                prop_oneof![s(&["multi-account-tgw-share", "share"]), "[a-z]{250,255}".boxed()],
                prop_oneof![s(&[""]), "[a-z]{256,300}".boxed()],
            )),
        ),
        (
            opt(ttl(&["1h", "30m", "90m", "2h", "45m", "1h30m"])),
            opt(ttl(&["24h", "168h", "8760h", "12h"])),
            opt(port()),
            opt(port()),
            opt(release()),
            opt(release()),
        ),
        (
            opt(socket()),
            opt(socket()),
            opt(namespace(&["spire", "spire-system", "identity"])),
            opt(mostly(
                s(&["ghcr.io/spiffe/spire-server:1.13.3", "ghcr.io/spiffe/spire-agent:1.13.3"]),
                s(&["ghcr.io/spiffe/spire-server", ""]),
            )),
            opt(mostly(s(&["10.0.1.5", "spire.example.com", "spire-server.spire.svc"]), s(&["", "http://x:8081", "a b", "x:8081"]))),
            opt(mostly(s(&["/opt/spire/bin/spire-server"]), s(&["spire-server", ""]))),
        ),
        account(true),
        proptest::collection::vec(account(false), 1..=4),
        proptest::option::weighted(0.95, proptest::collection::vec(service(), 1..=6)),
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(region, mesh, envoy, network, spire, spire_more, hub, mut spokes, mut services, keep_duplicates)| {
            // Mostly distinct spoke names (a duplicate is refused at once, which is tested, but
            // would hide everything after it).
            if !keep_duplicates {
                let mut seen = BTreeSet::new();
                for (i, a) in spokes.iter_mut().enumerate() {
                    if let Some(n) = &mut a.name {
                        if !seen.insert(n.clone()) {
                            n.push_str(&format!("-{i}"));
                        }
                    }
                }
                let mut seen = BTreeSet::new();
                for (i, sv) in services.iter_mut().flatten().enumerate() {
                    if !seen.insert(sv.name.clone()) {
                        sv.name.push_str(&format!("-{i}"));
                    }
                }
            }
            Gen { region, mesh, envoy, network, spire, spire_more, hub, spokes, services }
        })
}

// ------------------------------------------------------------------------ TOML

fn put<V: Into<toml::Value>>(t: &mut Table, key: &str, v: Option<V>) {
    if let Some(v) = v {
        t.insert(key.to_string(), v.into());
    }
}

fn account_table(a: &GenAccount) -> Table {
    let mut t = Table::new();
    put(&mut t, "name", a.name.clone());
    put(&mut t, "profile", a.profile.clone());
    put(&mut t, "cluster_name", a.cluster_name.clone());
    put(&mut t, "stack_name", a.stack_name.clone());
    put(&mut t, "vpc_cidr", a.vpc_cidr.clone());
    put(&mut t, "kubernetes_version", a.kubernetes_version.clone());
    put(&mut t, "instance_type", a.instance_type.clone());
    put(&mut t, "node_count", a.node_count);
    put(&mut t, "disk_size", a.disk_size);
    put(&mut t, "kube_context", a.kube_context.clone());
    put(&mut t, "psat_cluster", a.psat_cluster.clone());
    put(&mut t, "agent_service_account", a.agent_service_account.clone());
    put(&mut t, "kubeconfig_configmap", a.kubeconfig_configmap.clone());
    put(&mut t, "kubeconfig_key", a.kubeconfig_key.clone());
    put(&mut t, "access_role_name", a.access_role_name.clone());
    t
}

fn to_toml(g: &Gen) -> String {
    let mut root = Table::new();
    put(&mut root, "region", g.region.clone());
    let mut mesh = Table::new();
    put(&mut mesh, "provider", g.mesh.0.clone());
    put(&mut mesh, "trust_domain", g.mesh.1.clone());
    put(&mut mesh, "app_namespace", g.mesh.2.clone());
    let mut env = Table::new();
    put(&mut env, "inbound_port", g.envoy.0);
    put(&mut env, "admin_port", g.envoy.1);
    put(&mut env, "health_port", g.envoy.2);
    put(&mut env, "image", g.envoy.3.clone());
    put(&mut env, "load_balancer_timeout_seconds", g.envoy.4);
    if !env.is_empty() {
        mesh.insert("envoy".into(), env.into());
    }
    root.insert("mesh".into(), mesh.into());
    let mut net = Table::new();
    put(&mut net, "tgw_name", g.network.0.clone());
    put(&mut net, "tgw_share", g.network.1.clone());
    root.insert("network".into(), net.into());
    let mut sp = Table::new();
    put(&mut sp, "svid_ttl", g.spire.0.clone());
    put(&mut sp, "ca_ttl", g.spire.1.clone());
    put(&mut sp, "server_port", g.spire.2);
    put(&mut sp, "agent_health_port", g.spire.3);
    put(&mut sp, "server_release", g.spire.4.clone());
    put(&mut sp, "agent_release", g.spire.5.clone());
    put(&mut sp, "agent_socket", g.spire_more.0.clone());
    put(&mut sp, "server_socket", g.spire_more.1.clone());
    put(&mut sp, "namespace", g.spire_more.2.clone());
    put(&mut sp, "server_image", g.spire_more.3.clone());
    put(&mut sp, "server_address", g.spire_more.4.clone());
    put(&mut sp, "server_binary", g.spire_more.5.clone());
    root.insert("spire".into(), sp.into());
    root.insert("hub".into(), account_table(&g.hub).into());
    let spokes: Vec<toml::Value> = g.spokes.iter().map(|a| account_table(a).into()).collect();
    root.insert("spokes".into(), spokes.into());
    if let Some(services) = &g.services {
        let spoke_names: Vec<String> = g.spokes.iter().map(|a| a.name.clone().unwrap_or_default()).collect();
        let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
        let list: Vec<toml::Value> = services
            .iter()
            .map(|sv| {
                let mut t = Table::new();
                t.insert("name".into(), sv.name.clone().into());
                let account = match &sv.account {
                    Ok(i) => spoke_names[i % spoke_names.len()].clone(),
                    Err(n) => n.clone(),
                };
                t.insert("account".into(), account.into());
                put(&mut t, "spiffe_path", sv.spiffe_path.clone());
                put(&mut t, "app_label", sv.app_label.clone());
                put(&mut t, "tier_label", sv.tier_label.clone());
                t.insert("port".into(), sv.port.into());
                put(&mut t, "protocol", sv.protocol.clone());
                // offsets from the service itself: never itself, unless there is only one
                let me = names.iter().position(|n| n == &sv.name).unwrap_or_default();
                let picked: BTreeSet<usize> = sv.backends.iter().map(|i| (me + i) % names.len()).filter(|b| *b != me).collect();
                let backends: Vec<toml::Value> = picked.into_iter().map(|b| names[b].clone().into()).collect();
                t.insert("backends".into(), backends.into());
                put(&mut t, "load_balancer_port", sv.load_balancer_port);
                put(&mut t, "image", sv.image.clone());
                t.into()
            })
            .collect();
        root.insert("services".into(), list.into());
    }
    toml::to_string(&root).expect("generated TOML serializes")
}

// ------------------------------------------------------------------------ the rules of what receives the configuration

type Check = Result<(), String>;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// A compiled pattern, compiled once per thread.
fn re(pattern: &str) -> regex::Regex {
    thread_local! {
        static CACHE: std::cell::RefCell<BTreeMap<String, regex::Regex>> = const { std::cell::RefCell::new(BTreeMap::new()) };
    }
    CACHE.with(|c| {
        c.borrow_mut().entry(pattern.to_string()).or_insert_with(|| regex::Regex::new(pattern).expect("pattern compiles")).clone()
    })
}

/// RFC 1123 label (most Kubernetes names, volume and container names).
fn k8s_label(s: &str) -> bool {
    s.len() <= 63 && re("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").is_match(s)
}

/// RFC 1035 label (Service names).
fn k8s_1035(s: &str) -> bool {
    s.len() <= 63 && re("^[a-z]([-a-z0-9]*[a-z0-9])?$").is_match(s)
}

/// RFC 1123 subdomain as Kubernetes checks it (ConfigMap, Deployment names): at most 253
/// characters, dot-separated parts of lowercase letters, digits and '-' (no per-part limit).
fn k8s_subdomain(s: &str) -> bool {
    s.len() <= 253 && re("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").is_match(s)
}

fn k8s_label_value(s: &str) -> bool {
    s.len() <= 63 && re("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").is_match(s)
}

/// A port name (IANA_SVC_NAME): at most 15 lowercase letters, digits and '-', a letter among them.
fn port_name(s: &str) -> bool {
    s.len() <= 15 && re("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$").is_match(s) && !s.contains("--") && s.chars().any(|c| c.is_ascii_lowercase())
}

/// The longest duration Go's time.ParseDuration (SPIRE's) reads: 2562047h47m16.854775807s.
const GO_MAX_DURATION_SECS: u64 = 9_223_372_036;

/// A Go duration made of h/m/s units, in seconds, as SPIRE parses it.
fn go_duration(s: &str) -> Option<u64> {
    let caps = re("^(?:[0-9]+[hms])+$");
    if !caps.is_match(s) {
        return None;
    }
    let mut total: u128 = 0;
    for m in re("([0-9]+)([hms])").captures_iter(s) {
        let n: u128 = m[1].parse().ok()?;
        total += n * match &m[2] {
            "h" => 3600,
            "m" => 60,
            _ => 1,
        };
    }
    (total <= GO_MAX_DURATION_SECS as u128).then_some(total as u64)
}

fn ipv4_net(s: &str) -> Option<(u32, u32)> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    (len <= 32).then_some((u32::from(ip), len))
}

fn within(inner: (u32, u32), outer: (u32, u32)) -> bool {
    let mask = |l: u32| if l == 0 { 0 } else { u32::MAX << (32 - l) };
    inner.1 >= outer.1 && inner.0 & mask(outer.1) == outer.0 & mask(outer.1)
}

fn overlap(a: (u32, u32), b: (u32, u32)) -> bool {
    within(a, b) || within(b, a)
}

/// Ranges a VPC cannot use (CreateVpc refuses them or nothing routes there).
const NOT_FOR_A_VPC: [(u32, u32); 5] = [(0, 8), (0x7f00_0000, 8), (0xa9fe_0000, 16), (0xe000_0000, 4), (0xf000_0000, 4)];

/// A stack name CloudFormation accepts.
fn stack_name_ok(s: &str) -> bool {
    s.len() <= 128 && re("^[a-zA-Z][-a-zA-Z0-9]*$").is_match(s)
}

/// The stack's name and its parameters against the template's own Parameters section
/// (AllowedPattern, MinValue, MaxValue, Number type, every parameter given).
fn check_stack(spec: &meshctl::aws::cfn::StackSpec) -> Check {
    ensure(stack_name_ok(&spec.name), || format!("stack name {:?} is not one CloudFormation accepts", spec.name))?;
    let tpl: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&spec.body).map_err(|e| format!("{}: template does not parse: {e}", spec.name))?;
    let params = tpl["Parameters"].as_mapping().ok_or_else(|| format!("{}: no Parameters", spec.name))?;
    for (k, decl) in params {
        let k = k.as_str().unwrap_or_default();
        let value = match spec.params.get(k) {
            Some(v) => v.as_str(),
            None if decl.get("Default").is_some() => continue,
            None => return Err(format!("{}: parameter {k} has no value", spec.name)),
        };
        ensure(value.len() <= 4096, || format!("{}: parameter {k} is longer than 4096", spec.name))?;
        if let Some(p) = decl.get("AllowedPattern").and_then(|p| p.as_str()) {
            ensure(re(p).is_match(value), || format!("{}: parameter {k}={value:?} does not match {p}", spec.name))?;
        }
        if decl.get("Type").and_then(|t| t.as_str()) == Some("Number") {
            let n: f64 = value.parse().map_err(|_| format!("{}: parameter {k}={value:?} is not a number", spec.name))?;
            if let Some(min) = decl.get("MinValue").and_then(|v| v.as_f64()) {
                ensure(n >= min, || format!("{}: parameter {k}={n} < MinValue {min}", spec.name))?;
            }
            if let Some(max) = decl.get("MaxValue").and_then(|v| v.as_f64()) {
                ensure(n <= max, || format!("{}: parameter {k}={n} > MaxValue {max}", spec.name))?;
            }
        }
    }
    for k in spec.params.keys() {
        ensure(params.contains_key(k.as_str()), || format!("{}: parameter {k} is not in the template", spec.name))?;
    }
    Ok(())
}

fn iam_role(name: &str) -> Check {
    ensure(!name.is_empty() && name.len() <= 64 && re("^[\\w+=,.@-]+$").is_match(name), || {
        format!("IAM role name {name:?} (at most 64 of letters, digits, +=,.@_-)")
    })
}

/// The base stack's subnets: six, inside the VPC, not overlapping, /28 or larger.
fn check_subnets(spec: &meshctl::aws::cfn::StackSpec) -> Check {
    let vpc = ipv4_net(&spec.params["VpcCidr"]).ok_or("VpcCidr")?;
    let mut subnets = Vec::new();
    for key in ["PublicSubnetCidrs", "PrivateSubnetCidrs"] {
        for c in spec.params[key].split(',') {
            let n = ipv4_net(c).ok_or_else(|| format!("{key}: {c} is not a CIDR"))?;
            ensure(n.1 <= 28 && n.1 >= 16, || format!("{key}: {c} is not a subnet size AWS allows (/16 to /28)"))?;
            ensure(within(n, vpc), || format!("{key}: {c} is outside the VPC {}", spec.params["VpcCidr"]))?;
            ensure(!subnets.iter().any(|o| overlap(*o, n)), || format!("{key}: {c} overlaps another subnet"))?;
            subnets.push(n);
        }
    }
    ensure(subnets.len() == 6, || format!("{} subnets", subnets.len()))
}

/// What the hub base stack's Outputs hold (hub.yaml), as the per-spoke stacks read them.
fn hub_outputs() -> BTreeMap<String, String> {
    [
        ("TransitGatewayId", "tgw-0a1b2c3d4e5f60718"),
        ("PrivateRouteTableIds", "rtb-01,rtb-02,rtb-03"),
        ("ClusterSecurityGroupId", "sg-0123456789abcdef0"),
        ("VpcId", "vpc-0hub"),
        ("PrivateSubnetIds", "subnet-01,subnet-02,subnet-03"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// EKS's default Kubernetes service range for a cluster in this VPC: 172.20.0.0/16 when the
/// VPC is inside 10.0.0.0/8, else 10.100.0.0/16.
fn eks_service_range(vpc: (u32, u32)) -> (u32, u32) {
    if within(vpc, (0x0a00_0000, 8)) {
        (0xac14_0000, 16)
    } else {
        (0x0a64_0000, 16)
    }
}

fn aws_side(c: &Config) -> Check {
    let ids: BTreeMap<&str, String> =
        c.accounts().enumerate().map(|(i, a)| (a.name.as_str(), format!("{}", 100_000_000_000u64 + i as u64))).collect();
    let hub_id = &ids[c.hub.name.as_str()];
    let mut vpcs = Vec::new();
    let mut contexts = BTreeMap::new();
    for a in c.accounts() {
        let spec = stacks::base_spec(c, a, hub_id).map_err(|e| format!("base_spec {}: {}", a.name, e.chain()))?;
        check_stack(&spec)?;
        check_subnets(&spec)?;
        let vpc = ipv4_net(&a.vpc_cidr).ok_or("vpc")?;
        for bad in NOT_FOR_A_VPC {
            ensure(!overlap(vpc, bad), || format!("{}: VPC {} is in a range AWS does not give a VPC", a.name, a.vpc_cidr))?;
        }
        vpcs.push((a.name.clone(), vpc));
        iam_role(&format!("{}-node-role", a.cluster_name))?;
        ensure(format!("{}-nodes", a.cluster_name).len() <= 63, || format!("node group name {}-nodes is longer than 63", a.cluster_name))?;
        ensure(a.cluster_name.len() <= 100 && re("^[0-9A-Za-z][A-Za-z0-9\\-_]*$").is_match(&a.cluster_name), || {
            format!("EKS cluster name {:?}", a.cluster_name)
        })?;
        let ctx = a.kube_context.clone().unwrap_or_else(|| a.cluster_name.clone());
        if let Some(other) = contexts.insert(ctx.clone(), a.name.clone()) {
            return Err(format!("accounts {other} and {} both reach their cluster through kubeconfig context {ctx:?}", a.name));
        }
    }
    for (i, (na, a)) in vpcs.iter().enumerate() {
        for (nb, b) in &vpcs[i + 1..] {
            ensure(!overlap(*a, *b), || format!("VPCs of {na} and {nb} overlap"))?;
        }
        for (nb, b) in &vpcs {
            ensure(na == nb || !overlap(eks_service_range(*a), *b), || {
                format!("the Kubernetes service range of {na}'s cluster overlaps {nb}'s VPC: its pods could not reach it")
            })?;
        }
    }
    iam_role(&spire_server_role_name(&c.hub))?;
    iam_role(&format!("{}-ebs-csi-driver", c.hub.cluster_name))?;
    ensure(!c.network.tgw_name.is_empty() && c.network.tgw_name.len() <= 256, || {
        format!("TGW Name tag {:?} (a tag value has 1-256 characters here)", c.network.tgw_name)
    })?;
    ensure(!c.network.tgw_share.is_empty(), || format!("RAM share name {:?}", c.network.tgw_share))?;
    let hub_out = hub_outputs();
    for s in &c.spokes {
        iam_role(s.access_role_name())?;
        let peer =
            stacks::hub_peer_spec(c, s, &ids[s.name.as_str()], &hub_out).map_err(|e| format!("hub_peer_spec {}: {}", s.name, e.chain()))?;
        check_stack(&peer)?;
        let own = hub_outputs();
        let tgw = stacks::tgw_spec(c, s, &hub_out, &own).map_err(|e| format!("tgw_spec {}: {}", s.name, e.chain()))?;
        check_stack(&tgw)?;
        ensure(format!("assume-{}-access-role", s.name).len() <= 128, || "inline policy name".into())?;
    }
    Ok(())
}

/// Ports the kubelet, kube-proxy and the VPC CNI listen on, on every EKS node (the SPIRE
/// agent uses the node's network).
const NODE_PORTS: [u16; 7] = [10248, 10249, 10250, 10256, 50051, 61678, 61679];

/// What a unix socket path may be (sun_path holds 108 bytes with the terminating NUL).
fn socket_path_ok(p: &str) -> bool {
    p.starts_with('/') && !p.ends_with('/') && p.len() <= 107 && !p.chars().any(|c| c.is_whitespace() || c == '"')
}

fn dir_of(p: &str) -> String {
    std::path::Path::new(p).parent().map(|d| d.display().to_string()).unwrap_or_default()
}

fn spire_side(c: &Config) -> Check {
    let access: Vec<charts::SpokeAccess> =
        c.spokes.iter().map(|s| charts::SpokeAccess { spoke: s.clone(), access_role_arn: access_role_arn(c, s, "100000000001") }).collect();
    let v = charts::server_values(c, &access);
    serde_yaml_ng::to_string(&v).map_err(|e| format!("server values: {e}"))?;
    for r in [&c.spire.server_release, &c.spire.agent_release] {
        ensure(r.len() <= 53 && k8s_subdomain(r), || format!("helm release name {r:?} (at most 53 characters)"))?;
    }
    ensure(k8s_label(&c.spire.namespace), || "spire namespace".into())?;
    // the server container: gRPC on bindPort, health on the chart's 8080
    ensure(v["bindPort"].as_u64() != Some(8080), || "the SPIRE server's bind port is its health port (8080)".into())?;
    ensure(socket_path_ok(&c.spire.server_socket), || format!("server socket {:?}", c.spire.server_socket))?;
    ensure(c.spire.server_binary.starts_with('/'), || format!("server binary {:?}", c.spire.server_binary))?;
    let mut server_mounts =
        vec!["/run/spire/config".to_string(), "/run/spire/data".to_string(), dir_of(&c.spire.server_socket), charts::TOKEN_DIR.to_string()];
    let mut volumes = BTreeSet::from([
        "spire-config".to_string(),
        "spire-data".to_string(),
        "spire-server-socket".to_string(),
        "spoke-tokens".to_string(),
    ]);
    for cl in v["clusters"].as_array().unwrap() {
        let role = cl["role"].as_str().unwrap();
        let vol = format!("kubeconfig-{role}");
        ensure(k8s_label(&vol), || format!("server volume name {vol:?} is not a DNS label"))?;
        ensure(volumes.insert(vol.clone()), || format!("two server volumes {vol}"))?;
        server_mounts.push(format!("/etc/kubeconfig/{role}"));
    }
    let unique: BTreeSet<&String> = server_mounts.iter().collect();
    ensure(unique.len() == server_mounts.len(), || format!("two mounts at one path in the SPIRE server: {server_mounts:?}"))?;
    let mut psat = BTreeSet::new();
    let mut cms = BTreeSet::new();
    for s in &c.spokes {
        ensure(psat.insert(s.psat_cluster()), || format!("two spokes with psat cluster {}", s.psat_cluster()))?;
        ensure(cms.insert(s.kubeconfig_configmap()), || format!("two spokes write ConfigMap {} in the hub", s.kubeconfig_configmap()))?;
        ensure(k8s_subdomain(s.kubeconfig_configmap()), || "kubeconfig ConfigMap".into())?;
        let key = s.kubeconfig_key();
        ensure(key.len() <= 253 && re("^[-._a-zA-Z0-9]+$").is_match(key) && key != "." && key != ".." && !key.starts_with(".."), || {
            format!("ConfigMap key {key:?}")
        })?;
        ensure(k8s_subdomain(s.agent_service_account()), || "agent service account".into())?;
    }
    let svid = go_duration(&c.spire.svid_ttl).ok_or_else(|| format!("svid_ttl {:?} is not a duration SPIRE reads", c.spire.svid_ttl))?;
    let ca = go_duration(&c.spire.ca_ttl).ok_or_else(|| format!("ca_ttl {:?} is not a duration SPIRE reads", c.spire.ca_ttl))?;
    ensure(svid >= 60 && ca >= 2 * svid, || "TTLs".into())?;
    // the agent: host network, so its health port must be free on the node
    ensure(!NODE_PORTS.contains(&c.spire.agent_health_port) && c.spire.agent_health_port != 0, || {
        format!("agent health port {} is taken on every EKS node", c.spire.agent_health_port)
    })?;
    ensure(socket_path_ok(&c.spire.agent_socket), || format!("agent socket {:?}", c.spire.agent_socket))?;
    let sock_dir = dir_of(&c.spire.agent_socket);
    let agent_mounts = ["/run/spire/config", "/run/spire/bundle", "/run/spire/data", "/var/run/secrets/tokens", sock_dir.as_str()];
    let unique: BTreeSet<&&str> = agent_mounts.iter().collect();
    ensure(unique.len() == agent_mounts.len(), || format!("two mounts at one path in the SPIRE agent: {agent_mounts:?}"))?;
    ensure(
        sock_dir.len() > 1
            && ![
                "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/sys", "/dev", "/boot", "/var", "/run", "/root", "/home",
                "/tmp",
            ]
            .contains(&sock_dir.as_str()),
        || format!("agent socket directory {sock_dir} is a system directory of the node"),
    )?;
    for s in &c.spokes {
        serde_yaml_ng::to_string(&charts::agent_values(c, s, "10.0.0.9")).map_err(|e| format!("agent values: {e}"))?;
    }
    for img in [&c.spire.server_image, &c.spire.agent_image, &c.spire.token_refresher_image] {
        ensure(meshctl::config::is_image_ref(img), || format!("image {img:?} has no tag"))?;
    }
    if let Some(a) = &c.spire.server_address {
        ensure(a.parse::<std::net::IpAddr>().is_ok() || k8s_subdomain(a), || {
            format!("server address {a:?} is neither an IP address nor a DNS name")
        })?;
    }
    // registration entries: one SPIFFE ID each
    let mut ids = BTreeSet::from([entries::server_id(c)]);
    for s in &c.spokes {
        let e = entries::node_entry(c, s);
        ensure(ids.insert(e.spiffe_id.clone()), || format!("node entry {} is also another entry's", e.spiffe_id))?;
    }
    Ok(())
}

/// Listener addresses distinct, cluster names distinct, every cluster referenced defined.
fn check_bootstrap(b: &Value, app_port: u16) -> Check {
    let sr = &b["static_resources"];
    let mut bound: Vec<(String, u64)> = vec![("0.0.0.0".into(), app_port as u64)];
    let admin = &b["admin"]["address"]["socket_address"];
    bound.push((admin["address"].as_str().unwrap().to_string(), admin["port_value"].as_u64().unwrap()));
    let mut names = BTreeSet::new();
    for l in sr["listeners"].as_array().unwrap() {
        ensure(names.insert(l["name"].as_str().unwrap().to_string()), || format!("two listeners {}", l["name"]))?;
        let a = &l["address"]["socket_address"];
        bound.push((a["address"].as_str().unwrap().to_string(), a["port_value"].as_u64().unwrap()));
    }
    for (i, (ha, pa)) in bound.iter().enumerate() {
        ensure((1..=65535).contains(pa), || format!("port {pa}"))?;
        for (hb, pb) in &bound[i + 1..] {
            ensure(!(pa == pb && (ha == hb || ha == "0.0.0.0" || hb == "0.0.0.0")), || {
                format!("{ha}:{pa} and {hb}:{pb} cannot both be bound in one pod: {bound:?}")
            })?;
        }
    }
    let clusters: BTreeSet<String> = sr["clusters"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    ensure(clusters.len() == sr["clusters"].as_array().unwrap().len(), || "two clusters of one name".into())?;
    let text = sr.to_string();
    for m in re("\"(?:cluster|cluster_name)\":\"([^\"]+)\"").captures_iter(&text) {
        ensure(clusters.contains(&m[1]), || format!("cluster {} is referenced but not defined", &m[1]))?;
    }
    Ok(())
}

fn check_pod(what: &str, spec: &k8s_openapi::api::core::v1::PodSpec) -> Check {
    let volumes: BTreeSet<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    ensure(volumes.len() == spec.volumes.as_ref().map_or(0, Vec::len), || format!("{what}: two volumes of one name"))?;
    for v in &volumes {
        ensure(k8s_label(v), || format!("{what}: volume name {v:?}"))?;
    }
    let mut containers = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for c in &spec.containers {
        ensure(k8s_label(&c.name), || format!("{what}: container name {:?}", c.name))?;
        ensure(containers.insert(c.name.as_str()), || format!("{what}: two containers named {}", c.name))?;
        ensure(c.image.as_deref().is_some_and(meshctl::config::is_image_ref), || format!("{what}: image {:?}", c.image))?;
        let mut port_names = BTreeSet::new();
        for p in c.ports.iter().flatten() {
            ensure((1..=65535).contains(&p.container_port), || format!("{what}: container port {}", p.container_port))?;
            ensure(ports.insert(p.container_port), || format!("{what}: container port {} twice in the pod", p.container_port))?;
            if let Some(n) = &p.name {
                ensure(port_name(n) && port_names.insert(n.clone()), || format!("{what}: port name {n:?}"))?;
            }
        }
        let mut paths = BTreeSet::new();
        for m in c.volume_mounts.iter().flatten() {
            ensure(volumes.contains(m.name.as_str()), || format!("{what}: mount of unknown volume {}", m.name))?;
            ensure(m.mount_path.starts_with('/') && m.mount_path != "/", || format!("{what}: mount path {:?}", m.mount_path))?;
            ensure(paths.insert(m.mount_path.as_str()), || format!("{what}: container {} mounts two volumes at {}", c.name, m.mount_path))?;
        }
    }
    for h in spec.host_aliases.iter().flatten() {
        for n in h.hostnames.iter().flatten() {
            ensure(k8s_subdomain(n), || format!("{what}: host alias {n:?}"))?;
        }
    }
    Ok(())
}

fn check_labels(what: &str, labels: Option<&BTreeMap<String, String>>) -> Check {
    for (k, v) in labels.into_iter().flatten() {
        ensure(k8s_label_value(v), || format!("{what}: label {k}={v:?} is not a label value"))?;
    }
    Ok(())
}

fn app_side(session: &Session) -> Check {
    let c = &session.config;
    let topo = &session.topology;
    ensure(k8s_label(&topo.namespace), || "app namespace".into())?;
    ensure(topo.namespace != c.spire.namespace, || "the app namespace is SPIRE's: deleting the app would delete the agents".into())?;
    let mut ids: BTreeSet<String> = BTreeSet::from([entries::server_id(c)]);
    ids.extend(c.spokes.iter().map(|s| entries::node_entry(c, s).spiffe_id));
    let mut selectors: BTreeMap<(String, BTreeSet<String>), String> = BTreeMap::new();
    for w in &topo.workloads {
        let e = entries::workload_entry(c, w, session.mesh.workload_selectors(w, &topo.namespace))
            .ok_or_else(|| format!("no entry for {}", w.name))?;
        ensure(ids.insert(e.spiffe_id.clone()), || format!("workload {} has SPIFFE ID {}, which another entry has", w.name, e.spiffe_id))?;
        let path = e.spiffe_id.strip_prefix(&topo.bundle_id()).unwrap_or_default();
        ensure(path != "/spire" && !path.starts_with("/spire/"), || {
            format!("workload {}: {} is in SPIRE's own /spire namespace (its server and agents)", w.name, e.spiffe_id)
        })?;
        if let Some(other) = selectors.insert((e.parent_id.clone(), e.selectors.clone()), w.name.clone()) {
            return Err(format!("workloads {other} and {} have the same entry selectors: one pod would get both identities", w.name));
        }
    }
    if session.mesh.name() != "envoy" {
        return Ok(());
    }
    let settings = envoy::settings(c).map_err(|e| e.to_string())?;
    let mesh = envoy::EnvoyMesh { settings: settings.clone() };
    for spoke in &c.spokes {
        let mut objs = phases::yelb::render_app(session, &spoke.name).map_err(|e| format!("render_app {}: {}", spoke.name, e.chain()))?;
        let mut services = BTreeSet::new();
        let mut config_maps = BTreeSet::new();
        for wo in objs.workloads.iter_mut() {
            let w = wo.workload.clone();
            let ups: Vec<bootstrap::Upstream> =
                w.backends.iter().filter_map(|b| envoy::upstream(b, &w.account, &topo.namespace, Some("10.9.9.9".into()))).collect();
            let b = bootstrap::bootstrap(&w, &topo.bundle_id(), &topo.agent_socket, settings.ports, &ups);
            check_bootstrap(&b, w.port).map_err(|e| format!("bootstrap of {}: {e}", w.name))?;
            let text = serde_yaml_ng::to_string(&b).map_err(|e| e.to_string())?;
            let cm = mesh.decorate_workload(wo, &topo.namespace, &topo.agent_socket, &text);
            let cm_name = cm.metadata.name.clone().unwrap_or_default();
            ensure(k8s_subdomain(&cm_name) && config_maps.insert(cm_name.clone()), || format!("ConfigMap {cm_name:?}"))?;
            let d = &wo.deployment;
            let name = d.metadata.name.clone().unwrap_or_default();
            ensure(k8s_subdomain(&name), || format!("Deployment name {name:?}"))?;
            let spec = d.spec.as_ref().ok_or("no deployment spec")?;
            let tpl_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref());
            check_labels(&name, tpl_labels)?;
            check_labels(&name, spec.selector.match_labels.as_ref())?;
            check_pod(&name, spec.template.spec.as_ref().ok_or("no pod spec")?)?;
            let pod_ports: BTreeMap<String, i32> = spec
                .template
                .spec
                .iter()
                .flat_map(|p| p.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| Some((p.name.clone()?, p.container_port)))
                .collect();
            for svc in &wo.services {
                let n = svc.metadata.name.clone().unwrap_or_default();
                ensure(k8s_1035(&n), || format!("Service name {n:?} is not an RFC 1035 label"))?;
                ensure(services.insert(n.clone()), || format!("two Services named {n} in account {}", spoke.name))?;
                let sspec = svc.spec.as_ref().ok_or("no service spec")?;
                check_labels(&n, sspec.selector.as_ref())?;
                for p in sspec.ports.iter().flatten() {
                    ensure((1..=65535).contains(&p.port), || format!("Service {n}: port {}", p.port))?;
                    if let Some(pn) = &p.name {
                        ensure(port_name(pn), || format!("Service {n}: port name {pn:?}"))?;
                    }
                    match &p.target_port {
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(t)) => {
                            ensure(pod_ports.contains_key(t), || format!("Service {n}: target port {t} is no port of the pod"))?
                        }
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => {
                            ensure((1..=65535).contains(t), || format!("Service {n}: target port {t}"))?
                        }
                        None => {}
                    }
                }
            }
        }
        objs.workloads.clear();
    }
    Ok(())
}

/// Every key a ConfigError may name starts with a key of the file.
const TOP_LEVEL: [&str; 9] = ["region", "kubeconfig", "mesh", "network", "auth", "spire", "hub", "spokes", "services"];

fn names_a_key(e: &ConfigError, text: &str) -> Result<(), TestCaseError> {
    let top = e.key.split(['.', '[']).next().unwrap_or_default();
    prop_assert!(TOP_LEVEL.contains(&top), "the error names no key of the file: key {:?}: {e}\n{text}", e.key);
    prop_assert!(!e.message.trim().is_empty(), "an error without a message for {}", e.key);
    Ok(())
}

fn offline(session: &Arc<Session>) -> Check {
    phases::graph(session).map_err(|e| format!("graph: {e}"))?;
    aws_side(&session.config)?;
    spire_side(&session.config)?;
    app_side(session)
}

proptest! {
    // About 10 s of CPU in a debug build; raise `cases` to search longer.
    #![proptest_config(ProptestConfig { cases: 1000, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_configuration_is_refused_with_its_key_or_everything_offline_succeeds(g in config()) {
        let text = to_toml(&g);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meshctl.toml");
        std::fs::write(&path, &text).unwrap();
        let config = match Config::load(Some(&path), &[], &[]) {
            Ok(c) => c,
            Err(e) => return names_a_key(&e, &text),
        };
        let session = match Session::new(config) {
            Ok(s) => Arc::new(s),
            Err(e) => return names_a_key(&e, &text),
        };
        if let Err(why) = offline(&session) {
            prop_assert!(false, "accepted, but breaks at apply time: {why}\n--- meshctl.toml\n{text}");
        }
    }
}

/// The generator reaches both branches: a test that only ever saw refusals would prove nothing.
#[test]
fn the_generator_reaches_accepted_configurations() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = config();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..200 {
        let g = strategy.new_tree(&mut runner).unwrap().current();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meshctl.toml");
        std::fs::write(&path, to_toml(&g)).unwrap();
        match Config::load(Some(&path), &[], &[]).map(Session::new) {
            Ok(Ok(_)) => accepted += 1,
            _ => refused += 1,
        }
    }
    eprintln!("accepted {accepted}, refused {refused}");
    assert!(accepted >= 20 && refused >= 20, "accepted {accepted}, refused {refused}");
}
