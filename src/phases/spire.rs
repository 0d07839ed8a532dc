//! Phase 6: the SPIRE server in the hub cluster (with the StorageClass its volume needs), the
//! trust bundle copied into each spoke, and a SPIRE agent DaemonSet per spoke.
//!
//! The charts are meshctl's own (`charts/`, embedded in the binary); values come from the
//! configuration only, so `helm get values` equal to the computed values means up to date.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use super::ids;
use crate::config::{Account, MANAGED_STORAGE_CLASS};
use crate::engine::{Error, ErrorKind, Status, Step, StepMeta, StepRun};
use crate::error::ResultExt;
use crate::helm::{drift, Helm};
use crate::kube::{kubeconfig_path, typed, KubeClient, MANAGED_BY};
use crate::names::access_role_arn;
use crate::session::Session;
use crate::spire::charts::{
    agent_values, server_values, SpokeAccess, AGENT_CHART, AGENT_DAEMONSET, BUNDLE_CONFIGMAP, SERVER_CHART, SERVER_POD, SERVER_PVC,
    SERVER_STATEFULSET,
};

/// How long `up` waits for the server StatefulSet / an agent DaemonSet to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the bundle copy waits for the server to publish its trust bundle.
pub const BUNDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `down` waits for the server's claim to go.
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `down` waits for a spoke's spire namespace to go.
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(300);

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    let mut out: Vec<Arc<dyn Step>> = vec![Arc::new(ServerStep {
        session: session.clone(),
        meta: StepMeta::new(ids::spire_server(), &c.hub.name, format!("install SPIRE server (trust domain {})", c.mesh.trust_domain))
            // Nothing per spoke: a spoke's kubeconfig ConfigMap (mounted optional) and its token
            // (the refresher retries until the spoke's hub stack grants the role) may come
            // later, and a spoke that fails holds back only its own agent.
            .needs([ids::spire_namespace(), ids::kubeconfig(&c.hub.name)]),
    })];
    for s in &c.spokes {
        out.push(Arc::new(BundleStep {
            session: session.clone(),
            spoke: s.clone(),
            meta: StepMeta::new(ids::spire_bundle(&s.name), &s.name, format!("copy spire-bundle into {}", s.cluster_name))
                .needs([ids::spire_server(), ids::kubeconfig(&s.name)]),
        }));
        out.push(Arc::new(AgentStep {
            session: session.clone(),
            spoke: s.clone(),
            // The server attests this spoke's agents once it can reach the spoke: its kubeconfig
            // there, its token refresher allowed to assume the spoke's access role.
            meta: StepMeta::new(ids::spire_agent(&s.name), &s.name, format!("install SPIRE agent ({})", s.psat_cluster())).needs([
                ids::spire_bundle(&s.name),
                ids::aws_auth(&s.name),
                ids::tgw_stack(&s.name),
                ids::spire_kubeconfig(&s.name),
                ids::hub_peer_stack(&s.name),
            ]),
        }));
    }
    out
}

/// Where a cluster is, for messages: `cluster eks-cluster-shared (account shared, context shared)`.
fn place(session: &Session, account: &Account) -> String {
    let context = session.kube.context(&account.name).unwrap_or("?");
    format!("cluster {} (account {}, context {context})", account.cluster_name, account.name)
}

fn helm_for(session: &Session, account: &str) -> Result<Helm, Error> {
    Ok(Helm::new(kubeconfig_path(&session.config), session.kube.context(account)?))
}

/// The address agents use to reach the server: `spire.server_address`, else the
/// spire-server-0 pod IP in the hub (as the walkthrough does).
pub async fn server_address(session: &Session) -> Result<String, Error> {
    if let Some(a) = session.config.spire.server_address.as_deref().filter(|a| !a.is_empty()) {
        return Ok(a.to_string());
    }
    let hub = &session.config.hub;
    let kc = session.kube.cluster_client(&hub.name).await?;
    let where_ = || format!("pod {}/{SERVER_POD} in {}", session.config.spire.namespace, place(session, hub));
    let pod: Option<Pod> = kc.get_typed(&session.config.spire.namespace, SERVER_POD).await.context(format!("reading {}", where_()))?;
    let pod = pod.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("{} does not exist: run `meshctl up` for spire/server first, or set spire.server_address", where_()),
        )
    })?;
    pod.status.and_then(|s| s.pod_ip).filter(|ip| !ip.is_empty()).ok_or_else(|| {
        Error::new(
            ErrorKind::Conflict,
            format!("{} has no IP yet; set spire.server_address to a Service or load balancer address to avoid depending on it", where_()),
        )
    })
}

/// The StorageClass meshctl owns for the server's volume: EBS gp3 through the EBS CSI driver
/// (the hub stack installs the driver as an EKS add-on). Created only when the server uses
/// it; any other class must exist already.
pub fn managed_storage_class() -> StorageClass {
    let mut sc = StorageClass { provisioner: "ebs.csi.aws.com".into(), ..Default::default() };
    sc.metadata.name = Some(MANAGED_STORAGE_CLASS.into());
    sc.parameters = Some([("type".to_string(), "gp3".to_string()), ("encrypted".to_string(), "true".to_string())].into());
    sc.volume_binding_mode = Some("WaitForFirstConsumer".into());
    sc.reclaim_policy = Some("Delete".into());
    sc.allow_volume_expansion = Some(true);
    sc
}

// ---------------------------------------------------------------------------------------------

/// `spire/server`: the server release in the hub, ready, with its address known.
pub struct ServerStep {
    session: Arc<Session>,
    meta: StepMeta,
}

impl ServerStep {
    fn what(&self) -> String {
        format!(
            "StatefulSet {}/{SERVER_STATEFULSET} in {}",
            self.session.config.spire.namespace,
            place(&self.session, &self.session.config.hub)
        )
    }

    async fn values(&self) -> Result<serde_json::Value, Error> {
        let c = &self.session.config;
        let mut spokes = Vec::new();
        for s in &c.spokes {
            let id = self.session.aws.account_id(&s.name).await?;
            spokes.push(SpokeAccess { spoke: s.clone(), access_role_arn: access_role_arn(c, s, &id) });
        }
        Ok(server_values(c, &spokes))
    }

    /// The server's StorageClass: meshctl's own is created when missing; another one must
    /// exist (a PVC naming a class that does not exist stays Pending forever).
    async fn storage_class(&self, kc: &KubeClient, create: bool) -> Result<Status, Error> {
        let sp = &self.session.config.spire.server;
        if !sp.persistence {
            return Ok(Status::UpToDate);
        }
        let ours = sp.storage_class == MANAGED_STORAGE_CLASS;
        let wanted = if ours {
            managed_storage_class()
        } else {
            StorageClass {
                metadata: kube::api::ObjectMeta { name: Some(sp.storage_class.clone()), ..Default::default() },
                ..Default::default()
            }
        };
        let t = typed(&wanted)?;
        let exists = kc.get(&t).await?.is_some();
        match (exists, ours) {
            (true, _) => Ok(Status::UpToDate),
            (false, true) if create => {
                kc.apply(&t).await?;
                Ok(Status::UpToDate)
            }
            (false, true) => Ok(Status::Missing),
            (false, false) => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "StorageClass {} (spire.server.storage_class) does not exist in {}: the server's volume would never bind; create it, \
                     or leave the key unset so meshctl creates {MANAGED_STORAGE_CLASS}",
                    sp.storage_class,
                    place(&self.session, &self.session.config.hub)
                ),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Step for ServerStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let c = &self.session.config;
        let helm = helm_for(&self.session, &c.hub.name)?;
        let Some(info) = helm.status(&c.spire.server_release, &c.spire.namespace).await.context("SPIRE server")? else {
            return Ok(Status::Missing);
        };
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        if let Status::Missing = self.storage_class(&kc, false).await? {
            return Ok(Status::Drifted(format!("StorageClass {MANAGED_STORAGE_CLASS} is missing")));
        }
        if let Some(why) = drift(&info, &self.values().await?) {
            return Ok(Status::Drifted(format!("release {}: {why}", c.spire.server_release)));
        }
        Ok(kc.rollout_status::<StatefulSet>(&c.spire.namespace, SERVER_STATEFULSET).await?)
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        self.storage_class(&kc, true).await?;
        let helm = helm_for(&self.session, &c.hub.name)?;
        let chart = SERVER_CHART.materialize().context("SPIRE server chart")?;
        let path = chart.path().join(SERVER_CHART.name);
        run.progress(format!("helm upgrade --install {}", c.spire.server_release));
        helm.upgrade_install(
            &c.spire.server_release,
            &c.spire.namespace,
            &path.to_string_lossy(),
            None,
            None,
            &self.values().await?,
            None,
            run.adopt,
        )
        .await
        .context("SPIRE server")?;
        run.progress(format!("waiting for {}", self.what()));
        kc.wait_rolled_out::<StatefulSet>(&c.spire.namespace, SERVER_STATEFULSET, READY_TIMEOUT).await.context(self.what())?;
        let addr = server_address(&self.session).await?;
        run.progress(format!("SPIRE server reachable at {addr}:{}", c.spire.server_port));
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let helm = helm_for(&self.session, &c.hub.name)?;
        run.progress(format!("helm uninstall {}", c.spire.server_release));
        helm.uninstall(&c.spire.server_release, &c.spire.namespace, run.adopt).await.context("SPIRE server")?;
        // The StatefulSet's claim outlives the release; it holds the CA keys and the entries.
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        let mut pvc = PersistentVolumeClaim::default();
        pvc.metadata.name = Some(SERVER_PVC.into());
        pvc.metadata.namespace = Some(c.spire.namespace.clone());
        kc.delete_and_wait(&typed(&pvc)?, DELETE_TIMEOUT)
            .await
            .context(format!("deleting the SPIRE server's volume in {}", place(&self.session, &c.hub)))?;
        let sc = typed(&managed_storage_class())?;
        if c.spire.server.storage_class == MANAGED_STORAGE_CLASS
            && kc
                .get(&sc)
                .await?
                .is_some_and(|o| o.metadata.labels.is_some_and(|l| l.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)))
        {
            kc.delete(&sc).await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// `spire/bundle-<spoke>`: ConfigMap spire-bundle of the hub copied into the spoke.
pub struct BundleStep {
    session: Arc<Session>,
    spoke: Account,
    meta: StepMeta,
}

type Data = BTreeMap<String, String>;

impl BundleStep {
    fn ns(&self) -> &str {
        &self.session.config.spire.namespace
    }

    /// The hub's bundle data; `None` when the ConfigMap is absent or still empty.
    async fn hub_bundle(&self) -> Result<Option<Data>, Error> {
        let hub = &self.session.config.hub;
        let kc = self.session.kube.cluster_client(&hub.name).await?;
        let cm: Option<ConfigMap> = kc
            .get_typed(self.ns(), BUNDLE_CONFIGMAP)
            .await
            .context(format!("reading the trust bundle in {}", place(&self.session, hub)))?;
        Ok(cm.and_then(|cm| cm.data).filter(|d| d.values().any(|v| !v.trim().is_empty())))
    }

    fn copy(&self, data: Data) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(BUNDLE_CONFIGMAP.into());
        cm.metadata.namespace = Some(self.ns().to_string());
        cm.data = Some(data);
        cm
    }

    fn spoke_what(&self) -> String {
        format!("ConfigMap {}/{BUNDLE_CONFIGMAP} in {}", self.ns(), place(&self.session, &self.spoke))
    }
}

#[async_trait::async_trait]
impl Step for BundleStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let kc = self.session.kube.cluster_client(&self.spoke.name).await?;
        let spoke: Option<ConfigMap> = kc.get_typed(self.ns(), BUNDLE_CONFIGMAP).await.context(format!("reading {}", self.spoke_what()))?;
        let Some(spoke) = spoke else {
            // The namespace this step created for the agent, left by a `down` interrupted after
            // deleting the copy: not missing yet, so the next `down` removes it.
            if kc.namespace_is_ours(self.ns()).await? {
                return Ok(Status::Drifted(format!("namespace {} (meshctl's) is there without ConfigMap {BUNDLE_CONFIGMAP}", self.ns())));
            }
            return Ok(Status::Missing);
        };
        let Some(hub) = self.hub_bundle().await? else {
            return Ok(Status::Drifted(format!(
                "the SPIRE server has not published its bundle into ConfigMap {}/{BUNDLE_CONFIGMAP} of {} yet",
                self.ns(),
                place(&self.session, &self.session.config.hub)
            )));
        };
        if spoke.data.unwrap_or_default() != hub {
            return Ok(Status::Drifted("the copy differs from the hub's current bundle".into()));
        }
        Ok(Status::UpToDate)
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let hub = &self.session.config.hub;
        run.progress("waiting for the server's trust bundle");
        let deadline = tokio::time::Instant::now() + BUNDLE_TIMEOUT;
        let data = loop {
            if let Some(d) = self.hub_bundle().await? {
                break d;
            }
            if tokio::time::Instant::now() >= deadline || run.aborted() {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!(
                        "timed out after {}s waiting for the SPIRE server to publish its trust bundle into ConfigMap {}/{BUNDLE_CONFIGMAP} of {}",
                        BUNDLE_TIMEOUT.as_secs(),
                        self.ns(),
                        place(&self.session, hub),
                    ),
                )
                .hint(format!("is the server running? see `kubectl logs {SERVER_POD} -n {}`", self.ns())));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        let kc = self.session.kube.cluster_client(&self.spoke.name).await?;
        kc.ensure_namespace(self.ns(), &crate::kube::managed_labels()).await?;
        run.progress(format!("applying {}", self.spoke_what()));
        kc.apply(&typed(&self.copy(data))?).await.context(format!("applying {}", self.spoke_what()))?;
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let kc = self.session.kube.cluster_client(&self.spoke.name).await?;
        let t = typed(&self.copy(Data::new()))?;
        if let Some(cm) = kc.get(&t).await.context(format!("reading {}", self.spoke_what()))? {
            let ours = cm.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).is_some_and(|v| v == MANAGED_BY.1);
            if ours {
                kc.delete(&t).await.context(format!("deleting {}", self.spoke_what()))?;
            }
        }
        // Last of meshctl's in the spoke's spire namespace on the way down (the agent release
        // needs this step): remove the namespace when meshctl created it (apply did).
        if kc.delete_namespace_if_ours(self.ns(), NAMESPACE_TIMEOUT).await.context(format!(
            "deleting namespace {} in {}",
            self.ns(),
            place(&self.session, &self.spoke)
        ))? {
            run.progress(format!("namespace {} deleted", self.ns()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// `spire/agent-<spoke>`: the agent release in the spoke, ready.
pub struct AgentStep {
    session: Arc<Session>,
    spoke: Account,
    meta: StepMeta,
}

impl AgentStep {
    fn what(&self) -> String {
        format!("DaemonSet {}/{AGENT_DAEMONSET} in {}", self.session.config.spire.namespace, place(&self.session, &self.spoke))
    }
}

#[async_trait::async_trait]
impl Step for AgentStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let c = &self.session.config;
        let helm = helm_for(&self.session, &self.spoke.name)?;
        let Some(info) = helm.status(&c.spire.agent_release, &c.spire.namespace).await.context("SPIRE agent")? else {
            return Ok(Status::Missing);
        };
        // The server address is part of the wanted values: a moved server pod is drift.
        let addr = match server_address(&self.session).await {
            Ok(a) => a,
            Err(e) => return Ok(Status::Drifted(format!("cannot tell the server address to compare with: {}", e.chain()))),
        };
        if let Some(why) = drift(&info, &agent_values(c, &self.spoke, &addr)) {
            return Ok(Status::Drifted(format!("release {}: {why}", c.spire.agent_release)));
        }
        let kc = self.session.kube.cluster_client(&self.spoke.name).await?;
        Ok(kc.rollout_status::<DaemonSet>(&c.spire.namespace, AGENT_DAEMONSET).await?)
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let addr = server_address(&self.session).await?;
        let helm = helm_for(&self.session, &self.spoke.name)?;
        let chart = AGENT_CHART.materialize().context("SPIRE agent chart")?;
        let path = chart.path().join(AGENT_CHART.name);
        run.progress(format!("helm upgrade --install {} (server {addr}:{})", c.spire.agent_release, c.spire.server_port));
        helm.upgrade_install(
            &c.spire.agent_release,
            &c.spire.namespace,
            &path.to_string_lossy(),
            None,
            None,
            &agent_values(c, &self.spoke, &addr),
            None,
            run.adopt,
        )
        .await
        .context("SPIRE agent")?;
        run.progress(format!("waiting for {}", self.what()));
        let kc = self.session.kube.cluster_client(&self.spoke.name).await?;
        Ok(kc.wait_rolled_out::<DaemonSet>(&c.spire.namespace, AGENT_DAEMONSET, READY_TIMEOUT).await.context(self.what())?)
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let helm = helm_for(&self.session, &self.spoke.name)?;
        run.progress(format!("helm uninstall {}", c.spire.agent_release));
        helm.uninstall(&c.spire.agent_release, &c.spire.namespace, run.adopt).await.context("SPIRE agent")
    }
}
