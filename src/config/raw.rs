//! What a `meshctl.toml` may say: every key optional, unknown keys rejected. [`RawConfig::resolve`]
//! fills the gaps from the walkthrough and validates the result.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::validate;
use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    region: Option<String>,
    kubeconfig: Option<PathBuf>,
    #[serde(default)]
    mesh: RawMesh,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    spire: RawSpire,
    /// Moved to the App Mesh provider's section: named here only to say where.
    cloudmap: Option<toml::Value>,
    /// Moved to the App Mesh provider's section: named here only to say where.
    controller: Option<toml::Value>,
    #[serde(default)]
    hub: RawAccount,
    spokes: Option<Vec<RawAccount>>,
    services: Option<Vec<RawService>>,
}

/// `[mesh]`: its own keys, plus one table per provider (`[mesh.envoy]`), which the provider
/// reads; any other key is rejected when resolving.
#[derive(Debug, Default, Deserialize)]
struct RawMesh {
    name: Option<String>,
    provider: Option<String>,
    trust_domain: Option<String>,
    app_namespace: Option<String>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    tgw_name: Option<String>,
    tgw_share: Option<String>,
    /// Moved to the App Mesh provider's section: named here only to say where.
    mesh_share: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mode: Option<AuthMode>,
    access: Option<AccessLevel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpire {
    namespace: Option<String>,
    server_release: Option<String>,
    agent_release: Option<String>,
    server_image: Option<String>,
    agent_image: Option<String>,
    server_address: Option<String>,
    server_port: Option<u16>,
    server_binary: Option<String>,
    server_socket: Option<String>,
    agent_socket: Option<String>,
    agent_health_port: Option<u16>,
    svid_ttl: Option<String>,
    ca_ttl: Option<String>,
    token_refresher_image: Option<String>,
    #[serde(default)]
    server: RawSpireServer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpireServer {
    persistence: Option<bool>,
    storage_class: Option<String>,
    storage_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Option<String>,
    profile: Option<String>,
    cluster_name: Option<String>,
    stack_name: Option<String>,
    vpc_cidr: Option<String>,
    kubernetes_version: Option<String>,
    instance_type: Option<String>,
    node_count: Option<u32>,
    disk_size: Option<u32>,
    kube_context: Option<String>,
    psat_cluster: Option<String>,
    agent_service_account: Option<String>,
    kubeconfig_configmap: Option<String>,
    kubeconfig_key: Option<String>,
    access_role_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    account: String,
    spiffe_path: Option<String>,
    app_label: Option<String>,
    tier_label: Option<String>,
    port: u16,
    protocol: Option<Protocol>,
    #[serde(default)]
    backends: Vec<String>,
    load_balancer_port: Option<u16>,
    image: Option<String>,
}

/// The walkthrough's names for the spokes it knows; any other spoke name derives its own:
/// `[psat cluster, agent service account, kubeconfig ConfigMap, its key, VPC CIDR]`.
fn spoke_defaults(name: &str, index: usize) -> [String; 5] {
    match name {
        "frontend" => ["frontend-k8s-cluster", "spire-agent-front", "front-kubeconfig", "frontend.conf", "10.1.0.0/16"].map(String::from),
        "backend" => ["backend-k8s-cluster", "spire-agent-back", "back-kubeconfig", "backend.conf", "10.2.0.0/16"].map(String::from),
        _ => [
            format!("{name}-k8s-cluster"),
            format!("spire-agent-{name}"),
            format!("{name}-kubeconfig"),
            format!("{name}.conf"),
            format!("10.{}.0.0/16", index + 1),
        ],
    }
}

fn or(v: Option<String>, d: &str) -> String {
    v.unwrap_or_else(|| d.to_string())
}

impl RawAccount {
    fn named(name: &str) -> RawAccount {
        RawAccount { name: Some(name.to_string()), ..RawAccount::default() }
    }

    fn resolve_hub(self) -> Account {
        let name = or(self.name, "shared");
        let default_stack =
            if name == "shared" { "eks-cluster-shared-services-stack".to_string() } else { format!("eks-cluster-{name}-stack") };
        Account {
            profile: or(self.profile, &name),
            cluster_name: self.cluster_name.unwrap_or_else(|| format!("eks-cluster-{name}")),
            stack_name: self.stack_name.unwrap_or(default_stack),
            vpc_cidr: or(self.vpc_cidr, "10.0.0.0/16"),
            kubernetes_version: or(self.kubernetes_version, DEFAULT_KUBERNETES_VERSION),
            instance_type: or(self.instance_type, DEFAULT_INSTANCE_TYPE),
            node_count: self.node_count.unwrap_or(DEFAULT_NODE_COUNT),
            disk_size: self.disk_size.unwrap_or(DEFAULT_DISK_SIZE),
            kube_context: self.kube_context,
            psat_cluster: None,
            agent_service_account: None,
            kubeconfig_configmap: None,
            kubeconfig_key: None,
            access_role_name: None,
            name,
        }
    }

    fn resolve_spoke(self, index: usize) -> Result<Account, ConfigError> {
        let name = self
            .name
            .ok_or_else(|| ConfigError::new(format!("spokes[{index}].name"), "every spoke needs a name, e.g. name = \"frontend\""))?;
        let [psat, sa, cm, key, cidr] = spoke_defaults(&name, index);
        let cluster_name = self.cluster_name.unwrap_or_else(|| format!("eks-cluster-{name}"));
        Ok(Account {
            profile: or(self.profile, &name),
            stack_name: self.stack_name.unwrap_or_else(|| format!("eks-cluster-{name}-stack")),
            vpc_cidr: self.vpc_cidr.unwrap_or(cidr),
            kubernetes_version: or(self.kubernetes_version, DEFAULT_KUBERNETES_VERSION),
            instance_type: or(self.instance_type, DEFAULT_INSTANCE_TYPE),
            node_count: self.node_count.unwrap_or(DEFAULT_NODE_COUNT),
            disk_size: self.disk_size.unwrap_or(DEFAULT_DISK_SIZE),
            kube_context: self.kube_context,
            psat_cluster: Some(self.psat_cluster.unwrap_or(psat)),
            agent_service_account: Some(self.agent_service_account.unwrap_or(sa)),
            kubeconfig_configmap: Some(self.kubeconfig_configmap.unwrap_or(cm)),
            kubeconfig_key: Some(self.kubeconfig_key.unwrap_or(key)),
            access_role_name: Some(self.access_role_name.unwrap_or_else(|| format!("{cluster_name}-access-role"))),
            cluster_name,
            name,
        })
    }
}

/// The walkthrough's container images of the Yelb services, fully qualified (the name a
/// node's container runtime stores them under).
pub fn yelb_image(service: &str) -> Option<&'static str> {
    Some(match service {
        "yelb-ui" => "docker.io/mreferre/yelb-ui:0.7",
        "yelb-appserver" => "docker.io/mreferre/yelb-appserver:0.5",
        "yelb-db" => "docker.io/mreferre/yelb-db:0.5",
        "redis-server" => "docker.io/library/redis:4.0.2",
        _ => return None,
    })
}

/// Keys that moved into the App Mesh provider's own section, with where they went.
fn moved(key: &str, to: &str) -> ConfigError {
    ConfigError::new(
        key,
        format!("this App Mesh setting moved to the App Mesh provider's section: write it as {to} (it is read only with mesh.provider = \"appmesh\")"),
    )
}

fn default_services() -> Vec<Service> {
    let svc = |name: &str, account: &str, path: &str, tier: &str, port, protocol, backends: &[&str], lb| Service {
        name: name.into(),
        account: account.into(),
        spiffe_path: path.into(),
        app_label: name.into(),
        tier_label: tier.into(),
        port,
        protocol,
        backends: backends.iter().map(|b| b.to_string()).collect(),
        load_balancer_port: lb,
        image: yelb_image(name).unwrap_or_default().to_string(),
    };
    vec![
        svc("yelb-ui", "frontend", "frontend", "frontend", 80, Protocol::Http, &["yelb-appserver"], Some(80)),
        svc("yelb-appserver", "backend", "yelbapp", "middletier", 4567, Protocol::Http, &["yelb-db", "redis-server"], None),
        svc("yelb-db", "backend", "yelbdb", "backenddb", 5432, Protocol::Tcp, &[], None),
        svc("redis-server", "backend", "redis", "cache", 6379, Protocol::Tcp, &[], None),
    ]
}

impl RawConfig {
    /// Fills every gap with the walkthrough's value and validates the whole.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        if self.cloudmap.is_some() {
            return Err(moved("cloudmap", "[mesh.appmesh] cloudmap_namespace / cloudmap_account"));
        }
        if self.controller.is_some() {
            return Err(moved("controller", "[mesh.appmesh.controller]"));
        }
        if self.network.mesh_share.is_some() {
            return Err(moved("network.mesh_share", "[mesh.appmesh] mesh_share"));
        }
        let mut sections = std::collections::BTreeMap::new();
        for (key, value) in self.mesh.other {
            match value {
                toml::Value::Table(t) => {
                    sections.insert(key, t);
                }
                _ => {
                    return Err(ConfigError::new(
                        format!("mesh.{key}"),
                        "unknown key; [mesh] takes name, provider, trust_domain, app_namespace and one table per provider ([mesh.envoy], [mesh.appmesh])",
                    ))
                }
            }
        }
        let mesh_name = or(self.mesh.name, "am-multi-account-mesh");
        let spokes = match self.spokes {
            Some(list) => list.into_iter().enumerate().map(|(i, s)| s.resolve_spoke(i)).collect::<Result<Vec<_>, _>>()?,
            None => vec![RawAccount::named("frontend").resolve_spoke(0)?, RawAccount::named("backend").resolve_spoke(1)?],
        };
        let services = match self.services {
            Some(list) => list
                .into_iter()
                .map(|s| Service {
                    image: s.image.or_else(|| yelb_image(&s.name).map(str::to_string)).unwrap_or_default(),
                    spiffe_path: s.spiffe_path.unwrap_or_else(|| s.name.clone()),
                    app_label: s.app_label.unwrap_or_else(|| s.name.clone()),
                    tier_label: s.tier_label.unwrap_or_else(|| s.name.clone()),
                    protocol: s.protocol.unwrap_or(Protocol::Http),
                    name: s.name,
                    account: s.account,
                    port: s.port,
                    backends: s.backends,
                    load_balancer_port: s.load_balancer_port,
                })
                .collect(),
            None => default_services(),
        };
        let sp = self.spire;
        let config = Config {
            region: or(self.region, "us-east-2"),
            kubeconfig: self.kubeconfig,
            mesh: Mesh {
                trust_domain: self.mesh.trust_domain.unwrap_or_else(|| mesh_name.clone()),
                name: mesh_name,
                provider: or(self.mesh.provider, DEFAULT_PROVIDER),
                app_namespace: or(self.mesh.app_namespace, "yelb"),
                sections,
            },
            network: Network {
                tgw_name: or(self.network.tgw_name, "tgw-shared"),
                tgw_share: or(self.network.tgw_share, "multi-account-tgw-share"),
            },
            auth: Auth {
                mode: self.auth.mode.unwrap_or(AuthMode::AwsAuth),
                access: self.auth.access.unwrap_or(AccessLevel::LeastPrivilege),
            },
            spire: Spire {
                namespace: or(sp.namespace, "spire"),
                server_release: or(sp.server_release, "spire-server"),
                agent_release: or(sp.agent_release, "spire-agent"),
                server_image: or(sp.server_image, "ghcr.io/spiffe/spire-server:1.13.3"),
                agent_image: or(sp.agent_image, "ghcr.io/spiffe/spire-agent:1.13.3"),
                server_address: sp.server_address,
                server_port: sp.server_port.unwrap_or(8081),
                server_binary: or(sp.server_binary, "/opt/spire/bin/spire-server"),
                server_socket: or(sp.server_socket, "/tmp/spire-server/private/api.sock"),
                agent_socket: or(sp.agent_socket, "/run/spire/sockets/agent.sock"),
                agent_health_port: sp.agent_health_port.unwrap_or(8080),
                svid_ttl: or(sp.svid_ttl, "1h"),
                ca_ttl: or(sp.ca_ttl, "24h"),
                token_refresher_image: or(sp.token_refresher_image, "public.ecr.aws/aws-cli/aws-cli:2.15.62"),
                server: SpireServer {
                    persistence: sp.server.persistence.unwrap_or(true),
                    storage_class: or(sp.server.storage_class, MANAGED_STORAGE_CLASS),
                    storage_size: or(sp.server.storage_size, "1Gi"),
                },
            },
            hub: self.hub.resolve_hub(),
            spokes,
            services,
            source: Source::default(),
        };
        validate(&config)?;
        Ok(config)
    }
}
