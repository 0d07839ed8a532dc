//! Phase 3: a kubeconfig context per cluster (exec auth through `meshctl token`), and in the
//! hub's spire namespace one ConfigMap per spoke with the kubeconfig the SPIRE server's
//! k8s_psat attestor uses to reach that spoke.
//!
//! The SPIRE server's kubeconfigs carry no credential: their user reads a token file
//! (`tokenFile`, which client-go re-reads as it changes) that the token refresher beside
//! the server writes every few minutes: a short-lived EKS token of the spoke's cross-account
//! access role, obtained with the server's own short-lived Pod Identity credentials (see the
//! SPIRE server chart). Nothing long-lived is at rest.
//!
//! Accounts with `kube_context` set use that existing context: meshctl checks it is there and
//! never writes it (this is how the test bed runs).

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;

use super::ids;
use crate::config::{Account, Config};
use crate::engine::{Error, ErrorKind, Status, Step, StepMeta, StepRun};
use crate::error::ResultExt;
use crate::kube::kubeconfig_file::{endpoint_of_context, entry_status, merge, read_doc, remove, write_doc, Endpoint, Entry};
use crate::kube::{kubeconfig_path, managed_labels};
use crate::session::Session;
use crate::spire::charts::spoke_token_path;

/// How long `down` waits for the hub's spire namespace to go.
const NAMESPACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    let mut out: Vec<Arc<dyn Step>> = c
        .accounts()
        .map(|a| {
            Arc::new(ContextStep {
                meta: StepMeta::new(ids::kubeconfig(&a.name), &a.name, format!("write kubeconfig context for {}", a.cluster_name))
                    .needs([ids::stack(&a.name)]),
                session: session.clone(),
                account: a.clone(),
            }) as Arc<dyn Step>
        })
        .collect();
    out.push(Arc::new(SpireNamespace {
        meta: StepMeta::new(
            ids::spire_namespace(),
            &c.hub.name,
            format!("create namespace {} in {}", c.spire.namespace, c.hub.cluster_name),
        )
        .needs([ids::kubeconfig(&c.hub.name)]),
        session: session.clone(),
    }));
    for spoke in &c.spokes {
        out.push(Arc::new(SpireKubeconfig {
            meta: StepMeta::new(
                ids::spire_kubeconfig(&spoke.name),
                &c.hub.name,
                format!(
                    "write ConfigMap {}/{} (the SPIRE server's kubeconfig for {})",
                    c.spire.namespace,
                    spoke.kubeconfig_configmap(),
                    spoke.cluster_name
                ),
            )
            .needs([ids::spire_namespace(), ids::stack(&spoke.name)]),
            session: session.clone(),
            spoke: spoke.clone(),
        }));
    }
    out
}

/// The cluster's entry for the operator: `meshctl token` with the account's profile.
pub fn operator_entry(config: &Config, account: &Account, ep: &Endpoint) -> Entry {
    let args: Vec<String> = ["token", "--cluster", &account.cluster_name, "--profile", &account.profile, "--region", &config.region]
        .iter()
        .map(|a| a.to_string())
        .collect();
    Entry::exec(&account.cluster_name, ep, "meshctl", &args)
}

/// The spoke's entry for the SPIRE server: the token file the refresher keeps current; no
/// profile, no exec plugin, no credential.
pub fn spire_entry(config: &Config, spoke: &Account, ep: &Endpoint) -> Entry {
    Entry::token_file(&spoke.cluster_name, ep, &spoke_token_path(config, spoke))
}

/// Server and CA of an EKS cluster from DescribeCluster.
async fn eks_endpoint(session: &Session, account: &Account) -> Result<Endpoint, Error> {
    let eks = session.aws.eks(&account.name).await?;
    let out = eks
        .describe_cluster()
        .name(&account.cluster_name)
        .send()
        .await
        .context(format!("account {}: EKS DescribeCluster {}", account.name, account.cluster_name))?;
    let c = out.cluster.ok_or_else(|| {
        Error::new(ErrorKind::NotFound, format!("account {}: EKS cluster {} not found", account.name, account.cluster_name))
    })?;
    let server = c.endpoint.filter(|e| !e.is_empty()).ok_or_else(|| {
        Error::new(
            ErrorKind::Conflict,
            format!("account {}: EKS cluster {} has no endpoint yet (status {:?})", account.name, account.cluster_name, c.status),
        )
    })?;
    let ca_data = c.certificate_authority.and_then(|ca| ca.data).unwrap_or_default();
    Ok(Endpoint { server, ca_data })
}

/// The endpoint of an account's cluster: its `kube_context` in the kubeconfig, else EKS.
pub async fn endpoint(session: &Session, account: &Account) -> Result<Endpoint, Error> {
    match &account.kube_context {
        Some(kc) => {
            let file = kubeconfig_path(&session.config);
            let doc = read_doc(&file)?;
            endpoint_of_context(&doc, kc, &file).context(format!("account {}", account.name))
        }
        None => eks_endpoint(session, account).await,
    }
}

/// `kubeconfig/<account>`.
pub struct ContextStep {
    meta: StepMeta,
    session: Arc<Session>,
    account: Account,
}

impl ContextStep {
    fn file(&self) -> PathBuf {
        kubeconfig_path(&self.session.config)
    }
}

#[async_trait::async_trait]
impl Step for ContextStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let file = self.file();
        let doc = read_doc(&file)?;
        if let Some(kc) = &self.account.kube_context {
            return Ok(match endpoint_of_context(&doc, kc, &file) {
                Ok(_) => Status::UpToDate,
                Err(e) => Status::Drifted(format!("configured kube_context: {}", e.chain())),
            });
        }
        let ep = eks_endpoint(&self.session, &self.account).await?;
        Ok(entry_status(&doc, &operator_entry(&self.session.config, &self.account, &ep)))
    }

    async fn apply(&self, cx: &StepRun) -> Result<(), Error> {
        let file = self.file();
        let doc = read_doc(&file)?;
        if let Some(kc) = &self.account.kube_context {
            return endpoint_of_context(&doc, kc, &file)
                .map(|_| ())
                .context(format!("account {}: kube_context is set, so meshctl does not write it", self.account.name));
        }
        let ep = eks_endpoint(&self.session, &self.account).await?;
        let entry = operator_entry(&self.session.config, &self.account, &ep);
        if entry_status(&doc, &entry) == Status::UpToDate {
            return Ok(());
        }
        write_doc(&file, &merge(&doc, &entry))?;
        cx.progress(format!("context {} written to {}", entry.name, file.display()));
        Ok(())
    }

    async fn destroy(&self, _: &StepRun) -> Result<(), Error> {
        if self.account.kube_context.is_some() {
            return Ok(()); // not ours
        }
        let file = self.file();
        let doc = read_doc(&file)?;
        let after = remove(&doc, &self.account.cluster_name);
        if after != doc {
            write_doc(&file, &after)?;
        }
        Ok(())
    }
}

/// `kubeconfig/spire-namespace`: the hub's SPIRE namespace, home of the spokes' kubeconfig
/// ConfigMaps and of the server. On the way down it goes last (everything in it needs this
/// step), and only when meshctl created it.
pub struct SpireNamespace {
    meta: StepMeta,
    session: Arc<Session>,
}

#[async_trait::async_trait]
impl Step for SpireNamespace {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        let c = &self.session.config;
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        if run.mode.reversed() {
            // Only meshctl's own namespace is there to delete.
            return Ok(if kc.namespace_is_ours(&c.spire.namespace).await? { Status::UpToDate } else { Status::Missing });
        }
        Ok(kc.namespace_status(&c.spire.namespace, &managed_labels()).await?)
    }

    async fn apply(&self, _: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        kc.ensure_namespace(&c.spire.namespace, &managed_labels()).await?;
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        if kc.delete_namespace_if_ours(&c.spire.namespace, NAMESPACE_TIMEOUT).await? {
            run.progress(format!("namespace {} deleted", c.spire.namespace));
        }
        Ok(())
    }
}

/// `kubeconfig/spire-<spoke>`: the ConfigMap holding the kubeconfig the SPIRE server's
/// k8s_psat attestor reaches one spoke with. One step per spoke, so a spoke whose cluster
/// is not there yet (or failed) holds back only its own agent, not the server.
pub struct SpireKubeconfig {
    meta: StepMeta,
    session: Arc<Session>,
    spoke: Account,
}

impl SpireKubeconfig {
    fn named(&self) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(self.spoke.kubeconfig_configmap().to_string());
        cm.metadata.namespace = Some(self.session.config.spire.namespace.clone());
        cm
    }

    async fn wanted(&self) -> Result<ConfigMap, Error> {
        let ep = endpoint(&self.session, &self.spoke).await?;
        let mut cm = self.named();
        cm.data =
            Some([(self.spoke.kubeconfig_key().to_string(), spire_entry(&self.session.config, &self.spoke, &ep).standalone())].into());
        Ok(cm)
    }
}

#[async_trait::async_trait]
impl Step for SpireKubeconfig {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        let c = &self.session.config;
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        if run.mode.reversed() {
            // Deleting needs only the name: the spoke's cluster may be gone already.
            let live: Option<ConfigMap> = kc.get_typed(&c.spire.namespace, self.spoke.kubeconfig_configmap()).await?;
            return Ok(if live.is_some() { Status::UpToDate } else { Status::Missing });
        }
        Ok(kc.check_all(&[crate::kube::typed(&self.wanted().await?)?]).await?)
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        kc.apply(&crate::kube::typed(&self.wanted().await?)?).await?;
        run.progress(format!("ConfigMap {}/{} applied", c.spire.namespace, self.spoke.kubeconfig_configmap()));
        Ok(())
    }

    async fn destroy(&self, _: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let kc = self.session.kube.cluster_client(&c.hub.name).await?;
        kc.delete(&crate::kube::typed(&self.named())?).await.context(format!(
            "delete ConfigMap {}/{}",
            c.spire.namespace,
            self.spoke.kubeconfig_configmap()
        ))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml_ng::Value;

    fn ep() -> Endpoint {
        Endpoint { server: "https://ABC.gr7.us-east-2.eks.amazonaws.com".into(), ca_data: "LS0tLS1CRUdJTg==".into() }
    }

    #[test]
    fn operator_entry_uses_meshctl_token() {
        let c = Config::default();
        let e = operator_entry(&c, &c.spokes[0], &ep());
        let exec = e.user.get("exec").unwrap();
        assert_eq!(exec.get("apiVersion").unwrap().as_str(), Some("client.authentication.k8s.io/v1beta1"));
        assert_eq!(exec.get("command").unwrap().as_str(), Some("meshctl"));
        let args: Vec<&str> = exec.get("args").unwrap().as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(args, ["token", "--cluster", "eks-cluster-frontend", "--profile", "frontend", "--region", "us-east-2"]);
    }

    /// The SPIRE server reads a token file the refresher keeps current: no exec plugin (the
    /// official image has no AWS CLI), no profile, no credential in the ConfigMap.
    #[test]
    fn spire_entry_reads_the_refreshed_token_file_and_holds_no_credential() {
        let c = Config::default();
        let text = spire_entry(&c, &c.spokes[1], &ep()).standalone();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(doc.get("current-context").unwrap().as_str(), Some("eks-cluster-backend"));
        let user = doc["users"][0]["user"].clone();
        assert_eq!(user["tokenFile"].as_str(), Some(spoke_token_path(&c, &c.spokes[1]).as_str()));
        assert!(user.get("exec").is_none() && user.get("token").is_none(), "{text}");
        assert!(!text.contains("profile"), "{text}");
        assert_eq!(doc["clusters"][0]["cluster"]["server"].as_str(), Some(ep().server.as_str()));
    }
}
