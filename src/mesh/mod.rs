//! The data-plane provider contract: what a mesh provider contributes and what the core keeps.
//!
//! The core owns the topology (who runs where, with which SPIFFE ID, who may call whom), the
//! SPIRE server, agents and entries, the application's Deployments and Services (the `yelb`
//! phase renders them generically), and `verify`. A provider contributes:
//!
//! 1. its control plane: the steps of the `mesh` phase ([`MeshProvider::control_plane`]),
//!    and which of them each spoke's app step needs ([`MeshProvider::app_needs`]);
//! 2. each workload's data-plane decoration ([`MeshProvider::decorate`]): the sidecar and its
//!    configuration, the shape of the Services, any mesh objects applied beside them;
//! 3. the SPIRE selectors that pick the container holding the SVID
//!    ([`MeshProvider::workload_selectors`]) and the labels of the app namespace;
//! 4. its verify profile ([`MeshProvider::verify_profile`]): the Envoy admin port and the
//!    hints a failed check shows;
//! 5. a preflight of its own ([`MeshProvider::preflight`]), run before anything changes.
//!
//! The steps of a provider the configuration no longer selects are removed by the core's
//! `mesh` phase ([`registry::retired`]): its `control_plane` steps must therefore check and
//! destroy from configuration alone, even once its AWS service is gone.
//!
//! A provider lives in `src/mesh/<name>/`, reads its own configuration section
//! (`[mesh.<name>]`) and is listed once in [`registry`]. It uses the core's libraries (`aws`,
//! `kube`, `helm`, `steps`) and public types, never a phase's internals.

pub mod envoy;
pub mod registry;

#[cfg(feature = "appmesh")]
pub mod appmesh;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::DynamicObject;

use crate::engine::{Step, StepId, StepRun};
use crate::error::Error;
use crate::session::Session;
use crate::state::Progress;
use crate::topology::Workload;
use crate::verify::Hints;

/// One spoke's application objects: rendered generically by the core's app phase, then
/// decorated by the provider, then applied in this order (and deleted in reverse, load
/// balancers first).
#[derive(Debug, Clone, Default)]
pub struct AppObjects {
    /// The spoke account.
    pub account: String,
    /// Mesh objects applied before the workloads and deleted after them (App Mesh virtual
    /// nodes and services; the Envoy bootstrap ConfigMaps).
    pub mesh: Vec<DynamicObject>,
    pub workloads: Vec<WorkloadObjects>,
}

/// One workload's Deployment and Services.
#[derive(Debug, Clone)]
pub struct WorkloadObjects {
    pub workload: Workload,
    pub deployment: Deployment,
    /// The first is the workload's own Service, named after it.
    pub services: Vec<Service>,
}

/// What [`MeshProvider::decorate`] may wait for: facts from other clusters that exist only
/// once their app step ran (a load balancer's address, a virtual service's ARN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Read once; what is not there yet is reported as pending (checks, teardown).
    No,
    /// Wait up to this long for it (apply).
    Up(Duration),
}

/// The Envoy admin port and the check hints of a provider, for `meshctl verify`.
#[derive(Clone)]
pub struct VerifyProfile {
    pub admin_port: u16,
    pub hints: Arc<dyn Hints>,
}

#[async_trait::async_trait]
pub trait MeshProvider: Send + Sync {
    /// The name in `mesh.provider`.
    fn name(&self) -> &'static str;

    /// Checks that need the network but change nothing, run by `preflight/accounts` before
    /// any step (e.g. that the provider's AWS service still answers). `run.mode` is the walk:
    /// what makes `up` impossible must not stop `down` from removing the rest.
    async fn preflight(&self, _session: &Session, _run: &StepRun) -> Result<(), Error> {
        Ok(())
    }

    /// Steps of the `mesh` phase: the provider's control plane (may be none).
    fn control_plane(&self, session: &Arc<Session>) -> Vec<Arc<dyn Step>>;

    /// Steps of the control plane that the app step of `account` needs.
    fn app_needs(&self, _account: &str) -> Vec<StepId> {
        Vec::new()
    }

    /// Labels the app namespace carries besides meshctl's own.
    fn namespace_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// The `type:value` selectors of a workload's SPIRE entry: the pod and the container
    /// that holds its SVID.
    fn workload_selectors(&self, w: &Workload, namespace: &str) -> Vec<String>;

    /// Adds the data plane to one spoke's objects. Returns what is still pending (facts
    /// from other clusters not known yet, with `Wait::No`); with `Wait::Up` it waits for them
    /// and fails on timeout.
    async fn decorate(
        &self,
        session: &Session,
        objects: &mut AppObjects,
        wait: Wait,
        progress: &dyn Progress,
    ) -> Result<Vec<String>, Error>;

    /// How `verify` reads and explains this provider's Envoys.
    fn verify_profile(&self) -> VerifyProfile;
}

/// The selectors of a pod's container as the SPIRE k8s workload attestor reports them:
/// namespace, service account, every label, container name.
pub fn k8s_selectors(w: &Workload, namespace: &str, container: &str) -> Vec<String> {
    let mut out = vec![format!("k8s:ns:{namespace}"), format!("k8s:sa:{}", w.service_account)];
    out.extend(w.labels.iter().map(|(k, v)| format!("k8s:pod-label:{k}:{v}")));
    out.push(format!("k8s:container-name:{container}"));
    out
}
