//! The App Mesh provider: the mesh in the hub account shared to the spokes through RAM, a
//! Cloud Map namespace, per cluster IRSA for the appmesh-controller (AWS side, [`aws`]), the
//! controller's Helm release and the `Mesh` resource (cluster side, [`cluster`]); then per
//! spoke the virtual nodes, services and routers with STRICT mTLS from SPIRE over SDS, and the
//! workloads ([`app`]).

pub mod app;
pub mod aws;
pub mod cluster;

use std::sync::Arc;

use super::Provider;
use crate::context::Ctx;
use crate::engine::Step;

pub struct AppMesh;

impl Provider for AppMesh {
    fn name(&self) -> &'static str {
        "appmesh"
    }

    fn mesh_steps(&self, ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
        let mut out = aws::steps(ctx);
        out.extend(cluster::steps(ctx));
        out
    }

    fn app_steps(&self, ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
        app::steps(ctx)
    }
}
