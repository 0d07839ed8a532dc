//! The application on App Mesh: per spoke, the virtual nodes, services and routers (TLS
//! STRICT, SDS certificate = the SPIFFE ID, SAN matchers for who may call) rendered from
//! manifests/ templates, then the Deployments and Services; a spoke goes after every spoke
//! whose services it calls, so the caller can read the callee's virtual service ARN.
//!
//! Every name, label, port, SPIFFE ID and namespace comes from the configuration; the
//! structure of each object is in manifests/yelb/. Rules derived from the service graph:
//! a service called from another account is discovered through Cloud Map (when it runs in
//! the Cloud Map namespace's account) and fronted by a virtual router with a retry policy
//! when it speaks HTTP; every other service uses DNS discovery and is its own provider.
//!
//! Teardown order within a spoke: the LoadBalancer Service first (the cloud load balancer is
//! released before any stack delete), then — while the controller still runs so its
//! finalizers clear — virtual services, routers and nodes, then the workloads and the
//! namespace; each delete waits until the object is gone and names any finalizer it is stuck on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;

use crate::config::{Account, Config, Protocol, Service};
use crate::context::Ctx;
use crate::engine::{Status, Step, StepCx, StepError, StepMeta};
use crate::kube::template::{json, render, Vars};
use crate::kube::{parse_manifests, KubeClient, KubeError, Target};
use crate::phases::ids;

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
const WORKLOAD: (&str, &str) = template!("workload.yaml");
const IMAGES: (&str, &str) = template!("images.yaml");

const ARN_TIMEOUT: Duration = Duration::from_secs(60);
const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(300);
const LB_TIMEOUT: Duration = Duration::from_secs(600);
const DELETE_TIMEOUT: Duration = Duration::from_secs(300);

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    let mut out: Vec<Arc<dyn Step>> = Vec::new();
    for s in &c.spokes {
        let services: Vec<_> = c.services.iter().filter(|v| v.account == s.name).collect();
        if services.is_empty() {
            continue;
        }
        let mut needs: BTreeSet<String> = [ids::mesh_resource(&s.name), ids::spire_agent(&s.name)].into();
        if s.name == c.cloudmap.account {
            needs.insert(ids::mesh_cloudmap());
        }
        for v in &services {
            needs.insert(ids::register_service(&v.name));
            for b in &v.backends {
                let other = &c.service(b).expect("validated backend").account;
                if other != &s.name {
                    needs.insert(ids::yelb(other));
                }
            }
        }
        let names: Vec<&str> = services.iter().map(|v| v.name.as_str()).collect();
        out.push(Arc::new(YelbStep {
            meta: StepMeta::new("yelb", &s.name, &s.name, format!("deploy {} with mesh resources", names.join(", "))).needs(needs),
            ctx: ctx.clone(),
            spoke: s.clone(),
        }));
    }
    out
}

/// Called from a service in another account.
pub fn called_across(c: &Config, svc: &Service) -> bool {
    c.callers_of(&svc.name).iter().any(|caller| caller.account != svc.account)
}

/// Discovered through Cloud Map (else DNS).
pub fn uses_cloudmap(c: &Config, svc: &Service) -> bool {
    called_across(c, svc) && svc.account == c.cloudmap.account
}

/// Fronted by a virtual router with a retry policy.
pub fn uses_router(c: &Config, svc: &Service) -> bool {
    called_across(c, svc) && svc.protocol == Protocol::Http
}

/// The App Mesh name of a service's virtual service (the name callers resolve).
pub fn virtual_service_aws_name(c: &Config, svc: &Service) -> String {
    if uses_cloudmap(c, svc) {
        format!("{}.{}", svc.name, c.cloudmap.namespace)
    } else {
        format!("{}.{}.svc.cluster.local", svc.name, c.mesh.app_namespace)
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Tcp => "tcp",
    }
}

fn vars(pairs: impl IntoIterator<Item = (&'static str, String)>) -> Vars {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The objects of one spoke, in apply order within each group.
pub struct Objects {
    /// VirtualNodes, VirtualRouters, VirtualServices.
    pub mesh: Vec<DynamicObject>,
    /// Deployments and Services.
    pub workloads: Vec<DynamicObject>,
    /// `(namespace, name)` of LoadBalancer Services.
    pub load_balancers: Vec<(String, String)>,
}

/// Renders every object of the spoke's services; `arns` maps a backend in another account
/// to its virtual service ARN (an absent one renders empty: enough to delete by name).
pub fn objects(c: &Config, spoke: &str, arns: &BTreeMap<String, String>) -> Result<Objects, KubeError> {
    let images: BTreeMap<String, String> =
        serde_yaml_ng::from_str(IMAGES.1).map_err(|e| KubeError::Manifest { origin: IMAGES.0.into(), message: e.to_string() })?;
    let ns = &c.mesh.app_namespace;
    let bundle = format!("spiffe://{}", c.mesh.trust_domain);
    let mut out = Objects { mesh: Vec::new(), workloads: Vec::new(), load_balancers: Vec::new() };
    let mut nodes = Vec::new();
    let mut routers = Vec::new();
    let mut services = Vec::new();
    for svc in c.services.iter().filter(|s| s.account == spoke) {
        let callers: Vec<String> = c.callers_of(&svc.name).iter().map(|s| c.spiffe_id(&s.spiffe_path)).collect();
        let mut backends = Vec::new();
        let mut backend_sans = Vec::new();
        for b in &svc.backends {
            let callee = c.service(b).ok_or_else(|| KubeError::Manifest { origin: VIRTUAL_NODE.0.into(), message: format!("unknown backend {b}") })?;
            backend_sans.push(c.spiffe_id(&callee.spiffe_path));
            let (tpl, v) = if callee.account == svc.account {
                (BACKEND_REF, vars([("backend", b.clone())]))
            } else {
                (BACKEND_ARN, vars([("backend_arn", arns.get(b).cloned().unwrap_or_default())]))
            };
            let item: serde_json::Value =
                serde_yaml_ng::from_str(&render(tpl.0, tpl.1, &v)?).map_err(|e| KubeError::Manifest { origin: tpl.0.into(), message: e.to_string() })?;
            backends.push(item);
        }
        let cloudmap = uses_cloudmap(c, svc);
        let router = uses_router(c, svc);
        let v = vars([
            ("name", svc.name.clone()),
            ("namespace", ns.clone()),
            ("app_label", svc.app_label.clone()),
            ("tier_label", svc.tier_label.clone()),
            ("port", svc.port.to_string()),
            ("protocol", protocol(svc.protocol).to_string()),
            ("spiffe_id", c.spiffe_id(&svc.spiffe_path)),
            ("trust_bundle", bundle.clone()),
            ("caller_sans", json(&callers)),
            ("cloudmap", cloudmap.to_string()),
            ("dns", (!cloudmap).to_string()),
            ("cloudmap_namespace", c.cloudmap.namespace.clone()),
            ("backends", json(&backends)),
            ("backend_sans", json(&backend_sans)),
            ("router", router.to_string()),
            ("direct", (!router).to_string()),
            ("aws_name", virtual_service_aws_name(c, svc)),
            ("image", images.get(&svc.name).cloned().unwrap_or_else(|| format!("{}:latest", svc.name))),
            ("service_type", if svc.load_balancer_port.is_some() { "LoadBalancer" } else { "ClusterIP" }.to_string()),
            ("service_port", svc.load_balancer_port.unwrap_or(svc.port).to_string()),
            ("port_name", protocol(svc.protocol).to_string()),
        ]);
        nodes.extend(parse_manifests(&render(VIRTUAL_NODE.0, VIRTUAL_NODE.1, &v)?, VIRTUAL_NODE.0)?);
        if router {
            routers.extend(parse_manifests(&render(VIRTUAL_ROUTER.0, VIRTUAL_ROUTER.1, &v)?, VIRTUAL_ROUTER.0)?);
        }
        services.extend(parse_manifests(&render(VIRTUAL_SERVICE.0, VIRTUAL_SERVICE.1, &v)?, VIRTUAL_SERVICE.0)?);
        out.workloads.extend(parse_manifests(&render(WORKLOAD.0, WORKLOAD.1, &v)?, WORKLOAD.0)?);
        if svc.load_balancer_port.is_some() {
            out.load_balancers.push((ns.clone(), svc.name.clone()));
        }
    }
    out.mesh.extend(nodes);
    out.mesh.extend(routers);
    out.mesh.extend(services);
    Ok(out)
}

/// `yelb/<spoke>`.
pub struct YelbStep {
    meta: StepMeta,
    ctx: Arc<Ctx>,
    spoke: Account,
}

impl YelbStep {
    /// Cross-account backends of this spoke's services.
    fn remote_backends(&self) -> Vec<&Service> {
        let c = &self.ctx.config;
        let mut out: Vec<&Service> = Vec::new();
        for svc in c.services.iter().filter(|s| s.account == self.spoke.name) {
            for b in &svc.backends {
                if let Some(callee) = c.service(b) {
                    if callee.account != self.spoke.name && !out.iter().any(|o| o.name == callee.name) {
                        out.push(callee);
                    }
                }
            }
        }
        out
    }

    /// The callee's ARN from its VirtualService status (written by its cluster's controller).
    async fn arn_from_status(&self, callee: &Service) -> Result<Option<String>, StepError> {
        let kc = self.ctx.kube.cluster_client(&callee.account).await?;
        let Some(obj) = parse_manifests(&virtual_service_stub(&self.ctx.config, callee), "virtual service")?.pop() else { return Ok(None) };
        let t = match kc.resolve(obj).await {
            Ok(t) => t,
            Err(KubeError::Discovery { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(kc.get(&t).await?.and_then(|o| o.data.get("status").and_then(|s| s.get("virtualServiceARN")).and_then(|a| a.as_str()).map(str::to_string)).filter(|a| !a.is_empty()))
    }

    /// The callee's ARN through the App Mesh API of the callee's account (the shared mesh).
    async fn arn_from_api(&self, callee: &Service) -> Result<Option<String>, StepError> {
        let c = &self.ctx.config;
        let owner = self.ctx.aws.account_id(&c.hub.name).await.map_err(|e| StepError::new(e.to_string()))?;
        let am = self.ctx.aws.appmesh(&callee.account).await.map_err(|e| StepError::new(e.to_string()))?;
        match am.describe_virtual_service().mesh_name(&c.mesh.name).mesh_owner(owner).virtual_service_name(virtual_service_aws_name(c, callee)).send().await {
            Ok(out) => Ok(out.virtual_service.and_then(|v| v.metadata).map(|m| m.arn)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => Ok(None),
            Err(e) => Err(StepError::new(format!("account {}: App Mesh DescribeVirtualService {}: {}", callee.account, callee.name, crate::aws::error_text(&e)))),
        }
    }

    /// Every remote backend's ARN; with `wait`, polls the status up to a deadline before
    /// asking the API. Missing ARNs are left out.
    async fn arns(&self, wait: bool, cx: &StepCx) -> Result<BTreeMap<String, String>, StepError> {
        let mut out = BTreeMap::new();
        for callee in self.remote_backends() {
            let deadline = tokio::time::Instant::now() + if wait { ARN_TIMEOUT } else { Duration::ZERO };
            let mut arn = self.arn_from_status(callee).await?;
            while arn.is_none() && tokio::time::Instant::now() < deadline && !cx.cancelled() {
                cx.progress(format!("waiting for status.virtualServiceARN of {} in {}", callee.name, callee.account));
                tokio::time::sleep(Duration::from_secs(2)).await;
                arn = self.arn_from_status(callee).await?;
            }
            if arn.is_none() {
                arn = self.arn_from_api(callee).await.unwrap_or(None);
            }
            if let Some(a) = arn {
                out.insert(callee.name.clone(), a);
            }
        }
        Ok(out)
    }

    async fn targets(&self, kc: &KubeClient, objs: Vec<DynamicObject>) -> Result<Vec<Target>, StepError> {
        Ok(kc.resolve_all(objs).await?)
    }

    async fn crds_present(&self, kc: &KubeClient) -> Result<bool, StepError> {
        let crds: kube::api::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = kube::api::Api::all(kc.client.clone());
        for name in ["virtualnodes", "virtualservices", "virtualrouters"] {
            let full = format!("{name}.{}", super::cluster::APPMESH_GROUP);
            if crds.get_opt(&full).await.map_err(|e| StepError::new(format!("context {}: get CRD {full}: {e}", kc.context)))?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes and waits for each object; absent objects and unserved kinds are skipped.
    async fn delete_all(&self, kc: &KubeClient, objs: Vec<DynamicObject>, cx: &StepCx) -> Result<(), StepError> {
        for obj in objs {
            let t = match kc.resolve(obj).await {
                Ok(t) => t,
                Err(KubeError::Discovery { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if kc.get(&t).await?.is_some() {
                cx.progress(format!("deleting {}", t.describe()));
                kc.delete_and_wait(&t, DELETE_TIMEOUT).await?;
            }
        }
        Ok(())
    }
}

/// A VirtualService with only its identity, to read another cluster's status.
fn virtual_service_stub(c: &Config, svc: &Service) -> String {
    let v = vars([
        ("name", svc.name.clone()),
        ("namespace", c.mesh.app_namespace.clone()),
        ("aws_name", virtual_service_aws_name(c, svc)),
        ("router", "false".into()),
        ("direct", "true".into()),
    ]);
    render(VIRTUAL_SERVICE.0, VIRTUAL_SERVICE.1, &v).unwrap_or_default()
}

#[async_trait::async_trait]
impl Step for YelbStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, cx: &StepCx) -> Result<Status, StepError> {
        let kc = self.ctx.kube.cluster_client(&self.spoke.name).await?;
        if !self.crds_present(&kc).await? {
            return Ok(Status::Missing);
        }
        let arns = self.arns(false, cx).await?;
        let missing: Vec<&str> = self.remote_backends().iter().filter(|b| !arns.contains_key(&b.name)).map(|b| b.name.as_str()).collect();
        if !missing.is_empty() {
            return Ok(Status::Drifted(format!("virtual service ARN of {} not known yet", missing.join(", "))));
        }
        let objs = objects(&self.ctx.config, &self.spoke.name, &arns)?;
        let mut all = objs.mesh;
        all.extend(objs.workloads);
        let targets = self.targets(&kc, all).await?;
        Ok(kc.check_all(&targets).await?)
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let kc = self.ctx.kube.cluster_client(&self.spoke.name).await?;
        for crd in ["virtualnodes", "virtualrouters", "virtualservices"] {
            kc.wait_crd_established(&format!("{crd}.{}", super::cluster::APPMESH_GROUP), Duration::from_secs(120)).await?;
        }
        let arns = self.arns(true, cx).await?;
        for b in self.remote_backends() {
            if !arns.contains_key(&b.name) {
                return Err(StepError::new(format!(
                    "virtual service ARN of {} (account {}) not found in its status.virtualServiceARN nor through the App Mesh API; is the appmesh-controller running in {}?",
                    b.name, b.account, b.account
                )));
            }
        }
        let objs = objects(c, &self.spoke.name, &arns)?;
        for group in [objs.mesh, objs.workloads] {
            for t in self.targets(&kc, group).await? {
                kc.apply(&t).await?;
                cx.progress(format!("applied {}", t.describe()));
            }
        }
        for svc in c.services.iter().filter(|s| s.account == self.spoke.name) {
            cx.progress(format!("waiting for Deployment {}/{}", c.mesh.app_namespace, svc.name));
            kc.wait_deployment_available(&c.mesh.app_namespace, &svc.name, DEPLOYMENT_TIMEOUT).await?;
        }
        for (ns, name) in &objs.load_balancers {
            cx.progress(format!("waiting for the load balancer of Service {ns}/{name}"));
            let host = kc.wait_load_balancer(ns, name, LB_TIMEOUT).await?;
            let port = c.services.iter().find(|s| &s.name == name).and_then(|s| s.load_balancer_port).unwrap_or(80);
            let url = if port == 80 { format!("http://{host}/") } else { format!("http://{host}:{port}/") };
            cx.progress(format!("{name} is at {url}"));
        }
        Ok(())
    }

    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let kc = self.ctx.kube.cluster_client(&self.spoke.name).await?;
        let objs = objects(c, &self.spoke.name, &BTreeMap::new())?;
        let lb_names: BTreeSet<&(String, String)> = objs.load_balancers.iter().collect();
        let is_lb = |o: &DynamicObject| {
            o.types.as_ref().is_some_and(|t| t.kind == "Service")
                && lb_names.contains(&(o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default()))
        };
        let (lbs, rest): (Vec<DynamicObject>, Vec<DynamicObject>) = objs.workloads.into_iter().partition(|o| is_lb(o));
        // 1. the load balancer, 2. mesh resources (services, routers, nodes), 3. workloads.
        self.delete_all(&kc, lbs, cx).await?;
        let mut mesh = objs.mesh;
        mesh.reverse();
        self.delete_all(&kc, mesh, cx).await?;
        self.delete_all(&kc, rest, cx).await?;
        super::cluster::delete_our_namespace(&kc, &c.mesh.app_namespace, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(objs: &[DynamicObject]) -> Vec<(String, String)> {
        objs.iter().map(|o| (o.types.as_ref().unwrap().kind.clone(), o.metadata.name.clone().unwrap())).collect()
    }

    #[test]
    fn backend_objects_follow_the_walkthrough() {
        let c = Config::default();
        let o = objects(&c, "backend", &BTreeMap::new()).unwrap();
        let k = kinds(&o.mesh);
        assert!(k.contains(&("VirtualRouter".into(), "yelb-appserver-router".into())), "{k:?}");
        assert_eq!(k.iter().filter(|(k, _)| k == "VirtualNode").count(), 3);
        let app = o.mesh.iter().find(|x| x.types.as_ref().unwrap().kind == "VirtualNode" && x.metadata.name.as_deref() == Some("yelb-appserver")).unwrap();
        let spec = &app.data["spec"];
        let l = &spec["listeners"][0];
        assert_eq!(l["tls"]["mode"], "STRICT");
        assert_eq!(l["tls"]["certificate"]["sds"]["secretName"], "spiffe://am-multi-account-mesh/yelbapp");
        assert_eq!(l["tls"]["validation"]["trust"]["sds"]["secretName"], "spiffe://am-multi-account-mesh");
        assert_eq!(l["tls"]["validation"]["subjectAlternativeNames"]["match"]["exact"], serde_json::json!(["spiffe://am-multi-account-mesh/frontend"]));
        assert_eq!(spec["serviceDiscovery"]["awsCloudMap"]["namespaceName"], "am-multi-account.local");
        let tls = &spec["backendDefaults"]["clientPolicy"]["tls"];
        assert_eq!(tls["enforce"], true);
        assert_eq!(tls["validation"]["subjectAlternativeNames"]["match"]["exact"], serde_json::json!(["spiffe://am-multi-account-mesh/yelbdb", "spiffe://am-multi-account-mesh/redis"]));
        assert_eq!(spec["backends"][0]["virtualService"]["virtualServiceRef"]["name"], "yelb-db");
        let db = o.mesh.iter().find(|x| x.types.as_ref().unwrap().kind == "VirtualNode" && x.metadata.name.as_deref() == Some("yelb-db")).unwrap();
        assert_eq!(db.data["spec"]["serviceDiscovery"]["dns"]["hostname"], "yelb-db.yelb.svc.cluster.local");
        assert_eq!(db.data["spec"]["listeners"][0]["tls"]["validation"]["subjectAlternativeNames"]["match"]["exact"], serde_json::json!(["spiffe://am-multi-account-mesh/yelbapp"]));
        assert!(db.data["spec"].get("backends").is_none());
        let router = o.mesh.iter().find(|x| x.types.as_ref().unwrap().kind == "VirtualRouter").unwrap();
        assert_eq!(router.data["spec"]["routes"][0]["httpRoute"]["retryPolicy"]["maxRetries"], 2);
        assert!(o.load_balancers.is_empty());
    }

    #[test]
    fn frontend_calls_the_backend_by_arn_and_has_a_load_balancer() {
        let c = Config::default();
        let arn = "arn:aws:appmesh:us-east-2:111111111111:mesh/am-multi-account-mesh/virtualService/yelb-appserver.am-multi-account.local".to_string();
        let o = objects(&c, "frontend", &[("yelb-appserver".to_string(), arn.clone())].into()).unwrap();
        let ui = o.mesh.iter().find(|x| x.types.as_ref().unwrap().kind == "VirtualNode").unwrap();
        assert_eq!(ui.data["spec"]["backends"][0]["virtualService"]["virtualServiceARN"], arn.as_str());
        assert_eq!(ui.data["spec"]["backendDefaults"]["clientPolicy"]["tls"]["validation"]["subjectAlternativeNames"]["match"]["exact"], serde_json::json!(["spiffe://am-multi-account-mesh/yelbapp"]));
        assert!(ui.data["spec"]["listeners"][0]["tls"]["validation"].get("subjectAlternativeNames").is_none(), "nobody calls yelb-ui");
        assert_eq!(o.load_balancers, vec![("yelb".to_string(), "yelb-ui".to_string())]);
        let svc = o.workloads.iter().find(|x| x.types.as_ref().unwrap().kind == "Service").unwrap();
        assert_eq!(svc.data["spec"]["type"], "LoadBalancer");
    }

    /// Any number of spokes: a third spoke's caller is accepted by the appserver's SAN
    /// matcher and reaches it by ARN.
    #[test]
    fn three_spokes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-spokes.toml");
        let c = Config::load(Some(&path), &[], &[]).unwrap();
        let back = objects(&c, "backend", &BTreeMap::new()).unwrap();
        let app = back.mesh.iter().find(|x| x.types.as_ref().unwrap().kind == "VirtualNode" && x.metadata.name.as_deref() == Some("yelb-appserver")).unwrap();
        assert_eq!(
            app.data["spec"]["listeners"][0]["tls"]["validation"]["subjectAlternativeNames"]["match"]["exact"],
            serde_json::json!(["spiffe://am-multi-account-mesh/frontend", "spiffe://am-multi-account-mesh/analytics/worker"])
        );
        let arn = "arn:aws:appmesh:us-east-2:111111111111:mesh/am-multi-account-mesh/virtualService/yelb-appserver.am-multi-account.local".to_string();
        let an = objects(&c, "analytics", &[("yelb-appserver".to_string(), arn.clone())].into()).unwrap();
        let w = an.mesh.iter().find(|x| x.types.as_ref().unwrap().kind == "VirtualNode").unwrap();
        assert_eq!(w.data["spec"]["backends"][0]["virtualService"]["virtualServiceARN"], arn.as_str());
        assert_eq!(w.data["spec"]["listeners"][0]["tls"]["certificate"]["sds"]["secretName"], "spiffe://am-multi-account-mesh/analytics/worker");
        let ctx = Arc::new(Ctx::new(c));
        let steps = steps(&ctx);
        let analytics = steps.iter().find(|s| s.meta().id == "yelb/analytics").unwrap();
        assert!(analytics.meta().needs.contains(&"yelb/backend".to_string()), "{:?}", analytics.meta().needs);
    }
}
