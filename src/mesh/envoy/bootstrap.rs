//! The Envoy bootstrap of one workload: a complete static configuration, no xDS server.
//!
//! - `spire_agent`: the SDS cluster, gRPC (HTTP/2) over the SPIRE agent's unix socket. Every
//!   secret is asked for by name: the workload's SPIFFE ID (its SVID) and
//!   `spiffe://<trust domain>` (the bundle).
//! - `inbound` on 0.0.0.0:<inbound port>: mTLS only (`require_client_certificate`), the
//!   caller's URI SAN matched exactly against the SPIFFE IDs allowed to call, then to the
//!   application on 127.0.0.1:<port> (an HTTP connection manager for http, a TCP proxy for
//!   tcp). Only workloads with callers have it.
//! - `egress-<backend>` on 127.0.0.1:<backend port>, one per backend: a TCP proxy to a
//!   cluster that originates mTLS with the workload's SVID and accepts only the backend's
//!   SPIFFE ID. The app dials the backend's usual name, which the pod's hostAliases point at
//!   127.0.0.1; the cluster itself dials the backend's Service FQDN or load balancer, never
//!   the short name (that would loop back into this listener). A TCP proxy opens one
//!   upstream connection per application connection, so every call is one handshake.
//! - `health` on 0.0.0.0:<health port>: only `/ready`, answered by the admin interface
//!   (which listens on 127.0.0.1 only), for the kubelet's readiness probe.

use serde_json::{json, Value};

use crate::config::Protocol;
use crate::topology::Workload;

/// Name of the SDS cluster.
pub const SDS_CLUSTER: &str = "spire_agent";

/// Where a backend is reached from this workload's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Backend workload name (the name the app dials).
    pub name: String,
    pub spiffe_id: String,
    /// The port the app dials (the backend's service port) and the egress listener binds.
    pub port: u16,
    /// Host (DNS name or IP) and port the egress cluster connects to.
    pub address: String,
    pub address_port: u16,
}

/// Ports of the sidecar (`[mesh.envoy]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub inbound: u16,
    pub admin: u16,
    pub health: u16,
}

fn sds(secret: &str) -> Value {
    json!({
        "name": secret,
        "sds_config": {
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
            },
        },
    })
}

/// The TLS context both sides share: own SVID, the bundle, and exact URI SAN matchers.
fn common_tls(own_id: &str, bundle: &str, peers: &[&str]) -> Value {
    let matchers: Vec<Value> = peers.iter().map(|p| json!({"san_type": "URI", "matcher": {"exact": p}})).collect();
    json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificate_sds_secret_configs": [sds(own_id)],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": matchers},
            "validation_context_sds_secret_config": sds(bundle),
        },
    })
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}

fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": stat_prefix,
            "cluster": cluster,
        },
    })
}

fn http_manager(stat_prefix: &str, routes: Value) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {"name": stat_prefix, "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}]},
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }],
        },
    })
}

fn static_cluster(name: &str, address: Value) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    })
}

/// Whether a host is an IP address (a STATIC endpoint) rather than a DNS name.
fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// The bootstrap of `w`: `bundle` is `spiffe://<trust domain>`, `socket` the agent socket
/// inside the pod, `upstreams` one per backend in the workload's order.
pub fn bootstrap(w: &Workload, bundle: &str, socket: &str, ports: Ports, upstreams: &[Upstream]) -> Value {
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    if !w.callers.is_empty() {
        let callers: Vec<&str> = w.callers.iter().map(|c| c.spiffe_id.as_str()).collect();
        let to_app = match w.protocol {
            Protocol::Http => http_manager("inbound", json!([{"match": {"prefix": "/"}, "route": {"cluster": "app", "timeout": "15s"}}])),
            Protocol::Tcp => tcp_proxy("inbound", "app"),
        };
        let mut tls = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
        });
        tls["common_tls_context"] = common_tls(&w.spiffe_id, bundle, &callers);
        listeners.push(json!({
            "name": "inbound",
            "address": socket_address("0.0.0.0", ports.inbound),
            "filter_chains": [{
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                "filters": [to_app],
            }],
        }));
        clusters.push(static_cluster("app", socket_address("127.0.0.1", w.port)));
    }
    for up in upstreams {
        let cluster = format!("egress-{}", up.name);
        listeners.push(json!({
            "name": cluster,
            "address": socket_address("127.0.0.1", up.port),
            "filter_chains": [{"filters": [tcp_proxy(&cluster, &cluster)]}],
        }));
        let mut tls = json!({"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"});
        tls["common_tls_context"] = common_tls(&w.spiffe_id, bundle, &[up.spiffe_id.as_str()]);
        let mut c = static_cluster(&cluster, socket_address(&up.address, up.address_port));
        if !is_ip(&up.address) {
            // getaddrinfo: the name resolves like any process's in the pod (the pod's
            // /etc/hosts, then cluster DNS), not through a resolver of Envoy's own.
            c["type"] = json!("STRICT_DNS");
            c["dns_lookup_family"] = json!("V4_ONLY");
            c["typed_dns_resolver_config"] = json!({
                "name": "envoy.network.dns_resolver.getaddrinfo",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig"},
            });
        }
        c["connect_timeout"] = json!("5s");
        c["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": tls});
        clusters.push(c);
    }
    listeners.push(json!({
        "name": "health",
        "address": socket_address("0.0.0.0", ports.health),
        "filter_chains": [{"filters": [http_manager("health", json!([
            {"match": {"path": "/ready"}, "route": {"cluster": "admin"}},
            {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
        ]))]}],
    }));
    clusters.push(static_cluster("admin", socket_address("127.0.0.1", ports.admin)));
    let mut sds_cluster = static_cluster(SDS_CLUSTER, json!({"pipe": {"path": socket}}));
    sds_cluster["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        },
    });
    clusters.push(sds_cluster);
    json!({
        "node": {"id": w.name, "cluster": w.name},
        "admin": {"address": socket_address("127.0.0.1", ports.admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::topology::Topology;

    const PORTS: Ports = Ports { inbound: 15443, admin: 9901, health: 15021 };

    fn listener<'a>(b: &'a Value, name: &str) -> &'a Value {
        b["static_resources"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    fn cluster<'a>(b: &'a Value, name: &str) -> &'a Value {
        b["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name}"))
    }

    #[test]
    fn appserver_accepts_only_the_frontend_and_calls_db_and_redis() {
        let t = Topology::new(&Config::default());
        let w = t.workload("yelb-appserver").unwrap();
        let ups = vec![
            Upstream {
                name: "yelb-db".into(),
                spiffe_id: "spiffe://am-multi-account-mesh/yelbdb".into(),
                port: 5432,
                address: "yelb-db.yelb.svc.cluster.local".into(),
                address_port: 5432,
            },
            Upstream {
                name: "redis-server".into(),
                spiffe_id: "spiffe://am-multi-account-mesh/redis".into(),
                port: 6379,
                address: "10.2.255.7".into(),
                address_port: 6379,
            },
        ];
        let b = bootstrap(w, "spiffe://am-multi-account-mesh", "/run/spire/sockets/agent.sock", PORTS, &ups);
        let inbound = listener(&b, "inbound");
        assert_eq!(inbound["address"]["socket_address"]["port_value"], 15443);
        let tls = &inbound["filter_chains"][0]["transport_socket"]["typed_config"];
        assert_eq!(tls["require_client_certificate"], true);
        let common = &tls["common_tls_context"];
        assert_eq!(common["tls_certificate_sds_secret_configs"][0]["name"], "spiffe://am-multi-account-mesh/yelbapp");
        assert_eq!(common["combined_validation_context"]["validation_context_sds_secret_config"]["name"], "spiffe://am-multi-account-mesh");
        assert_eq!(
            common["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"],
            json!([{"san_type": "URI", "matcher": {"exact": "spiffe://am-multi-account-mesh/frontend"}}])
        );
        let hcm = &inbound["filter_chains"][0]["filters"][0];
        assert_eq!(hcm["name"], "envoy.filters.network.http_connection_manager");
        assert_eq!(
            cluster(&b, "app")["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"],
            4567
        );
        let egress = listener(&b, "egress-yelb-db");
        assert_eq!(egress["address"]["socket_address"], json!({"address": "127.0.0.1", "port_value": 5432}));
        let db = cluster(&b, "egress-yelb-db");
        assert_eq!(db["type"], "STRICT_DNS");
        assert_eq!(
            db["transport_socket"]["typed_config"]["common_tls_context"]["combined_validation_context"]["default_validation_context"]
                ["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "spiffe://am-multi-account-mesh/yelbdb"
        );
        assert_eq!(cluster(&b, "egress-redis-server")["type"], "STATIC", "an IP address needs no DNS");
        let sds = cluster(&b, SDS_CLUSTER);
        assert_eq!(
            sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"],
            "/run/spire/sockets/agent.sock"
        );
        assert!(sds["typed_extension_protocol_options"].to_string().contains("http2_protocol_options"));
        assert_eq!(b["admin"]["address"]["socket_address"]["address"], "127.0.0.1");
    }

    #[test]
    fn tcp_services_proxy_tcp_and_a_workload_without_callers_has_no_inbound_listener() {
        let t = Topology::new(&Config::default());
        let db = bootstrap(t.workload("yelb-db").unwrap(), "spiffe://td", "/s", PORTS, &[]);
        assert_eq!(listener(&db, "inbound")["filter_chains"][0]["filters"][0]["name"], "envoy.filters.network.tcp_proxy");
        let ui = bootstrap(t.workload("yelb-ui").unwrap(), "spiffe://td", "/s", PORTS, &[]);
        let names: Vec<&str> =
            ui["static_resources"]["listeners"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["health"]);
    }
}
