//! App Mesh, cluster side: the appmesh-controller Helm release (SDS on, IRSA service account)
//! and, once it runs, the `Mesh` resource that binds the application namespace to the mesh.
//!
//! The controller's values and the Mesh object are the manifests/appmesh/ templates filled
//! from configuration. The Mesh is applied only after its CRD is Established. Teardown
//! (reverse order of `up`): the Mesh goes with `mesh/resource-<account>` (after the app step
//! removed the workloads while the controller still ran, so finalizers clear); the release,
//! the App Mesh CRDs and the controller namespace go with `mesh/controller-<account>`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

use super::{step_ids, Settings};
use crate::config::Account;
use crate::engine::{Error, Status, Step, StepMeta, StepRun};
use crate::error::ResultExt;
use crate::helm::Helm;
use crate::kube::template::{render, Vars};
use crate::kube::{kubeconfig_path, parse_manifests, KubeClient};
use crate::names::role_arn;
use crate::phases::ids;
use crate::session::Session;

/// The App Mesh API group; every CRD of the controller is in it.
pub const APPMESH_GROUP: &str = "appmesh.k8s.aws";
/// The CRD the Mesh resource needs.
pub const MESH_CRD: &str = "meshes.appmesh.k8s.aws";
const MESH_TEMPLATE: (&str, &str) = ("manifests/appmesh/mesh.yaml", include_str!("../../../manifests/appmesh/mesh.yaml"));
const VALUES_TEMPLATE: (&str, &str) =
    ("manifests/appmesh/controller-values.yaml", include_str!("../../../manifests/appmesh/controller-values.yaml"));

const CRD_TIMEOUT: Duration = Duration::from_secs(120);
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(300);
const DELETE_TIMEOUT: Duration = Duration::from_secs(300);

pub fn steps(session: &Arc<Session>, settings: &Arc<Settings>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    let mut out: Vec<Arc<dyn Step>> = Vec::new();
    for a in c.accounts() {
        out.push(Arc::new(ControllerStep {
            meta: StepMeta::new(
                step_ids::controller(&a.name),
                &a.name,
                format!("install {} in {}", settings.controller.release, a.cluster_name),
            )
            .needs([step_ids::irsa(&a.name), ids::kubeconfig(&a.name)]),
            session: session.clone(),
            settings: settings.clone(),
            account: a.clone(),
        }));
        let mut needs = vec![step_ids::controller(&a.name), step_ids::mesh()];
        if a.name != c.hub.name {
            needs.push(step_ids::accept(&a.name));
        }
        out.push(Arc::new(MeshResourceStep {
            meta: StepMeta::new(step_ids::resource(&a.name), &a.name, format!("apply Mesh {}", c.mesh.name)).needs(needs),
            session: session.clone(),
            account: a.clone(),
        }));
    }
    out
}

/// `mesh/controller-<account>`.
pub struct ControllerStep {
    meta: StepMeta,
    session: Arc<Session>,
    settings: Arc<Settings>,
    account: Account,
}

impl ControllerStep {
    fn helm(&self) -> Result<Helm, Error> {
        Ok(Helm::new(kubeconfig_path(&self.session.config), self.session.kube.context(&self.account.name)?))
    }

    async fn values(&self) -> Result<serde_json::Value, Error> {
        let c = &self.session.config;
        let id = self.session.aws.account_id(&self.account.name).await?;
        let role = role_arn(c, &id, &super::control_plane::controller_role_name(&self.account.cluster_name));
        let vars: Vars = [
            ("region", c.region.clone()),
            ("account_id", id),
            ("agent_socket", c.spire.agent_socket.clone()),
            ("service_account", self.settings.controller.service_account.clone()),
            ("role_arn", role),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let text = render(VALUES_TEMPLATE.0, VALUES_TEMPLATE.1, &vars)?;
        serde_yaml_ng::from_str(&text).context(VALUES_TEMPLATE.0)
    }
}

#[async_trait::async_trait]
impl Step for ControllerStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let ctl = &self.settings.controller;
        let values = self.values().await?;
        match self.helm()?.check(&ctl.release, &ctl.namespace, &values).await? {
            Some(r) if r == "release not installed" => return Ok(Status::Missing),
            Some(r) => return Ok(Status::Drifted(format!("release {}: {r}", ctl.release))),
            None => {}
        }
        let kc = self.session.kube.cluster_client(&self.account.name).await?;
        Ok(kc.rollout_status::<Deployment>(&ctl.namespace, &ctl.release).await?)
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let ctl = &self.settings.controller;
        let kc = self.session.kube.cluster_client(&self.account.name).await?;
        kc.ensure_namespace(&ctl.namespace, &crate::kube::managed_labels()).await?;
        let values = self.values().await?;
        let (chart, version, repo) = match &ctl.chart_path {
            Some(p) => (p.clone(), None, None),
            None => (ctl.chart.clone(), Some(ctl.chart_version.as_str()), Some(ctl.chart_repo.as_str())),
        };
        run.progress(format!("helm upgrade --install {} {chart}", ctl.release));
        self.helm()?.upgrade_install(&ctl.release, &ctl.namespace, &chart, version, repo, &values, None, run.adopt).await?;
        run.progress(format!("waiting for Deployment {}/{}", ctl.namespace, ctl.release));
        kc.wait_rolled_out::<Deployment>(&ctl.namespace, &ctl.release, CONTROLLER_TIMEOUT).await?;
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let ctl = &self.settings.controller;
        let kc = self.session.kube.cluster_client(&self.account.name).await?;
        run.progress(format!("helm uninstall {}", ctl.release));
        self.helm()?.uninstall(&ctl.release, &ctl.namespace, run.adopt).await?;
        let crds: Api<CustomResourceDefinition> = Api::all(kc.client.clone());
        let list = crds
            .list(&Default::default())
            .await
            .map_err(crate::kube::api_error)
            .context(format!("context {}: list CustomResourceDefinitions", kc.context))?;
        for crd in list.items.into_iter().filter(|d| d.spec.group == APPMESH_GROUP) {
            let name = crd.metadata.name.clone().unwrap_or_default();
            run.progress(format!("deleting CRD {name}"));
            let mut bare = CustomResourceDefinition::default();
            bare.metadata.name = Some(name);
            kc.delete_and_wait(&crate::kube::typed(&bare)?, DELETE_TIMEOUT).await?;
        }
        kc.delete_namespace_if_ours(&ctl.namespace, DELETE_TIMEOUT).await?;
        Ok(())
    }
}

/// `mesh/resource-<account>`.
pub struct MeshResourceStep {
    meta: StepMeta,
    session: Arc<Session>,
    account: Account,
}

impl MeshResourceStep {
    async fn objects(&self) -> Result<Vec<kube::api::DynamicObject>, Error> {
        let c = &self.session.config;
        let owner = self.session.aws.account_id(&c.hub.name).await?;
        let vars: Vars = [("mesh", c.mesh.name.clone()), ("mesh_owner", owner)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Ok(parse_manifests(&render(MESH_TEMPLATE.0, MESH_TEMPLATE.1, &vars)?, MESH_TEMPLATE.0)?)
    }

    async fn crd_present(kc: &KubeClient) -> Result<bool, Error> {
        let crds: Api<CustomResourceDefinition> = Api::all(kc.client.clone());
        Ok(crds
            .get_opt(MESH_CRD)
            .await
            .map_err(crate::kube::api_error)
            .context(format!("context {}: get CRD {MESH_CRD}", kc.context))?
            .is_some())
    }
}

#[async_trait::async_trait]
impl Step for MeshResourceStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let kc = self.session.kube.cluster_client(&self.account.name).await?;
        if !Self::crd_present(&kc).await? {
            return Ok(Status::Missing);
        }
        let targets = kc.resolve_all(self.objects().await?).await?;
        Ok(kc.check_all(&targets).await?)
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let kc = self.session.kube.cluster_client(&self.account.name).await?;
        run.progress(format!("waiting for CRD {MESH_CRD}"));
        kc.wait_crd_established(MESH_CRD, CRD_TIMEOUT).await?;
        for obj in self.objects().await? {
            let t = kc.resolve(obj).await?;
            kc.apply(&t).await?;
            run.progress(format!("applied {}", t.describe()));
        }
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let kc = self.session.kube.cluster_client(&self.account.name).await?;
        if Self::crd_present(&kc).await? {
            for obj in self.objects().await? {
                let t = kc.resolve(obj).await?;
                run.progress(format!("deleting {}", t.describe()));
                kc.delete_and_wait(&t, DELETE_TIMEOUT).await?;
            }
        }
        Ok(())
    }
}
