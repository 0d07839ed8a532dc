//! Phase 6: the SPIRE server in the hub cluster, the trust bundle copied into each spoke, and
//! a SPIRE agent DaemonSet per spoke.
//!
//! The charts are meshctl's own (`charts/`, embedded in the binary); values come from the
//! configuration only, so `helm get values` equal to the computed values means up to date.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, Condition};
use serde_json::json;

use super::ids;
use crate::config::Account;
use crate::context::Ctx;
use crate::engine::{Context, Status, Step, StepCx, StepError, StepMeta};
use crate::helm::{drift, Helm};
use crate::kube::wait::pod_problems;
use crate::kube::{kubeconfig_path, FIELD_MANAGER, MANAGED_BY};
use crate::spire::charts::{
    agent_values, server_values, AGENT_CHART, AGENT_DAEMONSET, BUNDLE_CONFIGMAP, SERVER_CHART, SERVER_POD, SERVER_PVC,
    SERVER_STATEFULSET,
};

/// How long `up` waits for the server StatefulSet / an agent DaemonSet to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the bundle copy waits for the server to publish its trust bundle.
pub const BUNDLE_TIMEOUT: Duration = Duration::from_secs(180);

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    let mut out: Vec<Arc<dyn Step>> = vec![Arc::new(ServerStep {
        ctx: ctx.clone(),
        meta: StepMeta::new("spire", "server", &c.hub.name, format!("install SPIRE server (trust domain {})", c.mesh.trust_domain))
            .needs([ids::spire_configmaps(), ids::kubeconfig(&c.hub.name)]),
    })];
    for s in &c.spokes {
        out.push(Arc::new(BundleStep {
            ctx: ctx.clone(),
            spoke: s.clone(),
            meta: StepMeta::new("spire", &format!("bundle-{}", s.name), &s.name, format!("copy spire-bundle into {}", s.cluster_name))
                .needs([ids::spire_server(), ids::kubeconfig(&s.name)]),
        }));
        out.push(Arc::new(AgentStep {
            ctx: ctx.clone(),
            spoke: s.clone(),
            meta: StepMeta::new("spire", &format!("agent-{}", s.name), &s.name, format!("install SPIRE agent ({})", s.psat_cluster()))
                .needs([format!("spire/bundle-{}", s.name), ids::aws_auth(&s.name), ids::tgw_stack(&s.name)]),
        }));
    }
    out
}

/// Where a cluster is, for messages: `cluster eks-cluster-shared (account shared, context shared)`.
fn place(ctx: &Ctx, account: &Account) -> String {
    let context = ctx.kube.context(&account.name).unwrap_or("?");
    format!("cluster {} (account {}, context {context})", account.cluster_name, account.name)
}

async fn client(ctx: &Ctx, account: &str) -> Result<kube::Client, StepError> {
    ctx.kube.client(account).await.map_err(|e| StepError::new(e.to_string()))
}

fn helm_for(ctx: &Ctx, account: &str) -> Result<Helm, StepError> {
    let context = ctx.kube.context(account).map_err(|e| StepError::new(e.to_string()))?;
    Ok(Helm::new(kubeconfig_path(&ctx.config), context))
}

fn statefulset_ready(s: &StatefulSet) -> Result<(), String> {
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = s.status.clone().unwrap_or_default();
    let ready = st.ready_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let fresh = st.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
    if fresh && ready >= want && updated >= want {
        Ok(())
    } else {
        Err(format!("{ready}/{want} replicas ready, {updated}/{want} updated{}", if fresh { "" } else { ", rollout not observed yet" }))
    }
}

fn daemonset_ready(d: &DaemonSet) -> Result<(), String> {
    let st = d.status.clone().unwrap_or_default();
    let want = st.desired_number_scheduled;
    let ready = st.number_ready;
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let fresh = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    if fresh && ready >= want && updated >= want {
        Ok(())
    } else {
        Err(format!("{ready}/{want} pods ready, {updated}/{want} updated{}", if fresh { "" } else { ", rollout not observed yet" }))
    }
}

/// Waits (through a kube-runtime watch) until `ready` holds for the object, or fails after
/// `timeout` with a message naming what it waited for and the object's last state.
async fn wait_ready<K>(
    cx: &StepCx,
    api: Api<K>,
    what: &str,
    name: &str,
    timeout: Duration,
    ready: fn(&K) -> Result<(), String>,
    selector: fn(&K) -> Option<&LabelSelector>,
) -> Result<(), StepError>
where
    K: Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + kube::Resource + 'static,
{
    struct Ready<K>(fn(&K) -> Result<(), String>);
    impl<K> Condition<K> for Ready<K> {
        fn matches_object(&self, obj: Option<&K>) -> bool {
            obj.is_some_and(|o| (self.0)(o).is_ok())
        }
    }
    cx.progress(format!("waiting for {what} to be ready"));
    let waited = tokio::time::timeout(timeout, await_condition(api.clone(), name, Ready(ready))).await;
    match waited {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(StepError::new(format!("watching {what}: {e}"))),
        Err(_) => {
            let state = match api.get_opt(name).await {
                Ok(Some(o)) => {
                    let state = ready(&o).err().unwrap_or_else(|| "ready now".into());
                    let ns = o.meta().namespace.clone().unwrap_or_default();
                    state + &pod_problems(api.into_client(), &ns, selector(&o)).await
                }
                Ok(None) => "it does not exist".into(),
                Err(e) => format!("cannot read it: {e}"),
            };
            Err(StepError::new(format!("timed out after {}s waiting for {what} to be ready: {state}", timeout.as_secs())))
        }
    }
}

/// The address agents use to reach the server: `spire.server_address`, else the
/// spire-server-0 pod IP in the hub (as the walkthrough does).
pub async fn server_address(ctx: &Ctx) -> Result<String, StepError> {
    if let Some(a) = ctx.config.spire.server_address.as_deref().filter(|a| !a.is_empty()) {
        return Ok(a.to_string());
    }
    let hub = &ctx.config.hub;
    let pods: Api<Pod> = Api::namespaced(client(ctx, &hub.name).await?, &ctx.config.spire.namespace);
    let where_ = || format!("pod {}/{SERVER_POD} in {}", ctx.config.spire.namespace, place(ctx, hub));
    let pod = pods.get_opt(SERVER_POD).await.context(format!("reading {}", where_()))?;
    let pod = pod.ok_or_else(|| StepError::new(format!("{} does not exist: run `meshctl up` for spire/server first, or set spire.server_address", where_())))?;
    pod.status
        .and_then(|s| s.pod_ip)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| StepError::new(format!("{} has no IP yet; set spire.server_address to a Service or load balancer address to avoid depending on it", where_())))
}

// ---------------------------------------------------------------------------------------------

/// `spire/server`: the server release in the hub, ready, with its address known.
pub struct ServerStep {
    ctx: Arc<Ctx>,
    meta: StepMeta,
}

impl ServerStep {
    fn what(&self) -> String {
        format!("StatefulSet {}/{SERVER_STATEFULSET} in {}", self.ctx.config.spire.namespace, place(&self.ctx, &self.ctx.config.hub))
    }
}

#[async_trait::async_trait]
impl Step for ServerStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let c = &self.ctx.config;
        let helm = helm_for(&self.ctx, &c.hub.name)?;
        let Some(info) = helm.status(&c.spire.server_release, &c.spire.namespace).await.context("SPIRE server")? else {
            return Ok(Status::Missing);
        };
        if let Some(why) = drift(&info, &server_values(c)) {
            return Ok(Status::Drifted(format!("release {}: {why}", c.spire.server_release)));
        }
        let sts: Api<StatefulSet> = Api::namespaced(client(&self.ctx, &c.hub.name).await?, &c.spire.namespace);
        match sts.get_opt(SERVER_STATEFULSET).await.context(format!("reading {}", self.what()))? {
            None => Ok(Status::Drifted(format!("{} is missing", self.what()))),
            Some(s) => Ok(match statefulset_ready(&s) {
                Ok(()) => Status::UpToDate,
                Err(state) => Status::Drifted(format!("{} not ready: {state}", self.what())),
            }),
        }
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let helm = helm_for(&self.ctx, &c.hub.name)?;
        let chart = SERVER_CHART.materialize().context("SPIRE server chart")?;
        let path = chart.path().join(SERVER_CHART.name);
        cx.progress(format!("helm upgrade --install {}", c.spire.server_release));
        helm.upgrade_install(&c.spire.server_release, &c.spire.namespace, &path.to_string_lossy(), None, None, &server_values(c), None)
            .await
            .context("SPIRE server")?;
        let sts: Api<StatefulSet> = Api::namespaced(client(&self.ctx, &c.hub.name).await?, &c.spire.namespace);
        wait_ready(cx, sts, &self.what(), SERVER_STATEFULSET, READY_TIMEOUT, statefulset_ready, |s| s.spec.as_ref().map(|s| &s.selector)).await?;
        let addr = server_address(&self.ctx).await?;
        cx.progress(format!("SPIRE server reachable at {addr}:{}", c.spire.server_port));
        Ok(())
    }

    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let helm = helm_for(&self.ctx, &c.hub.name)?;
        cx.progress(format!("helm uninstall {}", c.spire.server_release));
        helm.uninstall(&c.spire.server_release, &c.spire.namespace).await.context("SPIRE server")?;
        // The StatefulSet's claim outlives the release; it holds the CA keys and the entries.
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client(&self.ctx, &c.hub.name).await?, &c.spire.namespace);
        match pvcs.delete(SERVER_PVC, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(StepError::new(format!(
                "deleting PersistentVolumeClaim {}/{SERVER_PVC} in {}: {e}",
                c.spire.namespace,
                place(&self.ctx, &c.hub)
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// `spire/bundle-<spoke>`: ConfigMap spire-bundle of the hub copied into the spoke.
pub struct BundleStep {
    ctx: Arc<Ctx>,
    spoke: Account,
    meta: StepMeta,
}

type Data = BTreeMap<String, String>;

impl BundleStep {
    fn ns(&self) -> &str {
        &self.ctx.config.spire.namespace
    }

    /// The hub's bundle data; `None` when the ConfigMap is absent or still empty.
    async fn hub_bundle(&self) -> Result<Option<Data>, StepError> {
        let hub = &self.ctx.config.hub;
        let cms: Api<ConfigMap> = Api::namespaced(client(&self.ctx, &hub.name).await?, self.ns());
        let cm = cms
            .get_opt(BUNDLE_CONFIGMAP)
            .await
            .context(format!("reading ConfigMap {}/{BUNDLE_CONFIGMAP} in {}", self.ns(), place(&self.ctx, hub)))?;
        Ok(cm.and_then(|cm| cm.data).filter(|d| d.values().any(|v| !v.trim().is_empty())))
    }

    async fn spoke_api(&self) -> Result<Api<ConfigMap>, StepError> {
        Ok(Api::namespaced(client(&self.ctx, &self.spoke.name).await?, self.ns()))
    }

    fn spoke_what(&self) -> String {
        format!("ConfigMap {}/{BUNDLE_CONFIGMAP} in {}", self.ns(), place(&self.ctx, &self.spoke))
    }
}

#[async_trait::async_trait]
impl Step for BundleStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let spoke = self.spoke_api().await?.get_opt(BUNDLE_CONFIGMAP).await.context(format!("reading {}", self.spoke_what()))?;
        let Some(spoke) = spoke else { return Ok(Status::Missing) };
        let Some(hub) = self.hub_bundle().await? else {
            return Ok(Status::Drifted(format!(
                "the SPIRE server has not published its bundle into ConfigMap {}/{BUNDLE_CONFIGMAP} of {} yet",
                self.ns(),
                place(&self.ctx, &self.ctx.config.hub)
            )));
        };
        if spoke.data.unwrap_or_default() != hub {
            return Ok(Status::Drifted("the copy differs from the hub's current bundle".into()));
        }
        Ok(Status::UpToDate)
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let hub = &self.ctx.config.hub;
        cx.progress("waiting for the server's trust bundle");
        let deadline = tokio::time::Instant::now() + BUNDLE_TIMEOUT;
        let data = loop {
            if let Some(d) = self.hub_bundle().await? {
                break d;
            }
            if tokio::time::Instant::now() >= deadline || cx.cancelled() {
                return Err(StepError::new(format!(
                    "timed out after {}s waiting for the SPIRE server to publish its trust bundle into ConfigMap {}/{BUNDLE_CONFIGMAP} of {} (is the server running? see `kubectl logs {SERVER_POD} -n {}`)",
                    BUNDLE_TIMEOUT.as_secs(),
                    self.ns(),
                    place(&self.ctx, hub),
                    self.ns()
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        let kc = client(&self.ctx, &self.spoke.name).await?;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let nss: Api<Namespace> = Api::all(kc.clone());
        let ns = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": self.ns(), "labels": { MANAGED_BY.0: MANAGED_BY.1 } }
        });
        // Only create the namespace: applying labels to one that exists would take ownership.
        if nss.get_opt(self.ns()).await.context(format!("reading namespace {} in {}", self.ns(), place(&self.ctx, &self.spoke)))?.is_none() {
            nss.patch(self.ns(), &pp, &Patch::Apply(&ns))
                .await
                .context(format!("creating namespace {} in {}", self.ns(), place(&self.ctx, &self.spoke)))?;
        }
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": BUNDLE_CONFIGMAP, "namespace": self.ns(), "labels": { MANAGED_BY.0: MANAGED_BY.1 } },
            "data": data,
        });
        cx.progress(format!("applying {}", self.spoke_what()));
        self.spoke_api()
            .await?
            .patch(BUNDLE_CONFIGMAP, &pp, &Patch::Apply(&cm))
            .await
            .context(format!("applying {}", self.spoke_what()))?;
        Ok(())
    }

    async fn destroy(&self, _: &StepCx) -> Result<(), StepError> {
        let api = self.spoke_api().await?;
        let Some(cm) = api.get_opt(BUNDLE_CONFIGMAP).await.context(format!("reading {}", self.spoke_what()))? else {
            return Ok(());
        };
        let ours = cm.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).is_some_and(|v| v == MANAGED_BY.1);
        if !ours {
            return Ok(());
        }
        match api.delete(BUNDLE_CONFIGMAP, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(StepError::new(format!("deleting {}: {e}", self.spoke_what()))),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// `spire/agent-<spoke>`: the agent release in the spoke, ready.
pub struct AgentStep {
    ctx: Arc<Ctx>,
    spoke: Account,
    meta: StepMeta,
}

impl AgentStep {
    fn what(&self) -> String {
        format!("DaemonSet {}/{AGENT_DAEMONSET} in {}", self.ctx.config.spire.namespace, place(&self.ctx, &self.spoke))
    }
}

#[async_trait::async_trait]
impl Step for AgentStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let c = &self.ctx.config;
        let helm = helm_for(&self.ctx, &self.spoke.name)?;
        let Some(info) = helm.status(&c.spire.agent_release, &c.spire.namespace).await.context("SPIRE agent")? else {
            return Ok(Status::Missing);
        };
        // The server address is part of the wanted values: a moved server pod is drift.
        let addr = match server_address(&self.ctx).await {
            Ok(a) => a,
            Err(e) => return Ok(Status::Drifted(format!("cannot tell the server address to compare with: {e}"))),
        };
        if let Some(why) = drift(&info, &agent_values(c, &self.spoke, &addr)) {
            return Ok(Status::Drifted(format!("release {}: {why}", c.spire.agent_release)));
        }
        let ds: Api<DaemonSet> = Api::namespaced(client(&self.ctx, &self.spoke.name).await?, &c.spire.namespace);
        match ds.get_opt(AGENT_DAEMONSET).await.context(format!("reading {}", self.what()))? {
            None => Ok(Status::Drifted(format!("{} is missing", self.what()))),
            Some(d) => Ok(match daemonset_ready(&d) {
                Ok(()) => Status::UpToDate,
                Err(state) => Status::Drifted(format!("{} not ready: {state}", self.what())),
            }),
        }
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let addr = server_address(&self.ctx).await?;
        let helm = helm_for(&self.ctx, &self.spoke.name)?;
        let chart = AGENT_CHART.materialize().context("SPIRE agent chart")?;
        let path = chart.path().join(AGENT_CHART.name);
        cx.progress(format!("helm upgrade --install {} (server {addr}:{})", c.spire.agent_release, c.spire.server_port));
        helm.upgrade_install(
            &c.spire.agent_release,
            &c.spire.namespace,
            &path.to_string_lossy(),
            None,
            None,
            &agent_values(c, &self.spoke, &addr),
            None,
        )
        .await
        .context("SPIRE agent")?;
        let ds: Api<DaemonSet> = Api::namespaced(client(&self.ctx, &self.spoke.name).await?, &c.spire.namespace);
        wait_ready(cx, ds, &self.what(), AGENT_DAEMONSET, READY_TIMEOUT, daemonset_ready, |d| d.spec.as_ref().map(|s| &s.selector)).await
    }

    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let helm = helm_for(&self.ctx, &self.spoke.name)?;
        cx.progress(format!("helm uninstall {}", c.spire.agent_release));
        helm.uninstall(&c.spire.agent_release, &c.spire.namespace).await.context("SPIRE agent")
    }
}
