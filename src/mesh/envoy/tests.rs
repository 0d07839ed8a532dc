//! The envoy provider's decoration and configuration rules, on the walkthrough and the
//! three-spoke example.

use super::*;
use crate::config::Config;

fn load(extra: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("meshctl.toml");
    std::fs::write(&p, extra).unwrap();
    let c = Config::load(Some(&p), &[], &[])?;
    settings(&c)
}

#[test]
fn defaults_pin_the_tested_envoy_and_the_sidecar_ports() {
    let s = settings(&Config::default()).unwrap();
    assert_eq!(s.image, "docker.io/envoyproxy/envoy:v1.40.0");
    assert_eq!((s.ports.inbound, s.ports.admin, s.ports.health), (15443, 9901, 15021));
}

#[test]
fn configurations_that_cannot_work_are_refused_with_the_key() {
    let e = load("[mesh.envoy]\nimage = \"docker.io/envoyproxy/envoy\"\n").unwrap_err();
    assert_eq!(e.key, "mesh.envoy.image");
    assert!(e.message.contains("no tag"), "{e}");
    let e = load("[mesh.envoy]\ninbound_port = 4567\n").unwrap_err();
    assert_eq!(e.key, "services[0].backends", "yelb-ui's egress listener for yelb-appserver would take the inbound port");
    assert!(e.message.contains("inbound_port"), "{e}");
    let e = load("[mesh.envoy]\ninbound_port = 6379\n").unwrap_err();
    assert_eq!(e.key, "services[1].backends");
    let e = load("[mesh.envoy]\nhealth_port = 80\n").unwrap_err();
    assert_eq!(e.key, "services[0].port");
    let e = load("[mesh.envoy]\nadmin_port = 15443\n").unwrap_err();
    assert_eq!(e.key, "mesh.envoy.admin_port");
    let own = "[[services]]\nname = \"a\"\naccount = \"frontend\"\nport = 8080\nimage = \"x/a:1\"\nbackends = [\"b\"]\n[[services]]\nname = \"b\"\naccount = \"backend\"\nport = 8080\nimage = \"x/b:1\"\n";
    let e = load(own).unwrap_err();
    assert_eq!(e.key, "services[0].backends");
    assert!(e.message.contains("the port a itself listens on"), "{e}");
    let two = "[[services]]\nname = \"a\"\naccount = \"frontend\"\nport = 80\nimage = \"x/a:1\"\nbackends = [\"b\", \"c\"]\n[[services]]\nname = \"b\"\naccount = \"backend\"\nport = 5432\nimage = \"x/b:1\"\n[[services]]\nname = \"c\"\naccount = \"backend\"\nport = 5432\nimage = \"x/c:1\"\n";
    let e = load(two).unwrap_err();
    assert_eq!(e.key, "services[0].backends");
    assert!(e.message.contains("both listen on 5432"), "{e}");
}

fn decorated(config: Config, account: &str) -> AppObjects {
    let session = Session::new(config).unwrap();
    let mut objs = crate::phases::yelb::render_app(&session, account).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Remote addresses are not known here (no cluster): decorate with none pending matters
    // only for the frontend, whose appserver is in another account.
    let mesh = EnvoyMesh { settings: settings(&session.config).unwrap() };
    let pending = rt.block_on(async {
        let mut out = Vec::new();
        for wo in objs.workloads.iter_mut() {
            let ups: Vec<Upstream> =
                wo.workload.backends.iter().filter_map(|b| upstream(b, &wo.workload.account, "yelb", Some("10.2.255.10".into()))).collect();
            let b = bootstrap::bootstrap(
                &wo.workload,
                "spiffe://am-multi-account-mesh",
                "/run/spire/sockets/agent.sock",
                mesh.settings.ports,
                &ups,
            );
            let text = serde_yaml_ng::to_string(&b).unwrap();
            let cm = mesh.decorate_workload(wo, "yelb", "/run/spire/sockets/agent.sock", &text);
            out.push(cm);
        }
        out
    });
    for cm in pending {
        objs.mesh.push(crate::kube::to_dynamic(&cm).unwrap());
    }
    objs
}

#[test]
fn sidecar_mounts_the_agent_socket_read_only_and_the_app_dials_backends_on_localhost() {
    let o = decorated(Config::default(), "backend");
    let app = o.workloads.iter().find(|w| w.workload.name == "yelb-appserver").unwrap();
    let pod = app.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["yelb-appserver", "envoy"]);
    let envoy = &pod.containers[1];
    assert_eq!(envoy.image.as_deref(), Some(DEFAULT_IMAGE));
    let sock = envoy.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "spire-agent-socket").unwrap();
    assert_eq!((sock.mount_path.as_str(), sock.read_only), ("/run/spire/sockets", Some(true)));
    let vol = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "spire-agent-socket").unwrap();
    assert_eq!(vol.host_path.as_ref().unwrap().path, "/run/spire/sockets");
    let aliases = pod.host_aliases.as_ref().unwrap();
    assert_eq!(aliases[0].ip, "127.0.0.1");
    assert_eq!(aliases[0].hostnames.as_deref().unwrap(), ["yelb-db", "redis-server"]);
    let probe = envoy.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(probe.path.as_deref(), Some("/ready"));
    assert_eq!(probe.port, IntOrString::String("envoy-health".into()));
    // The bootstrap's digest rolls the pods when it changes.
    let ann = app.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone().unwrap();
    assert_eq!(ann[BOOTSTRAP_ANNOTATION].len(), 16);
    // The mesh Service sends the service port to the sidecar's inbound port.
    let svc = app.services[0].spec.clone().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"), "called from the frontend account: an internal NLB");
    assert_eq!(svc.ports.as_ref().unwrap()[0].port, 4567);
    assert_eq!(svc.ports.as_ref().unwrap()[0].target_port, Some(IntOrString::String("mesh".into())));
    let ann = app.services[0].metadata.annotations.clone().unwrap();
    assert_eq!(ann["service.beta.kubernetes.io/aws-load-balancer-type"], "nlb");
    assert_eq!(ann["service.beta.kubernetes.io/aws-load-balancer-internal"], "true");
    let db = o.workloads.iter().find(|w| w.workload.name == "yelb-db").unwrap();
    assert_eq!(db.services[0].spec.as_ref().unwrap().type_.as_deref(), Some("ClusterIP"), "only called from its own cluster");
    // One bootstrap ConfigMap per workload.
    let cms: Vec<&str> = o.mesh.iter().map(|m| m.metadata.name.as_deref().unwrap()).collect();
    assert_eq!(cms, ["yelb-appserver-envoy", "yelb-db-envoy", "redis-server-envoy"]);
}

#[test]
fn the_public_entry_point_goes_to_the_ui_container_directly() {
    let o = decorated(Config::default(), "frontend");
    let ui = &o.workloads[0];
    assert_eq!(ui.services.len(), 1);
    let svc = ui.services[0].spec.clone().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    let port = &svc.ports.unwrap()[0];
    assert_eq!((port.port, port.target_port.clone()), (80, Some(IntOrString::Int(80))));
    assert!(ui.services[0].metadata.annotations.is_none(), "a public load balancer, not an internal NLB");
    let pod = ui.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.host_aliases.as_ref().unwrap()[0].hostnames.as_deref().unwrap(), ["yelb-appserver"]);
}

/// The rendered sidecar containers are what the SPIRE workload entries select.
#[test]
fn workload_entries_select_the_rendered_pods() {
    for example in ["", "three-spokes.toml"] {
        let config = if example.is_empty() {
            Config::default()
        } else {
            Config::load(Some(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(example)), &[], &[]).unwrap()
        };
        let session = Session::new(config.clone()).unwrap();
        for spoke in &config.spokes {
            let o = decorated(config.clone(), &spoke.name);
            for wo in &o.workloads {
                let w = &wo.workload;
                let selectors = session.mesh.workload_selectors(w, "yelb");
                let pod_meta = wo.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
                let pod = wo.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
                for sel in &selectors {
                    let ok = match sel.split_once(':').map(|(_, r)| r).unwrap().split_once(':').unwrap() {
                        ("ns", ns) => ns == "yelb" && wo.deployment.metadata.namespace.as_deref() == Some("yelb"),
                        ("sa", sa) => pod.service_account_name.as_deref() == Some(sa),
                        ("pod-label", kv) => {
                            let (k, v) = kv.split_once(':').unwrap();
                            pod_meta.labels.as_ref().unwrap().get(k).map(String::as_str) == Some(v)
                        }
                        ("container-name", name) => pod.containers.iter().any(|c| c.name == name),
                        other => panic!("unexpected selector {other:?}"),
                    };
                    assert!(ok, "{}: selector {sel} does not match the rendered pod", w.name);
                }
                assert!(selectors.contains(&"k8s:container-name:envoy".to_string()));
            }
        }
    }
}

#[test]
fn what_the_sidecar_adds_cannot_collide_with_the_configuration() {
    let svc = |name: &str, account: &str, extra: &str| {
        format!("[[services]]\nname = \"{name}\"\naccount = \"{account}\"\nimage = \"x/a:1\"\n{extra}")
    };
    // the app container is named after its service, beside the sidecar `envoy`
    let e = load(&svc("envoy", "frontend", "port = 8000\n")).unwrap_err();
    assert_eq!(e.key, "services[0].name");
    assert!(e.message.contains("sidecar container"), "{e}");
    // a service with callers and a public port gets a second Service, <name>-public
    let long = "a".repeat(57);
    let e = load(&format!(
        "{}{}",
        svc(&long, "backend", "port = 8000\nload_balancer_port = 80\n"),
        svc("b", "frontend", &format!("backends = [\"{long}\"]\nport = 9000\n"))
    ))
    .unwrap_err();
    assert_eq!(e.key, "services[0].name");
    assert!(e.message.contains("at most 56"), "{e}");
    let e = load(&format!(
        "{}{}{}",
        svc("api", "backend", "port = 8000\nload_balancer_port = 80\n"),
        svc("api-public", "backend", "port = 8001\n"),
        svc("b", "frontend", "backends = [\"api\"]\nport = 9000\n")
    ))
    .unwrap_err();
    assert_eq!(e.key, "services[0].load_balancer_port");
    assert!(e.message.contains("services[1]"), "{e}");
    // the agent socket's directory beside the bootstrap's
    let e = load("[spire]\nagent_socket = \"/etc/envoy/agent.sock\"\n").unwrap_err();
    assert_eq!(e.key, "spire.agent_socket");
    for t in ["0", "86401"] {
        let e = load(&format!("[mesh.envoy]\nload_balancer_timeout_seconds = {t}\n")).unwrap_err();
        assert_eq!(e.key, "mesh.envoy.load_balancer_timeout_seconds", "{e}");
    }
    assert_eq!(load("[mesh.envoy]\nload_balancer_timeout_seconds = 86400\n").unwrap().load_balancer_timeout, Duration::from_secs(86_400));
}
