//! Kubernetes access: one client per cluster, from the kubeconfig context of its account
//! (`kube_context` when configured, else the context `kubeconfig/<account>` writes, named
//! after the EKS cluster), and the helpers every cluster-side step uses: server-side apply
//! and dry-run drift checks ([`apply`]), waits with timeouts and one readiness rule for
//! every workload kind ([`wait`]), the kubeconfig file as a YAML document
//! ([`kubeconfig_file`]), manifest templates ([`template`]), inventories of applied objects
//! ([`inventory`]). Knows nothing of the engine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

use crate::config::Config;

pub mod apply;
pub mod aws_auth;
pub mod inventory;
pub mod kubeconfig_file;
pub mod template;
pub mod wait;

pub use apply::{is_ours, mounted_config_maps, parse_manifests, to_dynamic, to_typed, typed, Target, RESTARTED_AT};

use crate::error::{Error, ErrorKind};
pub use crate::names::LABEL_MANAGED_BY as MANAGED_BY;

/// The labels of a namespace meshctl creates: its ownership label alone.
pub fn managed_labels() -> std::collections::BTreeMap<String, String> {
    [(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()
}

/// Field manager for every server-side apply meshctl does.
pub const FIELD_MANAGER: &str = "meshctl";

#[derive(Debug, Clone, thiserror::Error)]
pub enum KubeError {
    /// The account role is not in the configuration (a bug in a phase).
    #[error("no account named {0} in the configuration")]
    UnknownAccount(String),
    /// The kubeconfig could not be read or has no such context.
    #[error("cluster {cluster} (account {account}): cannot use kubeconfig context {context:?} from {file}: {message}; run `meshctl kubeconfig` first or set kube_context for this account")]
    Context { account: String, cluster: String, context: String, file: String, message: String },
    /// A manifest (template or built object) is not a valid Kubernetes object.
    #[error("manifest {origin}: {message}")]
    Manifest { origin: String, message: String },
    /// The API server does not serve the kind (its CRD is not installed or not established).
    #[error("context {context}: the API server does not serve {api_version} {kind}: {message}")]
    Discovery { context: String, api_version: String, kind: String, message: String },
    /// A request to the API server failed.
    #[error("context {context}: {verb} {object}: {message}")]
    Api { context: String, verb: &'static str, object: String, message: String, status: Option<u16> },
    /// A watch behind a wait failed.
    #[error("context {context}: waiting for {what}: {message}")]
    Wait { context: String, what: String, message: String },
    /// A wait ran out of time.
    #[error("context {context}: timed out after {secs}s waiting for {what}")]
    Timeout { context: String, what: String, secs: u64 },
}

impl KubeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            KubeError::UnknownAccount(_) | KubeError::Manifest { .. } => ErrorKind::InvalidInput,
            KubeError::Context { .. } => ErrorKind::InvalidInput,
            KubeError::Discovery { .. } => ErrorKind::NotFound,
            KubeError::Api { status: Some(code), .. } => ErrorKind::from_http_status(*code),
            KubeError::Api { status: None, .. } | KubeError::Wait { .. } | KubeError::Timeout { .. } => ErrorKind::Other,
        }
    }
}

impl From<KubeError> for Error {
    fn from(e: KubeError) -> Error {
        Error::new(e.kind(), e.to_string())
    }
}

/// A kube-rs error as an [`Error`]: the API server's message and reason, classified by its
/// HTTP status.
pub fn api_error(e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(s) => Error::new(ErrorKind::from_http_status(s.code), format!("{} ({})", s.message, s.reason)),
        other => Error::other(crate::error::chain(other)),
    }
}

/// One cluster's client and the context name errors use.
#[derive(Clone)]
pub struct KubeClient {
    pub client: kube::Client,
    /// The meshctl account role of the cluster.
    pub account: String,
    /// The kubeconfig context it was built from.
    pub context: String,
}

struct Cluster {
    name: String,
    context: String,
    client: OnceCell<kube::Client>,
}

pub struct Kube {
    kubeconfig: Option<PathBuf>,
    clusters: BTreeMap<String, Cluster>,
}

/// The kubeconfig file meshctl reads and writes: the configured one, else $KUBECONFIG's
/// first entry, else ~/.kube/config.
pub fn kubeconfig_path(config: &Config) -> PathBuf {
    if let Some(p) = &config.kubeconfig {
        return p.clone();
    }
    if let Some(first) = std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next()) {
        if !first.as_os_str().is_empty() {
            return first;
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".kube").join("config")
}

impl Kube {
    pub fn new(config: &Config) -> Kube {
        let clusters = config
            .accounts()
            .map(|a| {
                let context = a.kube_context.clone().unwrap_or_else(|| a.cluster_name.clone());
                (a.name.clone(), Cluster { name: a.cluster_name.clone(), context, client: OnceCell::new() })
            })
            .collect();
        Kube { kubeconfig: Some(kubeconfig_path(config)), clusters }
    }

    /// The kubeconfig context the account's cluster is reached through.
    pub fn context(&self, account: &str) -> Result<&str, KubeError> {
        Ok(&self.cluster(account)?.context)
    }

    fn cluster(&self, account: &str) -> Result<&Cluster, KubeError> {
        self.clusters.get(account).ok_or_else(|| KubeError::UnknownAccount(account.to_string()))
    }

    /// The account's client with its names, for the apply and wait helpers.
    pub async fn cluster_client(&self, account: &str) -> Result<KubeClient, KubeError> {
        let client = self.client(account).await?;
        Ok(KubeClient { client, account: account.to_string(), context: self.context(account)?.to_string() })
    }

    /// The kubeconfig file clients are built from.
    pub fn kubeconfig(&self) -> Option<&std::path::Path> {
        self.kubeconfig.as_deref()
    }

    /// Every account with its context, for messages.
    pub fn contexts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.clusters.iter().map(|(a, c)| (a.as_str(), c.context.as_str()))
    }

    /// The account's client, built on first use.
    pub async fn client(&self, account: &str) -> Result<kube::Client, KubeError> {
        let c = self.cluster(account)?;
        let file = self.kubeconfig.clone().unwrap_or_default();
        c.client
            .get_or_try_init(|| async {
                let err = |message: String| KubeError::Context {
                    account: account.to_string(),
                    cluster: c.name.clone(),
                    context: c.context.clone(),
                    file: file.display().to_string(),
                    message,
                };
                let kc = Kubeconfig::read_from(&file).map_err(|e| err(e.to_string()))?;
                let opts = KubeConfigOptions { context: Some(c.context.clone()), ..Default::default() };
                let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| err(e.to_string()))?;
                kube::Client::try_from(cfg).map_err(|e| err(e.to_string()))
            })
            .await
            .cloned()
    }
}
