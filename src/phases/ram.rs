//! Phase 2: in each spoke, accept the pending invitation to the hub's Transit Gateway share
//! (nothing to do when the share is already associated, e.g. inside an AWS Organization). The
//! hub shares the Transit Gateway with each spoke from that spoke's own hub stack
//! (`stacks/hub-<spoke>`), so this waits for that stack only.

use std::sync::Arc;

use super::ids;
use crate::engine::{Step, StepMeta};
use crate::session::Session;
use crate::steps::accept_share::AcceptShare;

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    c.spokes
        .iter()
        .map(|s| {
            AcceptShare::step(
                StepMeta::new(ids::ram(&s.name), &s.name, format!("accept RAM share {}", c.network.tgw_share))
                    .needs([ids::hub_peer_stack(&s.name)]),
                session,
                &s.name,
                &c.network.tgw_share,
            )
        })
        .collect()
}
