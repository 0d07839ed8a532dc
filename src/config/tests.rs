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
        assert_eq!(
            (a.kubernetes_version.as_str(), a.instance_type.as_str(), a.node_count, a.disk_size),
            ("1.34", "t3.medium", 2, 40),
            "{}",
            a.name
        );
    }
}

#[test]
fn cluster_and_node_sizes_are_keys_per_account() {
    let c = load_str(
        "[hub]\nkubernetes_version = \"1.35\"\ninstance_type = \"m7g.2xlarge\"\nnode_count = 5\ndisk_size = 100\n\
         [[spokes]]\nname = \"frontend\"\nnode_count = 1\n[[spokes]]\nname = \"backend\"\ninstance_type = \"u-6tb1.112xlarge\"\n",
    )
    .unwrap();
    assert_eq!(
        (c.hub.kubernetes_version.as_str(), c.hub.instance_type.as_str(), c.hub.node_count, c.hub.disk_size),
        ("1.35", "m7g.2xlarge", 5, 100)
    );
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
    let c =
        load_str("[spire]\nsvid_ttl = \"30m\"\nca_ttl = \"168h\"\n[spire.server]\npersistence = false\nstorage_class = \"gp2\"\n").unwrap();
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
        ("[hub]\nvpc_cidr = \"10.0.0.0/8\"\n", "hub.vpc_cidr", "/16 to /24"),
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

/// Configurations that used to pass validation and fail at apply time (found by
/// tests/config_props.rs): each is refused with its key and what is allowed.
#[test]
fn configurations_that_would_fail_at_apply_time_are_refused() {
    let svc = |extra: &str| format!("[[services]]\nname = \"a\"\naccount = \"frontend\"\nport = 8000\nimage = \"x/a:1\"\n{extra}");
    let long = |n: usize| "s".repeat(n);
    let cases: Vec<(String, &str, &str)> = vec![
        // SPIRE reads durations as Go does; a huge one overflowed meshctl's own arithmetic
        ("[spire]\nca_ttl = \"99999999999999999h\"\n".into(), "spire.ca_ttl", "at most 2562047h"),
        ("[spire]\nca_ttl = \"2562048h\"\n".into(), "spire.ca_ttl", "duration SPIRE reads"),
        // Helm refuses release names over 53 characters
        (format!("[spire]\nserver_release = \"{}\"\n", long(54)), "spire.server_release", "at most 53"),
        // the server's gRPC port on its own health port; the agent's health port on the kubelet's
        ("[spire]\nserver_port = 8080\n".into(), "spire.server_port", "health port"),
        ("[spire]\nagent_health_port = 10250\n".into(), "spire.agent_health_port", "the kubelet"),
        ("[spire]\nserver_image = \"ghcr.io/spiffe/spire-server\"\n".into(), "spire.server_image", "tag"),
        ("[spire]\nagent_socket = \"agent.sock\"\n".into(), "spire.agent_socket", "absolute path"),
        ("[spire]\nagent_socket = \"/etc/agent.sock\"\n".into(), "spire.agent_socket", "directory /etc"),
        ("[spire]\nagent_socket = \"/run/spire/config/agent.sock\"\n".into(), "spire.agent_socket", "/run/spire/config"),
        (format!("[spire]\nagent_socket = \"/{}/agent.sock\"\n", long(100)), "spire.agent_socket", "107 bytes"),
        ("[spire]\nserver_socket = \"/run/spire/data/api.sock\"\n".into(), "spire.server_socket", "/run/spire/data"),
        ("[spire]\nserver_binary = \"spire-server\"\n".into(), "spire.server_binary", "absolute path"),
        ("[spire]\nserver_address = \"http://10.0.1.5:8081\"\n".into(), "spire.server_address", "without scheme or port"),
        ("[spire]\nnamespace = \"yelb\"\n".into(), "mesh.app_namespace", "spire.namespace"),
        ("[network]\ntgw_name = \"\"\n".into(), "network.tgw_name", "1 to 256"),
        ("[network]\ntgw_share = \"\"\n".into(), "network.tgw_share", "at least one character"),
        // VPCs: ranges AWS gives no VPC, a spoke VPC inside the service range EKS gives the hub
        ("[hub]\nvpc_cidr = \"127.0.0.0/16\"\n".into(), "hub.vpc_cidr", "loopback"),
        ("[hub]\nvpc_cidr = \"169.254.0.0/16\"\n".into(), "hub.vpc_cidr", "link-local"),
        (
            "[[spokes]]\nname = \"frontend\"\nvpc_cidr = \"172.20.0.0/16\"\n".into(),
            "spokes[0].vpc_cidr",
            "172.20.0.0/16, the Kubernetes service range",
        ),
        // names built from other names
        (format!("[[spokes]]\nname = \"{}\"\ncluster_name = \"c\"\n", long(53)), "spokes[0].name", "kubeconfig-<spoke>"),
        (format!("[[spokes]]\nname = \"{}\"\n", long(43)), "spokes[0].cluster_name", "derived from the account's name"),
        (format!("[[spokes]]\nname = \"frontend\"\nstack_name = \"S{}\"\n", long(124)), "spokes[0].stack_name", "<stack_name>-tgw"),
        (format!("[hub]\nstack_name = \"S{}\"\n", long(120)), "hub.stack_name", "<hub stack_name>-<spoke>"),
        (format!("[[spokes]]\nname = \"frontend\"\ncluster_name = \"{}\"\n", long(53)), "spokes[0].cluster_name", "<cluster>-access-role"),
        ("[hub]\ncluster_name = \"eks-cluster-frontend\"\n".into(), "spokes[0].cluster_name", "kubeconfig context"),
        (
            "[hub]\nkube_context = \"c\"\n[[spokes]]\nname = \"frontend\"\nkube_context = \"c\"\n".into(),
            "spokes[0].kube_context",
            "kubeconfig context",
        ),
        // two spokes sharing what SPIRE keeps one of per spoke
        ("[[spokes]]\nname = \"frontend\"\n[[spokes]]\nname = \"front\"\n".into(), "spokes[1].agent_service_account", "node entry"),
        (
            "[[spokes]]\nname = \"frontend\"\n[[spokes]]\nname = \"b\"\nkubeconfig_configmap = \"front-kubeconfig\"\n".into(),
            "spokes[1].kubeconfig_configmap",
            "its own ConfigMap",
        ),
        ("[[spokes]]\nname = \"frontend\"\nkubeconfig_key = \"..conf\"\n".into(), "spokes[0].kubeconfig_key", "ConfigMap key"),
        // services: Kubernetes names and labels, identities, who deploys first
        (svc("").replace("name = \"a\"", "name = \"1db\""), "services[0].name", "starting with a letter"),
        (svc(&format!("app_label = \"{}.{}\"\n", long(40), long(40))), "services[0].app_label", "at most 63"),
        (svc("spiffe_path = \"spire/server\"\n"), "services[0].spiffe_path", "SPIRE's own namespace"),
        (svc("spiffe_path = \"ns/spire/sa/spire-agent-front\"\n"), "services[0].spiffe_path", "SPIRE agents"),
        (
            format!(
                "{}{}",
                svc("app_label = \"s\"\ntier_label = \"t\"\n"),
                svc("app_label = \"s\"\ntier_label = \"t\"\n").replace("name = \"a\"", "name = \"b\"")
            ),
            "services[1].tier_label",
            "same app_label and tier_label",
        ),
        (
            format!(
                "{}{}",
                svc("backends = [\"b\"]\n"),
                svc("backends = [\"a\"]\n").replace("name = \"a\"", "name = \"b\"").replace("frontend", "backend")
            ),
            "services[1].backends",
            "cannot go in a circle",
        ),
    ];
    for (toml, key, needle) in &cases {
        let e = err(toml);
        assert_eq!(&e.key, key, "{toml}: {e}");
        assert!(e.to_string().contains(needle), "{toml}: {e}");
    }
    // within the limits, all of these load
    let one = |spoke: &str| format!("[[services]]\nname = \"a\"\naccount = \"{spoke}\"\nport = 8000\nimage = \"x/a:1\"\n");
    for ok in [
        "[spire]\nca_ttl = \"2562047h\"\nsvid_ttl = \"1h\"\n".to_string(),
        format!("[spire]\nserver_release = \"{}\"\n", long(53)),
        format!("[[spokes]]\nname = \"{0}\"\ncluster_name = \"c\"\nagent_service_account = \"sa\"\n{1}", long(52), one(&long(52))),
        format!("[[spokes]]\nname = \"frontend\"\ncluster_name = \"{}\"\n{}", long(52), one("frontend")),
        format!("[[spokes]]\nname = \"frontend\"\ncluster_name = \"{}\"\naccess_role_name = \"r\"\n{}", long(54), one("frontend")),
        format!("[hub]\nvpc_cidr = \"172.21.0.0/16\"\n[[spokes]]\nname = \"frontend\"\nvpc_cidr = \"172.20.0.0/16\"\n{}", one("frontend")),
        "[spire]\nserver_address = \"spire.example.com\"\nagent_socket = \"/run/spire/agent-sockets/api.sock\"\n".to_string(),
    ] {
        load_str(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn the_spire_server_health_port_is_the_charts() {
    let values = include_str!("../../charts/spire-server/values.yaml");
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(values).unwrap();
    assert_eq!(v["healthPort"].as_u64(), Some(SPIRE_SERVER_HEALTH_PORT as u64));
    assert_eq!(v["dataDir"].as_str(), Some("/run/spire/data"));
    assert!(SPIRE_SERVER_MOUNTS.contains(&"/run/spire/data"));
}
