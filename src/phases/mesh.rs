//! Phase 5: the service mesh's control plane, contributed by the configured provider behind
//! the [`crate::mesh`] contract (none for the default `envoy` provider).
//!
//! The phase also removes the control plane of every built-in provider the configuration no
//! longer selects (`mesh/retire-<step>`): each of that provider's steps wrapped in
//! [`Absent`], in reverse order, after every app step (the app stops using the old mesh
//! before its control plane goes: App Mesh's virtual nodes carry finalizers only its
//! controller clears). A step whose resources are gone is up to date, so a setup that never
//! ran the other provider sees these steps as done.

use std::sync::Arc;

use super::yelb;
use crate::engine::{Absent, Step};
use crate::mesh::registry;
use crate::session::Session;

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let mut out = session.mesh.control_plane(session);
    let apps = yelb::step_ids(session);
    for retired in registry::retired(&session.config) {
        let why = format!("the {} provider is no longer selected", retired.name());
        out.extend(Absent::wrap_all(retired.control_plane(session), &apps, &why));
    }
    out
}
