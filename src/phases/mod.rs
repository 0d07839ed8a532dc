//! The walkthrough's phases, each contributing its steps to one graph. A phase module knows
//! its resources (AWS, Kubernetes, SPIRE) and nothing about rendering.

pub mod aws_auth;
pub mod kubeconfig;
pub mod mesh;
pub mod preflight;
pub mod ram;
pub mod register;
pub mod spire;
pub mod stacks;
pub mod verify;
pub mod yelb;

use std::sync::Arc;

use crate::context::Ctx;
use crate::engine::{Graph, GraphError, Status, Step, StepCx, StepError, StepMeta};

/// The phase whose steps every run includes (read-only checks of the accounts).
pub const PREFLIGHT: &str = "preflight";

/// Builds the whole up-graph for the configuration.
pub fn graph(ctx: &Arc<Ctx>) -> Result<Graph, GraphError> {
    let mut steps: Vec<Arc<dyn Step>> = Vec::new();
    steps.extend(preflight::steps(ctx));
    steps.extend(stacks::steps(ctx));
    steps.extend(ram::steps(ctx));
    steps.extend(kubeconfig::steps(ctx));
    steps.extend(aws_auth::steps(ctx));
    steps.extend(mesh::steps(ctx));
    steps.extend(spire::steps(ctx));
    steps.extend(register::steps(ctx));
    steps.extend(yelb::steps(ctx));
    Graph::new(steps)
}

/// A step whose work is not written yet: it fails with "not implemented", never pretends.
pub struct Todo {
    meta: StepMeta,
}

impl Todo {
    pub fn step(meta: StepMeta) -> Arc<dyn Step> {
        Arc::new(Todo { meta })
    }
}

#[async_trait::async_trait]
impl Step for Todo {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        Err(StepError::not_implemented(&self.meta.description))
    }
    async fn apply(&self, _: &StepCx) -> Result<(), StepError> {
        Err(StepError::not_implemented(&self.meta.description))
    }
    async fn destroy(&self, _: &StepCx) -> Result<(), StepError> {
        Err(StepError::not_implemented(&self.meta.description))
    }
}

/// Step id helpers shared by the phases, so needs are spelled one way.
pub mod ids {
    pub fn preflight() -> String {
        "preflight/accounts".into()
    }
    pub fn stack(account: &str) -> String {
        format!("stacks/{account}")
    }
    pub fn tgw_stack(spoke: &str) -> String {
        format!("stacks/{spoke}-tgw")
    }
    pub fn ram(spoke: &str) -> String {
        format!("ram/{spoke}")
    }
    pub fn kubeconfig(account: &str) -> String {
        format!("kubeconfig/{account}")
    }
    pub fn spire_configmaps() -> String {
        "kubeconfig/spire-configmaps".into()
    }
    pub fn aws_auth(spoke: &str) -> String {
        format!("aws-auth/{spoke}")
    }
    pub fn mesh_resource(account: &str) -> String {
        format!("mesh/resource-{account}")
    }
    pub fn mesh_cloudmap() -> String {
        "mesh/cloudmap".into()
    }
    pub fn spire_server() -> String {
        "spire/server".into()
    }
    pub fn spire_agent(spoke: &str) -> String {
        format!("spire/agent-{spoke}")
    }
    pub fn register_node(spoke: &str) -> String {
        format!("register/node-{spoke}")
    }
    pub fn register_service(service: &str) -> String {
        format!("register/{service}")
    }
    pub fn yelb(account: &str) -> String {
        format!("yelb/{account}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn default_graph() -> Graph {
        graph(&Arc::new(Ctx::new(Config::default()))).expect("the default graph is valid")
    }

    #[test]
    fn base_stacks_have_no_path_between_them() {
        let g = default_graph();
        let base = ["stacks/shared", "stacks/frontend", "stacks/backend"];
        for a in base {
            for b in base {
                if a != b {
                    assert!(!g.connected(a, b), "{a} and {b} are connected: the clusters would not build at once");
                }
            }
        }
    }

    #[test]
    fn only_tgw_stacks_wait_on_the_hub_stack_among_stacks() {
        let g = default_graph();
        let waiting: Vec<&str> =
            g.metas().filter(|m| m.phase == "stacks" && g.ancestors(&m.id).contains("stacks/shared")).map(|m| m.id.as_str()).collect();
        assert_eq!(waiting, ["stacks/frontend-tgw", "stacks/backend-tgw"]);
        for spoke in ["frontend", "backend"] {
            let tgw = g.get(&ids::tgw_stack(spoke)).unwrap().meta();
            assert!(tgw.needs.contains(&ids::ram(spoke)), "the attachment needs the accepted share");
        }
    }

    #[test]
    fn every_step_reaches_preflight_and_phases_follow_walkthrough_order() {
        let g = default_graph();
        for m in g.metas() {
            if m.phase != PREFLIGHT {
                assert!(g.ancestors(&m.id).contains(&ids::preflight()), "{} skips preflight", m.id);
            }
        }
        let ui = g.ancestors(&ids::yelb("frontend"));
        for need in ["yelb/backend", "register/yelb-ui", "spire/agent-frontend", "mesh/resource-frontend"] {
            assert!(ui.contains(need), "yelb/frontend does not need {need}");
        }
    }

    #[test]
    fn unimplemented_steps_fail_instead_of_pretending() {
        let step = Todo::step(StepMeta::new("x", "y", "-", "do a thing"));
        let cx = StepCx::detached("x/y");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = rt.block_on(step.check(&cx)).unwrap_err();
        assert!(err.message.contains("not implemented"));
    }
}
