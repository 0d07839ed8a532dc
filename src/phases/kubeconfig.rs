//! Phase 3: a kubeconfig context per cluster (exec auth through `meshctl token`), and in the
//! hub's spire namespace one ConfigMap per spoke with a kubeconfig the SPIRE server uses.
//!
//! The kubeconfig file is edited as a YAML document, not through a typed model, so keys
//! meshctl does not know (extensions, preferences, other tools' fields) survive: only the
//! cluster, user and context entries named after the EKS cluster are added or replaced, and
//! `current-context` is only set when the file has none. Writes are atomic (temporary file in
//! the same directory, mode 0600, rename) and the previous file is kept as `<file>.bak`.
//!
//! Accounts with `kube_context` set use that existing context: meshctl checks it is there and
//! never writes it (this is how the test bed runs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use serde_yaml_ng::{Mapping, Value};

use super::ids;
use crate::aws::token::EXEC_API_VERSION;
use crate::config::{Account, Config};
use crate::context::Ctx;
use crate::engine::{Context as _, Status, Step, StepCx, StepError, StepMeta};
use crate::kube::{kubeconfig_path, MANAGED_BY};

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    let mut out: Vec<Arc<dyn Step>> = c
        .accounts()
        .map(|a| {
            Arc::new(ContextStep {
                meta: StepMeta::new("kubeconfig", &a.name, &a.name, format!("write kubeconfig context for {}", a.cluster_name)).needs([ids::stack(&a.name)]),
                ctx: ctx.clone(),
                account: a.clone(),
            }) as Arc<dyn Step>
        })
        .collect();
    out.push(Arc::new(SpireConfigMaps {
        meta: StepMeta::new("kubeconfig", "spire-configmaps", &c.hub.name, format!("write spoke kubeconfig ConfigMaps in {}/{}", c.hub.cluster_name, c.spire.namespace))
            .needs(std::iter::once(ids::kubeconfig(&c.hub.name)).chain(c.spokes.iter().map(|s| ids::stack(&s.name)))),
        ctx: ctx.clone(),
    }));
    out
}

/// Where a cluster's API server is and which CA signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub server: String,
    /// Base64 of the PEM bundle (`certificate-authority-data`).
    pub ca_data: String,
}

/// The three kubeconfig entries meshctl writes for one cluster, all named `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub cluster: Value,
    pub user: Value,
    pub context: Value,
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::String(k.into()), v);
    }
    Value::Mapping(m)
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

impl Entry {
    /// The entry of a cluster authenticating through an exec plugin.
    pub fn exec(name: &str, ep: &Endpoint, command: &str, args: &[String]) -> Entry {
        Entry {
            name: name.to_string(),
            cluster: map(vec![("certificate-authority-data", s(&ep.ca_data)), ("server", s(&ep.server))]),
            user: map(vec![(
                "exec",
                map(vec![
                    ("apiVersion", s(EXEC_API_VERSION)),
                    ("command", s(command)),
                    ("args", Value::Sequence(args.iter().map(|a| s(a)).collect())),
                    ("interactiveMode", s("Never")),
                    ("provideClusterInfo", Value::Bool(false)),
                ]),
            )]),
            context: map(vec![("cluster", s(name)), ("user", s(name))]),
        }
    }

    /// The cluster's entry for the operator: `meshctl token` with the account's profile.
    pub fn for_operator(config: &Config, account: &Account, ep: &Endpoint) -> Entry {
        let args: Vec<String> = ["token", "--cluster", &account.cluster_name, "--profile", &account.profile, "--region", &config.region].iter().map(|a| a.to_string()).collect();
        Entry::exec(&account.cluster_name, ep, "meshctl", &args)
    }

    /// The spoke's entry for the SPIRE server: `aws eks get-token` with the cross-account role
    /// and no profile (the server runs on the hub's nodes, with their instance role).
    pub fn for_spire(config: &Config, spoke: &Account, spoke_account_id: &str, ep: &Endpoint) -> Entry {
        let role = access_role_arn(config, spoke, spoke_account_id);
        let args: Vec<String> =
            ["--region", &config.region, "eks", "get-token", "--cluster-name", &spoke.cluster_name, "--role-arn", &role].iter().map(|a| a.to_string()).collect();
        Entry::exec(&spoke.cluster_name, ep, "aws", &args)
    }

    /// A whole kubeconfig holding only this entry, as YAML text.
    pub fn standalone(&self) -> String {
        let doc = merge(&Value::Null, self);
        let mut doc = doc;
        if let Value::Mapping(m) = &mut doc {
            m.insert(s("current-context"), s(&self.name));
        }
        serde_yaml_ng::to_string(&doc).expect("a kubeconfig serializes")
    }
}

/// `arn:<partition>:iam::<account id>:role/<access role name>` of a spoke.
pub fn access_role_arn(config: &Config, spoke: &Account, account_id: &str) -> String {
    format!("arn:{}:iam::{account_id}:role/{}", crate::aws::partition(&config.region), spoke.access_role_name())
}

const LISTS: [(&str, &str); 3] = [("clusters", "cluster"), ("users", "user"), ("contexts", "context")];

fn entry_value(e: &Entry, field: &str) -> Value {
    match field {
        "cluster" => e.cluster.clone(),
        "user" => e.user.clone(),
        _ => e.context.clone(),
    }
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

/// The document with `entry`'s cluster, user and context added or replaced; every other key
/// and list item untouched. A null/empty document becomes a fresh kubeconfig.
pub fn merge(doc: &Value, entry: &Entry) -> Value {
    let mut m = match doc {
        Value::Mapping(m) => m.clone(),
        _ => {
            let mut m = Mapping::new();
            m.insert(s("apiVersion"), s("v1"));
            m.insert(s("kind"), s("Config"));
            m.insert(s("preferences"), Value::Mapping(Mapping::new()));
            m
        }
    };
    for (list, field) in LISTS {
        let item = map(vec![("name", s(&entry.name)), (field, entry_value(entry, field))]);
        let key = s(list);
        let mut items = match m.get(&key) {
            Some(Value::Sequence(items)) => items.clone(),
            _ => Vec::new(),
        };
        match items.iter().position(|v| v.get("name").and_then(Value::as_str) == Some(entry.name.as_str())) {
            Some(i) => items[i] = item,
            None => items.push(item),
        }
        m.insert(key, Value::Sequence(items));
    }
    let cc = s("current-context");
    if m.get(&cc).and_then(Value::as_str).is_none_or(str::is_empty) {
        m.insert(cc, s(&entry.name));
    }
    Value::Mapping(m)
}

/// The document without the cluster, user and context named `name` (and without
/// `current-context` when it named that context).
pub fn remove(doc: &Value, name: &str) -> Value {
    let Value::Mapping(m) = doc else { return doc.clone() };
    let mut m = m.clone();
    for (list, _) in LISTS {
        let key = s(list);
        if let Some(Value::Sequence(items)) = m.get(&key) {
            let kept: Vec<Value> = items.iter().filter(|v| v.get("name").and_then(Value::as_str) != Some(name)).cloned().collect();
            m.insert(key, Value::Sequence(kept));
        }
    }
    let cc = s("current-context");
    if m.get(&cc).and_then(Value::as_str) == Some(name) {
        m.insert(cc, s(""));
    }
    Value::Mapping(m)
}

/// Whether the document already carries `entry` exactly.
pub fn entry_status(doc: &Value, entry: &Entry) -> Status {
    let mut missing = 0;
    let mut differ = Vec::new();
    for (list, field) in LISTS {
        let items = doc.get(list).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default();
        match named(items, &entry.name) {
            None => missing += 1,
            Some(v) if v.get(field) != Some(&entry_value(entry, field)) => differ.push(format!("{field} {}", entry.name)),
            Some(_) => {}
        }
    }
    if missing == LISTS.len() {
        Status::Missing
    } else if missing > 0 || !differ.is_empty() {
        Status::Drifted(if differ.is_empty() { format!("kubeconfig entries for {} incomplete", entry.name) } else { format!("kubeconfig {} differs", differ.join(", ")) })
    } else {
        Status::UpToDate
    }
}

/// Reads a kubeconfig as YAML; a missing or empty file is `Null`.
pub fn read_doc(path: &Path) -> Result<Value, String> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(Value::Null),
        Ok(t) => serde_yaml_ng::from_str(&t).map_err(|e| format!("cannot parse {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `doc` atomically with mode 0600, keeping the previous file as `<path>.bak`.
pub fn write_doc(path: &Path, doc: &Value) -> Result<(), String> {
    use std::io::Write;
    let text = serde_yaml_ng::to_string(doc).map_err(|e| format!("cannot serialize kubeconfig: {e}"))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if path.exists() {
        let bak = bak_path(path);
        std::fs::copy(path, &bak).map_err(|e| format!("cannot back up {} to {}: {e}", path.display(), bak.display()))?;
        set_private(&bak)?;
    }
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{file_name}.meshctl-{}.tmp", std::process::id()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        set_private(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn set_private(p: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("cannot chmod 600 {}: {e}", p.display()))?;
    }
    Ok(())
}

pub fn bak_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".bak");
    PathBuf::from(s)
}

/// The server and CA of an existing context in a kubeconfig document.
pub fn endpoint_of_context(doc: &Value, context: &str, file: &Path) -> Result<Endpoint, String> {
    let seq = |k: &str| doc.get(k).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default().to_vec();
    let contexts = seq("contexts");
    let ctx = named(&contexts, context).ok_or_else(|| format!("context {context} not found in {}", file.display()))?;
    let cluster_name = ctx.get("context").and_then(|c| c.get("cluster")).and_then(Value::as_str).ok_or_else(|| format!("context {context} names no cluster"))?;
    let clusters = seq("clusters");
    let cluster = named(&clusters, cluster_name).and_then(|c| c.get("cluster")).ok_or_else(|| format!("cluster {cluster_name} (of context {context}) not found in {}", file.display()))?;
    let server = cluster.get("server").and_then(Value::as_str).ok_or_else(|| format!("cluster {cluster_name} has no server"))?.to_string();
    let ca_data = match (cluster.get("certificate-authority-data").and_then(Value::as_str), cluster.get("certificate-authority").and_then(Value::as_str)) {
        (Some(d), _) => d.to_string(),
        (None, Some(f)) => {
            let p = Path::new(f);
            let p = if p.is_relative() { file.parent().unwrap_or(Path::new(".")).join(p) } else { p.to_path_buf() };
            let pem = std::fs::read(&p).map_err(|e| format!("cannot read CA {} of cluster {cluster_name}: {e}", p.display()))?;
            base64::engine::general_purpose::STANDARD.encode(pem)
        }
        (None, None) => return Err(format!("cluster {cluster_name} has no certificate authority")),
    };
    Ok(Endpoint { server, ca_data })
}

/// Server and CA of an EKS cluster from DescribeCluster.
async fn eks_endpoint(ctx: &Ctx, account: &Account) -> Result<Endpoint, StepError> {
    let eks = ctx.aws.eks(&account.name).await.map_err(|e| StepError::new(e.to_string()))?;
    let out = eks.describe_cluster().name(&account.cluster_name).send().await.map_err(|e| {
        StepError::new(format!("account {}: EKS DescribeCluster {}: {}", account.name, account.cluster_name, crate::aws::error_text(&e)))
    })?;
    let c = out.cluster.ok_or_else(|| StepError::new(format!("account {}: EKS cluster {} not found", account.name, account.cluster_name)))?;
    let server = c.endpoint.filter(|e| !e.is_empty()).ok_or_else(|| StepError::new(format!("account {}: EKS cluster {} has no endpoint yet (status {:?})", account.name, account.cluster_name, c.status)))?;
    let ca_data = c.certificate_authority.and_then(|ca| ca.data).unwrap_or_default();
    Ok(Endpoint { server, ca_data })
}

/// The endpoint of an account's cluster: its `kube_context` in the kubeconfig, else EKS.
pub async fn endpoint(ctx: &Ctx, account: &Account) -> Result<Endpoint, StepError> {
    match &account.kube_context {
        Some(kc) => {
            let file = kubeconfig_path(&ctx.config);
            let doc = read_doc(&file).map_err(StepError::new)?;
            endpoint_of_context(&doc, kc, &file).map_err(|e| StepError::new(format!("account {}: {e}", account.name)))
        }
        None => eks_endpoint(ctx, account).await,
    }
}

/// `kubeconfig/<account>`.
pub struct ContextStep {
    meta: StepMeta,
    ctx: Arc<Ctx>,
    account: Account,
}

impl ContextStep {
    fn file(&self) -> PathBuf {
        kubeconfig_path(&self.ctx.config)
    }
}

#[async_trait::async_trait]
impl Step for ContextStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let file = self.file();
        let doc = read_doc(&file).map_err(StepError::new)?;
        if let Some(kc) = &self.account.kube_context {
            return Ok(match endpoint_of_context(&doc, kc, &file) {
                Ok(_) => Status::UpToDate,
                Err(e) => Status::Drifted(format!("configured kube_context: {e}")),
            });
        }
        let ep = eks_endpoint(&self.ctx, &self.account).await?;
        Ok(entry_status(&doc, &Entry::for_operator(&self.ctx.config, &self.account, &ep)))
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let file = self.file();
        let doc = read_doc(&file).map_err(StepError::new)?;
        if let Some(kc) = &self.account.kube_context {
            return endpoint_of_context(&doc, kc, &file).map(|_| ()).map_err(|e| {
                StepError::new(format!("account {}: kube_context is set, so meshctl does not write it: {e}", self.account.name))
            });
        }
        let ep = eks_endpoint(&self.ctx, &self.account).await?;
        let entry = Entry::for_operator(&self.ctx.config, &self.account, &ep);
        if entry_status(&doc, &entry) == Status::UpToDate {
            return Ok(());
        }
        write_doc(&file, &merge(&doc, &entry)).map_err(StepError::new)?;
        cx.progress(format!("context {} written to {}", entry.name, file.display()));
        Ok(())
    }

    async fn destroy(&self, _: &StepCx) -> Result<(), StepError> {
        if self.account.kube_context.is_some() {
            return Ok(()); // not ours
        }
        let file = self.file();
        let doc = read_doc(&file).map_err(StepError::new)?;
        let after = remove(&doc, &self.account.cluster_name);
        if after != doc {
            write_doc(&file, &after).map_err(StepError::new)?;
        }
        Ok(())
    }
}

/// `kubeconfig/spire-configmaps`.
pub struct SpireConfigMaps {
    meta: StepMeta,
    ctx: Arc<Ctx>,
}

impl SpireConfigMaps {
    fn namespace(&self) -> Namespace {
        let c = &self.ctx.config;
        let mut ns = Namespace::default();
        ns.metadata.name = Some(c.spire.namespace.clone());
        ns.metadata.labels = Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into());
        ns
    }

    async fn config_maps(&self) -> Result<Vec<ConfigMap>, StepError> {
        let c = &self.ctx.config;
        let mut out = Vec::new();
        for spoke in &c.spokes {
            let ep = endpoint(&self.ctx, spoke).await?;
            let id = self.ctx.aws.account_id(&spoke.name).await.map_err(|e| StepError::new(e.to_string()))?;
            let text = Entry::for_spire(c, spoke, &id, &ep).standalone();
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(spoke.kubeconfig_configmap().to_string());
            cm.metadata.namespace = Some(c.spire.namespace.clone());
            cm.data = Some([(spoke.kubeconfig_key().to_string(), text)].into());
            out.push(cm);
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Step for SpireConfigMaps {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let kc = self.ctx.kube.cluster_client(&self.ctx.config.hub.name).await?;
        let mut targets = vec![crate::kube::typed(&self.namespace())?];
        for cm in self.config_maps().await? {
            targets.push(crate::kube::typed(&cm)?);
        }
        // The namespace may be shared with the SPIRE release: only its label matters here.
        let mut status = kc.check_all(&targets[1..]).await?;
        if kc.get(&targets[0]).await?.is_none() {
            status = Status::Missing;
        }
        Ok(status)
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let kc = self.ctx.kube.cluster_client(&self.ctx.config.hub.name).await?;
        kc.apply_typed(&self.namespace()).await?;
        for cm in self.config_maps().await? {
            kc.apply_typed(&cm).await?;
            cx.progress(format!("ConfigMap {}/{} applied", self.ctx.config.spire.namespace, cm.metadata.name.unwrap_or_default()));
        }
        Ok(())
    }

    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let kc = self.ctx.kube.cluster_client(&c.hub.name).await?;
        for spoke in &c.spokes {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(spoke.kubeconfig_configmap().to_string());
            cm.metadata.namespace = Some(c.spire.namespace.clone());
            kc.delete(&crate::kube::typed(&cm)?).await.context(format!("delete ConfigMap {}/{}", c.spire.namespace, spoke.kubeconfig_configmap()))?;
        }
        // Last user of the hub's spire namespace on the way down (the SPIRE server needs
        // this step): remove it when meshctl created it.
        crate::mesh::appmesh::cluster::delete_our_namespace(&kc, &c.spire.namespace, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep() -> Endpoint {
        Endpoint { server: "https://ABC.gr7.us-east-2.eks.amazonaws.com".into(), ca_data: "LS0tLS1CRUdJTg==".into() }
    }

    #[test]
    fn operator_entry_uses_meshctl_token() {
        let c = Config::default();
        let e = Entry::for_operator(&c, &c.spokes[0], &ep());
        let exec = e.user.get("exec").unwrap();
        assert_eq!(exec.get("apiVersion").unwrap().as_str(), Some("client.authentication.k8s.io/v1beta1"));
        assert_eq!(exec.get("command").unwrap().as_str(), Some("meshctl"));
        let args: Vec<&str> = exec.get("args").unwrap().as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(args, ["token", "--cluster", "eks-cluster-frontend", "--profile", "frontend", "--region", "us-east-2"]);
    }

    #[test]
    fn spire_entry_uses_aws_cli_with_role_and_no_profile() {
        let c = Config::default();
        let text = Entry::for_spire(&c, &c.spokes[1], "333333333333", &ep()).standalone();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(doc.get("current-context").unwrap().as_str(), Some("eks-cluster-backend"));
        let exec = doc["users"][0]["user"]["exec"].clone();
        assert_eq!(exec["command"].as_str(), Some("aws"));
        let args: Vec<&str> = exec["args"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(args.windows(2).any(|w| w == ["--role-arn", "arn:aws:iam::333333333333:role/eks-cluster-backend-access-role"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--cluster-name", "eks-cluster-backend"]), "{args:?}");
        assert!(!text.contains("profile"), "{text}");
        assert_eq!(doc["clusters"][0]["cluster"]["server"].as_str(), Some(ep().server.as_str()));
    }

    #[test]
    fn merge_is_idempotent_and_keeps_current_context() {
        let doc: Value = serde_yaml_ng::from_str("apiVersion: v1\nkind: Config\ncurrent-context: mine\nclusters: []\nx-extension: {keep: true}\n").unwrap();
        let c = Config::default();
        let e = Entry::for_operator(&c, &c.hub, &ep());
        assert_eq!(entry_status(&doc, &e), Status::Missing);
        let once = merge(&doc, &e);
        assert_eq!(entry_status(&once, &e), Status::UpToDate);
        assert_eq!(merge(&once, &e), once);
        assert_eq!(once["current-context"].as_str(), Some("mine"));
        assert_eq!(once["x-extension"]["keep"].as_bool(), Some(true));
        let changed = Entry::for_operator(&c, &c.hub, &Endpoint { server: "https://other".into(), ca_data: "x".into() });
        assert!(matches!(entry_status(&once, &changed), Status::Drifted(_)));
    }

    #[test]
    fn atomic_write_is_private_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config");
        std::fs::write(&p, "apiVersion: v1\nkind: Config\nusers:\n- name: someone\n  user: {token: abc}\n").unwrap();
        let c = Config::default();
        let e = Entry::for_operator(&c, &c.hub, &ep());
        let doc = read_doc(&p).unwrap();
        write_doc(&p, &merge(&doc, &e)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(bak_path(&p)).unwrap().contains("someone"));
        let after = read_doc(&p).unwrap();
        assert_eq!(entry_status(&after, &e), Status::UpToDate);
        assert!(named(after["users"].as_sequence().unwrap(), "someone").is_some());
        assert_eq!(remove(&after, &e.name)["users"].as_sequence().unwrap().len(), 1);
    }

    #[test]
    fn endpoint_from_context_reads_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "PEM").unwrap();
        let p = dir.path().join("config");
        let doc: Value = serde_yaml_ng::from_str("contexts:\n- name: shared\n  context: {cluster: c1, user: u}\nclusters:\n- name: c1\n  cluster: {server: 'https://127.0.0.1:6443', certificate-authority: ca.crt}\n").unwrap();
        let e = endpoint_of_context(&doc, "shared", &p).unwrap();
        assert_eq!(e.server, "https://127.0.0.1:6443");
        assert_eq!(e.ca_data, base64::engine::general_purpose::STANDARD.encode("PEM"));
        assert!(endpoint_of_context(&doc, "nope", &p).unwrap_err().contains("nope"));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,12}"
    }

    fn foreign_doc() -> impl Strategy<Value = Value> {
        let item = |field: &'static str| {
            (name(), proptest::collection::btree_map("[a-z-]{1,8}", "[ -~]{0,16}", 0..4)).prop_map(move |(n, kv)| {
                let mut inner = Mapping::new();
                for (k, v) in kv {
                    inner.insert(s(&k), s(&v));
                }
                map(vec![("name", s(&n)), (field, Value::Mapping(inner))])
            })
        };
        (
            proptest::collection::vec(item("cluster"), 0..4),
            proptest::collection::vec(item("user"), 0..4),
            proptest::collection::vec(item("context"), 0..4),
            proptest::option::of(name()),
            proptest::option::of("[ -~]{0,16}"),
        )
            .prop_map(|(clusters, users, contexts, current, ext)| {
                let mut m = Mapping::new();
                m.insert(s("apiVersion"), s("v1"));
                m.insert(s("kind"), s("Config"));
                m.insert(s("clusters"), Value::Sequence(clusters));
                m.insert(s("users"), Value::Sequence(users));
                m.insert(s("contexts"), Value::Sequence(contexts));
                if let Some(c) = current {
                    m.insert(s("current-context"), s(&c));
                }
                if let Some(x) = ext {
                    m.insert(s("preferences"), map(vec![("colors", s(&x))]));
                }
                Value::Mapping(m)
            })
    }

    proptest! {
        /// Merging our entry keeps every foreign entry and key exactly; removing it again gives
        /// back the foreign entries (the document round-trips through YAML text too).
        #[test]
        fn merge_keeps_foreign_entries(doc in foreign_doc(), which in 0usize..3) {
            let c = Config::default();
            let acct = c.accounts().nth(which).unwrap().clone();
            let e = Entry::for_operator(&c, &acct, &ep());
            let merged = merge(&doc, &e);
            let text = serde_yaml_ng::to_string(&merged).unwrap();
            let reread: Value = serde_yaml_ng::from_str(&text).unwrap();
            prop_assert_eq!(&reread, &merged);
            prop_assert_eq!(entry_status(&merged, &e), Status::UpToDate);
            for (list, _) in LISTS {
                let before = doc[list].as_sequence().unwrap();
                let after = merged[list].as_sequence().unwrap();
                for item in before {
                    let n = item["name"].as_str().unwrap();
                    if n != e.name {
                        prop_assert!(after.contains(item), "{} lost {:?}", list, item);
                    }
                }
            }
            for (k, v) in doc.as_mapping().unwrap() {
                let k = k.as_str().unwrap();
                let ours = ["clusters", "users", "contexts"].contains(&k) || (k == "current-context" && v.as_str() == Some(""));
                if !ours {
                    prop_assert_eq!(&merged[k], v);
                }
            }
            let removed = remove(&merged, &e.name);
            for (list, _) in LISTS {
                let want: Vec<&Value> = doc[list].as_sequence().unwrap().iter().filter(|i| i["name"].as_str() != Some(e.name.as_str())).collect();
                let got: Vec<&Value> = removed[list].as_sequence().unwrap().iter().collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
