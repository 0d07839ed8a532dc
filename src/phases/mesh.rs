//! Phase 5: the service mesh's control plane, contributed by the configured provider behind
//! the [`crate::mesh`] contract (none for the default `envoy` provider).

use std::sync::Arc;

use crate::engine::Step;
use crate::session::Session;

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    session.mesh.control_plane(session)
}
