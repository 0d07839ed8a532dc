//! The configuration: one typed [`Config`] whose `Default` is the walkthrough, exactly.
//!
//! Two stages, with the line between them here: [`RawConfig`] is what a `meshctl.toml` may
//! say (every key optional, unknown keys rejected, no I/O); [`Config`] is the resolved,
//! validated result every phase reads. Layers, lowest first: built-in defaults, the file,
//! `MESHCTL_*` environment variables, `--set key=value` flags. Each error names the key, the
//! file and line where there is one, and what is allowed.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration the user must fix; nothing has been contacted or changed yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted key, e.g. `spokes[1].cluster_name`; empty when the whole file is at fault.
    pub key: String,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(p), Some(l)) => write!(f, "{}:{}: ", p.display(), l)?,
            (Some(p), None) => write!(f, "{}: ", p.display())?,
            _ => {}
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), file: None, line: None, message: message.into() }
    }
}

/// How spoke clusters let the SPIRE server in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Map the access role in `kube-system/aws-auth` (the walkthrough's way).
    AwsAuth,
    /// EKS access entries (CreateAccessEntry) instead of the deprecated ConfigMap.
    AccessEntries,
}

/// What the spoke access role may do inside the spoke cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessLevel {
    /// Only what the SPIRE server needs: create TokenReviews, get/list pods and nodes.
    LeastPrivilege,
    /// `system:masters`, as the walkthrough does.
    SystemMasters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Http,
    Tcp,
}

/// One AWS account with its cluster: the hub or a spoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The account's role name in meshctl (`shared`, `frontend`, ...); used in step ids.
    pub name: String,
    pub profile: String,
    pub cluster_name: String,
    pub stack_name: String,
    pub vpc_cidr: String,
    /// The cluster's Kubernetes version, one of [`EKS_VERSIONS`].
    pub kubernetes_version: String,
    /// The EC2 instance type of the cluster's nodes (`family.size`, e.g. `t3.medium`).
    pub instance_type: String,
    /// How many nodes the node group runs (its desired size; its maximum is at least this).
    pub node_count: u32,
    /// Each node's root volume, in GiB.
    pub disk_size: u32,
    /// Use this existing kubeconfig context instead of the one derived from EKS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_context: Option<String>,
    /// Spokes only: the SPIRE k8s_psat cluster name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psat_cluster: Option<String>,
    /// Spokes only: the SPIRE agent's service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_service_account: Option<String>,
    /// Spokes only: ConfigMap in the hub's spire namespace holding this cluster's kubeconfig.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig_configmap: Option<String>,
    /// Spokes only: the key in that ConfigMap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig_key: Option<String>,
    /// Spokes only: the cross-account role the hub's SPIRE server (its Pod Identity role) assumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_role_name: Option<String>,
}

impl Account {
    /// Spoke-only fields, resolved (empty on the hub).
    pub fn psat_cluster(&self) -> &str {
        self.psat_cluster.as_deref().unwrap_or_default()
    }
    pub fn agent_service_account(&self) -> &str {
        self.agent_service_account.as_deref().unwrap_or_default()
    }
    pub fn kubeconfig_configmap(&self) -> &str {
        self.kubeconfig_configmap.as_deref().unwrap_or_default()
    }
    pub fn kubeconfig_key(&self) -> &str {
        self.kubeconfig_key.as_deref().unwrap_or_default()
    }
    pub fn access_role_name(&self) -> &str {
        self.access_role_name.as_deref().unwrap_or_default()
    }
}

/// The Kubernetes versions EKS creates clusters with, in standard or extended support.
/// Checked 2026-11-30 against the EKS release calendar (as last verified 2026-04-24): 1.35 and
/// 1.34 in standard support, 1.33 and 1.32 in extended support (until 2027-07-29 and
/// 2027-03-23); 1.31's extended support ended 2026-11-26. A version EKS adds later is
/// rejected until it is added here.
pub const EKS_VERSIONS: &[&str] = &["1.32", "1.33", "1.34", "1.35"];

/// Built-in defaults of each account's cluster and nodes.
pub const DEFAULT_KUBERNETES_VERSION: &str = "1.34";
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.medium";
pub const DEFAULT_NODE_COUNT: u32 = 2;
pub const DEFAULT_DISK_SIZE: u32 = 40;

/// The built-in default of `mesh.provider`.
pub const DEFAULT_PROVIDER: &str = "envoy";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mesh {
    /// Name of the mesh (and default trust domain).
    pub name: String,
    /// The data-plane provider (`envoy`, `appmesh`); checked against the providers this
    /// meshctl has when a command starts (`mesh::registry`).
    pub provider: String,
    pub trust_domain: String,
    /// Namespace every meshed workload runs in.
    pub app_namespace: String,
    /// Provider sections (`[mesh.envoy]`, `[mesh.appmesh]`) as written: each provider reads
    /// and validates its own; the sections of providers not selected are ignored.
    #[serde(flatten)]
    pub sections: std::collections::BTreeMap<String, toml::Table>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub tgw_name: String,
    pub tgw_share: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Auth {
    pub mode: AuthMode,
    pub access: AccessLevel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spire {
    pub namespace: String,
    pub server_release: String,
    pub agent_release: String,
    pub server_image: String,
    pub agent_image: String,
    /// Where agents reach the server; default: the spire-server-0 pod IP, as the walkthrough.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
    pub server_port: u16,
    /// The spire-server binary inside the server container (used by `register` over exec).
    pub server_binary: String,
    /// The server's admin API socket inside the server container.
    pub server_socket: String,
    /// The agent socket that serves the Workload API and SDS to Envoy.
    pub agent_socket: String,
    /// The agents' health-check port. Agents use the node's network, so this port must be
    /// free on every node of the spokes.
    pub agent_health_port: u16,
    /// Lifetime of the X.509-SVIDs the server issues (`default_x509_svid_ttl`), e.g. `1h`.
    pub svid_ttl: String,
    /// Lifetime of the server's CA (`ca_ttl`), e.g. `24h`.
    pub ca_ttl: String,
    /// The image of the token refresher beside the SPIRE server (the official AWS CLI).
    pub token_refresher_image: String,
    pub server: SpireServer,
}

/// The StorageClass meshctl creates in the hub for the SPIRE server's volume (EBS gp3 through
/// the EBS CSI driver). Any other `spire.server.storage_class` must exist already.
pub const MANAGED_STORAGE_CLASS: &str = "meshctl-gp3";

/// Where the SPIRE server keeps its datastore and CA keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpireServer {
    /// A persistent volume (`true`), or an emptyDir that loses every entry and the CA on
    /// restart (`false`).
    pub persistence: bool,
    /// The StorageClass of its volume.
    pub storage_class: String,
    pub storage_size: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    /// The spoke the service runs in.
    pub account: String,
    /// Path of the SPIFFE ID under the trust domain (`frontend` → `spiffe://<td>/frontend`).
    pub spiffe_path: String,
    pub app_label: String,
    pub tier_label: String,
    pub port: u16,
    pub protocol: Protocol,
    /// Services this one calls.
    pub backends: Vec<String>,
    /// Exposed to the internet through a LoadBalancer Service on this port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer_port: Option<u16>,
    /// The application's container image (the walkthrough's Yelb images by default).
    pub image: String,
}

/// The resolved configuration every phase reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub region: String,
    /// Kubeconfig file meshctl merges contexts into (default: $KUBECONFIG or ~/.kube/config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    pub mesh: Mesh,
    pub network: Network,
    pub auth: Auth,
    pub spire: Spire,
    pub hub: Account,
    pub spokes: Vec<Account>,
    pub services: Vec<Service>,
    /// Where the configuration was read from, to place errors found later (a provider's
    /// section is validated by the provider).
    #[serde(skip)]
    pub source: Source,
}

/// The file and text a configuration was read from. Never part of comparisons: two
/// configurations are equal when they say the same, wherever they were written.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub file: Option<PathBuf>,
    text: String,
}

impl PartialEq for Source {
    fn eq(&self, _: &Source) -> bool {
        true
    }
}

impl Eq for Source {}

impl Default for Config {
    /// The walkthrough, exactly.
    fn default() -> Config {
        RawConfig::default().resolve().expect("built-in defaults are valid")
    }
}

impl Config {
    /// Hub first, then the spokes in order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        std::iter::once(&self.hub).chain(self.spokes.iter())
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts().find(|a| a.name == name)
    }

    pub fn spiffe_id(&self, path: &str) -> String {
        format!("spiffe://{}/{}", self.mesh.trust_domain, path.trim_start_matches('/'))
    }

    /// `spiffe://<td>/ns/<spire ns>/sa/<agent sa>`: the node entry of a spoke's agents.
    pub fn agent_spiffe_id(&self, spoke: &Account) -> String {
        self.spiffe_id(&format!("ns/{}/sa/{}", self.spire.namespace, spoke.agent_service_account()))
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Services that call `name`: whose SPIFFE IDs its listener must accept.
    pub fn callers_of(&self, name: &str) -> Vec<&Service> {
        self.services.iter().filter(|s| s.backends.iter().any(|b| b == name)).collect()
    }

    /// Places an error found after loading (in a provider's section) in the file: its file
    /// and, when the key is written there, its line.
    pub fn locate(&self, mut e: ConfigError) -> ConfigError {
        if e.file.is_none() {
            e.file = self.source.file.clone();
        }
        if e.line.is_none() && !self.source.text.is_empty() {
            e.line = line_of_key(&self.source.text, &e.key);
        }
        e
    }

    /// The effective configuration as TOML (for `meshctl config show`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    /// Reads `path` (or nothing), applies `env` (MESHCTL_* pairs) and `sets` (`key=value`).
    pub fn load(path: Option<&Path>, env: &[(String, String)], sets: &[String]) -> Result<Config, ConfigError> {
        let (text, file) = match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => (t, Some(p.to_path_buf())),
                Err(e) => {
                    return Err(ConfigError {
                        key: String::new(),
                        file: Some(p.to_path_buf()),
                        line: None,
                        message: format!("cannot read: {e}"),
                    })
                }
            },
            None => (String::new(), None),
        };
        let with_file = |mut e: ConfigError| {
            e.file = file.clone();
            e
        };
        let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            with_file(ConfigError {
                key: String::new(),
                file: None,
                line: line_of_offset(&text, e.span().map(|s| s.start)),
                message: e.message().trim().to_string(),
            })
        })?;
        for (k, v) in env {
            if let Some(key) = env_key(k) {
                set_key(&mut doc, &key, v).map_err(|m| ConfigError::new(format!("{k} ({key})"), m))?;
            }
        }
        for s in sets {
            let (key, value) = s
                .split_once('=')
                .ok_or_else(|| ConfigError::new(s.clone(), "--set takes key=value, e.g. --set spire.server_address=10.0.1.5"))?;
            set_key(&mut doc, key.trim(), value).map_err(|m| ConfigError::new(key.trim(), m))?;
        }
        let merged = doc.to_string();
        let raw: RawConfig = toml::from_str(&merged).map_err(|e| {
            let line = if merged == text { line_of_offset(&text, e.span().map(|s| s.start)) } else { None };
            let key = e.span().and_then(|s| key_at_offset(&merged, s.start)).unwrap_or_default();
            with_file(ConfigError { key, file: None, line, message: type_message(e.message()) })
        })?;
        let mut config = raw.resolve().map_err(|mut e| {
            if e.line.is_none() && !text.is_empty() {
                e.line = line_of_key(&text, &e.key);
            }
            with_file(e)
        })?;
        config.source = Source { file, text };
        Ok(config)
    }
}

/// `MESHCTL_SPIRE__SERVER_ADDRESS` → `spire.server_address`; only names of top-level keys
/// count, so the test bed's own `MESHCTL_TESTBED_*` variables are not configuration.
fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("MESHCTL_")?;
    let key = rest.to_ascii_lowercase().replace("__", ".");
    let top = key.split('.').next().unwrap_or_default();
    TOP_LEVEL_KEYS.contains(&top).then_some(key)
}

const TOP_LEVEL_KEYS: &[&str] = &["region", "kubeconfig", "mesh", "network", "auth", "spire", "hub", "spokes", "services"];

/// Sets a dotted key (`spire.server_port`, `spokes.0.kube_context`) in the document. The
/// value is read as TOML when it parses as a number, boolean or array, else as a string.
fn set_key(doc: &mut toml_edit::DocumentMut, key: &str, value: &str) -> Result<(), String> {
    let parsed: toml_edit::Value = match value.parse::<toml_edit::Value>() {
        Ok(v) if !v.is_str() => v,
        _ => toml_edit::Value::from(value),
    };
    let parts: Vec<&str> = key.split('.').filter(|p| !p.is_empty()).collect();
    let Some((last, path)) = parts.split_last() else { return Err("empty key".into()) };
    let mut table = doc.as_table_mut();
    let mut i = 0;
    while i < path.len() {
        let part = path[i];
        let index = path.get(i + 1).and_then(|p| p.parse::<usize>().ok());
        table = match index {
            Some(idx) => {
                let arr = table
                    .get_mut(part)
                    .and_then(|it| it.as_array_of_tables_mut())
                    .ok_or_else(|| format!("cannot index {part}: write the [[{part}]] list in the config file first"))?;
                let len = arr.len();
                i += 1;
                arr.get_mut(idx).ok_or_else(|| format!("{part} has {len} entries in the config file"))?
            }
            None => table.entry(part).or_insert_with(toml_edit::table).as_table_mut().ok_or_else(|| format!("{part} is not a table"))?,
        };
        i += 1;
    }
    table[last] = toml_edit::Item::Value(parsed);
    Ok(())
}

fn line_of_offset(text: &str, offset: Option<usize>) -> Option<usize> {
    offset.map(|o| text[..o.min(text.len())].matches('\n').count() + 1)
}

/// A serde message with what a number key allows (`expected u16` says little to a user).
fn type_message(message: &str) -> String {
    let m = message.trim();
    let allowed = [
        ("expected u16", "a whole number from 0 to 65535"),
        ("expected u32", "a whole number from 0 to 4294967295"),
        ("expected u64", "a whole number from 0"),
    ];
    match allowed.iter().find(|(k, _)| m.ends_with(k)) {
        Some((_, what)) => format!("{m}: write {what}"),
        None => m.to_string(),
    }
}

/// The dotted key (`services[1].port`) whose entry holds byte `offset` of the document: where a
/// value of the wrong type, an unknown key or a missing key (the table's header) is. `None`
/// when the offset is in no entry.
fn key_at_offset(text: &str, offset: usize) -> Option<String> {
    fn inside(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
        span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
    }
    fn walk(table: &dyn toml_edit::TableLike, offset: usize, path: &str) -> Option<String> {
        let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
        for (name, _) in table.iter() {
            let (key, item) = table.get_key_value(name)?;
            let here = join(name);
            match item {
                toml_edit::Item::Value(v) => {
                    let whole = match (key.span(), v.span()) {
                        (Some(k), Some(v)) => Some(k.start.min(v.start)..k.end.max(v.end)),
                        (k, v) => k.or(v),
                    };
                    if inside(whole, offset) {
                        if let Some(t) = v.as_inline_table() {
                            return Some(walk(t, offset, &here).unwrap_or(here));
                        }
                        return Some(here);
                    }
                }
                toml_edit::Item::Table(t) => {
                    if let Some(found) = walk(t, offset, &here) {
                        return Some(found);
                    }
                    if inside(t.span(), offset) || inside(key.span(), offset) {
                        return Some(here);
                    }
                }
                toml_edit::Item::ArrayOfTables(a) => {
                    for (i, t) in a.iter().enumerate() {
                        let at = format!("{here}[{i}]");
                        if let Some(found) = walk(t, offset, &at) {
                            return Some(found);
                        }
                        if inside(t.span(), offset) {
                            return Some(at);
                        }
                    }
                }
                toml_edit::Item::None => {}
            }
        }
        None
    }
    let doc: toml_edit::Document<String> = text.parse().ok()?;
    walk(doc.as_table(), offset, "")
}

/// The line where a dotted key (`spokes[1].cluster_name`) is written, or the nearest
/// enclosing key that is.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc: toml_edit::Document<String> = text.parse().ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut best = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, v)) = table.get_key_value(name) else { break };
        best = k.span().or(best);
        match index {
            Some(i) => {
                let Some(t) = v.as_array_of_tables().and_then(|a| a.get(i)) else { break };
                best = t.span().or(best);
                table = t;
            }
            None => match v.as_table_like() {
                Some(t) => table = t,
                None => break,
            },
        }
    }
    line_of_offset(text, best.map(|s| s.start))
}

mod raw;
mod validate;

pub use raw::{yelb_image, RawConfig};
pub use validate::{
    eks_service_range, is_dns_label, is_dns_subdomain, is_image_ref, is_label_value, is_region, is_service_name, parse_cidr, parse_ttl,
    vpc_range_problem, EKS_NODE_PORTS, HELM_RELEASE_MAX, MAX_SOCKET_PATH, MAX_SPOKE_NAME, MAX_TTL_SECONDS, SPIRE_AGENT_MOUNTS,
    SPIRE_SERVER_HEALTH_PORT, SPIRE_SERVER_MOUNTS,
};

#[cfg(test)]
mod tests;
