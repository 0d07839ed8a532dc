//! Phase 4: let each spoke's cross-account access role into its cluster (aws-auth mapping or
//! EKS access entry), bound to only what the SPIRE server needs unless configured otherwise.
//!
//! The aws-auth ConfigMap belongs to EKS and to whoever else maps roles into it: meshctl
//! edits only its own `mapRoles` item ([`crate::kube::aws_auth`]), writes with the
//! resourceVersion it read and retries on conflict.
//!
//! Least privilege (default): the role maps to the group `meshctl:spire-server`, bound by a
//! ClusterRole + ClusterRoleBinding meshctl creates to TokenReview create and pod/node
//! get/list — what the SPIRE server's k8s_psat attestor uses. `auth.access = system-masters`
//! is the walkthrough's grant: group `system:masters` in aws-auth, or with access entries
//! (where EKS refuses that group) the AmazonEKSClusterAdminPolicy at cluster scope.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, PostParams};

use super::ids;
use crate::aws::access_entries::{self, Grant};
use crate::config::{AccessLevel, Account, AuthMode};
use crate::engine::{Error, ErrorKind, Status, Step, StepMeta, StepRun};
use crate::error::ResultExt;
use crate::kube::aws_auth::{
    map_roles_status, merge_map_roles, remove_map_roles, RoleMapping, MAP_ROLES, NAME as AWS_AUTH, NAMESPACE as AWS_AUTH_NS,
};
use crate::kube::KubeClient;
use crate::names::access_role_arn;
use crate::session::Session;

/// The Kubernetes group (and ClusterRole/Binding name) of least-privilege access.
pub const SPIRE_GROUP: &str = "meshctl:spire-server";
/// The walkthrough's group.
pub const MASTERS_GROUP: &str = "system:masters";

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    c.spokes
        .iter()
        .map(|s| {
            Arc::new(AwsAuthStep {
                meta: StepMeta::new(ids::aws_auth(&s.name), &s.name, format!("map role {} into {}", s.access_role_name(), s.cluster_name))
                    .needs([ids::kubeconfig(&s.name), ids::stack(&s.name)]),
                session: session.clone(),
                spoke: s.clone(),
            }) as Arc<dyn Step>
        })
        .collect()
}

/// The ClusterRole and binding of least-privilege access.
pub fn rbac() -> (ClusterRole, ClusterRoleBinding) {
    let mut role = ClusterRole::default();
    role.metadata.name = Some(SPIRE_GROUP.into());
    role.rules = Some(vec![
        PolicyRule {
            api_groups: Some(vec!["authentication.k8s.io".into()]),
            resources: Some(vec!["tokenreviews".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into(), "nodes".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        },
    ]);
    let mut binding = ClusterRoleBinding::default();
    binding.metadata.name = Some(SPIRE_GROUP.into());
    binding.role_ref = RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "ClusterRole".into(), name: SPIRE_GROUP.into() };
    binding.subjects = Some(vec![Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "Group".into(),
        name: SPIRE_GROUP.into(),
        namespace: None,
    }]);
    (role, binding)
}

/// `aws-auth/<spoke>`.
pub struct AwsAuthStep {
    meta: StepMeta,
    session: Arc<Session>,
    spoke: Account,
}

impl AwsAuthStep {
    fn least(&self) -> bool {
        self.session.config.auth.access == AccessLevel::LeastPrivilege
    }

    async fn mapping(&self) -> Result<RoleMapping, Error> {
        let id = self.session.aws.account_id(&self.spoke.name).await?;
        let rolearn = access_role_arn(&self.session.config, &self.spoke, &id);
        let group = if self.least() { SPIRE_GROUP } else { MASTERS_GROUP };
        Ok(RoleMapping { rolearn, username: self.spoke.access_role_name().to_string(), groups: vec![group.to_string()] })
    }

    /// What an access entry grants: meshctl's group, or (system:masters) the admin policy.
    fn grant(&self) -> Grant {
        if self.least() {
            Grant { groups: vec![SPIRE_GROUP.into()], cluster_admin: false }
        } else {
            Grant { groups: vec![], cluster_admin: true }
        }
    }

    async fn read(&self, kc: &KubeClient) -> Result<Option<ConfigMap>, Error> {
        Ok(kc.get_typed(AWS_AUTH_NS, AWS_AUTH).await?)
    }

    /// Reads, edits with `edit` (None = nothing to do) and writes with the resourceVersion
    /// read; retries on conflict.
    async fn update(
        &self,
        kc: &KubeClient,
        create_if_absent: bool,
        edit: impl Fn(&str) -> Result<Option<String>, Error>,
    ) -> Result<bool, Error> {
        let api: Api<ConfigMap> = Api::namespaced(kc.client.clone(), AWS_AUTH_NS);
        let pp = PostParams { field_manager: Some(crate::kube::FIELD_MANAGER.into()), ..Default::default() };
        for attempt in 0..8 {
            let live = self.read(kc).await?;
            let text = live.as_ref().and_then(|cm| cm.data.as_ref()).and_then(|d| d.get(MAP_ROLES)).cloned().unwrap_or_default();
            let Some(new) = edit(&text).context(format!("context {}: ConfigMap {AWS_AUTH_NS}/{AWS_AUTH}", kc.context))? else {
                return Ok(false);
            };
            let result = match live {
                Some(mut cm) => {
                    cm.data.get_or_insert_with(Default::default).insert(MAP_ROLES.into(), new);
                    cm.metadata.managed_fields = None;
                    api.replace(AWS_AUTH, &pp, &cm).await
                }
                None if create_if_absent => {
                    let mut cm = ConfigMap::default();
                    cm.metadata.name = Some(AWS_AUTH.into());
                    cm.metadata.namespace = Some(AWS_AUTH_NS.into());
                    cm.data = Some([(MAP_ROLES.to_string(), new)].into());
                    api.create(&pp, &cm).await
                }
                None => return Ok(false),
            };
            match result {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 7 => {
                    tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                }
                Err(e) => {
                    return Err(
                        crate::kube::api_error(e).context(format!("context {}: write ConfigMap {AWS_AUTH_NS}/{AWS_AUTH}", kc.context))
                    )
                }
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!("context {}: ConfigMap {AWS_AUTH_NS}/{AWS_AUTH} kept changing under us; try again", kc.context),
        ))
    }
}

#[async_trait::async_trait]
impl Step for AwsAuthStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let kc = self.session.kube.cluster_client(&self.spoke.name).await?;
        let ours = self.mapping().await?;
        let entry = match self.session.config.auth.mode {
            AuthMode::AwsAuth => {
                let text = self.read(&kc).await?.and_then(|cm| cm.data).and_then(|mut d| d.remove(MAP_ROLES)).unwrap_or_default();
                map_roles_status(&text, &ours).context(format!("context {}: {AWS_AUTH_NS}/{AWS_AUTH}", kc.context))?
            }
            AuthMode::AccessEntries => {
                let eks = self.session.aws.eks(&self.spoke.name).await?;
                access_entries::status(&eks, &self.spoke.cluster_name, &ours.rolearn, &self.grant()).await?
            }
        };
        let (role, binding) = rbac();
        let rbac = [crate::kube::typed(&role)?, crate::kube::typed(&binding)?];
        if entry == Status::Missing {
            // A `down` interrupted after removing the mapping leaves the ClusterRole and its
            // binding: not missing yet, so the next `down` deletes them.
            for t in &rbac {
                if kc.get(t).await?.is_some() {
                    return Ok(Status::Drifted(format!("{} is there without the role mapping", t.describe())));
                }
            }
        }
        if entry != Status::UpToDate {
            return Ok(entry);
        }
        if self.least() {
            return Ok(kc.check_all(&rbac).await?);
        }
        // system:masters: the least-privilege objects of an earlier run are no longer wanted
        for t in &rbac {
            if kc.get(t).await?.is_some() {
                return Ok(Status::Drifted(format!("{} is left from auth.access = least-privilege", t.describe())));
            }
        }
        Ok(Status::UpToDate)
    }

    async fn apply(&self, cx: &StepRun) -> Result<(), Error> {
        let kc = self.session.kube.cluster_client(&self.spoke.name).await?;
        let ours = self.mapping().await?;
        let (role, binding) = rbac();
        if self.least() {
            kc.apply(&crate::kube::typed(&role)?).await?;
            kc.apply(&crate::kube::typed(&binding)?).await?;
        } else {
            kc.delete(&crate::kube::typed(&binding)?).await?;
            kc.delete(&crate::kube::typed(&role)?).await?;
        }
        match self.session.config.auth.mode {
            AuthMode::AwsAuth => {
                if self.update(&kc, true, |t| merge_map_roles(t, &ours)).await? {
                    cx.progress(format!("mapped {} to {}", ours.rolearn, ours.groups.join(",")));
                }
            }
            AuthMode::AccessEntries => {
                let eks = self.session.aws.eks(&self.spoke.name).await?;
                access_entries::ensure(&eks, &self.spoke.cluster_name, &ours.rolearn, &self.grant()).await?;
            }
        }
        Ok(())
    }

    async fn destroy(&self, _: &StepRun) -> Result<(), Error> {
        let kc = self.session.kube.cluster_client(&self.spoke.name).await?;
        let ours = self.mapping().await?;
        match self.session.config.auth.mode {
            AuthMode::AwsAuth => {
                self.update(&kc, false, |t| remove_map_roles(t, &ours.rolearn)).await?;
            }
            AuthMode::AccessEntries => {
                let eks = self.session.aws.eks(&self.spoke.name).await?;
                access_entries::delete(&eks, &self.spoke.cluster_name, &ours.rolearn).await?;
            }
        }
        let (role, binding) = rbac();
        kc.delete(&crate::kube::typed(&binding)?).await?;
        kc.delete(&crate::kube::typed(&role)?).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_privilege_rbac_is_narrow() {
        let (role, binding) = rbac();
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].resources.as_ref().unwrap(), &["tokenreviews"]);
        assert_eq!(rules[0].verbs, ["create"]);
        assert_eq!(rules[1].verbs, ["get", "list"]);
        assert_eq!(binding.subjects.unwrap()[0].name, SPIRE_GROUP);
    }
}
