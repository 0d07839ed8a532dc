//! The application's App Mesh objects: per workload a VirtualNode (its listener STRICT mTLS
//! with the SVID = its SPIFFE ID from the SPIRE agent over SDS and SAN matchers for who may
//! call it; a client policy enforcing TLS to its backends and verifying their SPIFFE IDs), a
//! VirtualService named after the host the application dials, and a VirtualRouter with a
//! retry policy for HTTP workloads called across accounts. A caller in another account
//! references its callee's VirtualService by ARN (read from the callee's cluster), and gets
//! a selector-less Service of the callee's name so that name resolves where it runs (the
//! sidecar intercepts the connection).
//!
//! Workloads called from another account are discovered through Cloud Map when they run in
//! the Cloud Map namespace's account; every other one through DNS.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;

use super::Settings;
use crate::config::Protocol;
use crate::engine::Error;
use crate::error::ErrorKind;
use crate::kube::template::{json, render, Vars};
use crate::kube::{parse_manifests, KubeError};
use crate::mesh::{AppObjects, Wait};
use crate::session::Session;
use crate::state::Progress;
use crate::topology::{Peer, Topology, Workload};

macro_rules! template {
    ($file:literal) => {
        (concat!("manifests/yelb/", $file), include_str!(concat!("../../../manifests/yelb/", $file)))
    };
}

const VIRTUAL_NODE: (&str, &str) = template!("virtual-node.yaml");
const VIRTUAL_ROUTER: (&str, &str) = template!("virtual-router.yaml");
const VIRTUAL_SERVICE: (&str, &str) = template!("virtual-service.yaml");
const BACKEND_REF: (&str, &str) = template!("backend-ref.yaml");
const BACKEND_ARN: (&str, &str) = template!("backend-arn.yaml");

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Tcp => "tcp",
    }
}

fn vars(pairs: impl IntoIterator<Item = (&'static str, String)>) -> Vars {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Discovered through Cloud Map (else DNS).
pub fn uses_cloudmap(settings: &Settings, w: &Workload) -> bool {
    w.called_across() && w.account == settings.cloudmap_account
}

/// Fronted by a virtual router with a retry policy.
pub fn uses_router(w: &Workload) -> bool {
    w.called_across() && w.protocol == Protocol::Http
}

/// The VirtualNode listener's port: the workload's port, or the walkthrough's own choice for
/// it (`listener_ports`, yelb-ui's 4567).
pub fn listener_port(settings: &Settings, w: &Workload) -> u16 {
    settings.listener_ports.get(&w.name).copied().unwrap_or(w.port)
}

/// The mesh objects of one spoke's workloads, in apply order (nodes, routers, services);
/// `arns` maps a backend in another account to its VirtualService ARN (an absent one renders
/// empty: enough to delete by name).
pub fn mesh_objects(
    topo: &Topology,
    settings: &Settings,
    account: &str,
    arns: &BTreeMap<String, String>,
) -> Result<Vec<DynamicObject>, Error> {
    let ns = &topo.namespace;
    let bundle = topo.bundle_id();
    let (mut nodes, mut routers, mut services) = (Vec::new(), Vec::new(), Vec::new());
    for w in topo.in_account(account) {
        let callers: Vec<&str> = w.callers.iter().map(|c| c.spiffe_id.as_str()).collect();
        let mut backends = Vec::new();
        for b in &w.backends {
            let (tpl, v) = if b.account == w.account {
                (BACKEND_REF, vars([("backend", b.name.clone())]))
            } else {
                (BACKEND_ARN, vars([("backend_arn", arns.get(&b.name).cloned().unwrap_or_default())]))
            };
            let item: serde_json::Value = serde_yaml_ng::from_str(&render(tpl.0, tpl.1, &v)?)?;
            backends.push(item);
        }
        let backend_sans: Vec<&str> = w.backends.iter().map(|b| b.spiffe_id.as_str()).collect();
        let cloudmap = uses_cloudmap(settings, w);
        let router = uses_router(w);
        let v = vars([
            ("name", w.name.clone()),
            ("namespace", ns.clone()),
            ("app_label", w.labels.get("app").cloned().unwrap_or_default()),
            ("tier_label", w.labels.get("tier").cloned().unwrap_or_default()),
            ("port", listener_port(settings, w).to_string()),
            ("protocol", protocol(w.protocol).to_string()),
            ("tls", (!callers.is_empty()).to_string()),
            ("spiffe_id", w.spiffe_id.clone()),
            ("trust_bundle", bundle.clone()),
            ("caller_sans", json(&callers)),
            ("cloudmap", cloudmap.to_string()),
            ("dns", (!cloudmap).to_string()),
            ("cloudmap_namespace", settings.cloudmap_namespace.clone()),
            ("backends", json(&backends)),
            ("backend_sans", json(&backend_sans)),
            ("router", router.to_string()),
            ("direct", (!router).to_string()),
        ]);
        nodes.extend(parse_manifests(&render(VIRTUAL_NODE.0, VIRTUAL_NODE.1, &v)?, VIRTUAL_NODE.0)?);
        if router {
            routers.extend(parse_manifests(&render(VIRTUAL_ROUTER.0, VIRTUAL_ROUTER.1, &v)?, VIRTUAL_ROUTER.0)?);
        }
        services.extend(parse_manifests(&render(VIRTUAL_SERVICE.0, VIRTUAL_SERVICE.1, &v)?, VIRTUAL_SERVICE.0)?);
    }
    nodes.extend(routers);
    nodes.extend(services);
    Ok(nodes)
}

/// A selector-less Service of a remote backend's name: the name the application dials then
/// resolves in the caller's cluster, and its sidecar routes the connection into the mesh.
pub fn remote_name_service(namespace: &str, b: &Peer) -> Service {
    let mut svc = Service {
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some(protocol(b.protocol).to_string()),
                port: b.port.into(),
                target_port: Some(IntOrString::Int(b.port.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    svc.metadata.name = Some(b.name.clone());
    svc.metadata.namespace = Some(namespace.to_string());
    svc
}

/// The remote backends of a spoke's workloads, once each.
fn remote_backends<'a>(topo: &'a Topology, account: &'a str) -> Vec<&'a Peer> {
    let mut out: Vec<&Peer> = Vec::new();
    for w in topo.in_account(account) {
        for b in w.remote_backends() {
            if !out.iter().any(|o| o.name == b.name) {
                out.push(b);
            }
        }
    }
    out
}

/// The callee's VirtualService ARN from its status (written by its cluster's controller).
async fn arn_from_status(session: &Session, callee: &Peer) -> Result<Option<String>, Error> {
    let kc = session.kube.cluster_client(&callee.account).await?;
    let stub = vars([
        ("name", callee.name.clone()),
        ("namespace", session.topology.namespace.clone()),
        ("router", "false".into()),
        ("direct", "true".into()),
    ]);
    let Some(obj) = parse_manifests(&render(VIRTUAL_SERVICE.0, VIRTUAL_SERVICE.1, &stub)?, "virtual service")?.pop() else {
        return Ok(None);
    };
    let t = match kc.resolve(obj).await {
        Ok(t) => t,
        Err(KubeError::Discovery { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(kc
        .get(&t)
        .await?
        .and_then(|o| o.data.get("status").and_then(|s| s.get("virtualServiceARN")).and_then(|a| a.as_str()).map(str::to_string))
        .filter(|a| !a.is_empty()))
}

/// The callee's ARN through the App Mesh API of the callee's account (the shared mesh).
async fn arn_from_api(session: &Session, callee: &Peer) -> Result<Option<String>, Error> {
    let c = &session.config;
    let owner = session.aws.account_id(&c.hub.name).await?;
    let am = session.aws.appmesh(&callee.account).await?;
    match am
        .describe_virtual_service()
        .mesh_name(&c.mesh.name)
        .mesh_owner(owner)
        .virtual_service_name(&callee.name)
        .send()
        .await
        .map_err(Error::from)
    {
        Ok(out) => Ok(out.virtual_service.and_then(|v| v.metadata).map(|m| m.arn)),
        Err(e) if e.is(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e.context(format!("account {}: App Mesh DescribeVirtualService {}", callee.account, callee.name))),
    }
}

/// Adds the spoke's mesh objects and the remote backends' name Services; returns the
/// backends whose ARN is not known yet (with `Wait::Up`, waits for them and fails).
pub async fn decorate(
    session: &Session,
    settings: &Settings,
    objects: &mut AppObjects,
    wait: Wait,
    progress: &dyn Progress,
) -> Result<Vec<String>, Error> {
    let topo = &session.topology;
    let mut arns = BTreeMap::new();
    let mut pending = Vec::new();
    for callee in remote_backends(topo, &objects.account) {
        let deadline = tokio::time::Instant::now() + if let Wait::Up(d) = wait { d } else { Duration::ZERO };
        let mut arn = arn_from_status(session, callee).await?;
        while arn.is_none() && tokio::time::Instant::now() < deadline && !progress.cancelled() {
            progress.progress(format!("waiting for status.virtualServiceARN of {} in {}", callee.name, callee.account));
            tokio::time::sleep(Duration::from_secs(2)).await;
            arn = arn_from_status(session, callee).await?;
        }
        if arn.is_none() && wait != Wait::No {
            arn = arn_from_api(session, callee).await?;
        }
        match arn {
            Some(a) => {
                arns.insert(callee.name.clone(), a);
            }
            None if wait != Wait::No => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "virtual service ARN of {} (account {}) not found in its status.virtualServiceARN nor through the App Mesh API",
                        callee.name, callee.account
                    ),
                )
                .hint(format!("is the appmesh-controller running in {}?", callee.account)))
            }
            None => pending.push(format!("virtual service ARN of {} not known yet", callee.name)),
        }
        let svc = remote_name_service(&topo.namespace, callee);
        if let Some(wo) = objects.workloads.iter_mut().find(|w| w.workload.backends.iter().any(|b| b.name == callee.name)) {
            wo.services.push(svc);
        }
    }
    let mut mesh = mesh_objects(topo, settings, &objects.account, &arns)?;
    mesh.append(&mut objects.mesh);
    objects.mesh = mesh;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn kinds(objs: &[DynamicObject]) -> Vec<(String, String)> {
        objs.iter().map(|o| (o.types.as_ref().unwrap().kind.clone(), o.metadata.name.clone().unwrap())).collect()
    }

    fn find<'a>(objs: &'a [DynamicObject], kind: &str, name: &str) -> &'a DynamicObject {
        objs.iter()
            .find(|x| x.types.as_ref().unwrap().kind == kind && x.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    const ARN: &str = "arn:aws:appmesh:us-east-2:111111111111:mesh/am-multi-account-mesh/virtualService/yelb-appserver";

    #[test]
    fn backend_objects_follow_the_walkthrough() {
        let c = Config::default();
        let o = mesh_objects(&Topology::new(&c), &Settings::default(), "backend", &BTreeMap::new()).unwrap();
        let k = kinds(&o);
        assert!(k.contains(&("VirtualRouter".into(), "yelb-appserver-router".into())), "{k:?}");
        assert_eq!(k.iter().filter(|(k, _)| k == "VirtualNode").count(), 3);
        let app = find(&o, "VirtualNode", "yelb-appserver");
        let spec = &app.data["spec"];
        let l = &spec["listeners"][0];
        assert_eq!(l["portMapping"]["port"], 4567);
        assert_eq!(l["tls"]["mode"], "STRICT");
        assert_eq!(l["tls"]["certificate"]["sds"]["secretName"], "spiffe://am-multi-account-mesh/yelbapp");
        assert_eq!(l["tls"]["validation"]["trust"]["sds"]["secretName"], "spiffe://am-multi-account-mesh");
        assert_eq!(
            l["tls"]["validation"]["subjectAlternativeNames"]["match"]["exact"],
            serde_json::json!(["spiffe://am-multi-account-mesh/frontend"])
        );
        assert_eq!(spec["serviceDiscovery"]["awsCloudMap"]["namespaceName"], "am-multi-account.local");
        let tls = &spec["backendDefaults"]["clientPolicy"]["tls"];
        assert_eq!(tls["enforce"], true);
        assert_eq!(
            tls["validation"]["subjectAlternativeNames"]["match"]["exact"],
            serde_json::json!(["spiffe://am-multi-account-mesh/yelbdb", "spiffe://am-multi-account-mesh/redis"])
        );
        assert_eq!(spec["backends"][0]["virtualService"]["virtualServiceRef"]["name"], "yelb-db");
        let db = find(&o, "VirtualNode", "yelb-db");
        assert_eq!(db.data["spec"]["serviceDiscovery"]["dns"]["hostname"], "yelb-db.yelb.svc.cluster.local");
        assert_eq!(
            db.data["spec"]["listeners"][0]["tls"]["validation"]["subjectAlternativeNames"]["match"]["exact"],
            serde_json::json!(["spiffe://am-multi-account-mesh/yelbapp"])
        );
        assert!(db.data["spec"].get("backends").is_none());
        let router = find(&o, "VirtualRouter", "yelb-appserver-router");
        assert_eq!(router.data["spec"]["routes"][0]["httpRoute"]["retryPolicy"]["maxRetries"], 2);
        // The virtual services are named after the hosts the Yelb apps dial.
        for name in ["yelb-appserver", "yelb-db", "redis-server"] {
            assert_eq!(find(&o, "VirtualService", name).data["spec"]["awsName"], name);
        }
    }

    #[test]
    fn the_ui_listens_without_tls_on_4567_and_calls_the_backend_by_arn() {
        let c = Config::default();
        let o =
            mesh_objects(&Topology::new(&c), &Settings::default(), "frontend", &[("yelb-appserver".to_string(), ARN.to_string())].into())
                .unwrap();
        let ui = find(&o, "VirtualNode", "yelb-ui");
        let l = &ui.data["spec"]["listeners"][0];
        assert_eq!(l["portMapping"], serde_json::json!({"port": 4567, "protocol": "http"}));
        assert!(l.get("tls").is_none(), "the load balancer speaks plain HTTP to the UI: nobody with an SVID calls it");
        assert_eq!(ui.data["spec"]["backends"][0]["virtualService"]["virtualServiceARN"], ARN);
        assert_eq!(
            ui.data["spec"]["backendDefaults"]["clientPolicy"]["tls"]["validation"]["subjectAlternativeNames"]["match"]["exact"],
            serde_json::json!(["spiffe://am-multi-account-mesh/yelbapp"])
        );
        let t = Topology::new(&c);
        let svc = remote_name_service("yelb", t.workload("yelb-ui").unwrap().backends.first().unwrap());
        assert_eq!(svc.metadata.name.as_deref(), Some("yelb-appserver"));
        assert!(svc.spec.as_ref().unwrap().selector.is_none(), "selector-less: only the name must resolve");
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 4567);
    }

    /// Any number of spokes: a third spoke's caller is accepted by the appserver's SAN
    /// matcher and reaches it by ARN.
    #[test]
    fn three_spokes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-spokes.toml");
        let c = Config::load(Some(&path), &[], &[]).unwrap();
        let t = Topology::new(&c);
        let back = mesh_objects(&t, &Settings::default(), "backend", &BTreeMap::new()).unwrap();
        let app = find(&back, "VirtualNode", "yelb-appserver");
        assert_eq!(
            app.data["spec"]["listeners"][0]["tls"]["validation"]["subjectAlternativeNames"]["match"]["exact"],
            serde_json::json!(["spiffe://am-multi-account-mesh/frontend", "spiffe://am-multi-account-mesh/analytics/worker"])
        );
        let an = mesh_objects(&t, &Settings::default(), "analytics", &[("yelb-appserver".to_string(), ARN.to_string())].into()).unwrap();
        let w = find(&an, "VirtualNode", "report-worker");
        assert_eq!(w.data["spec"]["backends"][0]["virtualService"]["virtualServiceARN"], ARN);
    }
}
