//! `mesh/appmesh` and `mesh/share` against AWS-shaped responses (aws-smithy-mocks): moto
//! 5.2.5's App Mesh replies do not parse in aws-sdk-rust (timestamps like
//! `"28/11/2026, 04:36:40"`), so these two steps cannot run on the test bed.
//!
//! Each test builds the steps of the default configuration (hub `shared` = 111111111111,
//! spokes `frontend` = 222222222222 and `backend` = 333333333333) on a mocked context: every
//! call must match a rule of the account it goes to (exact names, ARNs, principals), and an
//! account without rules must not be called at all.

use aws_sdk_appmesh::operation::create_mesh::{CreateMeshError, CreateMeshOutput};
use aws_sdk_appmesh::operation::delete_mesh::{DeleteMeshError, DeleteMeshOutput};
use aws_sdk_appmesh::operation::list_meshes::{ListMeshesError, ListMeshesOutput};
use aws_sdk_appmesh::types::{EgressFilter, EgressFilterType, MeshData, MeshRef, MeshSpec, MeshStatus, MeshStatusCode, ResourceMetadata};
use aws_sdk_ram::operation::associate_resource_share::AssociateResourceShareOutput;
use aws_sdk_ram::operation::create_resource_share::CreateResourceShareOutput;
use aws_sdk_ram::operation::delete_resource_share::{DeleteResourceShareError, DeleteResourceShareOutput};
use aws_sdk_ram::operation::get_resource_share_associations::GetResourceShareAssociationsOutput;
use aws_sdk_ram::operation::get_resource_shares::GetResourceSharesOutput;
use aws_sdk_ram::types::{ResourceShare, ResourceShareAssociation};
use aws_smithy_mocks::{mock, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::DateTime;

use super::*;
use crate::aws::testing::{self, BACKEND, FRONTEND, SHARED};

const MESH: &str = "am-multi-account-mesh";
const MESH_ARN: &str = "arn:aws:appmesh:us-east-2:111111111111:mesh/am-multi-account-mesh";
const SHARE: &str = "mesh-share";
const SHARE_ARN: &str = "arn:aws:ram:us-east-2:111111111111:resource-share/7ab63972-b505-4e2a-8c3b-5f0c0e2a9f41";

fn step(ctx: &Arc<Session>, id: &str) -> Arc<dyn Step> {
    steps(ctx, &Arc::new(Settings::default())).into_iter().find(|s| s.meta().id == id).unwrap_or_else(|| panic!("no step {id}"))
}

fn cx(id: &str) -> StepRun {
    StepRun::detached(id)
}

// ------------------------------------------------------------------ App Mesh responses

fn mesh_ref(name: &str, owner: &str) -> MeshRef {
    MeshRef::builder()
        .mesh_name(name)
        .mesh_owner(owner)
        .resource_owner(owner)
        .arn(format!("arn:aws:appmesh:us-east-2:{owner}:mesh/{name}"))
        .version(1)
        .created_at(DateTime::from_secs(1_764_304_600))
        .last_updated_at(DateTime::from_secs(1_764_304_600))
        .build()
        .expect("all fields set")
}

/// ListMeshes: `meshes`, and `nextToken` when more pages follow.
fn list(meshes: Vec<MeshRef>, next: Option<&str>) -> ListMeshesOutput {
    ListMeshesOutput::builder().set_meshes(Some(meshes)).set_next_token(next.map(str::to_string)).build().expect("meshes set")
}

fn mesh_data(status: MeshStatusCode) -> MeshData {
    MeshData::builder()
        .mesh_name(MESH)
        .metadata(
            ResourceMetadata::builder()
                .arn(MESH_ARN)
                .mesh_owner(SHARED)
                .resource_owner(SHARED)
                .uid("a1b2c3d4-5678-90ab-cdef-11111EXAMPLE")
                .version(1)
                .created_at(DateTime::from_secs(1_764_304_600))
                .last_updated_at(DateTime::from_secs(1_764_304_600))
                .build()
                .expect("all fields set"),
        )
        .spec(
            MeshSpec::builder()
                .egress_filter(EgressFilter::builder().r#type(EgressFilterType::AllowAll).build().expect("type set"))
                .build(),
        )
        .status(MeshStatus::builder().status(status).build())
        .build()
        .expect("all fields set")
}

/// The ListMeshes of the hub: one page holding a same-named mesh shared by another account
/// and an unrelated mesh of the hub, then (`found`) a page with the hub's mesh.
fn list_rule(found: bool) -> Rule {
    mock!(aws_sdk_appmesh::Client::list_meshes)
        .sequence()
        .output(|| list(vec![mesh_ref(MESH, "444444444444"), mesh_ref("other-mesh", SHARED)], Some("page-2")))
        .output(move || list(if found { vec![mesh_ref(MESH, SHARED)] } else { vec![] }, None))
        .repeatedly()
        .build()
}

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

// ------------------------------------------------------------------ mesh/appmesh

#[tokio::test]
async fn appmesh_check_missing_when_no_mesh_of_the_hub_has_the_name() {
    let listed = list_rule(false);
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed])]);
    assert_eq!(step(&ctx, "mesh/appmesh").check(&cx("mesh/appmesh")).await.unwrap(), Status::Missing);
    assert_eq!(listed.num_calls(), 2, "both pages read");
}

#[tokio::test]
async fn appmesh_check_up_to_date_and_mesh_arn_read_back() {
    let first = mock!(aws_sdk_appmesh::Client::list_meshes)
        .match_requests(|r| r.next_token().is_none())
        .then_output(|| list(vec![mesh_ref(MESH, "444444444444")], Some("page-2")));
    let second = mock!(aws_sdk_appmesh::Client::list_meshes)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| list(vec![mesh_ref(MESH, SHARED)], None));
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&first, &second])]);
    assert_eq!(step(&ctx, "mesh/appmesh").check(&cx("mesh/appmesh")).await.unwrap(), Status::UpToDate);

    let client = ctx.aws.appmesh("shared").await.unwrap();
    assert_eq!(mesh_arn(&client, MESH, SHARED).await.unwrap().as_deref(), Some(MESH_ARN));
    assert_eq!(
        mesh_arn(&client, MESH, "444444444444").await.unwrap().as_deref(),
        Some("arn:aws:appmesh:us-east-2:444444444444:mesh/am-multi-account-mesh")
    );
    assert_eq!(mesh_arn(&client, "absent", SHARED).await.unwrap(), None);
    assert_eq!((first.num_calls(), second.num_calls()), (4, 3), "the second page is only read when the first has no match");
    assert_eq!(ctx.aws.writes().count(), 0, "check only reads");
}

/// The progress messages a step reported.
#[derive(Default)]
struct Notes(std::sync::Mutex<Vec<String>>);

impl crate::engine::EventSink for Notes {
    fn event(&self, e: &crate::engine::Event) {
        if let crate::engine::EventKind::Progress(m) = &e.kind {
            self.0.lock().unwrap().push(m.clone());
        }
    }
}

fn noted(id: &str, mode: crate::engine::Mode) -> (StepRun, Arc<Notes>) {
    let notes = Arc::new(Notes::default());
    (StepRun::detached(id).with_mode(mode).with_sink(notes.clone()), notes)
}

fn forbidden() -> Rule {
    mock!(aws_sdk_appmesh::Client::list_meshes).then_error(|| {
        ListMeshesError::ForbiddenException(
            aws_sdk_appmesh::types::error::ForbiddenException::builder()
                .message("User: arn:aws:sts::111111111111:assumed-role/ci/x is not authorized to perform: appmesh:ListMeshes")
                .meta(meta(
                    "ForbiddenException",
                    "User: arn:aws:sts::111111111111:assumed-role/ci/x is not authorized to perform: appmesh:ListMeshes",
                ))
                .build(),
        )
    })
}

fn throttled() -> Rule {
    mock!(aws_sdk_appmesh::Client::list_meshes).then_error(|| {
        ListMeshesError::TooManyRequestsException(
            aws_sdk_appmesh::types::error::TooManyRequestsException::builder()
                .message("Rate exceeded")
                .meta(meta("TooManyRequestsException", "Rate exceeded"))
                .build(),
        )
    })
}

/// After App Mesh's end of support its API refuses: the mesh counts as gone (nothing to
/// check, nothing to delete), said on the progress line; no DeleteMesh is tried.
#[tokio::test]
async fn appmesh_refused_reads_as_gone_with_a_note() {
    let refused = forbidden();
    let never = mock!(aws_sdk_appmesh::Client::delete_mesh).then_output(|| DeleteMeshOutput::builder().build());
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&refused, &never])]);
    let (run, notes) = noted("mesh/appmesh", crate::engine::Mode::Up);
    assert_eq!(step(&ctx, "mesh/appmesh").check(&run).await.unwrap(), Status::Missing);
    step(&ctx, "mesh/appmesh").destroy(&run).await.unwrap();
    assert_eq!(never.num_calls(), 0);
    assert_eq!(ctx.aws.writes().count(), 0);
    let notes = notes.0.lock().unwrap().clone();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with("account shared (profile shared): App Mesh refused ListMeshes (ForbiddenException: User:")
            && notes[0].ends_with("it reached end of support on 2026-09-30: mesh am-multi-account-mesh counts as gone"),
        "{notes:?}"
    );
}

/// Throttling is not a refusal: the check fails, naming the account and the mesh.
#[tokio::test]
async fn appmesh_throttled_stays_an_error_naming_the_account_and_the_mesh() {
    let slow = throttled();
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&slow])]);
    let err = step(&ctx, "mesh/appmesh").check(&cx("mesh/appmesh")).await.unwrap_err();
    assert!(err.is(ErrorKind::Throttled));
    assert!(
        err.chain().starts_with(
            "account shared (profile shared): cannot read mesh am-multi-account-mesh: TooManyRequestsException: Rate exceeded"
        ),
        "{}",
        err.chain()
    );
    let err = step(&ctx, "mesh/appmesh").destroy(&cx("mesh/appmesh")).await.unwrap_err();
    assert!(err.is(ErrorKind::Throttled), "{}", err.chain());
}

/// A share left behind a mesh App Mesh no longer shows is drifted (so `down` and the
/// removal of a retired provider delete it); deleting it needs no App Mesh call.
#[tokio::test]
async fn share_of_a_refused_mesh_is_left_over_and_deleted() {
    let listed = shares(vec![share(SHARE_ARN, ResourceShareStatus::Active)]);
    let res = resources(&[(MESH_ARN, Associated)]);
    let princ = principals(&[(FRONTEND, Associated), (BACKEND, Associated)]);
    let refused = forbidden();
    let delete = mock!(aws_sdk_ram::Client::delete_resource_share)
        .match_requests(|r| r.resource_share_arn() == Some(SHARE_ARN))
        .then_output(|| DeleteResourceShareOutput::builder().return_value(true).build());
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &res, &princ, &refused, &delete])]);
    let (run, notes) = noted("mesh/share", crate::engine::Mode::Down);
    assert_eq!(
        step(&ctx, "mesh/share").check(&run).await.unwrap(),
        Status::Drifted("mesh am-multi-account-mesh is gone but the share is left".into())
    );
    assert_eq!(notes.0.lock().unwrap().len(), 1);
    step(&ctx, "mesh/share").destroy(&run).await.unwrap();
    assert_eq!(delete.num_calls(), 1);
    assert_eq!(refused.num_calls(), 1, "the delete reads no mesh");
}

/// The provider's preflight stops `up` and its plan when App Mesh refuses, and lets every
/// other walk go on with a note: `down` must still tear the clusters down after the end of
/// support. Throttling fails every walk.
#[tokio::test]
async fn preflight_blocks_up_only() {
    use crate::engine::Mode;
    let provider = super::super::from_config(&crate::config::Config::default()).unwrap();
    for mode in [Mode::Up, Mode::Plan] {
        let refused = forbidden();
        let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&refused])]);
        let err = provider.preflight(&ctx, &StepRun::detached("preflight/accounts").with_mode(mode)).await.unwrap_err();
        assert!(err.is(ErrorKind::InvalidInput));
        let text = err.chain();
        assert!(
            text.starts_with("mesh.provider = \"appmesh\": AWS App Mesh reached end of support on 2026-09-30 and its API refused in account shared (profile shared): ForbiddenException"),
            "{mode:?}: {text}"
        );
        assert!(
            text.contains("nothing was changed; use mesh.provider = \"envoy\"")
                && text.contains("`meshctl down` still tears everything down"),
            "{text}"
        );
    }
    for mode in [Mode::Down, Mode::PlanDown, Mode::Status] {
        let refused = forbidden();
        let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&refused])]);
        let (run, notes) = noted("preflight/accounts", mode);
        provider.preflight(&ctx, &run).await.unwrap_or_else(|e| panic!("{mode:?}: {}", e.chain()));
        let notes = notes.0.lock().unwrap().clone();
        assert!(
            notes.len() == 1 && notes[0].contains("App Mesh refused ListMeshes") && notes[0].contains("its resources count as gone"),
            "{notes:?}"
        );
    }
    for mode in [Mode::Up, Mode::Down] {
        let slow = throttled();
        let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&slow])]);
        let err = provider.preflight(&ctx, &StepRun::detached("preflight/accounts").with_mode(mode)).await.unwrap_err();
        assert!(err.is(ErrorKind::Throttled), "{mode:?}");
        assert!(
            err.chain().starts_with("account shared (profile shared): App Mesh ListMeshes: TooManyRequestsException"),
            "{}",
            err.chain()
        );
    }
}

#[tokio::test]
async fn appmesh_apply_creates_the_named_mesh_allowing_egress_and_tagged() {
    let create = mock!(aws_sdk_appmesh::Client::create_mesh)
        .match_requests(|r| {
            r.mesh_name() == Some(MESH)
                && r.spec().and_then(|s| s.egress_filter()).map(|f| f.r#type()) == Some(&EgressFilterType::AllowAll)
                && r.tags().len() == 1
                && r.tags()[0].key() == "meshctl:managed-by"
                && r.tags()[0].value() == "meshctl"
        })
        .then_output(|| CreateMeshOutput::builder().mesh(mesh_data(MeshStatusCode::Active)).build());
    let ctx = testing::ctx(&[("shared", RuleMode::Sequential, &[&create])]);
    step(&ctx, "mesh/appmesh").apply(&cx("mesh/appmesh")).await.unwrap();
    assert_eq!(create.num_calls(), 1);
    assert_eq!(ctx.aws.writes().calls(), ["App Mesh:CreateMesh"]);
}

#[tokio::test]
async fn appmesh_apply_treats_conflict_as_created_and_reports_other_errors() {
    let conflict = mock!(aws_sdk_appmesh::Client::create_mesh).then_error(|| {
        CreateMeshError::ConflictException(
            aws_sdk_appmesh::types::error::ConflictException::builder()
                .message("Mesh am-multi-account-mesh already exists")
                .meta(meta("ConflictException", "Mesh am-multi-account-mesh already exists"))
                .build(),
        )
    });
    let denied = mock!(aws_sdk_appmesh::Client::create_mesh).then_error(|| {
        CreateMeshError::ForbiddenException(
            aws_sdk_appmesh::types::error::ForbiddenException::builder()
                .message("User is not authorized to perform: appmesh:CreateMesh")
                .meta(meta("ForbiddenException", "User is not authorized to perform: appmesh:CreateMesh"))
                .build(),
        )
    });
    let ctx = testing::ctx(&[("shared", RuleMode::Sequential, &[&conflict, &denied])]);
    step(&ctx, "mesh/appmesh").apply(&cx("mesh/appmesh")).await.unwrap();
    let err = step(&ctx, "mesh/appmesh").apply(&cx("mesh/appmesh")).await.unwrap_err().chain();
    assert_eq!(err, "account shared (profile shared): CreateMesh am-multi-account-mesh failed: ForbiddenException: User is not authorized to perform: appmesh:CreateMesh");
    assert_eq!((conflict.num_calls(), denied.num_calls()), (1, 1));
}

#[tokio::test]
async fn appmesh_destroy_deletes_the_mesh_and_not_found_is_done() {
    let listed = list_rule(true);
    let delete = mock!(aws_sdk_appmesh::Client::delete_mesh)
        .match_requests(|r| r.mesh_name() == Some(MESH))
        .then_output(|| DeleteMeshOutput::builder().mesh(mesh_data(MeshStatusCode::Deleted)).build());
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &delete])]);
    step(&ctx, "mesh/appmesh").destroy(&cx("mesh/appmesh")).await.unwrap();
    assert_eq!(delete.num_calls(), 1);

    // Listed a moment ago, gone when deleted (someone else was faster): done.
    let listed = list_rule(true);
    let gone = mock!(aws_sdk_appmesh::Client::delete_mesh).match_requests(|r| r.mesh_name() == Some(MESH)).then_error(|| {
        DeleteMeshError::NotFoundException(
            aws_sdk_appmesh::types::error::NotFoundException::builder()
                .message("Mesh am-multi-account-mesh not found")
                .meta(meta("NotFoundException", "Mesh am-multi-account-mesh not found"))
                .build(),
        )
    });
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &gone])]);
    step(&ctx, "mesh/appmesh").destroy(&cx("mesh/appmesh")).await.unwrap();
    assert_eq!(gone.num_calls(), 1);

    // Not listed: nothing to delete, no DeleteMesh.
    let listed = list_rule(false);
    let never = mock!(aws_sdk_appmesh::Client::delete_mesh).then_output(|| DeleteMeshOutput::builder().build());
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &never])]);
    step(&ctx, "mesh/appmesh").destroy(&cx("mesh/appmesh")).await.unwrap();
    assert_eq!(never.num_calls(), 0);
    assert_eq!(ctx.aws.writes().count(), 0);
}

#[tokio::test]
async fn appmesh_destroy_of_a_mesh_in_use_says_to_delete_the_app_first() {
    let listed = list_rule(true);
    let in_use = mock!(aws_sdk_appmesh::Client::delete_mesh).then_error(|| {
        DeleteMeshError::ResourceInUseException(
            aws_sdk_appmesh::types::error::ResourceInUseException::builder()
                .message("Mesh has active virtual nodes")
                .meta(meta("ResourceInUseException", "Mesh has active virtual nodes"))
                .build(),
        )
    });
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &in_use])]);
    let err = step(&ctx, "mesh/appmesh").destroy(&cx("mesh/appmesh")).await.unwrap_err().chain();
    assert!(err.starts_with("account shared (profile shared): DeleteMesh am-multi-account-mesh failed: ResourceInUseException: Mesh has active virtual nodes"), "{err}");
    assert!(err.contains("`meshctl yelb --destroy`"), "{err}");
    assert!(err.contains("aws appmesh list-virtual-nodes --mesh-name am-multi-account-mesh --profile shared"), "{err}");
    assert_eq!(in_use.num_calls(), 1);
}

// ------------------------------------------------------------------ RAM responses

fn share(arn: &str, status: ResourceShareStatus) -> ResourceShare {
    ResourceShare::builder()
        .resource_share_arn(arn)
        .name(SHARE)
        .owning_account_id(SHARED)
        .allow_external_principals(true)
        .status(status)
        .creation_time(DateTime::from_secs(1_764_304_700))
        .last_updated_time(DateTime::from_secs(1_764_304_700))
        .feature_set(aws_sdk_ram::types::ResourceShareFeatureSet::Standard)
        .tags(aws_sdk_ram::types::Tag::builder().key(TAG_MANAGED_BY).value(MANAGED_BY).build())
        .build()
}

/// A share of the same name someone else made (no meshctl tag).
fn foreign_share() -> ResourceShare {
    let mut s = share(SHARE_ARN, ResourceShareStatus::Active);
    s.tags = None;
    s
}

#[tokio::test]
async fn a_share_meshctl_did_not_create_is_drift_and_neither_updated_nor_deleted() {
    let listed = shares(vec![foreign_share()]);
    let assoc =
        mock!(aws_sdk_ram::Client::get_resource_share_associations).then_output(|| GetResourceShareAssociationsOutput::builder().build());
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &assoc])]);
    let s = step(&ctx, "mesh/share");
    match s.check(&cx("mesh/share")).await.unwrap() {
        Status::Drifted(why) => assert!(why.contains(SHARE) && why.contains("--adopt"), "{why}"),
        other => panic!("a foreign share is drift, not {other:?}"),
    }
    let err = s.destroy(&cx("mesh/share")).await.unwrap_err();
    assert!(err.is(ErrorKind::NotOurs), "{err:?}");
    assert!(err.chain().contains("will not delete it") && err.chain().contains("--adopt"), "{}", err.chain());
    assert_eq!(ctx.aws.writes().count(), 0, "nothing written");
}

/// GetResourceShares of the hub, as the step asks for it (owner SELF, by name).
fn shares(list: Vec<ResourceShare>) -> Rule {
    mock!(aws_sdk_ram::Client::get_resource_shares)
        .match_requests(|r| r.resource_owner() == Some(&ResourceOwner::SelfValue) && r.name() == Some(SHARE))
        .then_output(move || GetResourceSharesOutput::builder().set_resource_shares(Some(list.clone())).build())
}

fn association(kind: ResourceShareAssociationType, entity: &str, status: ResourceShareAssociationStatus) -> ResourceShareAssociation {
    ResourceShareAssociation::builder()
        .resource_share_arn(SHARE_ARN)
        .resource_share_name(SHARE)
        .associated_entity(entity)
        .association_type(kind.clone())
        .status(status)
        .creation_time(DateTime::from_secs(1_764_304_700))
        .last_updated_time(DateTime::from_secs(1_764_304_700))
        .external(kind == ResourceShareAssociationType::Principal)
        .build()
}

/// GetResourceShareAssociations of `kind` for the share's ARN.
fn associations(kind: ResourceShareAssociationType, entities: &[(&str, ResourceShareAssociationStatus)]) -> Rule {
    let list: Vec<ResourceShareAssociation> = entities.iter().map(|(e, s)| association(kind.clone(), e, s.clone())).collect();
    mock!(aws_sdk_ram::Client::get_resource_share_associations)
        .match_requests(move |r| r.association_type() == Some(&kind) && r.resource_share_arns() == [SHARE_ARN.to_string()])
        .then_output(move || GetResourceShareAssociationsOutput::builder().set_resource_share_associations(Some(list.clone())).build())
}

fn resources(entities: &[(&str, ResourceShareAssociationStatus)]) -> Rule {
    associations(ResourceShareAssociationType::Resource, entities)
}

fn principals(entities: &[(&str, ResourceShareAssociationStatus)]) -> Rule {
    associations(ResourceShareAssociationType::Principal, entities)
}

use ResourceShareAssociationStatus::{Associated, Disassociated};

// ------------------------------------------------------------------ mesh/share

#[tokio::test]
async fn share_check_missing_when_only_a_deleted_share_has_the_name() {
    // AWS lists a deleted share for a while; it does not count.
    let listed = shares(vec![share(SHARE_ARN, ResourceShareStatus::Deleted)]);
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed])]);
    assert_eq!(step(&ctx, "mesh/share").check(&cx("mesh/share")).await.unwrap(), Status::Missing);
    assert_eq!(listed.num_calls(), 1);
}

#[tokio::test]
async fn share_check_up_to_date_with_the_mesh_and_every_spoke() {
    let listed = shares(vec![share(SHARE_ARN, ResourceShareStatus::Active)]);
    let res = resources(&[(MESH_ARN, Associated)]);
    let princ = principals(&[(FRONTEND, Associated), (BACKEND, Associated)]);
    let meshes = list_rule(true);
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &res, &princ, &meshes])]);
    assert_eq!(step(&ctx, "mesh/share").check(&cx("mesh/share")).await.unwrap(), Status::UpToDate);
    assert_eq!((listed.num_calls(), res.num_calls(), princ.num_calls()), (1, 1, 1));
    assert_eq!(meshes.num_calls(), 2, "the mesh ARN is read back from ListMeshes");
}

#[tokio::test]
async fn share_check_would_change_names_the_missing_principal() {
    let listed = shares(vec![share(SHARE_ARN, ResourceShareStatus::Active)]);
    let res = resources(&[(MESH_ARN, Associated)]);
    // backend was disassociated (e.g. by hand): the share must name it again.
    let princ = principals(&[(FRONTEND, Associated), (BACKEND, Disassociated)]);
    let meshes = list_rule(true);
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &res, &princ, &meshes])]);
    assert_eq!(
        step(&ctx, "mesh/share").check(&cx("mesh/share")).await.unwrap(),
        Status::Drifted(format!("not shared: principal {BACKEND}"))
    );

    // A share without the mesh: the resource is named too.
    let listed = shares(vec![share(SHARE_ARN, ResourceShareStatus::Active)]);
    let res = resources(&[]);
    let princ = principals(&[(FRONTEND, Associated)]);
    let meshes = list_rule(true);
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &res, &princ, &meshes])]);
    assert_eq!(
        step(&ctx, "mesh/share").check(&cx("mesh/share")).await.unwrap(),
        Status::Drifted(format!("not shared: resource {MESH_ARN}, principal {BACKEND}"))
    );
}

#[tokio::test]
async fn share_apply_creates_the_share_of_the_mesh_to_the_spokes() {
    let meshes = list_rule(true);
    let listed = shares(vec![]);
    let create = mock!(aws_sdk_ram::Client::create_resource_share)
        .match_requests(|r| {
            r.name() == Some(SHARE)
                && r.resource_arns() == [MESH_ARN.to_string()]
                && r.principals() == [FRONTEND.to_string(), BACKEND.to_string()]
                && r.allow_external_principals() == Some(true)
                && r.tags().iter().any(|t| t.key() == Some("meshctl:managed-by") && t.value() == Some("meshctl"))
        })
        .then_output(|| CreateResourceShareOutput::builder().resource_share(share(SHARE_ARN, ResourceShareStatus::Active)).build());
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&meshes, &listed, &create])]);
    step(&ctx, "mesh/share").apply(&cx("mesh/share")).await.unwrap();
    assert_eq!(create.num_calls(), 1);
    assert_eq!(ctx.aws.writes().calls(), ["RAM:CreateResourceShare"]);
}

#[tokio::test]
async fn share_apply_associates_only_the_missing_principal() {
    let meshes = list_rule(true);
    let listed = shares(vec![share(SHARE_ARN, ResourceShareStatus::Active)]);
    let res = resources(&[(MESH_ARN, Associated)]);
    let princ = principals(&[(FRONTEND, Associated)]);
    let associate = mock!(aws_sdk_ram::Client::associate_resource_share)
        .match_requests(|r| {
            r.resource_share_arn() == Some(SHARE_ARN) && r.principals() == [BACKEND.to_string()] && r.resource_arns().is_empty()
        })
        .then_output(|| {
            AssociateResourceShareOutput::builder()
                .resource_share_associations(association(
                    ResourceShareAssociationType::Principal,
                    BACKEND,
                    ResourceShareAssociationStatus::Associating,
                ))
                .build()
        });
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&meshes, &listed, &res, &princ, &associate])]);
    step(&ctx, "mesh/share").apply(&cx("mesh/share")).await.unwrap();
    assert_eq!(associate.num_calls(), 1);
    assert_eq!(ctx.aws.writes().calls(), ["RAM:AssociateResourceShare"]);
}

#[tokio::test]
async fn share_apply_without_the_mesh_says_to_create_it_first() {
    let meshes = list_rule(false);
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&meshes])]);
    let err = step(&ctx, "mesh/share").apply(&cx("mesh/share")).await.unwrap_err().chain();
    assert_eq!(err, "account shared (profile shared): mesh am-multi-account-mesh does not exist; run `meshctl up --only mesh`");
    assert_eq!(ctx.aws.writes().count(), 0);
}

#[tokio::test]
async fn share_destroy_deletes_the_active_share_and_absent_is_done() {
    let other = "arn:aws:ram:us-east-2:111111111111:resource-share/0d5e7f3a-0000-4b1c-9d2e-3f4a5b6c7d8e";
    let listed = shares(vec![share(SHARE_ARN, ResourceShareStatus::Active), share(other, ResourceShareStatus::Deleted)]);
    let delete = mock!(aws_sdk_ram::Client::delete_resource_share)
        .match_requests(|r| r.resource_share_arn() == Some(SHARE_ARN))
        .then_output(|| DeleteResourceShareOutput::builder().return_value(true).build());
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &delete])]);
    step(&ctx, "mesh/share").destroy(&cx("mesh/share")).await.unwrap();
    assert_eq!(delete.num_calls(), 1, "only the active share is deleted");

    // Deleted in between (UnknownResourceException): done.
    let listed = shares(vec![share(SHARE_ARN, ResourceShareStatus::Active)]);
    let unknown = mock!(aws_sdk_ram::Client::delete_resource_share).then_error(|| {
        DeleteResourceShareError::UnknownResourceException(
            aws_sdk_ram::types::error::UnknownResourceException::builder()
                .message(format!("ResourceShare {SHARE_ARN} could not be found."))
                .meta(meta("UnknownResourceException", &format!("ResourceShare {SHARE_ARN} could not be found.")))
                .build()
                .expect("message set"),
        )
    });
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &unknown])]);
    step(&ctx, "mesh/share").destroy(&cx("mesh/share")).await.unwrap();
    assert_eq!(unknown.num_calls(), 1);

    // No share of that name: nothing to delete.
    let listed = shares(vec![]);
    let never = mock!(aws_sdk_ram::Client::delete_resource_share).then_output(|| DeleteResourceShareOutput::builder().build());
    let ctx = testing::ctx(&[("shared", RuleMode::MatchAny, &[&listed, &never])]);
    step(&ctx, "mesh/share").destroy(&cx("mesh/share")).await.unwrap();
    assert_eq!((listed.num_calls(), never.num_calls()), (1, 0));
}
