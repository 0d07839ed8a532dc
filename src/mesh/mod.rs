//! The data-plane provider seam. A provider contributes the steps of the `mesh` phase (its
//! control plane) and of the `yelb` phase (the application's mesh resources and workloads).
//! Identities (SPIFFE IDs), SAN rules and `verify` stay provider-independent: they come from
//! the configuration. App Mesh is the only provider today; it reached end of support on
//! 2026-09-30, so a second one (sidecar Envoys configured by meshctl itself) can stand here.

pub mod appmesh;

use std::sync::Arc;

use crate::config::MeshProvider;
use crate::context::Ctx;
use crate::engine::Step;

pub trait Provider: Send + Sync {
    /// The name used in `mesh.provider`.
    fn name(&self) -> &'static str;
    /// Steps of the `mesh` phase.
    fn mesh_steps(&self, ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>>;
    /// Steps of the `yelb` phase.
    fn app_steps(&self, ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>>;
}

/// The provider the configuration selects.
pub fn provider(ctx: &Ctx) -> Box<dyn Provider> {
    match ctx.config.mesh.provider {
        MeshProvider::Appmesh => Box::new(appmesh::AppMesh),
    }
}
