//! Phase 5: the service mesh's control plane, contributed by the configured data-plane
//! provider (App Mesh today) behind the [`crate::mesh`] seam.

use std::sync::Arc;

use crate::context::Ctx;
use crate::engine::Step;

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    crate::mesh::provider(ctx).mesh_steps(ctx)
}
