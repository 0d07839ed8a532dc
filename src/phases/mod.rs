//! The walkthrough's phases, each contributing its steps to one graph. A phase module knows
//! its resources (AWS, Kubernetes, SPIRE) and nothing about rendering; it reaches another
//! phase only through the step ids in [`ids`].

pub mod aws_auth;
pub mod kubeconfig;
pub mod mesh;
pub mod preflight;
pub mod ram;
pub mod register;
pub mod spire;
pub mod stacks;
pub mod yelb;

use std::sync::Arc;

use crate::engine::{Graph, GraphError, Step};
use crate::session::Session;

/// The phase whose steps every run includes (read-only checks of the accounts).
pub const PREFLIGHT: &str = "preflight";

/// Builds the whole up-graph for the session's configuration and provider.
pub fn graph(session: &Arc<Session>) -> Result<Graph, GraphError> {
    let mut steps: Vec<Arc<dyn Step>> = Vec::new();
    steps.extend(preflight::steps(session));
    steps.extend(stacks::steps(session));
    steps.extend(ram::steps(session));
    steps.extend(kubeconfig::steps(session));
    steps.extend(aws_auth::steps(session));
    steps.extend(mesh::steps(session));
    steps.extend(spire::steps(session));
    steps.extend(register::steps(session));
    steps.extend(yelb::steps(session));
    Graph::new(steps)
}

/// The ids of the steps phases (and providers) need from each other, spelled once.
pub mod ids {
    use crate::engine::StepId;

    pub fn preflight() -> StepId {
        StepId::new(super::PREFLIGHT, "accounts")
    }
    pub fn stack(account: &str) -> StepId {
        StepId::new("stacks", account)
    }
    /// The hub's stack for one spoke (routes, Transit Gateway share, SPIRE access).
    pub fn hub_peer_stack(spoke: &str) -> StepId {
        StepId::new("stacks", &format!("hub-{spoke}"))
    }
    pub fn tgw_stack(spoke: &str) -> StepId {
        StepId::new("stacks", &format!("{spoke}-tgw"))
    }
    /// This mesh's stacks the configuration no longer names.
    pub fn orphan_stacks() -> StepId {
        StepId::new("stacks", "orphans")
    }
    /// meshctl's SPIRE entries the configuration no longer names.
    pub fn orphan_entries() -> StepId {
        StepId::new("register", "orphans")
    }
    pub fn ram(spoke: &str) -> StepId {
        StepId::new("ram", spoke)
    }
    pub fn kubeconfig(account: &str) -> StepId {
        StepId::new("kubeconfig", account)
    }
    /// The hub's SPIRE namespace.
    pub fn spire_namespace() -> StepId {
        StepId::new("kubeconfig", "spire-namespace")
    }
    /// The SPIRE server's kubeconfig for one spoke (a ConfigMap in the hub).
    pub fn spire_kubeconfig(spoke: &str) -> StepId {
        StepId::new("kubeconfig", &format!("spire-{spoke}"))
    }
    pub fn aws_auth(spoke: &str) -> StepId {
        StepId::new("aws-auth", spoke)
    }
    /// A step of the `mesh` phase (the provider's control plane).
    pub fn mesh(name: &str) -> StepId {
        StepId::new("mesh", name)
    }
    pub fn spire_server() -> StepId {
        StepId::new("spire", "server")
    }
    pub fn spire_bundle(spoke: &str) -> StepId {
        StepId::new("spire", &format!("bundle-{spoke}"))
    }
    pub fn spire_agent(spoke: &str) -> StepId {
        StepId::new("spire", &format!("agent-{spoke}"))
    }
    pub fn register_node(spoke: &str) -> StepId {
        StepId::new("register", &format!("node-{spoke}"))
    }
    pub fn register_service(service: &str) -> StepId {
        StepId::new("register", service)
    }
    pub fn yelb(account: &str) -> StepId {
        StepId::new("yelb", account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::StepId;

    fn default_graph() -> Graph {
        graph(&Arc::new(Session::new(Config::default()).unwrap())).expect("the default graph is valid")
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
    fn only_per_spoke_stacks_wait_on_the_hub_stack_among_stacks() {
        let g = default_graph();
        let waiting: Vec<&str> = g
            .metas()
            .filter(|m| m.phase == "stacks" && g.ancestors(m.id.as_str()).iter().any(|a| a == &"stacks/shared"))
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(waiting, ["stacks/hub-frontend", "stacks/frontend-tgw", "stacks/hub-backend", "stacks/backend-tgw", "stacks/orphans"]);
        for spoke in ["frontend", "backend"] {
            let tgw = g.get(ids::tgw_stack(spoke).as_str()).unwrap().meta();
            assert!(tgw.needs.contains(&ids::ram(spoke)), "the attachment needs the accepted share");
        }
    }

    /// Issue 15.5, for any number of spokes: the base stacks have no path between them (all
    /// clusters build at once); each spoke's hub stack needs only the hub's base stack, and
    /// that spoke's share acceptance needs that hub stack (the share is in it).
    #[test]
    fn base_stacks_stay_independent_and_each_spoke_has_its_own_hub_stack() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut f,
            b"[[spokes]]\nname = \"frontend\"\n[[spokes]]\nname = \"backend\"\n[[spokes]]\nname = \"analytics\"\n",
        )
        .unwrap();
        let c = Config::load(Some(f.path()), &[], &[]).unwrap();
        let g = graph(&Arc::new(Session::new(c.clone()).unwrap())).unwrap();
        let bases: Vec<StepId> = c.accounts().map(|a| ids::stack(&a.name)).collect();
        for a in &bases {
            for b in &bases {
                if a != b {
                    assert!(!g.connected(a.as_str(), b.as_str()), "{a} and {b} are connected");
                }
            }
        }
        for s in &c.spokes {
            let peer = g.get(ids::hub_peer_stack(&s.name).as_str()).unwrap().meta();
            assert_eq!(peer.needs, [ids::stack(&c.hub.name)], "{}", peer.id);
            assert_eq!(peer.account, c.hub.name, "made in the hub account");
            assert_eq!(g.get(ids::ram(&s.name).as_str()).unwrap().meta().needs, [ids::hub_peer_stack(&s.name)]);
            // the spoke's agent waits for the grant its token refresher needs, not the server
            assert!(g.get(ids::spire_agent(&s.name).as_str()).unwrap().meta().needs.contains(&ids::hub_peer_stack(&s.name)));
            // no other spoke's hub stack is on the way to this spoke's attachment
            for other in c.spokes.iter().filter(|o| o.name != s.name) {
                assert!(
                    !g.ancestors(ids::tgw_stack(&s.name).as_str()).contains(&ids::hub_peer_stack(&other.name)),
                    "{} waits on {}'s hub stack",
                    s.name,
                    other.name
                );
            }
        }
    }

    /// A spoke that fails (its stack refused, its cluster unreachable) holds back only its own
    /// steps: nothing of it is an ancestor of the SPIRE server, nor of another spoke's agent,
    /// entries or app.
    #[test]
    fn a_failing_spoke_holds_back_only_its_own_steps() {
        let c =
            Config::load(Some(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/three-spokes.toml"))), &[], &[]).unwrap();
        let g = graph(&Arc::new(Session::new(c.clone()).unwrap())).unwrap();
        for s in &c.spokes {
            let own = [
                ids::stack(&s.name),
                ids::hub_peer_stack(&s.name),
                ids::tgw_stack(&s.name),
                ids::ram(&s.name),
                ids::kubeconfig(&s.name),
                ids::spire_kubeconfig(&s.name),
                ids::aws_auth(&s.name),
                ids::spire_bundle(&s.name),
                ids::spire_agent(&s.name),
            ];
            let server = g.ancestors(ids::spire_server().as_str());
            for id in &own {
                assert!(!server.contains(id), "spire/server waits on {id}");
            }
            for other in c.spokes.iter().filter(|o| o.name != s.name) {
                let mut theirs = vec![ids::spire_agent(&other.name), ids::register_node(&other.name)];
                // the app of a spoke none of whose services calls into `s`
                let calls_into_s = c
                    .services
                    .iter()
                    .any(|svc| svc.account == other.name && svc.backends.iter().any(|b| c.service(b).is_some_and(|t| t.account == s.name)));
                if !calls_into_s {
                    theirs.push(ids::yelb(&other.name));
                }
                for t in theirs {
                    let up = g.ancestors(t.as_str());
                    for id in &own {
                        assert!(!up.contains(id), "{t} waits on {id} of spoke {}", s.name);
                    }
                }
            }
        }
    }

    #[test]
    fn every_step_reaches_preflight_and_phases_follow_walkthrough_order() {
        let g = default_graph();
        for m in g.metas() {
            if m.phase != PREFLIGHT {
                assert!(g.ancestors(m.id.as_str()).contains(&ids::preflight()), "{} skips preflight", m.id);
            }
        }
        let ui = g.ancestors("yelb/frontend");
        for need in [ids::yelb("backend"), ids::register_service("yelb-ui"), ids::spire_agent("frontend")] {
            assert!(ui.contains(&need), "yelb/frontend does not need {need}");
        }
    }

    /// The envoy provider has no control plane; what the mesh phase holds with it selected is
    /// the removal of the other built-in providers' (App Mesh, in a build with it).
    #[test]
    fn the_default_provider_adds_no_mesh_control_plane() {
        let g = default_graph();
        let mesh = g.ids_in_phases(&["mesh"]);
        if cfg!(feature = "appmesh") {
            assert!(!mesh.is_empty());
            for id in &mesh {
                assert!(id.name().starts_with("retire-"), "{id} is not a removal");
                assert!(g.get(id.as_str()).unwrap().meta().description.ends_with("the appmesh provider is no longer selected"), "{id}");
            }
            assert!(!g.metas().any(|m| m.phase != "mesh" && (m.description.contains("App Mesh") || m.description.contains("Cloud Map"))));
        } else {
            assert!(mesh.is_empty(), "the envoy provider has no control plane: {mesh:?}");
            assert!(!g.metas().any(|m| m.description.contains("App Mesh") || m.description.contains("Cloud Map")));
        }
    }

    /// Switching from App Mesh: each of its steps is removed after every app step (virtual
    /// nodes carry finalizers only its controller clears), what stood on a step first, and
    /// before the cluster access and the stacks it used are destroyed — on the way up and on
    /// the way down. The core names no provider: these come from the registry.
    #[cfg(feature = "appmesh")]
    #[test]
    fn a_retired_provider_goes_after_the_app_in_reverse_order_both_ways() {
        let g = default_graph();
        let mut retire: Vec<&str> = g.ids_in_phases(&["mesh"]).iter().map(|i| g.get(i.as_str()).unwrap().meta().id.as_str()).collect();
        retire.sort();
        assert_eq!(
            retire,
            [
                "mesh/retire-accept-backend",
                "mesh/retire-accept-frontend",
                "mesh/retire-appmesh",
                "mesh/retire-cloudmap",
                "mesh/retire-controller-backend",
                "mesh/retire-controller-frontend",
                "mesh/retire-controller-shared",
                "mesh/retire-irsa-backend",
                "mesh/retire-irsa-frontend",
                "mesh/retire-irsa-shared",
                "mesh/retire-resource-backend",
                "mesh/retire-resource-frontend",
                "mesh/retire-resource-shared",
                "mesh/retire-share",
            ]
        );
        let meta = |id: &str| g.get(id).unwrap().meta().clone();
        for id in &retire {
            let m = meta(id);
            assert!(
                m.after.contains(&ids::yelb("frontend")) && m.after.contains(&ids::yelb("backend")),
                "{id} does not go after every app step"
            );
            assert!(g.ancestors(id).contains(&ids::preflight()), "{id} skips preflight");
        }
        assert!(meta("mesh/retire-controller-backend").after.contains(&StepId::new("mesh", "retire-resource-backend")));
        assert!(meta("mesh/retire-irsa-backend").after.contains(&StepId::new("mesh", "retire-controller-backend")));
        assert!(meta("mesh/retire-appmesh").after.contains(&StepId::new("mesh", "retire-share")));
        assert_eq!(meta("mesh/retire-resource-frontend").needs, [ids::kubeconfig("frontend"), ids::preflight(), ids::stack("frontend")]);
        assert!(meta("mesh/retire-accept-frontend").description.contains("accept RAM share mesh-share"));
        for (walk, order) in [("up", g.topo_order().unwrap()), ("down", g.down_order().unwrap())] {
            let pos = |id: &str| order.iter().position(|x| x == &id).unwrap_or_else(|| panic!("{id}"));
            for spoke in ["frontend", "backend"] {
                assert!(pos(&format!("yelb/{spoke}")) < pos("mesh/retire-resource-backend"), "{walk}: yelb/{spoke}");
            }
            assert!(pos("mesh/retire-resource-backend") < pos("mesh/retire-controller-backend"), "{walk}");
            assert!(pos("mesh/retire-controller-backend") < pos("mesh/retire-irsa-backend"), "{walk}");
            assert!(
                pos("mesh/retire-accept-frontend") < pos("mesh/retire-share") && pos("mesh/retire-share") < pos("mesh/retire-appmesh"),
                "{walk}"
            );
        }
        let down = g.down_order().unwrap();
        let pos = |id: &str| down.iter().position(|x| x == &id).unwrap();
        assert!(pos("mesh/retire-controller-backend") < pos("kubeconfig/backend"), "the cluster is still reachable");
        assert!(pos("mesh/retire-irsa-backend") < pos("stacks/backend"));
        // Selecting App Mesh retires envoy, which has nothing to remove.
        let c = crate::config::Config::load(None, &[], &["mesh.provider=appmesh".into()]).unwrap();
        let g = graph(&Arc::new(Session::new(c).unwrap())).unwrap();
        assert!(!g.metas().any(|m| m.id.name().starts_with("retire-")));
    }
}
