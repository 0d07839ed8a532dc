//! Phase 8: the application. Per spoke, its workloads' Deployments and Services rendered from
//! `manifests/app/workload.yaml`, decorated by the mesh provider (sidecar, its configuration,
//! the shape of the Services, mesh objects beside them), then applied in the app namespace.
//! A spoke goes after every spoke whose workloads it calls, so a caller can be pointed at its
//! callee (a load balancer's address, a virtual service's ARN).
//!
//! Every object the step applied is listed in the inventory ConfigMap
//! `meshctl-app-inventory` of the app namespace ([`crate::kube::inventory`], with the
//! provider's name). An apply deletes what the inventory lists and the configuration no
//! longer renders — another provider's mesh objects, a removed workload's Deployment — so
//! switching `mesh.provider` converges with no orphan. The new objects are listed before they
//! are applied, so a run that stops half-way leaves nothing unlisted.
//!
//! Teardown of a spoke: the load balancers first (the cloud releases them before any stack
//! is deleted), then every other object in reverse order of creation (mesh objects last, while
//! the provider's control plane still runs so its finalizers clear), then what the inventory
//! lists beyond them, the inventory, and the namespace when meshctl created it. Each delete
//! waits until the object is gone and names any finalizer it is stuck on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::DynamicObject;

use super::ids;
use crate::config::Protocol;
use crate::engine::{Error, ErrorKind, Status, Step, StepMeta, StepRun};
use crate::error::ResultExt;
use crate::kube::inventory::{Inventory, ObjectKey};
use crate::kube::template::{render, Vars};
use crate::kube::{is_ours, parse_manifests, to_dynamic, to_typed, KubeClient, KubeError, Target, MANAGED_BY};
use crate::mesh::{AppObjects, Wait, WorkloadObjects};
use crate::session::Session;
use crate::topology::Workload;

const WORKLOAD: (&str, &str) = ("manifests/app/workload.yaml", include_str!("../../manifests/app/workload.yaml"));

/// The app namespace's inventory ConfigMap.
pub const INVENTORY: &str = "meshctl-app-inventory";
/// The inventory's fact naming the provider that rendered the objects.
pub const INVENTORY_PROVIDER: &str = "provider";

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);
const LB_TIMEOUT: Duration = Duration::from_secs(600);
const DELETE_TIMEOUT: Duration = Duration::from_secs(300);

/// The ids of the app steps: one per spoke that runs workloads.
pub fn step_ids(session: &Session) -> Vec<crate::engine::StepId> {
    session.config.spokes.iter().filter(|s| session.topology.in_account(&s.name).next().is_some()).map(|s| ids::yelb(&s.name)).collect()
}

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    let topo = &session.topology;
    let mut out: Vec<Arc<dyn Step>> = Vec::new();
    for s in &c.spokes {
        let workloads: Vec<&Workload> = topo.in_account(&s.name).collect();
        if workloads.is_empty() {
            // A spoke that runs none of the configured services: what an earlier
            // configuration deployed there (its inventory lists it) goes.
            let meta = StepMeta::new(
                ids::yelb(&s.name),
                &s.name,
                format!("remove the services no longer configured in {} (those its inventory lists)", s.name),
            )
            .needs([ids::kubeconfig(&s.name)]);
            out.push(Arc::new(NoServices(AppStep { meta, session: session.clone(), account: s.name.clone() })));
            continue;
        }
        let mut needs = vec![ids::spire_agent(&s.name), ids::kubeconfig(&s.name)];
        needs.extend(workloads.iter().map(|w| ids::register_service(&w.name)));
        needs.extend(topo.callee_accounts(&s.name).iter().map(|a| ids::yelb(a)));
        needs.extend(session.mesh.app_needs(&s.name));
        let names: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
        out.push(Arc::new(AppStep {
            meta: StepMeta::new(
                ids::yelb(&s.name),
                &s.name,
                format!("deploy {} with their {} sidecars", names.join(", "), session.mesh.name()),
            )
            .needs(needs),
            session: session.clone(),
            account: s.name.clone(),
        }));
    }
    out
}

fn vars(pairs: impl IntoIterator<Item = (&'static str, String)>) -> Vars {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The generic objects of the workloads of `account`, before the provider decorates them.
pub fn render_app(session: &Session, account: &str) -> Result<AppObjects, Error> {
    let topo = &session.topology;
    let mut out = AppObjects { account: account.to_string(), ..Default::default() };
    for w in topo.in_account(account) {
        let protocol = match w.protocol {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        };
        let v = vars([
            ("name", w.name.clone()),
            ("namespace", topo.namespace.clone()),
            ("app_label", w.labels.get("app").cloned().unwrap_or_default()),
            ("tier_label", w.labels.get("tier").cloned().unwrap_or_default()),
            ("service_account", w.service_account.clone()),
            ("image", w.image.clone()),
            ("port", w.port.to_string()),
            ("port_name", protocol.to_string()),
            ("service_type", if w.public_port.is_some() { "LoadBalancer" } else { "ClusterIP" }.to_string()),
            ("service_port", w.public_port.unwrap_or(w.port).to_string()),
        ]);
        let mut deployment = None;
        let mut services = Vec::new();
        for obj in parse_manifests(&render(WORKLOAD.0, WORKLOAD.1, &v)?, WORKLOAD.0)? {
            match obj.types.as_ref().map(|t| t.kind.as_str()) {
                Some("Deployment") => deployment = Some(to_typed::<Deployment>(obj)?),
                Some("Service") => services.push(to_typed::<Service>(obj)?),
                other => return Err(Error::new(ErrorKind::InvalidInput, format!("{}: unexpected kind {other:?}", WORKLOAD.0))),
            }
        }
        let deployment = deployment.ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("{} has no Deployment", WORKLOAD.0)))?;
        out.workloads.push(WorkloadObjects { workload: w.clone(), deployment, services });
    }
    Ok(out)
}

/// What one spoke's step applies, in order, and what it waits for.
struct Plan {
    /// Every object, in apply order (mesh objects first).
    objects: Vec<DynamicObject>,
    /// Facts from other clusters not known yet (check only).
    pending: Vec<String>,
    /// `(name, public port)` of LoadBalancer Services.
    load_balancers: Vec<(String, Option<u16>)>,
    deployments: Vec<String>,
}

/// The objects of `account`'s app step: rendered, decorated by the provider, in apply order.
async fn plan(session: &Session, account: &str, wait: Wait, progress: &dyn crate::state::Progress) -> Result<Plan, Error> {
    let mut objs = render_app(session, account)?;
    let pending = session.mesh.decorate(session, &mut objs, wait, progress).await?;
    let mut plan = Plan { objects: objs.mesh, pending, load_balancers: Vec::new(), deployments: Vec::new() };
    for wo in objs.workloads {
        plan.deployments.push(wo.workload.name.clone());
        plan.objects.push(to_dynamic(&wo.deployment)?);
        for svc in &wo.services {
            if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
                let public = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|p| p.first()).map(|p| p.port as u16);
                let is_public = wo.workload.public_port.is_some() && public == wo.workload.public_port;
                plan.load_balancers.push((svc.metadata.name.clone().unwrap_or_default(), is_public.then_some(public).flatten()));
            }
            plan.objects.push(to_dynamic(svc)?);
        }
    }
    Ok(plan)
}

/// What `account`'s app step lists in its inventory, read once (facts from other clusters
/// that are not known yet are rendered empty; they change no object's name).
pub async fn inventory(session: &Session, account: &str, progress: &dyn crate::state::Progress) -> Result<Inventory, Error> {
    let plan = plan(session, account, Wait::No, progress).await?;
    Ok(Inventory::of(&plan.objects, [(INVENTORY_PROVIDER.to_string(), session.mesh.name().to_string())]))
}

/// `yelb/<spoke>`.
pub struct AppStep {
    meta: StepMeta,
    session: Arc<Session>,
    account: String,
}

impl AppStep {
    fn ns(&self) -> &str {
        &self.session.topology.namespace
    }

    fn namespace_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.session.mesh.namespace_labels();
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        labels
    }

    async fn plan(&self, wait: Wait, progress: &dyn crate::state::Progress) -> Result<Plan, Error> {
        plan(&self.session, &self.account, wait, progress).await
    }

    /// Resolves the objects' kinds; a kind the cluster does not serve (a mesh CRD not
    /// installed) is `None`.
    async fn resolve(kc: &KubeClient, objs: Vec<DynamicObject>) -> Result<Vec<Option<Target>>, Error> {
        let mut out = Vec::new();
        for o in objs {
            out.push(match kc.resolve(o).await {
                Ok(t) => Some(t),
                Err(KubeError::Discovery { .. }) => None,
                Err(e) => return Err(e.into()),
            });
        }
        Ok(out)
    }

    /// The inventory of what `plan` applies (as [`inventory`]).
    fn wanted_inventory(&self, plan: &Plan) -> Inventory {
        Inventory::of(&plan.objects, [(INVENTORY_PROVIDER.to_string(), self.session.mesh.name().to_string())])
    }

    /// The inventory ConfigMap as the cluster has it.
    async fn live_inventory(&self, kc: &KubeClient) -> Result<Option<Inventory>, Error> {
        let cm: Option<ConfigMap> = kc.get_typed(self.ns(), INVENTORY).await?;
        cm.map(|cm| Inventory::from_config_map(&cm)).transpose().context(format!("context {}", kc.context))
    }

    async fn write_inventory(&self, kc: &KubeClient, inventory: &Inventory, run: &StepRun) -> Result<(), Error> {
        kc.apply_typed(&inventory.to_config_map(INVENTORY, self.ns())).await?;
        run.progress(format!("recorded {} objects in ConfigMap {}/{INVENTORY}", inventory.objects.len(), self.ns()));
        Ok(())
    }

    /// The listed objects that exist and are meshctl's, resolved (a kind the cluster no
    /// longer serves has no object left): `(LoadBalancer Services, the rest)`. An object of a
    /// listed name that meshctl did not make (someone replaced it) is left alone, with a note.
    async fn existing(kc: &KubeClient, ns: &str, keys: &[ObjectKey], run: &StepRun) -> Result<(Vec<Target>, Vec<Target>), Error> {
        let mut lbs = Vec::new();
        let mut rest = Vec::new();
        for t in Self::resolve(kc, keys.iter().map(|k| k.stub(ns)).collect()).await?.into_iter().flatten() {
            let Some(live) = kc.get(&t).await? else { continue };
            if !is_ours(&live) {
                run.progress(format!(
                    "leaving {}: listed in the inventory but not labelled {}={}",
                    t.describe(),
                    MANAGED_BY.0,
                    MANAGED_BY.1
                ));
                continue;
            }
            if t.ar.kind == "Service" && live.data["spec"]["type"] == "LoadBalancer" {
                lbs.push(t);
            } else {
                rest.push(t);
            }
        }
        Ok((lbs, rest))
    }

    /// Deletes each of `targets` and waits until it is gone, one at a time.
    async fn delete_each(kc: &KubeClient, targets: &[Target], why: &str, run: &StepRun) -> Result<(), Error> {
        for t in targets {
            if kc.get(t).await?.is_some() {
                run.progress(format!("deleting {}{why}", t.describe()));
                kc.delete_and_wait(t, DELETE_TIMEOUT).await?;
            }
        }
        Ok(())
    }

    /// Deletes all of `targets` at once, then waits until each is gone: a controller may need
    /// them gone together (App Mesh's virtual nodes and the virtual services they name).
    async fn delete_together(kc: &KubeClient, targets: &[Target], why: &str, run: &StepRun) -> Result<(), Error> {
        let mut asked = Vec::new();
        for t in targets {
            run.progress(format!("deleting {}{why}", t.describe()));
            if let Some(uid) = kc.delete(t).await? {
                asked.push((t, uid));
            }
        }
        for (t, uid) in asked {
            kc.wait_deleted(t, &uid, DELETE_TIMEOUT).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step for AppStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        let kc = self.session.kube.cluster_client(&self.account).await?;
        let plan = self.plan(Wait::No, run).await?;
        let wanted = self.wanted_inventory(&plan);
        let inventory = self.live_inventory(&kc).await?;
        let targets = Self::resolve(&kc, plan.objects).await?;
        let objects = if targets.iter().any(Option::is_none) {
            Status::Missing
        } else {
            let targets: Vec<Target> = targets.into_iter().flatten().collect();
            kc.check_all(&targets).await?
        };
        if objects == Status::Missing && inventory.is_none() && !kc.namespace_is_ours(self.ns()).await? {
            return Ok(Status::Missing);
        }
        let namespace = match kc.namespace_status(self.ns(), &self.namespace_labels()).await? {
            // The reason names the namespace already.
            Status::Drifted(r) => Status::Drifted(r.trim_start_matches(&format!("Namespace {} ", self.ns())).to_string()),
            s => s,
        };
        let mut parts = vec![(format!("namespace {}", self.ns()), namespace), ("objects".to_string(), objects.clone())];
        if objects != Status::Missing {
            for d in &plan.deployments {
                parts.push((format!("Deployment {}/{d}", self.ns()), kc.rollout_status::<Deployment>(self.ns(), d).await?));
            }
        }
        for p in plan.pending {
            parts.push((p, Status::Drifted("waiting".into())));
        }
        let listed = match &inventory {
            None => Status::Drifted(format!("missing; would list the {} objects", wanted.objects.len())),
            Some(live) => {
                let stale: Vec<String> = live.stale(&wanted).iter().map(ObjectKey::describe).collect();
                if !stale.is_empty() {
                    Status::Drifted(format!("would delete {} (no longer rendered)", stale.join(", ")))
                } else if *live != wanted {
                    Status::Drifted("does not list exactly the rendered objects".into())
                } else {
                    Status::UpToDate
                }
            }
        };
        parts.push((format!("inventory {}/{INVENTORY}", self.ns()), listed));
        Ok(match Status::all(parts) {
            Status::Missing => Status::Drifted("objects exist but their workloads do not run".into()),
            s => s,
        })
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let ns = self.ns().to_string();
        let kc = self.session.kube.cluster_client(&self.account).await?;
        let labels = self.namespace_labels();
        // First, so that labels another provider needed (App Mesh's sidecar injector selects
        // on them) are gone before any new pod starts.
        if !kc.ensure_namespace(&ns, &labels).await? {
            let mut probe = k8s_openapi::api::core::v1::Namespace::default();
            probe.metadata.name = Some(ns.clone());
            let live = kc.get(&crate::kube::typed(&probe)?).await?.and_then(|n| n.metadata.labels).unwrap_or_default();
            let missing: Vec<String> = self
                .session
                .mesh
                .namespace_labels()
                .into_iter()
                .filter(|(k, v)| live.get(k) != Some(v))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !missing.is_empty() {
                return Err(Error::new(
                    ErrorKind::NotOurs,
                    format!(
                        "namespace {ns} exists (not created by meshctl) without the labels the {} provider needs: {}",
                        self.session.mesh.name(),
                        missing.join(", ")
                    ),
                )
                .hint(format!("label it (`kubectl label namespace {ns} {}`), or delete it and let meshctl create it", missing.join(" "))));
            }
        }
        let plan = self.plan(Wait::Up(LB_TIMEOUT), run).await?;
        let wanted = self.wanted_inventory(&plan);
        let before = self.live_inventory(&kc).await?;
        let mut listed = match &before {
            Some(old) => old.union(&wanted),
            None => wanted.clone(),
        };
        if before.as_ref() != Some(&listed) {
            self.write_inventory(&kc, &listed, run).await?;
        }
        let (mut repaired, mut unchanged) = (Vec::new(), Vec::new());
        for t in Self::resolve(&kc, plan.objects).await?.into_iter() {
            let t = t.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "context {}: a mesh object's kind is not served (is the {} control plane installed?)",
                        kc.context,
                        self.session.mesh.name()
                    ),
                )
                .hint(format!("run `meshctl up --only mesh` for account {}", self.account))
            })?;
            let before = kc.get(&t).await?;
            let after = kc.apply(&t).await?;
            run.progress(format!("applied {}", t.describe()));
            if let Some(before) = before {
                match t.ar.kind.as_str() {
                    "ConfigMap" if before.metadata.resource_version != after.metadata.resource_version => {
                        repaired.push(t.name().to_string())
                    }
                    "Deployment" if before.metadata.generation == after.metadata.generation => unchanged.push(t),
                    _ => {}
                }
            }
        }
        // A ConfigMap put back while its Deployment's template stayed the same: the running
        // pods still read the old content (a sidecar's bootstrap is read once), so restart them.
        let at = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        for d in unchanged.iter().filter(|d| crate::kube::mounted_config_maps(&d.obj).iter().any(|c| repaired.contains(c))) {
            kc.restart(d, &at).await?;
            run.progress(format!("restarted {}: a ConfigMap it mounts was repaired", d.describe()));
        }
        for d in &plan.deployments {
            run.progress(format!("waiting for Deployment {ns}/{d}"));
            kc.wait_rolled_out::<Deployment>(&ns, d, ROLLOUT_TIMEOUT).await?;
        }
        for (name, public) in &plan.load_balancers {
            run.progress(format!("waiting for the load balancer of Service {ns}/{name}"));
            let host = kc.wait_load_balancer(&ns, name, LB_TIMEOUT).await?;
            match public {
                Some(80) => run.progress(format!("{name} is at http://{host}/")),
                Some(p) => run.progress(format!("{name} is at http://{host}:{p}/")),
                None => run.progress(format!("{name} is reachable from the other accounts at {host}")),
            }
        }
        let stale = listed.stale(&wanted);
        if !stale.is_empty() {
            let (lbs, rest) = Self::existing(&kc, &ns, &stale, run).await?;
            Self::delete_each(&kc, &lbs, " (no longer rendered)", run).await?;
            Self::delete_together(&kc, &rest, " (no longer rendered)", run).await?;
        }
        if listed != wanted {
            listed = wanted;
            self.write_inventory(&kc, &listed, run).await?;
        }
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let kc = self.session.kube.cluster_client(&self.account).await?;
        let plan = self.plan(Wait::No, run).await?;
        let wanted = self.wanted_inventory(&plan);
        let inventory = self.live_inventory(&kc).await?;
        let lb_names: Vec<&str> = plan.load_balancers.iter().map(|(n, _)| n.as_str()).collect();
        let rendered: Vec<Target> = Self::resolve(&kc, plan.objects).await?.into_iter().flatten().collect();
        let (rendered_lbs, rendered_rest): (Vec<Target>, Vec<Target>) =
            rendered.into_iter().partition(|t| t.ar.kind == "Service" && lb_names.contains(&t.name()));
        // What the inventory lists beyond the rendered objects (another provider's): its load
        // balancers go with the rendered ones, first; the rest after the rendered objects.
        let extra = inventory.as_ref().map(|i| i.stale(&wanted)).unwrap_or_default();
        let (extra_lbs, extra_rest) = Self::existing(&kc, self.ns(), &extra, run).await?;
        Self::delete_each(&kc, &rendered_lbs, "", run).await?;
        Self::delete_each(&kc, &extra_lbs, " (listed in the inventory)", run).await?;
        // The workloads together (their pods' grace periods run at once), then the mesh objects
        // beside them, while the provider's control plane still runs for their finalizers.
        let (workloads, mesh): (Vec<Target>, Vec<Target>) =
            rendered_rest.into_iter().partition(|t| matches!(t.ar.kind.as_str(), "Deployment" | "Service"));
        Self::delete_together(&kc, &workloads, "", run).await?;
        Self::delete_together(&kc, &mesh, "", run).await?;
        Self::delete_together(&kc, &extra_rest, " (listed in the inventory)", run).await?;
        let mut inv = ConfigMap::default();
        inv.metadata.name = Some(INVENTORY.into());
        inv.metadata.namespace = Some(self.ns().into());
        if kc.delete_and_wait(&crate::kube::typed(&inv)?, DELETE_TIMEOUT).await? {
            run.progress(format!("deleted ConfigMap {}/{INVENTORY}", self.ns()));
        }
        if kc.delete_namespace_if_ours(self.ns(), DELETE_TIMEOUT).await.context(format!(
            "context {}: deleting namespace {}",
            kc.context,
            self.ns()
        ))? {
            run.progress(format!("namespace {} deleted", self.ns()));
        }
        Ok(())
    }
}

/// `yelb/<spoke>` of a spoke without configured services: up to date when its cluster holds
/// no inventory and no namespace of meshctl's; else `up` (and `down`) delete what the
/// inventory lists, the inventory and the namespace, as the spoke's app step's teardown does.
struct NoServices(AppStep);

#[async_trait::async_trait]
impl Step for NoServices {
    fn meta(&self) -> &StepMeta {
        &self.0.meta
    }

    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        let kc = self.0.session.kube.cluster_client(&self.0.account).await?;
        let listed: Vec<String> = match self.0.live_inventory(&kc).await? {
            Some(inv) => inv.objects.iter().map(ObjectKey::describe).collect(),
            None if kc.namespace_is_ours(self.0.ns()).await? => Vec::new(),
            None => return Ok(if run.mode.reversed() { Status::Missing } else { Status::UpToDate }),
        };
        Ok(Status::Drifted(format!(
            "would delete {}the namespace {} (no configured service runs in this spoke)",
            listed.iter().map(|o| format!("{o}, ")).collect::<String>(),
            self.0.ns()
        )))
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        self.0.destroy(run).await
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        self.0.destroy(run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn generic_objects_are_the_app_and_its_service() {
        let s = Session::new(Config::default()).unwrap();
        let o = render_app(&s, "backend").unwrap();
        assert_eq!(o.workloads.iter().map(|w| w.workload.name.as_str()).collect::<Vec<_>>(), ["yelb-appserver", "yelb-db", "redis-server"]);
        let app = &o.workloads[0];
        let pod = app.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("docker.io/mreferre/yelb-appserver:0.5"));
        assert_eq!(pod.service_account_name.as_deref(), Some("default"));
        let labels = app.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert_eq!(labels, [("app".to_string(), "yelb-appserver".to_string()), ("tier".to_string(), "middletier".to_string())].into());
        let ui = render_app(&s, "frontend").unwrap();
        let svc = ui.workloads[0].services[0].spec.clone().unwrap();
        assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(svc.ports.unwrap()[0].port, 80);
    }
}
