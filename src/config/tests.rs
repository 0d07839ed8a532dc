//! Defaults equal the walkthrough; every bad input names its key (and line) and what is allowed.

use std::io::Write;

use super::*;

fn load_str(toml: &str) -> Result<Config, ConfigError> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    Config::load(Some(f.path()), &[], &[])
}

fn err(toml: &str) -> ConfigError {
    load_str(toml).expect_err("config should be rejected")
}

#[test]
fn defaults_are_the_walkthrough() {
    let c = Config::default();
    assert_eq!(c.region, "us-east-2");
    assert_eq!(c.mesh.name, "am-multi-account-mesh");
    assert_eq!(c.mesh.trust_domain, "am-multi-account-mesh");
    assert_eq!(c.mesh.provider, "envoy", "App Mesh reached end of support: the default data plane is meshctl's own");
    assert_eq!(c.network.tgw_name, "tgw-shared");
    assert_eq!(c.network.tgw_share, "multi-account-tgw-share");
    let rows: Vec<(&str, &str, &str, &str)> =
        c.accounts().map(|a| (a.name.as_str(), a.profile.as_str(), a.cluster_name.as_str(), a.stack_name.as_str())).collect();
    assert_eq!(
        rows,
        vec![
            ("shared", "shared", "eks-cluster-shared", "eks-cluster-shared-services-stack"),
            ("frontend", "frontend", "eks-cluster-frontend", "eks-cluster-frontend-stack"),
            ("backend", "backend", "eks-cluster-backend", "eks-cluster-backend-stack"),
        ]
    );
    let f = &c.spokes[0];
    assert_eq!((f.psat_cluster(), f.agent_service_account()), ("frontend-k8s-cluster", "spire-agent-front"));
    assert_eq!((f.kubeconfig_configmap(), f.kubeconfig_key()), ("front-kubeconfig", "frontend.conf"));
    assert_eq!(f.access_role_name(), "eks-cluster-frontend-access-role");
    let b = &c.spokes[1];
    assert_eq!((b.psat_cluster(), b.agent_service_account()), ("backend-k8s-cluster", "spire-agent-back"));
    assert_eq!((b.kubeconfig_configmap(), b.kubeconfig_key()), ("back-kubeconfig", "backend.conf"));
    assert_eq!(b.access_role_name(), "eks-cluster-backend-access-role");
    assert_eq!(c.agent_spiffe_id(f), "spiffe://am-multi-account-mesh/ns/spire/sa/spire-agent-front");
    let svc: Vec<(&str, &str, String, &str, &str, u16)> = c
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.account.as_str(), c.spiffe_id(&s.spiffe_path), s.app_label.as_str(), s.tier_label.as_str(), s.port))
        .collect();
    let td = "spiffe://am-multi-account-mesh";
    assert_eq!(
        svc,
        vec![
            ("yelb-ui", "frontend", format!("{td}/frontend"), "yelb-ui", "frontend", 80),
            ("yelb-appserver", "backend", format!("{td}/yelbapp"), "yelb-appserver", "middletier", 4567),
            ("yelb-db", "backend", format!("{td}/yelbdb"), "yelb-db", "backenddb", 5432),
            ("redis-server", "backend", format!("{td}/redis"), "redis-server", "cache", 6379),
        ]
    );
    let callers: Vec<&str> = c.callers_of("yelb-appserver").iter().map(|s| s.name.as_str()).collect();
    assert_eq!(callers, vec!["yelb-ui"]);
    assert_eq!(c.spire.agent_socket, "/run/spire/sockets/agent.sock");
    assert_eq!(c.spire.agent_health_port, 8080, "the spire-agent chart's health port");
    for a in c.accounts() {
        assert_eq!((a.kubernetes_version.as_str(), a.instance_type.as_str(), a.node_count, a.disk_size), ("1.34", "t3.medium", 2, 40), "{}", a.name);
    }
}

#[test]
fn cluster_and_node_sizes_are_keys_per_account() {
    let c = load_str(
        "[hub]\nkubernetes_version = \"1.35\"\ninstance_type = \"m7g.2xlarge\"\nnode_count = 5\ndisk_size = 100\n\
         [[spokes]]\nname = \"frontend\"\nnode_count = 1\n[[spokes]]\nname = \"backend\"\ninstance_type = \"u-6tb1.112xlarge\"\n",
    )
    .unwrap();
    assert_eq!((c.hub.kubernetes_version.as_str(), c.hub.instance_type.as_str(), c.hub.node_count, c.hub.disk_size), ("1.35", "m7g.2xlarge", 5, 100));
    assert_eq!((c.spokes[0].node_count, c.spokes[0].kubernetes_version.as_str()), (1, "1.34"), "unset keys keep their defaults");
    assert_eq!(c.spokes[1].instance_type, "u-6tb1.112xlarge");
    let set = Config::load(None, &[("MESHCTL_HUB__DISK_SIZE".to_string(), "64".to_string())], &["hub.node_count=3".to_string()]).unwrap();
    assert_eq!((set.hub.node_count, set.hub.disk_size), (3, 64));

    let cases = [
        ("[hub]\nkubernetes_version = \"1.29\"\n", "hub.kubernetes_version", "1.32, 1.33, 1.34, 1.35"),
        ("[hub]\nkubernetes_version = \"1.34.4\"\n", "hub.kubernetes_version", "EKS supports"),
        ("[hub]\ninstance_type = \"t3\"\n", "hub.instance_type", "t3.medium"),
        ("[hub]\ninstance_type = \"T3.Medium\"\n", "hub.instance_type", "EC2 instance type"),
        ("[hub]\ninstance_type = \"t3.medium.x\"\n", "hub.instance_type", "EC2 instance type"),
        ("[hub]\nnode_count = 0\n", "hub.node_count", "1 to 100"),
        ("[[spokes]]\nname = \"frontend\"\nnode_count = 101\n", "spokes[0].node_count", "1 to 100"),
        ("[hub]\ndisk_size = 19\n", "hub.disk_size", "20 to 16384"),
        ("[[spokes]]\nname = \"frontend\"\ndisk_size = 16385\n", "spokes[0].disk_size", "20 to 16384"),
    ];
    for (toml, key, needle) in cases {
        let e = err(toml);
        assert_eq!(e.key, key, "{toml}: {e}");
        assert!(e.to_string().contains(needle), "{toml}: {e}");
        assert!(e.line.is_some(), "{toml}: no line in {e}");
    }
    // the roles named after the cluster must fit IAM's 64 characters
    let e = err(&format!("[hub]\ncluster_name = \"{}\"\n", "h".repeat(50)));
    assert_eq!(e.key, "hub.cluster_name");
    assert!(e.message.contains("at most 49") && e.message.contains("-ebs-csi-driver"), "{e}");
    load_str(&format!("[hub]\ncluster_name = \"{}\"\n", "h".repeat(49))).unwrap();
    let e = err(&format!("[[spokes]]\nname = \"frontend\"\ncluster_name = \"{}\"\naccess_role_name = \"r\"\n", "s".repeat(55)));
    assert_eq!(e.key, "spokes[0].cluster_name");
    assert!(e.message.contains("at most 54"), "{e}");
    let e = err("[hub]\nnode_count = \"two\"\n");
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn walkthrough_example_equals_defaults_but_for_the_grant_and_the_provider() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/walkthrough.toml");
    let mut c = Config::load(Some(Path::new(path)), &[], &[]).unwrap();
    assert_eq!(c.auth.access, AccessLevel::SystemMasters);
    assert_eq!(c.mesh.provider, "appmesh", "the historical walkthrough keeps App Mesh");
    assert!(c.mesh.sections.contains_key("appmesh"));
    c.auth.access = AccessLevel::LeastPrivilege;
    c.mesh.provider = DEFAULT_PROVIDER.to_string();
    c.mesh.sections.clear();
    assert_eq!(c, Config::default());
}

#[test]
fn app_mesh_keys_moved_to_the_providers_section_say_where() {
    let e = err("[cloudmap]\naccount = \"backend\"\n");
    assert_eq!(e.key, "cloudmap");
    assert!(e.message.contains("[mesh.appmesh]"), "{e}");
    let e = err("[controller]\nnamespace = \"x\"\n");
    assert!(e.message.contains("[mesh.appmesh.controller]"), "{e}");
    let e = err("[network]\nmesh_share = \"x\"\n");
    assert_eq!(e.key, "network.mesh_share");
    let e = err("[mesh]\nenvoy = 3\n");
    assert_eq!(e.key, "mesh.envoy");
}

#[test]
fn spire_ttls_storage_and_images_are_checked() {
    let e = err("[spire]\nsvid_ttl = \"1 hour\"\n");
    assert_eq!(e.key, "spire.svid_ttl");
    let e = err("[spire]\nsvid_ttl = \"2h\"\nca_ttl = \"3h\"\n");
    assert_eq!(e.key, "spire.ca_ttl");
    assert!(e.message.contains("twice"), "{e}");
    let c = load_str("[spire]\nsvid_ttl = \"30m\"\nca_ttl = \"168h\"\n[spire.server]\npersistence = false\nstorage_class = \"gp2\"\n").unwrap();
    assert_eq!((c.spire.svid_ttl.as_str(), c.spire.ca_ttl.as_str()), ("30m", "168h"));
    assert!(!c.spire.server.persistence);
    assert_eq!(c.spire.server.storage_class, "gp2");
    assert_eq!(Config::default().spire.server.storage_class, MANAGED_STORAGE_CLASS);
    let e = err("[spire.server]\nstorage_size = \"lots\"\n");
    assert_eq!(e.key, "spire.server.storage_size");
    let e = err("[[services]]\nname = \"a\"\naccount = \"frontend\"\nport = 1\n");
    assert_eq!(e.key, "services[0].image");
    let e = err("[[services]]\nname = \"a\"\naccount = \"frontend\"\nport = 1\nimage = \"busybox\"\n");
    assert_eq!(e.key, "services[0].image");
    assert!(e.message.contains("tag"), "{e}");
    assert_eq!(parse_ttl("1h30m"), Some(5400));
    assert_eq!(parse_ttl("90"), None);
}

#[test]
fn every_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            Config::load(Some(&path), &[], &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 5, "walkthrough, three-spokes, bring-your-own-clusters, testbed, testbed-three-spokes");
}

#[test]
fn config_show_round_trips() {
    let c = Config::default();
    let shown = c.to_toml();
    assert_eq!(load_str(&shown).unwrap(), c);
}

#[test]
fn spokes_are_a_list_with_derived_names() {
    let c = load_str("[[spokes]]\nname = \"payments\"\n[[services]]\nname = \"api\"\naccount = \"payments\"\nport = 8080\nimage = \"registry.example.com/api:1.2\"\n").unwrap();
    let p = &c.spokes[0];
    assert_eq!(p.profile, "payments");
    assert_eq!(p.cluster_name, "eks-cluster-payments");
    assert_eq!(p.psat_cluster(), "payments-k8s-cluster");
    assert_eq!(p.agent_service_account(), "spire-agent-payments");
    assert_eq!(p.kubeconfig_configmap(), "payments-kubeconfig");
    assert_eq!(p.access_role_name(), "eks-cluster-payments-access-role");
    assert_eq!(c.spiffe_id(&c.services[0].spiffe_path), "spiffe://am-multi-account-mesh/api");
}

#[test]
fn env_and_set_override_the_file() {
    let env = vec![
        ("MESHCTL_REGION".to_string(), "eu-west-1".to_string()),
        ("MESHCTL_SPIRE__SERVER_PORT".to_string(), "9081".to_string()),
        ("MESHCTL_TESTBED_DIR".to_string(), "/tmp/x".to_string()),
    ];
    let c = Config::load(None, &env, &["spire.server_address=10.0.1.5".to_string(), "region=ap-south-1".to_string()]).unwrap();
    assert_eq!(c.region, "ap-south-1", "--set wins over the environment");
    assert_eq!(c.spire.server_port, 9081);
    assert_eq!(c.spire.server_address.as_deref(), Some("10.0.1.5"));
}

#[test]
fn unknown_key_names_key_line_and_allowed() {
    let e = err("region = \"us-east-2\"\n\n[spire]\nnamespace = \"spire\"\nserver_adress = \"x\"\n");
    assert_eq!(e.line, Some(5), "{e}");
    let text = e.to_string();
    assert!(text.contains("server_adress") && text.contains("server_address"), "{text}");
}

#[test]
fn wrong_type_names_the_line() {
    let e = err("[spire]\nserver_port = \"eighty\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert_eq!(e.key, "spire.server_port", "{e}");
    assert!(e.to_string().contains("u16") || e.to_string().contains("integer"), "{e}");
    // the key of a value out of its type's range, inside a list of tables, and what is allowed
    let e = err("[[spokes]]\nname = \"frontend\"\n[[services]]\nname = \"a\"\naccount = \"frontend\"\nport = 65536\nimage = \"x/a:1\"\n");
    assert_eq!((e.key.as_str(), e.line), ("services[0].port", Some(6)), "{e}");
    assert!(e.message.contains("0 to 65535"), "{e}");
    let e = err("[[spokes]]\nname = \"frontend\"\nnode_count = -1\n");
    assert_eq!(e.key, "spokes[0].node_count", "{e}");
    // a missing key names its table
    let e = err("[[spokes]]\nname = \"frontend\"\n[[services]]\nname = \"a\"\naccount = \"frontend\"\n");
    assert_eq!(e.key, "services[0]", "{e}");
    assert!(e.message.contains("port"), "{e}");
    // set through --set: the key, no line
    let e = Config::load(None, &[], &["spire.agent_health_port=70000".to_string()]).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("spire.agent_health_port", None), "{e}");
}

#[test]
fn port_zero_names_the_key() {
    for key in ["server_port", "agent_health_port"] {
        let e = err(&format!("[spire]\n{key} = 0\n"));
        let text = e.to_string();
        assert!(text.contains(&format!("spire.{key}")) && text.contains("1-65535"), "{text}");
    }
}

#[test]
fn bad_enum_lists_allowed_values() {
    let e = err("[auth]\nmode = \"iam\"\n");
    assert!(e.to_string().contains("aws-auth") && e.to_string().contains("access-entries"), "{e}");
}

#[test]
fn duplicate_account_names_rejected() {
    let e = err("[[spokes]]\nname = \"frontend\"\n[[spokes]]\nname = \"frontend\"\nprofile = \"other\"\nvpc_cidr = \"10.9.0.0/16\"\n");
    assert_eq!(e.key, "spokes[1].name");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("used twice"), "{e}");
}

#[test]
fn two_roles_on_one_profile_rejected() {
    let e = err("[[spokes]]\nname = \"frontend\"\nprofile = \"shared\"\n[[spokes]]\nname = \"backend\"\n");
    assert_eq!(e.key, "spokes[0].profile");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("hub") && e.message.contains("spokes[0]"), "{e}");
}

#[test]
fn empty_spoke_list_rejected() {
    let e = err("spokes = []\n");
    assert_eq!(e.key, "spokes");
    assert!(e.message.contains("at least one spoke"), "{e}");
}

#[test]
fn invalid_names_rejected_with_allowed_forms() {
    let cases = [
        ("[hub]\nstack_name = \"1stack\"\n", "hub.stack_name", "CloudFormation stack name"),
        ("[hub]\ncluster_name = \"-bad\"\n", "hub.cluster_name", "EKS cluster name"),
        ("[mesh]\napp_namespace = \"Yelb\"\n", "mesh.app_namespace", "Kubernetes namespace"),
        ("[spire]\nnamespace = \"spire_ns\"\n", "spire.namespace", "Kubernetes namespace"),
        ("[mesh]\ntrust_domain = \"spiffe://x\"\n", "mesh.trust_domain", "trust domain"),
        ("[mesh]\ntrust_domain = \"Example.ORG\"\n", "mesh.trust_domain", "trust domain"),
        ("region = \"Ohio\"\n", "region", "AWS region"),
        ("[hub]\nvpc_cidr = \"10.0.0.0/8\"\n", "hub.vpc_cidr", "/16 to /28"),
        ("[hub]\nvpc_cidr = \"10.1.0.0/16\"\n", "spokes[0].vpc_cidr", "overlaps"),
    ];
    for (toml, key, needle) in cases {
        let e = err(toml);
        assert_eq!(e.key, key, "{toml}: {e}");
        assert!(e.to_string().contains(needle), "{toml}: {e}");
        assert!(e.line.is_some() || key.starts_with("spokes"), "{toml}: no line in {e}");
    }
}

#[test]
fn invalid_spiffe_path_and_references_rejected() {
    let base = "[[services]]\nname = \"a\"\naccount = \"frontend\"\nport = 1\nimage = \"x/a:1\"\n";
    let e = err(&format!("{base}spiffe_path = \"a//b\"\n"));
    assert_eq!(e.key, "services[0].spiffe_path");
    let e = err("[[services]]\nname = \"a\"\naccount = \"nowhere\"\nport = 1\nimage = \"x/a:1\"\n");
    assert_eq!(e.key, "services[0].account");
    assert!(e.message.contains("frontend, backend"), "{e}");
    let e = err(&format!("{base}backends = [\"ghost\"]\n"));
    assert_eq!(e.key, "services[0].backends");
}

#[test]
fn unreadable_file_is_a_config_error() {
    let e = Config::load(Some(Path::new("/nonexistent/meshctl.toml")), &[], &[]).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
}

#[test]
fn bad_set_syntax_rejected() {
    let e = Config::load(None, &[], &["region".to_string()]).unwrap_err();
    assert!(e.message.contains("key=value"), "{e}");
}
