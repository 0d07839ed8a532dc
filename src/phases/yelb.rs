//! Phase 8: the application: its mesh resources (from the provider) and its workloads, per
//! spoke, a spoke after every spoke whose services it calls.

use std::sync::Arc;

use crate::context::Ctx;
use crate::engine::Step;

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    crate::mesh::provider(ctx).app_steps(ctx)
}
