//! App Mesh, AWS side: the mesh in the hub account, its RAM share `mesh-share` accepted in
//! every spoke, the Cloud Map HTTP namespace, and per cluster an IAM OIDC provider plus the
//! IRSA role of the appmesh-controller service account.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ram::types::{ResourceOwner, ResourceShareAssociationStatus, ResourceShareAssociationType, ResourceShareStatus};

use crate::aws::{error_text, partition, AwsError, Backoff};
use crate::context::Ctx;
use crate::engine::{Status, Step, StepCx, StepError, StepMeta};
use crate::phases::ids;
use crate::phases::ram::AcceptShare;

/// The AWS managed policies the appmesh-controller's role gets.
pub const CONTROLLER_POLICIES: [&str; 2] = ["AWSCloudMapFullAccess", "AWSAppMeshFullAccess"];

/// The audience of IRSA tokens.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// SHA-1 thumbprint of the root CA of the EKS OIDC endpoints (IAM ignores it for them today,
/// but the API still takes one).
const OIDC_THUMBPRINT: &str = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280";

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    let hub = &c.hub.name;
    let mut out: Vec<Arc<dyn Step>> = vec![
        Arc::new(MeshStep {
            meta: StepMeta::new("mesh", "appmesh", hub, format!("create App Mesh mesh {}", c.mesh.name)).needs([ids::preflight()]),
            ctx: ctx.clone(),
        }),
        Arc::new(MeshShare {
            meta: StepMeta::new("mesh", "share", hub, format!("share mesh through RAM share {}", c.network.mesh_share)).needs(["mesh/appmesh"]),
            ctx: ctx.clone(),
        }),
        Arc::new(CloudMap {
            meta: StepMeta::new("mesh", "cloudmap", &c.cloudmap.account, format!("create Cloud Map namespace {}", c.cloudmap.namespace))
                .needs([ids::preflight()]),
            ctx: ctx.clone(),
        }),
    ];
    for s in &c.spokes {
        out.push(AcceptShare::step(
            StepMeta::new("mesh", &format!("accept-{}", s.name), &s.name, format!("accept RAM share {}", c.network.mesh_share)).needs(["mesh/share"]),
            ctx,
            &s.name,
            &c.network.mesh_share,
        ));
    }
    for a in c.accounts() {
        out.push(Arc::new(Irsa {
            meta: StepMeta::new("mesh", &format!("irsa-{}", a.name), &a.name, format!("create OIDC provider and IRSA role for {}", c.controller.service_account))
                .needs([ids::stack(&a.name)]),
            ctx: ctx.clone(),
            account: a.name.clone(),
        }));
    }
    out
}

fn aws_err(e: AwsError) -> StepError {
    StepError::new(e.to_string())
}

fn who(ctx: &Ctx, account: &str) -> String {
    format!("account {account} (profile {})", ctx.aws.profile(account).unwrap_or("?"))
}

// ---------------------------------------------------------------------------------- mesh

/// The App Mesh mesh in the hub account.
pub struct MeshStep {
    meta: StepMeta,
    ctx: Arc<Ctx>,
}

/// The ARN of the mesh `name` owned by account `owner`, when it exists (ListMeshes: it
/// lists only live meshes, owned or shared with the account).
pub async fn mesh_arn(client: &aws_sdk_appmesh::Client, name: &str, owner: &str) -> Result<Option<String>, String> {
    let mut token = None;
    loop {
        let out = client.list_meshes().set_next_token(token).send().await.map_err(|e| error_text(&e))?;
        for m in out.meshes {
            if m.mesh_name == name && m.mesh_owner == owner {
                return Ok(Some(m.arn));
            }
        }
        token = out.next_token;
        if token.is_none() {
            return Ok(None);
        }
    }
}

#[async_trait::async_trait]
impl Step for MeshStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, _cx: &StepCx) -> Result<Status, StepError> {
        let hub = &self.ctx.config.hub.name;
        let client = self.ctx.aws.appmesh(hub).await.map_err(aws_err)?;
        let owner = self.ctx.aws.account_id(hub).await.map_err(aws_err)?;
        match mesh_arn(&client, &self.ctx.config.mesh.name, &owner).await {
            Ok(Some(_)) => Ok(Status::UpToDate),
            Ok(None) => Ok(Status::Missing),
            Err(e) => Err(StepError::new(format!("{}: cannot read mesh {}: {e}", who(&self.ctx, hub), self.ctx.config.mesh.name))),
        }
    }
    async fn apply(&self, _cx: &StepCx) -> Result<(), StepError> {
        let hub = &self.ctx.config.hub.name;
        let name = &self.ctx.config.mesh.name;
        let client = self.ctx.aws.appmesh(hub).await.map_err(aws_err)?;
        let spec = aws_sdk_appmesh::types::MeshSpec::builder()
            .egress_filter(aws_sdk_appmesh::types::EgressFilter::builder().r#type(aws_sdk_appmesh::types::EgressFilterType::AllowAll).build().expect("type set"))
            .build();
        let tag = aws_sdk_appmesh::types::TagRef::builder().key("meshctl:managed-by").value("meshctl").build().expect("key and value set");
        match client.create_mesh().mesh_name(name).spec(spec).tags(tag).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => Ok(()),
            Err(e) => Err(StepError::new(format!("{}: CreateMesh {name} failed: {}", who(&self.ctx, hub), error_text(&e)))),
        }
    }
    async fn destroy(&self, _cx: &StepCx) -> Result<(), StepError> {
        let hub = &self.ctx.config.hub.name;
        let name = &self.ctx.config.mesh.name;
        let client = self.ctx.aws.appmesh(hub).await.map_err(aws_err)?;
        let owner = self.ctx.aws.account_id(hub).await.map_err(aws_err)?;
        let found = mesh_arn(&client, name, &owner)
            .await
            .map_err(|e| StepError::new(format!("{}: cannot list meshes: {e}", who(&self.ctx, hub))))?;
        if found.is_none() {
            return Ok(());
        }
        match client.delete_mesh().mesh_name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => Ok(()),
            Err(e) => Err(StepError::new(format!(
                "{}: DeleteMesh {name} failed: {}; the mesh must be empty: delete the app first (`meshctl down --only yelb`), see `aws appmesh list-virtual-nodes --mesh-name {name} --profile {}`",
                who(&self.ctx, hub),
                error_text(&e),
                self.ctx.config.hub.profile
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------- share

/// The RAM share `mesh-share` of the mesh ARN to every spoke account.
pub struct MeshShare {
    meta: StepMeta,
    ctx: Arc<Ctx>,
}

/// What the hub's share looks like now.
#[derive(Debug, Default)]
struct ShareView {
    arn: Option<String>,
    resources: Vec<String>,
    principals: Vec<String>,
}

async fn own_share(client: &aws_sdk_ram::Client, name: &str) -> Result<ShareView, String> {
    let out = client.get_resource_shares().resource_owner(ResourceOwner::SelfValue).name(name).send().await.map_err(|e| error_text(&e))?;
    let Some(share) = out
        .resource_shares
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.name.as_deref() == Some(name) && matches!(s.status, Some(ResourceShareStatus::Active) | Some(ResourceShareStatus::Pending)))
    else {
        return Ok(ShareView::default());
    };
    let arn = share.resource_share_arn.unwrap_or_default();
    let mut view = ShareView { arn: Some(arn.clone()), ..Default::default() };
    for (kind, list) in [(ResourceShareAssociationType::Resource, &mut view.resources), (ResourceShareAssociationType::Principal, &mut view.principals)] {
        let out = client
            .get_resource_share_associations()
            .association_type(kind)
            .resource_share_arns(&arn)
            .send()
            .await
            .map_err(|e| error_text(&e))?;
        for a in out.resource_share_associations.unwrap_or_default() {
            if matches!(a.status, Some(ResourceShareAssociationStatus::Associated) | Some(ResourceShareAssociationStatus::Associating) | None) {
                list.extend(a.associated_entity);
            }
        }
    }
    Ok(view)
}

impl MeshShare {
    /// The mesh ARN and the spoke account ids the share must name.
    async fn wanted(&self) -> Result<(String, Vec<String>), StepError> {
        let c = &self.ctx.config;
        let mesh = self.ctx.aws.appmesh(&c.hub.name).await.map_err(aws_err)?;
        let owner = self.ctx.aws.account_id(&c.hub.name).await.map_err(aws_err)?;
        let arn = mesh_arn(&mesh, &c.mesh.name, &owner)
            .await
            .map_err(|e| StepError::new(format!("{}: cannot read mesh {}: {e}", who(&self.ctx, &c.hub.name), c.mesh.name)))?
            .ok_or_else(|| StepError::new(format!("{}: mesh {} does not exist; run `meshctl up --only mesh`", who(&self.ctx, &c.hub.name), c.mesh.name)))?;
        let mut ids = Vec::new();
        for s in &c.spokes {
            ids.push(self.ctx.aws.account_id(&s.name).await.map_err(aws_err)?);
        }
        Ok((arn, ids))
    }
}

#[async_trait::async_trait]
impl Step for MeshShare {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, _cx: &StepCx) -> Result<Status, StepError> {
        let c = &self.ctx.config;
        let ram = self.ctx.aws.ram(&c.hub.name).await.map_err(aws_err)?;
        let view = own_share(&ram, &c.network.mesh_share)
            .await
            .map_err(|e| StepError::new(format!("{}: cannot read RAM share {}: {e}", who(&self.ctx, &c.hub.name), c.network.mesh_share)))?;
        if view.arn.is_none() {
            return Ok(Status::Missing);
        }
        let (mesh, ids) = self.wanted().await?;
        let mut missing = Vec::new();
        if !view.resources.contains(&mesh) {
            missing.push(format!("resource {mesh}"));
        }
        missing.extend(ids.iter().filter(|id| !view.principals.contains(id)).map(|id| format!("principal {id}")));
        Ok(if missing.is_empty() { Status::UpToDate } else { Status::Drifted(format!("not shared: {}", missing.join(", "))) })
    }
    async fn apply(&self, _cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let name = &c.network.mesh_share;
        let hub = who(&self.ctx, &c.hub.name);
        let ram = self.ctx.aws.ram(&c.hub.name).await.map_err(aws_err)?;
        let (mesh, ids) = self.wanted().await?;
        let view = own_share(&ram, name).await.map_err(|e| StepError::new(format!("{hub}: cannot read RAM share {name}: {e}")))?;
        match view.arn {
            None => {
                let tag = aws_sdk_ram::types::Tag::builder().key("meshctl:managed-by").value("meshctl").build();
                ram.create_resource_share()
                    .name(name)
                    .resource_arns(&mesh)
                    .set_principals(Some(ids))
                    .allow_external_principals(true)
                    .tags(tag)
                    .send()
                    .await
                    .map_err(|e| StepError::new(format!("{hub}: CreateResourceShare {name} failed: {}", error_text(&e))))?;
            }
            Some(arn) => {
                let resources: Vec<String> = if view.resources.contains(&mesh) { vec![] } else { vec![mesh] };
                let principals: Vec<String> = ids.into_iter().filter(|id| !view.principals.contains(id)).collect();
                if !resources.is_empty() || !principals.is_empty() {
                    ram.associate_resource_share()
                        .resource_share_arn(&arn)
                        .set_resource_arns((!resources.is_empty()).then_some(resources))
                        .set_principals((!principals.is_empty()).then_some(principals))
                        .send()
                        .await
                        .map_err(|e| StepError::new(format!("{hub}: AssociateResourceShare {name} failed: {}", error_text(&e))))?;
                }
            }
        }
        Ok(())
    }
    async fn destroy(&self, _cx: &StepCx) -> Result<(), StepError> {
        let c = &self.ctx.config;
        let name = &c.network.mesh_share;
        let hub = who(&self.ctx, &c.hub.name);
        let ram = self.ctx.aws.ram(&c.hub.name).await.map_err(aws_err)?;
        // Every active share of that name that this account owns (a rerun after a partial
        // create may have made two).
        let out = ram
            .get_resource_shares()
            .resource_owner(ResourceOwner::SelfValue)
            .name(name)
            .send()
            .await
            .map_err(|e| StepError::new(format!("{hub}: cannot read RAM share {name}: {}", error_text(&e))))?;
        for s in out.resource_shares.unwrap_or_default() {
            if s.name.as_deref() != Some(name) || !matches!(s.status, Some(ResourceShareStatus::Active) | Some(ResourceShareStatus::Pending)) {
                continue;
            }
            let arn = s.resource_share_arn.unwrap_or_default();
            if let Err(e) = ram.delete_resource_share().resource_share_arn(&arn).send().await {
                let text = error_text(&e);
                if !text.contains("UnknownResource") && !text.contains("does not exist") {
                    return Err(StepError::new(format!("{hub}: DeleteResourceShare {name} ({arn}) failed: {text}")));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------- Cloud Map

/// The Cloud Map HTTP namespace (in the configured spoke).
pub struct CloudMap {
    meta: StepMeta,
    ctx: Arc<Ctx>,
}

/// The namespace's id, when an HTTP namespace of that name exists.
pub async fn namespace_id(client: &aws_sdk_servicediscovery::Client, name: &str) -> Result<Option<String>, String> {
    let mut token = None;
    loop {
        let out = client.list_namespaces().set_next_token(token).send().await.map_err(|e| error_text(&e))?;
        for ns in out.namespaces.unwrap_or_default() {
            if ns.name.as_deref() == Some(name) {
                return Ok(ns.id);
            }
        }
        token = out.next_token;
        if token.is_none() {
            return Ok(None);
        }
    }
}

/// Waits for a Cloud Map operation: first read at once, then every 2 s growing to 15 s.
pub async fn wait_operation(client: &aws_sdk_servicediscovery::Client, id: &str, cx: &StepCx) -> Result<(), String> {
    use aws_sdk_servicediscovery::types::OperationStatus;
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(15));
    loop {
        let out = client.get_operation().operation_id(id).send().await.map_err(|e| error_text(&e))?;
        let op = out.operation.unwrap_or_else(|| aws_sdk_servicediscovery::types::Operation::builder().build());
        match op.status {
            Some(OperationStatus::Success) => return Ok(()),
            Some(OperationStatus::Fail) => {
                return Err(format!("operation {id} failed: {} {}", op.error_code.unwrap_or_default(), op.error_message.unwrap_or_default()))
            }
            Some(OperationStatus::Pending) | Some(OperationStatus::Submitted) | None => {
                cx.progress(format!("operation {id} {}", op.status.as_ref().map(|s| s.as_str()).unwrap_or("SUBMITTED")))
            }
            Some(other) => cx.progress(format!("operation {id} {}", other.as_str())),
        }
        if cx.cancelled() {
            return Err(format!("interrupted while waiting for operation {id}"));
        }
        backoff.wait(false).await;
    }
}

#[async_trait::async_trait]
impl Step for CloudMap {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, _cx: &StepCx) -> Result<Status, StepError> {
        let cm = &self.ctx.config.cloudmap;
        let client = self.ctx.aws.servicediscovery(&cm.account).await.map_err(aws_err)?;
        match namespace_id(&client, &cm.namespace).await {
            Ok(Some(_)) => Ok(Status::UpToDate),
            Ok(None) => Ok(Status::Missing),
            Err(e) => Err(StepError::new(format!("{}: cannot list Cloud Map namespaces: {e}", who(&self.ctx, &cm.account)))),
        }
    }
    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let cm = &self.ctx.config.cloudmap;
        let w = who(&self.ctx, &cm.account);
        let client = self.ctx.aws.servicediscovery(&cm.account).await.map_err(aws_err)?;
        // The creator request id makes a retried create idempotent on the AWS side.
        let out = client
            .create_http_namespace()
            .name(&cm.namespace)
            .creator_request_id(format!("meshctl-{}", cm.namespace))
            .description("meshctl: App Mesh service discovery")
            .tags(aws_sdk_servicediscovery::types::Tag::builder().key("meshctl:managed-by").value("meshctl").build().expect("key and value set"))
            .send()
            .await
            .map_err(|e| StepError::new(format!("{w}: CreateHttpNamespace {} failed: {}", cm.namespace, error_text(&e))))?;
        if let Some(op) = out.operation_id {
            wait_operation(&client, &op, cx).await.map_err(|e| {
                StepError::new(format!(
                    "{w}: creating Cloud Map namespace {}: {e}; see `aws servicediscovery get-operation --operation-id {op} --profile {}`",
                    cm.namespace,
                    self.ctx.aws.profile(&cm.account).unwrap_or("?")
                ))
            })?;
        }
        Ok(())
    }
    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError> {
        let cm = &self.ctx.config.cloudmap;
        let w = who(&self.ctx, &cm.account);
        let client = self.ctx.aws.servicediscovery(&cm.account).await.map_err(aws_err)?;
        let Some(id) = namespace_id(&client, &cm.namespace).await.map_err(|e| StepError::new(format!("{w}: cannot list Cloud Map namespaces: {e}")))? else {
            return Ok(());
        };
        let out = match client.delete_namespace().id(&id).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_namespace_not_found()) => return Ok(()),
            Err(e) => {
                return Err(StepError::new(format!(
                    "{w}: DeleteNamespace {} ({id}) failed: {}; a namespace with services cannot be deleted: see `aws servicediscovery list-services --profile {}`",
                    cm.namespace,
                    error_text(&e),
                    self.ctx.aws.profile(&cm.account).unwrap_or("?")
                )))
            }
        };
        if let Some(op) = out.operation_id {
            wait_operation(&client, &op, cx).await.map_err(|e| StepError::new(format!("{w}: deleting Cloud Map namespace {}: {e}", cm.namespace)))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------- IRSA

/// Per cluster: the IAM OIDC provider of its issuer and the controller's IRSA role.
pub struct Irsa {
    meta: StepMeta,
    ctx: Arc<Ctx>,
    account: String,
}

/// The role the appmesh-controller service account assumes.
pub fn controller_role_name(cluster: &str) -> String {
    format!("{cluster}-appmesh-controller")
}

/// The trust policy of the controller role: web identity from the cluster's OIDC provider,
/// only for that service account and the STS audience.
pub fn trust_policy(provider_arn: &str, issuer_host: &str, namespace: &str, service_account: &str) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Federated": provider_arn },
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": { "StringEquals": {
                format!("{issuer_host}:sub"): format!("system:serviceaccount:{namespace}:{service_account}"),
                format!("{issuer_host}:aud"): STS_AUDIENCE,
            }}
        }]
    })
}

/// IAM returns policy documents URL-encoded; some emulators do not.
pub fn decode_policy(doc: &str) -> Option<serde_json::Value> {
    if let Ok(v) = serde_json::from_str(doc) {
        return Some(v);
    }
    let bytes = doc.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    serde_json::from_slice(&out).ok()
}

/// What the IRSA step wants in the account, derived from the live cluster.
struct IrsaWant {
    provider_arn: String,
    issuer_url: String,
    role: String,
    trust: serde_json::Value,
    policies: Vec<String>,
}

impl Irsa {
    fn who(&self) -> String {
        who(&self.ctx, &self.account)
    }

    fn cluster(&self) -> &str {
        &self.ctx.config.account(&self.account).expect("configured").cluster_name
    }

    /// The cluster's issuer from EKS DescribeCluster; `None` when the cluster is gone.
    async fn issuer(&self) -> Result<Option<String>, StepError> {
        let eks = self.ctx.aws.eks(&self.account).await.map_err(aws_err)?;
        match eks.describe_cluster().name(self.cluster()).send().await {
            Ok(out) => Ok(out.cluster.and_then(|c| c.identity).and_then(|i| i.oidc).and_then(|o| o.issuer)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(StepError::new(format!("{}: EKS DescribeCluster {} failed: {}", self.who(), self.cluster(), error_text(&e)))),
        }
    }

    async fn want(&self) -> Result<IrsaWant, StepError> {
        let issuer = self.issuer().await?.ok_or_else(|| {
            StepError::new(format!("{}: EKS cluster {} has no OIDC issuer (does it exist? run `meshctl up --only stacks`)", self.who(), self.cluster()))
        })?;
        let host = issuer.trim_start_matches("https://").to_string();
        let id = self.ctx.aws.account_id(&self.account).await.map_err(aws_err)?;
        let part = partition(self.ctx.aws.region());
        let provider_arn = format!("arn:{part}:iam::{id}:oidc-provider/{host}");
        let ctl = &self.ctx.config.controller;
        Ok(IrsaWant {
            trust: trust_policy(&provider_arn, &host, &ctl.namespace, &ctl.service_account),
            provider_arn,
            issuer_url: format!("https://{host}"),
            role: controller_role_name(self.cluster()),
            policies: CONTROLLER_POLICIES.iter().map(|p| format!("arn:{part}:iam::aws:policy/{p}")).collect(),
        })
    }

    /// Differences between live IAM and `want`, empty when up to date; `None` = all missing.
    /// ARNs of the managed policies attached to `role`.
    async fn attached_policies(&self, iam: &aws_sdk_iam::Client, role: &str) -> Result<Vec<String>, StepError> {
        let attached = iam.list_attached_role_policies().role_name(role).send().await.map_err(|e| {
            StepError::new(format!("{}: ListAttachedRolePolicies {role} failed: {}", self.who(), error_text(&e)))
        })?;
        Ok(attached.attached_policies.unwrap_or_default().into_iter().filter_map(|p| p.policy_arn).collect())
    }

    async fn differences(&self, iam: &aws_sdk_iam::Client, want: &IrsaWant) -> Result<Option<Vec<String>>, StepError> {
        let w = self.who();
        let mut why = Vec::new();
        let provider = match iam.get_open_id_connect_provider().open_id_connect_provider_arn(&want.provider_arn).send().await {
            Ok(p) => Some(p),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => None,
            Err(e) => return Err(StepError::new(format!("{w}: GetOpenIDConnectProvider failed: {}", error_text(&e)))),
        };
        match &provider {
            None => why.push(format!("OIDC provider {} missing", want.provider_arn)),
            Some(p) if !p.client_id_list.clone().unwrap_or_default().iter().any(|c| c == STS_AUDIENCE) => {
                why.push(format!("OIDC provider lacks audience {STS_AUDIENCE}"))
            }
            Some(_) => {}
        }
        let role = match iam.get_role().role_name(&want.role).send().await {
            Ok(r) => r.role,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => None,
            Err(e) => return Err(StepError::new(format!("{w}: GetRole {} failed: {}", want.role, error_text(&e)))),
        };
        let Some(role) = role else {
            if provider.is_none() {
                return Ok(None);
            }
            why.push(format!("role {} missing", want.role));
            return Ok(Some(why));
        };
        if role.assume_role_policy_document.as_deref().and_then(decode_policy).as_ref() != Some(&want.trust) {
            why.push(format!("role {} trust policy differs", want.role));
        }
        let have = self.attached_policies(iam, &want.role).await?;
        for p in &want.policies {
            if !have.contains(p) {
                why.push(format!("policy {p} not attached"));
            }
        }
        Ok(Some(why))
    }
}

#[async_trait::async_trait]
impl Step for Irsa {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _cx: &StepCx) -> Result<Status, StepError> {
        let iam = self.ctx.aws.iam(&self.account).await.map_err(aws_err)?;
        if self.issuer().await?.is_none() {
            // No cluster: nothing can be wanted yet; a role left from an earlier cluster is
            // reported so that `down` removes it.
            let role = controller_role_name(self.cluster());
            return Ok(match iam.get_role().role_name(&role).send().await {
                Ok(_) => Status::Drifted(format!("cluster {} is gone but role {role} is left", self.cluster())),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => Status::Missing,
                Err(e) => return Err(StepError::new(format!("{}: GetRole {role} failed: {}", self.who(), error_text(&e)))),
            });
        }
        let want = self.want().await?;
        Ok(match self.differences(&iam, &want).await? {
            None => Status::Missing,
            Some(why) if why.is_empty() => Status::UpToDate,
            Some(why) => Status::Drifted(why.join("; ")),
        })
    }

    async fn apply(&self, _cx: &StepCx) -> Result<(), StepError> {
        let w = self.who();
        let want = self.want().await?;
        let iam = self.ctx.aws.iam(&self.account).await.map_err(aws_err)?;
        let tag = |k: &str, v: &str| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().expect("key and value set");
        // OIDC provider
        match iam.get_open_id_connect_provider().open_id_connect_provider_arn(&want.provider_arn).send().await {
            Ok(p) => {
                if !p.client_id_list.unwrap_or_default().iter().any(|c| c == STS_AUDIENCE) {
                    iam.add_client_id_to_open_id_connect_provider()
                        .open_id_connect_provider_arn(&want.provider_arn)
                        .client_id(STS_AUDIENCE)
                        .send()
                        .await
                        .map_err(|e| StepError::new(format!("{w}: AddClientIDToOpenIDConnectProvider failed: {}", error_text(&e))))?;
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => {
                iam.create_open_id_connect_provider()
                    .url(&want.issuer_url)
                    .client_id_list(STS_AUDIENCE)
                    .thumbprint_list(OIDC_THUMBPRINT)
                    .tags(tag("meshctl:managed-by", "meshctl"))
                    .tags(tag("meshctl:cluster", self.cluster()))
                    .send()
                    .await
                    .map_err(|e| StepError::new(format!("{w}: CreateOpenIDConnectProvider {} failed: {}", want.issuer_url, error_text(&e))))?;
            }
            Err(e) => return Err(StepError::new(format!("{w}: GetOpenIDConnectProvider failed: {}", error_text(&e)))),
        }
        // Role and its trust
        let trust = want.trust.to_string();
        match iam.get_role().role_name(&want.role).send().await {
            Ok(r) => {
                let live = r.role.and_then(|r| r.assume_role_policy_document).and_then(|d| decode_policy(&d));
                if live.as_ref() != Some(&want.trust) {
                    iam.update_assume_role_policy()
                        .role_name(&want.role)
                        .policy_document(&trust)
                        .send()
                        .await
                        .map_err(|e| StepError::new(format!("{w}: UpdateAssumeRolePolicy {} failed: {}", want.role, error_text(&e))))?;
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => {
                iam.create_role()
                    .role_name(&want.role)
                    .assume_role_policy_document(&trust)
                    .description(format!("appmesh-controller of EKS cluster {} (IRSA, meshctl)", self.cluster()))
                    .tags(tag("meshctl:managed-by", "meshctl"))
                    .tags(tag("meshctl:cluster", self.cluster()))
                    .send()
                    .await
                    .map_err(|e| StepError::new(format!("{w}: CreateRole {} failed: {}", want.role, error_text(&e))))?;
            }
            Err(e) => return Err(StepError::new(format!("{w}: GetRole {} failed: {}", want.role, error_text(&e)))),
        }
        // Policies
        let have = self.attached_policies(&iam, &want.role).await?;
        for p in want.policies.iter().filter(|p| !have.contains(p)) {
            iam.attach_role_policy()
                .role_name(&want.role)
                .policy_arn(p)
                .send()
                .await
                .map_err(|e| StepError::new(format!("{w}: AttachRolePolicy {p} to {} failed: {}", want.role, error_text(&e))))?;
        }
        Ok(())
    }

    async fn destroy(&self, _cx: &StepCx) -> Result<(), StepError> {
        let w = self.who();
        let iam = self.ctx.aws.iam(&self.account).await.map_err(aws_err)?;
        let role = controller_role_name(self.cluster());
        let gone = |t: &str| t.contains("NoSuchEntity");
        // Role: detach every managed policy, drop inline ones, delete.
        match iam.list_attached_role_policies().role_name(&role).send().await {
            Ok(out) => {
                for p in out.attached_policies.unwrap_or_default().into_iter().filter_map(|p| p.policy_arn) {
                    if let Err(e) = iam.detach_role_policy().role_name(&role).policy_arn(&p).send().await {
                        let t = error_text(&e);
                        if !gone(&t) {
                            return Err(StepError::new(format!("{w}: DetachRolePolicy {p} from {role} failed: {t}")));
                        }
                    }
                }
                if let Ok(inline) = iam.list_role_policies().role_name(&role).send().await {
                    for name in inline.policy_names {
                        let _ = iam.delete_role_policy().role_name(&role).policy_name(&name).send().await;
                    }
                }
                if let Err(e) = iam.delete_role().role_name(&role).send().await {
                    let t = error_text(&e);
                    if !gone(&t) {
                        return Err(StepError::new(format!("{w}: DeleteRole {role} failed: {t}")));
                    }
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => {}
            Err(e) => return Err(StepError::new(format!("{w}: ListAttachedRolePolicies {role} failed: {}", error_text(&e)))),
        }
        // OIDC provider: the cluster's issuer if the cluster still exists; else whichever
        // provider meshctl tagged for this cluster.
        let mut arns = Vec::new();
        if let Some(issuer) = self.issuer().await? {
            let id = self.ctx.aws.account_id(&self.account).await.map_err(aws_err)?;
            arns.push(format!("arn:{}:iam::{id}:oidc-provider/{}", partition(self.ctx.aws.region()), issuer.trim_start_matches("https://")));
        } else if let Ok(list) = iam.list_open_id_connect_providers().send().await {
            for p in list.open_id_connect_provider_list.unwrap_or_default().into_iter().filter_map(|p| p.arn) {
                if let Ok(d) = iam.get_open_id_connect_provider().open_id_connect_provider_arn(&p).send().await {
                    if d.tags.unwrap_or_default().iter().any(|t| t.key == "meshctl:cluster" && t.value == self.cluster()) {
                        arns.push(p);
                    }
                }
            }
        }
        for arn in arns {
            if let Err(e) = iam.delete_open_id_connect_provider().open_id_connect_provider_arn(&arn).send().await {
                let t = error_text(&e);
                if !gone(&t) {
                    return Err(StepError::new(format!("{w}: DeleteOpenIDConnectProvider {arn} failed: {t}")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_is_scoped_to_the_service_account_and_audience() {
        let t = trust_policy("arn:aws:iam::1:oidc-provider/oidc.eks.us-east-2.amazonaws.com/id/ABC", "oidc.eks.us-east-2.amazonaws.com/id/ABC", "appmesh-system", "appmesh-controller");
        let cond = &t["Statement"][0]["Condition"]["StringEquals"];
        assert_eq!(cond["oidc.eks.us-east-2.amazonaws.com/id/ABC:sub"], "system:serviceaccount:appmesh-system:appmesh-controller");
        assert_eq!(cond["oidc.eks.us-east-2.amazonaws.com/id/ABC:aud"], "sts.amazonaws.com");
        assert_eq!(t["Statement"][0]["Action"], "sts:AssumeRoleWithWebIdentity");
    }

    #[test]
    fn policies_decode_encoded_or_plain() {
        let plain = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let enc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(decode_policy(plain), decode_policy(enc));
        assert!(decode_policy(plain).is_some());
    }
}

#[cfg(test)]
#[path = "aws_tests.rs"]
mod mock_tests;
