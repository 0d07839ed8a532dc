//! Phase 4: let each spoke's cross-account access role into its cluster (aws-auth mapping or
//! EKS access entry), bound to only what the SPIRE server needs unless configured otherwise.
//!
//! The aws-auth ConfigMap belongs to EKS and to whoever else maps roles into it, so meshctl
//! edits its `mapRoles` text surgically: the document is split into its list items, only the
//! item whose `rolearn` is ours is added, replaced or removed, and every other item (the node
//! role mapping EKS seeded, other users' entries, comments) keeps its exact bytes. The write
//! carries the resourceVersion it read and is retried on conflict.
//!
//! Least privilege (default): the role maps to the group `meshctl:spire-server`, bound by a
//! ClusterRole + ClusterRoleBinding meshctl creates to TokenReview create and pod/node
//! get/list — what the SPIRE server's k8s_psat attestor uses. `auth.access = system-masters`
//! maps to `system:masters` as the walkthrough does.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, PostParams};
use serde_yaml_ng::Value;

use super::ids;
use crate::config::{AccessLevel, Account, AuthMode};
use crate::context::Ctx;
use crate::engine::{Status, Step, StepCx, StepError, StepMeta};
use crate::kube::KubeClient;

/// The Kubernetes group (and ClusterRole/Binding name) of least-privilege access.
pub const SPIRE_GROUP: &str = "meshctl:spire-server";
/// The walkthrough's group.
pub const MASTERS_GROUP: &str = "system:masters";
const AWS_AUTH_NS: &str = "kube-system";
const AWS_AUTH: &str = "aws-auth";
const MAP_ROLES: &str = "mapRoles";
/// EKS's managed cluster-admin policy (access entries cannot name system:masters).
const ADMIN_POLICY: &str = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy";

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    c.spokes
        .iter()
        .map(|s| {
            Arc::new(AwsAuthStep {
                meta: StepMeta::new("aws-auth", &s.name, &s.name, format!("map role {} into {}", s.access_role_name(), s.cluster_name))
                    .needs([ids::kubeconfig(&s.name), ids::stack(&s.name)]),
                ctx: ctx.clone(),
                spoke: s.clone(),
            }) as Arc<dyn Step>
        })
        .collect()
}

/// The one mapRoles entry meshctl owns for a spoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping {
    pub rolearn: String,
    pub username: String,
    pub groups: Vec<String>,
}

impl RoleMapping {
    fn value(&self) -> Value {
        let mut m = serde_yaml_ng::Mapping::new();
        m.insert("rolearn".into(), self.rolearn.clone().into());
        m.insert("username".into(), self.username.clone().into());
        m.insert("groups".into(), Value::Sequence(self.groups.iter().map(|g| Value::from(g.clone())).collect()));
        Value::Mapping(m)
    }

    /// The entry as a block list item at `indent`.
    fn block(&self, indent: &str) -> String {
        let mut s = format!("{indent}- rolearn: {}\n{indent}  username: {}\n{indent}  groups:\n", quote(&self.rolearn), quote(&self.username));
        for g in &self.groups {
            s.push_str(&format!("{indent}  - {}\n", quote(g)));
        }
        s
    }
}

/// A plain scalar when YAML reads it back unchanged, else double-quoted.
fn quote(s: &str) -> String {
    match serde_yaml_ng::from_str::<Value>(s) {
        Ok(Value::String(back)) if back == s && !s.contains(": ") && !s.contains(" #") => s.to_string(),
        _ => serde_json::to_string(s).expect("a string serializes"),
    }
}

/// mapRoles split into its list items, each with its exact text.
struct Blocks {
    head: String,
    items: Vec<String>,
    indent: String,
}

fn split_blocks(text: &str) -> Option<Blocks> {
    let mut indent: Option<String> = None;
    let mut head = String::new();
    let mut items: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let lead = &line[..line.len() - trimmed.len()];
        let starts_item = trimmed.starts_with("- ") || trimmed.trim_end() == "-";
        if indent.is_none() && starts_item {
            indent = Some(lead.to_string());
        }
        match &indent {
            Some(ind) if starts_item && lead == ind => items.push(line.to_string()),
            Some(_) => items.last_mut().expect("an item started").push_str(line),
            None => head.push_str(line),
        }
    }
    if items.is_empty() && head.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
        return None; // `[]` or another flow form: nothing to append to in place
    }
    let blocks = Blocks { head, items, indent: indent.unwrap_or_default() };
    // The split must mean the same as the whole, else we fall back to re-serializing.
    let whole: Value = serde_yaml_ng::from_str(text).ok()?;
    let whole = if whole.is_null() { Value::Sequence(vec![]) } else { whole };
    let parts = Value::Sequence(blocks.items.iter().map(|b| item_value(b)).collect::<Option<Vec<_>>>()?);
    (whole == parts).then_some(blocks)
}

fn item_value(block: &str) -> Option<Value> {
    match serde_yaml_ng::from_str::<Value>(block).ok()? {
        Value::Sequence(mut v) if v.len() == 1 => v.pop(),
        _ => None,
    }
}

fn rolearn_of(v: &Value) -> Option<&str> {
    v.get("rolearn").and_then(Value::as_str)
}

/// mapRoles with `ours` added or fixed; `None` when it is already there exactly.
pub fn merge_map_roles(text: &str, ours: &RoleMapping) -> Result<Option<String>, String> {
    let want = ours.value();
    if let Some(mut b) = split_blocks(text) {
        let pos = b.items.iter().position(|i| item_value(i).as_ref().and_then(rolearn_of) == Some(ours.rolearn.as_str()));
        match pos {
            Some(p) if item_value(&b.items[p]).as_ref() == Some(&want) => return Ok(None),
            Some(p) => b.items[p] = ours.block(&b.indent),
            None => {
                if let Some(last) = b.items.last_mut() {
                    if !last.ends_with('\n') {
                        last.push('\n');
                    }
                } else if !b.head.is_empty() && !b.head.ends_with('\n') {
                    b.head.push('\n');
                }
                b.items.push(ours.block(&b.indent));
            }
        }
        return Ok(Some(format!("{}{}", b.head, b.items.concat())));
    }
    // Not a block list we can edit in place (flow style, anchors): re-serialize.
    let mut list = parse_list(text)?;
    match list.iter().position(|v| rolearn_of(v) == Some(ours.rolearn.as_str())) {
        Some(p) if list[p] == want => return Ok(None),
        Some(p) => list[p] = want,
        None => list.push(want),
    }
    serde_yaml_ng::to_string(&Value::Sequence(list)).map(Some).map_err(|e| e.to_string())
}

/// mapRoles without the entry of `rolearn`; `None` when it is not there.
pub fn remove_map_roles(text: &str, rolearn: &str) -> Result<Option<String>, String> {
    if let Some(mut b) = split_blocks(text) {
        let before = b.items.len();
        b.items.retain(|i| item_value(i).as_ref().and_then(rolearn_of) != Some(rolearn));
        if b.items.len() == before {
            return Ok(None);
        }
        let out = format!("{}{}", b.head, b.items.concat());
        return Ok(Some(if out.trim().is_empty() { String::new() } else { out }));
    }
    let mut list = parse_list(text)?;
    let before = list.len();
    list.retain(|v| rolearn_of(v) != Some(rolearn));
    if list.len() == before {
        return Ok(None);
    }
    serde_yaml_ng::to_string(&Value::Sequence(list)).map(Some).map_err(|e| e.to_string())
}

fn parse_list(text: &str) -> Result<Vec<Value>, String> {
    match serde_yaml_ng::from_str::<Value>(text).map_err(|e| format!("mapRoles is not valid YAML: {e}"))? {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(v) => Ok(v),
        _ => Err("mapRoles is not a YAML list".into()),
    }
}

/// The state of our entry in a mapRoles text.
pub fn map_roles_status(text: &str, ours: &RoleMapping) -> Result<Status, String> {
    let list = parse_list(text)?;
    Ok(match list.iter().find(|v| rolearn_of(v) == Some(ours.rolearn.as_str())) {
        None => Status::Missing,
        Some(v) if *v == ours.value() => Status::UpToDate,
        Some(_) => Status::Drifted(format!("aws-auth mapRoles entry for {} differs", ours.rolearn)),
    })
}

/// The ClusterRole and binding of least-privilege access.
pub fn rbac() -> (ClusterRole, ClusterRoleBinding) {
    let mut role = ClusterRole::default();
    role.metadata.name = Some(SPIRE_GROUP.into());
    role.rules = Some(vec![
        PolicyRule { api_groups: Some(vec!["authentication.k8s.io".into()]), resources: Some(vec!["tokenreviews".into()]), verbs: vec!["create".into()], ..Default::default() },
        PolicyRule { api_groups: Some(vec!["".into()]), resources: Some(vec!["pods".into(), "nodes".into()]), verbs: vec!["get".into(), "list".into()], ..Default::default() },
    ]);
    let mut binding = ClusterRoleBinding::default();
    binding.metadata.name = Some(SPIRE_GROUP.into());
    binding.role_ref = RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "ClusterRole".into(), name: SPIRE_GROUP.into() };
    binding.subjects = Some(vec![Subject { api_group: Some("rbac.authorization.k8s.io".into()), kind: "Group".into(), name: SPIRE_GROUP.into(), namespace: None }]);
    (role, binding)
}

/// The access entry's state: `Missing`, or whether its groups match.
pub async fn access_entry_status(eks: &aws_sdk_eks::Client, cluster: &str, principal: &str, groups: &[String]) -> Result<Status, String> {
    match eks.describe_access_entry().cluster_name(cluster).principal_arn(principal).send().await {
        Ok(out) => {
            let mut have = out.access_entry.and_then(|e| e.kubernetes_groups).unwrap_or_default();
            have.sort();
            let mut want = groups.to_vec();
            want.sort();
            Ok(if have == want { Status::UpToDate } else { Status::Drifted(format!("access entry groups are {have:?}, want {want:?}")) })
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(Status::Missing),
        Err(e) => Err(format!("EKS DescribeAccessEntry {principal} in {cluster}: {}", crate::aws::error_text(&e))),
    }
}

/// Creates or fixes the access entry; with `admin`, associates EKS's cluster-admin policy.
pub async fn ensure_access_entry(eks: &aws_sdk_eks::Client, cluster: &str, principal: &str, groups: &[String], admin: bool) -> Result<(), String> {
    match access_entry_status(eks, cluster, principal, groups).await? {
        Status::UpToDate => {}
        Status::Missing => {
            eks.create_access_entry()
                .cluster_name(cluster)
                .principal_arn(principal)
                .set_kubernetes_groups(Some(groups.to_vec()))
                .r#type("STANDARD")
                .tags("meshctl:managed-by", "meshctl")
                .send()
                .await
                .map_err(|e| format!("EKS CreateAccessEntry {principal} in {cluster}: {}", crate::aws::error_text(&e)))?;
        }
        Status::Drifted(_) => {
            eks.update_access_entry()
                .cluster_name(cluster)
                .principal_arn(principal)
                .set_kubernetes_groups(Some(groups.to_vec()))
                .send()
                .await
                .map_err(|e| format!("EKS UpdateAccessEntry {principal} in {cluster}: {}", crate::aws::error_text(&e)))?;
        }
    }
    if admin {
        use aws_sdk_eks::types::{AccessScope, AccessScopeType};
        eks.associate_access_policy()
            .cluster_name(cluster)
            .principal_arn(principal)
            .policy_arn(ADMIN_POLICY)
            .access_scope(AccessScope::builder().r#type(AccessScopeType::Cluster).build())
            .send()
            .await
            .map_err(|e| format!("EKS AssociateAccessPolicy {principal} in {cluster}: {}", crate::aws::error_text(&e)))?;
    }
    Ok(())
}

/// Deletes the access entry; absent is success.
pub async fn delete_access_entry(eks: &aws_sdk_eks::Client, cluster: &str, principal: &str) -> Result<(), String> {
    match eks.delete_access_entry().cluster_name(cluster).principal_arn(principal).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(()),
        Err(e) => Err(format!("EKS DeleteAccessEntry {principal} in {cluster}: {}", crate::aws::error_text(&e))),
    }
}

/// `aws-auth/<spoke>`.
pub struct AwsAuthStep {
    meta: StepMeta,
    ctx: Arc<Ctx>,
    spoke: Account,
}

impl AwsAuthStep {
    fn least(&self) -> bool {
        self.ctx.config.auth.access == AccessLevel::LeastPrivilege
    }

    async fn mapping(&self) -> Result<RoleMapping, StepError> {
        let id = self.ctx.aws.account_id(&self.spoke.name).await.map_err(|e| StepError::new(e.to_string()))?;
        let rolearn = super::kubeconfig::access_role_arn(&self.ctx.config, &self.spoke, &id);
        let group = if self.least() { SPIRE_GROUP } else { MASTERS_GROUP };
        Ok(RoleMapping { rolearn, username: self.spoke.access_role_name().to_string(), groups: vec![group.to_string()] })
    }

    async fn read(&self, kc: &KubeClient) -> Result<Option<ConfigMap>, StepError> {
        let api: Api<ConfigMap> = Api::namespaced(kc.client.clone(), AWS_AUTH_NS);
        api.get_opt(AWS_AUTH).await.map_err(|e| StepError::new(format!("context {}: get ConfigMap {AWS_AUTH_NS}/{AWS_AUTH}: {e}", kc.context)))
    }

    /// Reads, edits with `edit` (None = nothing to do) and writes with the resourceVersion
    /// read; retries on conflict.
    async fn update(&self, kc: &KubeClient, create_if_absent: bool, edit: impl Fn(&str) -> Result<Option<String>, String>) -> Result<bool, StepError> {
        let api: Api<ConfigMap> = Api::namespaced(kc.client.clone(), AWS_AUTH_NS);
        let pp = PostParams { field_manager: Some(crate::kube::FIELD_MANAGER.into()), ..Default::default() };
        for attempt in 0..8 {
            let live = self.read(kc).await?;
            let text = live.as_ref().and_then(|cm| cm.data.as_ref()).and_then(|d| d.get(MAP_ROLES)).cloned().unwrap_or_default();
            let Some(new) = edit(&text).map_err(|e| StepError::new(format!("context {}: ConfigMap {AWS_AUTH_NS}/{AWS_AUTH}: {e}", kc.context)))? else {
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
                Err(e) => return Err(StepError::new(format!("context {}: write ConfigMap {AWS_AUTH_NS}/{AWS_AUTH}: {e}", kc.context))),
            }
        }
        Err(StepError::new(format!("context {}: ConfigMap {AWS_AUTH_NS}/{AWS_AUTH} kept changing under us; try again", kc.context)))
    }

    fn principal_and_eks_cluster(&self) -> &str {
        &self.spoke.cluster_name
    }
}

#[async_trait::async_trait]
impl Step for AwsAuthStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let kc = self.ctx.kube.cluster_client(&self.spoke.name).await?;
        let ours = self.mapping().await?;
        let entry = match self.ctx.config.auth.mode {
            AuthMode::AwsAuth => {
                let text = self.read(&kc).await?.and_then(|cm| cm.data).and_then(|mut d| d.remove(MAP_ROLES)).unwrap_or_default();
                map_roles_status(&text, &ours).map_err(|e| StepError::new(format!("context {}: {AWS_AUTH_NS}/{AWS_AUTH}: {e}", kc.context)))?
            }
            AuthMode::AccessEntries => {
                let eks = self.ctx.aws.eks(&self.spoke.name).await.map_err(|e| StepError::new(e.to_string()))?;
                access_entry_status(&eks, self.principal_and_eks_cluster(), &ours.rolearn, &ours.groups).await.map_err(StepError::new)?
            }
        };
        if entry != Status::UpToDate {
            return Ok(entry);
        }
        let (role, binding) = rbac();
        let rbac = [crate::kube::typed(&role)?, crate::kube::typed(&binding)?];
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

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let kc = self.ctx.kube.cluster_client(&self.spoke.name).await?;
        let ours = self.mapping().await?;
        let (role, binding) = rbac();
        if self.least() {
            kc.apply_typed(&role).await?;
            kc.apply_typed(&binding).await?;
        } else {
            kc.delete(&crate::kube::typed(&binding)?).await?;
            kc.delete(&crate::kube::typed(&role)?).await?;
        }
        match self.ctx.config.auth.mode {
            AuthMode::AwsAuth => {
                if self.update(&kc, true, |t| merge_map_roles(t, &ours)).await? {
                    cx.progress(format!("mapped {} to {}", ours.rolearn, ours.groups.join(",")));
                }
            }
            AuthMode::AccessEntries => {
                let eks = self.ctx.aws.eks(&self.spoke.name).await.map_err(|e| StepError::new(e.to_string()))?;
                ensure_access_entry(&eks, self.principal_and_eks_cluster(), &ours.rolearn, &ours.groups, !self.least()).await.map_err(StepError::new)?;
            }
        }
        Ok(())
    }

    async fn destroy(&self, _: &StepCx) -> Result<(), StepError> {
        let kc = self.ctx.kube.cluster_client(&self.spoke.name).await?;
        let ours = self.mapping().await?;
        match self.ctx.config.auth.mode {
            AuthMode::AwsAuth => {
                self.update(&kc, false, |t| remove_map_roles(t, &ours.rolearn)).await?;
            }
            AuthMode::AccessEntries => {
                let eks = self.ctx.aws.eks(&self.spoke.name).await.map_err(|e| StepError::new(e.to_string()))?;
                delete_access_entry(&eks, self.principal_and_eks_cluster(), &ours.rolearn).await.map_err(StepError::new)?;
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
    use proptest::prelude::*;

    const SEEDED: &str = "- rolearn: arn:aws:iam::222222222222:role/frontend-node-role\n  username: system:node:{{EC2PrivateDNSName}}\n  groups:\n  - system:bootstrappers\n  - system:nodes\n";

    fn ours() -> RoleMapping {
        RoleMapping { rolearn: "arn:aws:iam::222222222222:role/eks-cluster-frontend-access-role".into(), username: "eks-cluster-frontend-access-role".into(), groups: vec![SPIRE_GROUP.into()] }
    }

    #[test]
    fn adds_after_the_seeded_entry_keeping_its_bytes() {
        let merged = merge_map_roles(SEEDED, &ours()).unwrap().unwrap();
        assert!(merged.starts_with(SEEDED), "{merged}");
        assert_eq!(map_roles_status(&merged, &ours()).unwrap(), Status::UpToDate);
        assert_eq!(merge_map_roles(&merged, &ours()).unwrap(), None, "second merge changes nothing");
        assert_eq!(remove_map_roles(&merged, &ours().rolearn).unwrap().unwrap(), SEEDED);
        assert_eq!(remove_map_roles(SEEDED, &ours().rolearn).unwrap(), None);
    }

    #[test]
    fn fixes_only_our_entry() {
        let mut wrong = ours();
        wrong.groups = vec![MASTERS_GROUP.into()];
        let text = format!("{SEEDED}{}", wrong.block(""));
        assert!(matches!(map_roles_status(&text, &ours()).unwrap(), Status::Drifted(_)));
        let fixed = merge_map_roles(&text, &ours()).unwrap().unwrap();
        assert!(fixed.starts_with(SEEDED));
        assert_eq!(map_roles_status(&fixed, &ours()).unwrap(), Status::UpToDate);
        assert!(!fixed.contains("system:masters"));
    }

    #[test]
    fn indented_and_flow_documents() {
        let indented = "  - rolearn: arn:aws:iam::1:role/a\n    username: a\n    groups: [x]\n";
        let m = merge_map_roles(indented, &ours()).unwrap().unwrap();
        assert!(m.starts_with(indented));
        assert_eq!(parse_list(&m).unwrap().len(), 2);
        let flow = "[{rolearn: 'arn:aws:iam::1:role/a', username: a, groups: [x]}]";
        let m = merge_map_roles(flow, &ours()).unwrap().unwrap();
        assert_eq!(parse_list(&m).unwrap().len(), 2);
        assert_eq!(merge_map_roles("", &ours()).unwrap().map(|t| parse_list(&t).unwrap().len()), Some(1));
    }

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

    fn eks_client(rules: &[aws_smithy_mocks::Rule]) -> aws_sdk_eks::Client {
        let rules: Vec<&aws_smithy_mocks::Rule> = rules.iter().collect();
        crate::aws::testing::mocked_client!(aws_sdk_eks, aws_smithy_mocks::RuleMode::MatchAny, &rules)
    }

    /// moto has no EKS access entries: the calls are proven against the SDK's own mocks.
    #[tokio::test]
    async fn access_entry_created_with_the_group_when_missing() {
        use aws_sdk_eks::operation::create_access_entry::CreateAccessEntryOutput;
        use aws_sdk_eks::operation::describe_access_entry::DescribeAccessEntryError;
        use aws_sdk_eks::types::error::ResourceNotFoundException;
        use aws_smithy_mocks::mock;
        let missing = mock!(aws_sdk_eks::Client::describe_access_entry)
            .then_error(|| DescribeAccessEntryError::ResourceNotFoundException(ResourceNotFoundException::builder().message("no").build()));
        let create = mock!(aws_sdk_eks::Client::create_access_entry)
            .match_requests(|r| {
                r.cluster_name() == Some("eks-cluster-frontend")
                    && r.principal_arn() == Some("arn:aws:iam::2:role/r")
                    && r.kubernetes_groups() == [SPIRE_GROUP.to_string()]
                    && r.r#type() == Some("STANDARD")
            })
            .then_output(|| CreateAccessEntryOutput::builder().build());
        let eks = eks_client(&[missing.clone(), create.clone()]);
        let groups = vec![SPIRE_GROUP.to_string()];
        assert_eq!(access_entry_status(&eks, "eks-cluster-frontend", "arn:aws:iam::2:role/r", &groups).await.unwrap(), Status::Missing);
        ensure_access_entry(&eks, "eks-cluster-frontend", "arn:aws:iam::2:role/r", &groups, false).await.unwrap();
        assert_eq!(create.num_calls(), 1);
    }

    #[tokio::test]
    async fn access_entry_up_to_date_and_delete_tolerates_absent() {
        use aws_sdk_eks::operation::delete_access_entry::DeleteAccessEntryError;
        use aws_sdk_eks::operation::describe_access_entry::DescribeAccessEntryOutput;
        use aws_sdk_eks::types::error::ResourceNotFoundException;
        use aws_sdk_eks::types::AccessEntry;
        use aws_smithy_mocks::mock;
        let present = mock!(aws_sdk_eks::Client::describe_access_entry)
            .then_output(|| DescribeAccessEntryOutput::builder().access_entry(AccessEntry::builder().kubernetes_groups(SPIRE_GROUP).build()).build());
        let gone = mock!(aws_sdk_eks::Client::delete_access_entry)
            .then_error(|| DeleteAccessEntryError::ResourceNotFoundException(ResourceNotFoundException::builder().build()));
        let eks = eks_client(&[present, gone]);
        assert_eq!(access_entry_status(&eks, "c", "p", &[SPIRE_GROUP.to_string()]).await.unwrap(), Status::UpToDate);
        assert!(matches!(access_entry_status(&eks, "c", "p", &[MASTERS_GROUP.to_string()]).await.unwrap(), Status::Drifted(_)));
        delete_access_entry(&eks, "c", "p").await.unwrap();
    }

    fn arn() -> impl Strategy<Value = String> {
        ("[0-9]{12}", "[A-Za-z0-9+=,.@_-]{1,20}").prop_map(|(a, r)| format!("arn:aws:iam::{a}:role/{r}"))
    }

    fn entry() -> impl Strategy<Value = Value> {
        (arn(), "[a-z:{}A-Z0-9_-]{1,20}", proptest::collection::vec("[a-z:]{1,12}", 0..3)).prop_map(|(a, u, g)| {
            let mut m = serde_yaml_ng::Mapping::new();
            m.insert("rolearn".into(), a.into());
            m.insert("username".into(), u.into());
            m.insert("groups".into(), Value::Sequence(g.into_iter().map(Value::from).collect()));
            Value::Mapping(m)
        })
    }

    proptest! {
        /// Merge then remove leaves any valid mapRoles document semantically identical, and
        /// foreign entries keep their exact text after a merge.
        #[test]
        fn merge_then_remove_is_identity(entries in proptest::collection::vec(entry(), 0..5), flow in any::<bool>(), indent in 0usize..3) {
            let entries: Vec<Value> = entries.into_iter().filter(|e| rolearn_of(e) != Some(ours().rolearn.as_str())).collect();
            let text = if flow {
                serde_json::to_string(&entries).unwrap()
            } else {
                let plain = serde_yaml_ng::to_string(&Value::Sequence(entries.clone())).unwrap();
                let pad = " ".repeat(indent);
                if entries.is_empty() { String::new() } else { plain.lines().map(|l| format!("{pad}{l}\n")).collect() }
            };
            let merged = merge_map_roles(&text, &ours()).unwrap().expect("ours was absent");
            prop_assert_eq!(map_roles_status(&merged, &ours()).unwrap(), Status::UpToDate);
            if !flow && !entries.is_empty() {
                prop_assert!(merged.starts_with(&text), "foreign text changed:\n{}\n---\n{}", text, merged);
            }
            let mut want = entries.clone();
            want.push(ours().value());
            prop_assert_eq!(parse_list(&merged).unwrap(), want);
            let removed = remove_map_roles(&merged, &ours().rolearn).unwrap().expect("ours was present");
            prop_assert_eq!(parse_list(&removed).unwrap(), entries);
        }
    }
}
