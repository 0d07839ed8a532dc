//! App Mesh, cluster side: the appmesh-controller Helm release (SDS on, IRSA service
//! account) and, once it runs, the `Mesh` resource and the labelled application namespace.
//!
//! The controller's values and the Mesh/namespace objects are the manifests/appmesh/
//! templates filled from configuration. Custom resources are applied only after their CRD is
//! Established. Teardown (reverse order of `up`): the Mesh and the application namespace go
//! with `mesh/resource-<account>` (after the yelb step removed the workloads while the
//! controller still ran, so finalizers clear); the release, the App Mesh CRDs and the
//! controller namespace go with `mesh/controller-<account>`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

use crate::config::Account;
use crate::context::Ctx;
use crate::engine::{Status, Step, StepCx, StepError, StepMeta};
use crate::helm::Helm;
use crate::kube::template::{render, Vars};
use crate::kube::{kubeconfig_path, parse_manifests, KubeClient, Target, MANAGED_BY};
use crate::phases::ids;

/// The App Mesh API group; every CRD of the controller is in it.
pub const APPMESH_GROUP: &str = "appmesh.k8s.aws";
/// The CRD the Mesh resource needs.
pub const MESH_CRD: &str = "meshes.appmesh.k8s.aws";
const MESH_TEMPLATE: (&str, &str) = ("manifests/appmesh/mesh.yaml", include_str!("../../../manifests/appmesh/mesh.yaml"));
const NAMESPACE_TEMPLATE: (&str, &str) = ("manifests/appmesh/app-namespace.yaml", include_str!("../../../manifests/appmesh/app-namespace.yaml"));
const VALUES_TEMPLATE: (&str, &str) = ("manifests/appmesh/controller-values.yaml", include_str!("../../../manifests/appmesh/controller-values.yaml"));

const CRD_TIMEOUT: Duration = Duration::from_secs(120);
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(300);
const DELETE_TIMEOUT: Duration = Duration::from_secs(300);

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    let mut out: Vec<Arc<dyn Step>> = Vec::new();
    for a in c.accounts() {
        out.push(Arc::new(ControllerStep {
            meta: StepMeta::new("mesh", &format!("controller-{}", a.name), &a.name, format!("install {} in {}", c.controller.release, a.cluster_name))
                .needs([format!("mesh/irsa-{}", a.name), ids::kubeconfig(&a.name)]),
            ctx: ctx.clone(),
            account: a.clone(),
        }));
        let mut needs = vec![format!("mesh/controller-{}", a.name), "mesh/appmesh".to_string()];
        if a.name != c.hub.name {
            needs.push(format!("mesh/accept-{}", a.name));
        }
        out.push(Arc::new(MeshResourceStep {
            meta: StepMeta::new("mesh", &format!("resource-{}", a.name), &a.name, format!("apply Mesh {} and namespace {}", c.mesh.name, c.mesh.app_namespace))
                .needs(needs),
            ctx: ctx.clone(),
            account: a.clone(),
        }));
    }
    out
}

fn ns_target(name: &str) -> Result<Target, StepError> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_string());
    ns.metadata.labels = Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into());
    Ok(crate::kube::typed(&ns)?)
}

/// Deletes a namespace meshctl created (labelled managed-by) and waits until it is gone.
pub async fn delete_our_namespace(kc: &KubeClient, name: &str, cx: &StepCx) -> Result<(), StepError> {
    let t = ns_target(name)?;
    let Some(live) = kc.get(&t).await? else { return Ok(()) };
    let ours = live.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str) == Some(MANAGED_BY.1);
    if !ours {
        cx.progress(format!("namespace {name} is not labelled {}={}; left in place", MANAGED_BY.0, MANAGED_BY.1));
        return Ok(());
    }
    cx.progress(format!("deleting namespace {name}"));
    kc.delete_and_wait(&t, DELETE_TIMEOUT).await?;
    Ok(())
}

/// `mesh/controller-<account>`.
pub struct ControllerStep {
    meta: StepMeta,
    ctx: Arc<Ctx>,
    account: Account,
}

impl ControllerStep {
    fn helm(&self) -> Result<Helm, StepError> {
        Ok(Helm::new(kubeconfig_path(&self.ctx.config), self.ctx.kube.context(&self.account.name)?))
    }

    /// The IRSA role the controller's service account is annotated with (created by
    /// `mesh/irsa-<account>`).
    async fn role_arn(&self) -> Result<String, StepError> {
        let id = self.ctx.aws.account_id(&self.account.name).await.map_err(|e| StepError::new(e.to_string()))?;
        Ok(format!("arn:{}:iam::{id}:role/{}", crate::aws::partition(&self.ctx.config.region), super::aws::controller_role_name(&self.account.cluster_name)))
    }

    async fn values(&self) -> Result<serde_json::Value, StepError> {
        let c = &self.ctx.config;
        let id = self.ctx.aws.account_id(&self.account.name).await.map_err(|e| StepError::new(e.to_string()))?;
        let vars: Vars = [
            ("region", c.region.clone()),
            ("account_id", id),
            ("agent_socket", c.spire.agent_socket.clone()),
            ("service_account", c.controller.service_account.clone()),
            ("role_arn", self.role_arn().await?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let text = render(VALUES_TEMPLATE.0, VALUES_TEMPLATE.1, &vars)?;
        serde_yaml_ng::from_str(&text).map_err(|e| StepError::new(format!("{}: {e}", VALUES_TEMPLATE.0)))
    }
}

#[async_trait::async_trait]
impl Step for ControllerStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let c = &self.ctx.config.controller;
        let values = self.values().await?;
        match self.helm()?.check(&c.release, &c.namespace, &values).await.map_err(|e| StepError::new(e.to_string()))? {
            Some(r) if r == "release not installed" => return Ok(Status::Missing),
            Some(r) => return Ok(Status::Drifted(format!("release {}: {r}", c.release))),
            None => {}
        }
        let kc = self.ctx.kube.cluster_client(&self.account.name).await?;
        let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(kc.client.clone(), &c.namespace);
        let d = api.get_opt(&c.release).await.map_err(|e| StepError::new(format!("context {}: get Deployment {}/{}: {e}", kc.context, c.namespace, c.release)))?;
        // Rolled out for the current spec is "up to date"; momentary unavailability is health,
        // not configuration drift (`up` waits for availability when it applies).
        let rolled_out = d.as_ref().is_some_and(|d| {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            d.status.as_ref().is_some_and(|s| s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0) && s.updated_replicas.unwrap_or(0) >= want)
        });
        Ok(if rolled_out { Status::UpToDate } else { Status::Drifted(format!("Deployment {}/{} is not rolled out", c.namespace, c.release)) })
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config.controller;
        let kc = self.ctx.kube.cluster_client(&self.account.name).await?;
        kc.apply(&ns_target(&c.namespace)?).await?;
        let values = self.values().await?;
        let (chart, version, repo) = match &c.chart_path {
            Some(p) => (p.clone(), None, None),
            None => (c.chart.clone(), Some(c.chart_version.as_str()), Some(c.chart_repo.as_str())),
        };
        cx.progress(format!("helm upgrade --install {} {chart}", c.release));
        self.helm()?.upgrade_install(&c.release, &c.namespace, &chart, version, repo, &values, None).await.map_err(|e| StepError::new(e.to_string()))?;
        cx.progress(format!("waiting for Deployment {}/{}", c.namespace, c.release));
        kc.wait_deployment_available(&c.namespace, &c.release, CONTROLLER_TIMEOUT).await?;
        Ok(())
    }

    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config.controller;
        let kc = self.ctx.kube.cluster_client(&self.account.name).await?;
        cx.progress(format!("helm uninstall {}", c.release));
        self.helm()?.uninstall(&c.release, &c.namespace).await.map_err(|e| StepError::new(e.to_string()))?;
        let crds: Api<CustomResourceDefinition> = Api::all(kc.client.clone());
        let list = crds.list(&Default::default()).await.map_err(|e| StepError::new(format!("context {}: list CustomResourceDefinitions: {e}", kc.context)))?;
        for crd in list.items.into_iter().filter(|d| d.spec.group == APPMESH_GROUP) {
            let name = crd.metadata.name.clone().unwrap_or_default();
            cx.progress(format!("deleting CRD {name}"));
            let mut bare = CustomResourceDefinition::default();
            bare.metadata.name = Some(name);
            kc.delete_and_wait(&crate::kube::typed(&bare)?, DELETE_TIMEOUT).await?;
        }
        delete_our_namespace(&kc, &c.namespace, cx).await
    }
}

/// `mesh/resource-<account>`.
pub struct MeshResourceStep {
    meta: StepMeta,
    ctx: Arc<Ctx>,
    account: Account,
}

impl MeshResourceStep {
    async fn objects(&self) -> Result<Vec<kube::api::DynamicObject>, StepError> {
        let c = &self.ctx.config;
        let owner = self.ctx.aws.account_id(&c.hub.name).await.map_err(|e| StepError::new(e.to_string()))?;
        let vars: Vars = [("mesh", c.mesh.name.clone()), ("mesh_owner", owner), ("namespace", c.mesh.app_namespace.clone())].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut out = Vec::new();
        for (name, text) in [NAMESPACE_TEMPLATE, MESH_TEMPLATE] {
            out.extend(parse_manifests(&render(name, text, &vars)?, name)?);
        }
        Ok(out)
    }

    async fn crd_present(kc: &KubeClient) -> Result<bool, StepError> {
        let crds: Api<CustomResourceDefinition> = Api::all(kc.client.clone());
        Ok(crds.get_opt(MESH_CRD).await.map_err(|e| StepError::new(format!("context {}: get CRD {MESH_CRD}: {e}", kc.context)))?.is_some())
    }
}

#[async_trait::async_trait]
impl Step for MeshResourceStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let kc = self.ctx.kube.cluster_client(&self.account.name).await?;
        if !Self::crd_present(&kc).await? {
            return Ok(Status::Missing);
        }
        let targets = kc.resolve_all(self.objects().await?).await?;
        Ok(kc.check_all(&targets).await?)
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let kc = self.ctx.kube.cluster_client(&self.account.name).await?;
        cx.progress(format!("waiting for CRD {MESH_CRD}"));
        kc.wait_crd_established(MESH_CRD, CRD_TIMEOUT).await?;
        for obj in self.objects().await? {
            let t = kc.resolve(obj).await?;
            kc.apply(&t).await?;
            cx.progress(format!("applied {}", t.describe()));
        }
        Ok(())
    }

    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let kc = self.ctx.kube.cluster_client(&self.account.name).await?;
        if Self::crd_present(&kc).await? {
            for obj in self.objects().await? {
                if obj.types.as_ref().is_some_and(|t| t.kind == "Mesh") {
                    let t = kc.resolve(obj).await?;
                    cx.progress(format!("deleting {}", t.describe()));
                    kc.delete_and_wait(&t, DELETE_TIMEOUT).await?;
                }
            }
        }
        delete_our_namespace(&kc, &c.mesh.app_namespace, cx).await
    }
}
