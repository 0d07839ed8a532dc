//! App Mesh, AWS side: the mesh in the hub account, its RAM share accepted in every spoke,
//! the Cloud Map HTTP namespace, and per cluster the IRSA role of the appmesh-controller.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ram::types::{ResourceOwner, ResourceShareAssociationStatus, ResourceShareAssociationType, ResourceShareStatus};

use super::{step_ids, Settings};
use crate::aws::{who, Backoff};
use crate::engine::{Error, ErrorKind, Status, Step, StepMeta, StepRun};
use crate::error::ResultExt;
use crate::names::{MANAGED_BY, TAG_MANAGED_BY};
use crate::phases::ids;
use crate::session::Session;
use crate::steps::accept_share::AcceptShare;
use crate::steps::irsa::{IrsaRole, IrsaStep};

/// The AWS managed policies the appmesh-controller's role gets.
pub const CONTROLLER_POLICIES: [&str; 2] = ["AWSCloudMapFullAccess", "AWSAppMeshFullAccess"];

/// The role the appmesh-controller service account assumes.
pub fn controller_role_name(cluster: &str) -> String {
    format!("{cluster}-appmesh-controller")
}

pub fn steps(session: &Arc<Session>, settings: &Arc<Settings>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    let hub = &c.hub.name;
    let mut out: Vec<Arc<dyn Step>> = vec![
        Arc::new(MeshStep {
            meta: StepMeta::new(step_ids::mesh(), hub, format!("create App Mesh mesh {}", c.mesh.name)).needs([ids::preflight()]),
            session: session.clone(),
        }),
        Arc::new(MeshShare {
            meta: StepMeta::new(step_ids::share(), hub, format!("share mesh through RAM share {}", settings.mesh_share))
                .needs([step_ids::mesh()]),
            session: session.clone(),
            settings: settings.clone(),
        }),
        Arc::new(CloudMap {
            meta: StepMeta::new(
                step_ids::cloudmap(),
                &settings.cloudmap_account,
                format!("create Cloud Map namespace {}", settings.cloudmap_namespace),
            )
            .needs([ids::preflight()]),
            session: session.clone(),
            settings: settings.clone(),
        }),
    ];
    for s in &c.spokes {
        out.push(AcceptShare::step(
            StepMeta::new(step_ids::accept(&s.name), &s.name, format!("accept RAM share {}", settings.mesh_share))
                .needs([step_ids::share()]),
            session,
            &s.name,
            &settings.mesh_share,
        ));
    }
    for a in c.accounts() {
        let ctl = &settings.controller;
        let role = IrsaRole {
            account: a.name.clone(),
            role: controller_role_name(&a.cluster_name),
            namespace: ctl.namespace.clone(),
            service_account: ctl.service_account.clone(),
            policies: CONTROLLER_POLICIES.iter().map(|p| p.to_string()).collect(),
            purpose: "appmesh-controller".into(),
        };
        let meta =
            StepMeta::new(step_ids::irsa(&a.name), &a.name, format!("create OIDC provider and IRSA role for {}", ctl.service_account))
                .needs([ids::stack(&a.name)]);
        out.push(IrsaStep::step(meta, session, role));
    }
    out
}

// ---------------------------------------------------------------------------------- mesh

/// The App Mesh mesh in the hub account.
pub struct MeshStep {
    meta: StepMeta,
    session: Arc<Session>,
}

/// The ARN of the mesh `name` owned by account `owner`, when it exists (ListMeshes: it
/// lists only live meshes, owned or shared with the account).
pub async fn mesh_arn(client: &aws_sdk_appmesh::Client, name: &str, owner: &str) -> Result<Option<String>, Error> {
    let mut token = None;
    loop {
        let out = client.list_meshes().set_next_token(token).send().await?;
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

/// The ARN of the hub's mesh, when it exists. App Mesh refusing the call (its end of
/// support, [`super::api_gone`]) reads as no mesh, said on the step's progress line: nothing
/// is left there to check or delete. Throttling stays an error.
pub async fn live_mesh(session: &Session, run: &StepRun) -> Result<Option<String>, Error> {
    let c = &session.config;
    let hub = &c.hub.name;
    let w = who(&session.aws, hub);
    let client = session.aws.appmesh(hub).await?;
    let owner = session.aws.account_id(hub).await?;
    match mesh_arn(&client, &c.mesh.name, &owner).await {
        Ok(found) => Ok(found),
        Err(e) if super::api_gone(&e) => {
            run.progress(format!(
                "{w}: App Mesh refused ListMeshes ({}); it reached end of support on {}: mesh {} counts as gone",
                e.chain(),
                super::END_OF_SUPPORT,
                c.mesh.name
            ));
            Ok(None)
        }
        Err(e) => Err(e.context(format!("{w}: cannot read mesh {}", c.mesh.name))),
    }
}

#[async_trait::async_trait]
impl Step for MeshStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        Ok(if live_mesh(&self.session, run).await?.is_some() { Status::UpToDate } else { Status::Missing })
    }
    async fn apply(&self, _run: &StepRun) -> Result<(), Error> {
        let hub = &self.session.config.hub.name;
        let name = &self.session.config.mesh.name;
        let client = self.session.aws.appmesh(hub).await?;
        let spec = aws_sdk_appmesh::types::MeshSpec::builder()
            .egress_filter(
                aws_sdk_appmesh::types::EgressFilter::builder()
                    .r#type(aws_sdk_appmesh::types::EgressFilterType::AllowAll)
                    .build()
                    .expect("type set"),
            )
            .build();
        let tag = aws_sdk_appmesh::types::TagRef::builder().key(TAG_MANAGED_BY).value(MANAGED_BY).build().expect("key and value set");
        match client.create_mesh().mesh_name(name).spec(spec).tags(tag).send().await.map_err(Error::from) {
            Ok(_) => Ok(()),
            Err(e) if e.is(ErrorKind::Conflict) => Ok(()),
            Err(e) => Err(e.context(format!("{}: CreateMesh {name} failed", who(&self.session.aws, hub)))),
        }
    }
    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let hub = &self.session.config.hub.name;
        let name = &self.session.config.mesh.name;
        if live_mesh(&self.session, run).await?.is_none() {
            return Ok(());
        }
        // The API answered the listing: an error now is about this mesh, not the service.
        let client = self.session.aws.appmesh(hub).await?;
        match client.delete_mesh().mesh_name(name).send().await.map_err(Error::from) {
            Ok(_) => Ok(()),
            Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.context(format!("{}: DeleteMesh {name} failed", who(&self.session.aws, hub))).hint(format!(
                "the mesh must be empty: delete the app first (`meshctl yelb --destroy`), see `aws appmesh list-virtual-nodes --mesh-name {name} --profile {}`",
                self.session.config.hub.profile
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------- share

/// The RAM share `mesh-share` of the mesh ARN to every spoke account.
pub struct MeshShare {
    meta: StepMeta,
    session: Arc<Session>,
    settings: Arc<Settings>,
}

/// What the hub's share looks like now.
#[derive(Debug, Default)]
struct ShareView {
    arn: Option<String>,
    /// Tagged `meshctl:managed-by` (created or adopted by meshctl).
    ours: bool,
    resources: Vec<String>,
    principals: Vec<String>,
}

fn share_is_ours(share: &aws_sdk_ram::types::ResourceShare) -> bool {
    share.tags().iter().any(|t| t.key() == Some(TAG_MANAGED_BY) && t.value() == Some(MANAGED_BY))
}

/// Refuses to `what` (update, delete) a share of the wanted name that meshctl did not
/// create, unless adopting it.
fn ensure_share_ours(ours: bool, adopt: bool, hub: &str, name: &str, what: &str) -> Result<(), Error> {
    if ours || adopt {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::NotOurs,
        format!("{hub}: RAM share {name} exists but was not created by meshctl (no {TAG_MANAGED_BY} tag), so meshctl will not {what} it"),
    )
    .hint("if it is meant to be meshctl's, rerun with --adopt (`up --adopt` tags it and shares the mesh through it, `down --adopt` deletes it); else set another [mesh.appmesh] mesh_share name"))
}

async fn own_share(client: &aws_sdk_ram::Client, name: &str) -> Result<ShareView, Error> {
    let out = client.get_resource_shares().resource_owner(ResourceOwner::SelfValue).name(name).send().await?;
    let Some(share) = out.resource_shares.unwrap_or_default().into_iter().find(|s| {
        s.name.as_deref() == Some(name) && matches!(s.status, Some(ResourceShareStatus::Active) | Some(ResourceShareStatus::Pending))
    }) else {
        return Ok(ShareView::default());
    };
    let ours = share_is_ours(&share);
    let arn = share.resource_share_arn.unwrap_or_default();
    let mut view = ShareView { arn: Some(arn.clone()), ours, ..Default::default() };
    for (kind, list) in
        [(ResourceShareAssociationType::Resource, &mut view.resources), (ResourceShareAssociationType::Principal, &mut view.principals)]
    {
        let out = client.get_resource_share_associations().association_type(kind).resource_share_arns(&arn).send().await?;
        for a in out.resource_share_associations.unwrap_or_default() {
            if matches!(
                a.status,
                Some(ResourceShareAssociationStatus::Associated) | Some(ResourceShareAssociationStatus::Associating) | None
            ) {
                list.extend(a.associated_entity);
            }
        }
    }
    Ok(view)
}

impl MeshShare {
    /// The spoke account ids the share must name.
    async fn principals(&self) -> Result<Vec<String>, Error> {
        let mut ids = Vec::new();
        for s in &self.session.config.spokes {
            ids.push(self.session.aws.account_id(&s.name).await?);
        }
        Ok(ids)
    }

    /// The mesh ARN and the spoke account ids the share must name.
    async fn wanted(&self, run: &StepRun) -> Result<(String, Vec<String>), Error> {
        let c = &self.session.config;
        let w = who(&self.session.aws, &c.hub.name);
        let arn = live_mesh(&self.session, run).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("{w}: mesh {} does not exist; run `meshctl up --only mesh`", c.mesh.name))
        })?;
        Ok((arn, self.principals().await?))
    }
}

#[async_trait::async_trait]
impl Step for MeshShare {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        let c = &self.session.config;
        let share = &self.settings.mesh_share;
        let ram = self.session.aws.ram(&c.hub.name).await?;
        let view =
            own_share(&ram, share).await.context(format!("{}: cannot read RAM share {share}", who(&self.session.aws, &c.hub.name)))?;
        if view.arn.is_none() {
            return Ok(Status::Missing);
        }
        if !view.ours {
            return Ok(Status::Drifted(format!(
                "RAM share {share} was not created by meshctl (no {TAG_MANAGED_BY} tag); `meshctl up --adopt` takes it over"
            )));
        }
        // A share whose mesh is gone (deleted, or App Mesh past its end of support) still
        // exists: drifted, so that `down` deletes it.
        let Some(mesh) = live_mesh(&self.session, run).await? else {
            return Ok(Status::Drifted(format!("mesh {} is gone but the share is left", c.mesh.name)));
        };
        let ids = self.principals().await?;
        let mut missing = Vec::new();
        if !view.resources.contains(&mesh) {
            missing.push(format!("resource {mesh}"));
        }
        missing.extend(ids.iter().filter(|id| !view.principals.contains(id)).map(|id| format!("principal {id}")));
        Ok(if missing.is_empty() { Status::UpToDate } else { Status::Drifted(format!("not shared: {}", missing.join(", "))) })
    }
    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let name = &self.settings.mesh_share;
        let hub = who(&self.session.aws, &c.hub.name);
        let ram = self.session.aws.ram(&c.hub.name).await?;
        let (mesh, ids) = self.wanted(run).await?;
        let view = own_share(&ram, name).await.context(format!("{hub}: cannot read RAM share {name}"))?;
        match view.arn {
            None => {
                let tag = aws_sdk_ram::types::Tag::builder().key(TAG_MANAGED_BY).value(MANAGED_BY).build();
                ram.create_resource_share()
                    .name(name)
                    .resource_arns(&mesh)
                    .set_principals(Some(ids))
                    .allow_external_principals(true)
                    .tags(tag)
                    .send()
                    .await
                    .context(format!("{hub}: CreateResourceShare {name} failed"))?;
            }
            Some(arn) => {
                ensure_share_ours(view.ours, run.adopt, &hub, name, "update")?;
                if !view.ours {
                    let tag = aws_sdk_ram::types::Tag::builder().key(TAG_MANAGED_BY).value(MANAGED_BY).build();
                    ram.tag_resource()
                        .resource_share_arn(&arn)
                        .tags(tag)
                        .send()
                        .await
                        .context(format!("{hub}: TagResource {name} (adopting it)"))?;
                }
                let resources: Vec<String> = if view.resources.contains(&mesh) { vec![] } else { vec![mesh] };
                let principals: Vec<String> = ids.into_iter().filter(|id| !view.principals.contains(id)).collect();
                if !resources.is_empty() || !principals.is_empty() {
                    ram.associate_resource_share()
                        .resource_share_arn(&arn)
                        .set_resource_arns((!resources.is_empty()).then_some(resources))
                        .set_principals((!principals.is_empty()).then_some(principals))
                        .send()
                        .await
                        .context(format!("{hub}: AssociateResourceShare {name} failed"))?;
                }
            }
        }
        Ok(())
    }
    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let c = &self.session.config;
        let name = &self.settings.mesh_share;
        let hub = who(&self.session.aws, &c.hub.name);
        let ram = self.session.aws.ram(&c.hub.name).await?;
        // Every active share of that name that this account owns (a rerun after a partial
        // create may have made two).
        let out = ram
            .get_resource_shares()
            .resource_owner(ResourceOwner::SelfValue)
            .name(name)
            .send()
            .await
            .context(format!("{hub}: cannot read RAM share {name}"))?;
        for s in out.resource_shares.unwrap_or_default() {
            if s.name.as_deref() != Some(name)
                || !matches!(s.status, Some(ResourceShareStatus::Active) | Some(ResourceShareStatus::Pending))
            {
                continue;
            }
            ensure_share_ours(share_is_ours(&s), run.adopt, &hub, name, "delete")?;
            let arn = s.resource_share_arn.unwrap_or_default();
            if let Err(e) = ram.delete_resource_share().resource_share_arn(&arn).send().await.map_err(Error::from) {
                if !e.is(ErrorKind::NotFound) {
                    return Err(e.context(format!("{hub}: DeleteResourceShare {name} ({arn}) failed")));
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
    session: Arc<Session>,
    settings: Arc<Settings>,
}

/// The namespace's id, when an HTTP namespace of that name exists.
pub async fn namespace_id(client: &aws_sdk_servicediscovery::Client, name: &str) -> Result<Option<String>, Error> {
    let mut token = None;
    loop {
        let out = client.list_namespaces().set_next_token(token).send().await?;
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
pub async fn wait_operation(client: &aws_sdk_servicediscovery::Client, id: &str, cx: &StepRun) -> Result<(), Error> {
    use aws_sdk_servicediscovery::types::OperationStatus;
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(15));
    loop {
        let out = client.get_operation().operation_id(id).send().await?;
        let op = out.operation.unwrap_or_else(|| aws_sdk_servicediscovery::types::Operation::builder().build());
        match op.status {
            Some(OperationStatus::Success) => return Ok(()),
            Some(OperationStatus::Fail) => {
                return Err(Error::other(format!(
                    "operation {id} failed: {} {}",
                    op.error_code.unwrap_or_default(),
                    op.error_message.unwrap_or_default()
                )))
            }
            Some(OperationStatus::Pending) | Some(OperationStatus::Submitted) | None => {
                cx.progress(format!("operation {id} {}", op.status.as_ref().map(|s| s.as_str()).unwrap_or("SUBMITTED")))
            }
            Some(other) => cx.progress(format!("operation {id} {}", other.as_str())),
        }
        if cx.aborted() {
            return Err(Error::other(format!("aborted while waiting for operation {id}")));
        }
        backoff.wait(false).await;
    }
}

#[async_trait::async_trait]
impl Step for CloudMap {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, _run: &StepRun) -> Result<Status, Error> {
        let (ns, account) = (&self.settings.cloudmap_namespace, &self.settings.cloudmap_account);
        let client = self.session.aws.servicediscovery(account).await?;
        let found =
            namespace_id(&client, ns).await.context(format!("{}: cannot list Cloud Map namespaces", who(&self.session.aws, account)))?;
        Ok(if found.is_some() { Status::UpToDate } else { Status::Missing })
    }
    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let (ns, account) = (&self.settings.cloudmap_namespace, &self.settings.cloudmap_account);
        let w = who(&self.session.aws, account);
        let client = self.session.aws.servicediscovery(account).await?;
        // The creator request id makes a retried create idempotent on the AWS side.
        let out = client
            .create_http_namespace()
            .name(ns)
            .creator_request_id(format!("meshctl-{ns}"))
            .description("meshctl: App Mesh service discovery")
            .tags(aws_sdk_servicediscovery::types::Tag::builder().key(TAG_MANAGED_BY).value(MANAGED_BY).build().expect("key and value set"))
            .send()
            .await
            .context(format!("{w}: CreateHttpNamespace {ns} failed"))?;
        if let Some(op) = out.operation_id {
            wait_operation(&client, &op, run).await.context(format!("{w}: creating Cloud Map namespace {ns}")).map_err(|e| {
                e.hint(format!(
                    "see `aws servicediscovery get-operation --operation-id {op} --profile {}`",
                    self.session.aws.profile(account).unwrap_or("?")
                ))
            })?;
        }
        Ok(())
    }
    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let (ns, account) = (&self.settings.cloudmap_namespace, &self.settings.cloudmap_account);
        let w = who(&self.session.aws, account);
        let client = self.session.aws.servicediscovery(account).await?;
        let Some(id) = namespace_id(&client, ns).await.context(format!("{w}: cannot list Cloud Map namespaces"))? else {
            return Ok(());
        };
        let out = match client.delete_namespace().id(&id).send().await.map_err(Error::from) {
            Ok(o) => o,
            Err(e) if e.is(ErrorKind::NotFound) => return Ok(()),
            Err(e) => {
                return Err(e.context(format!("{w}: DeleteNamespace {ns} ({id}) failed")).hint(format!(
                    "a namespace with services cannot be deleted: see `aws servicediscovery list-services --profile {}`",
                    self.session.aws.profile(account).unwrap_or("?")
                )))
            }
        };
        if let Some(op) = out.operation_id {
            wait_operation(&client, &op, run).await.context(format!("{w}: deleting Cloud Map namespace {ns}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
