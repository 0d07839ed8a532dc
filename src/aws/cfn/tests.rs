//! Change-set deployment paths with AWS-shaped responses (aws-smithy-mocks), including the
//! ones moto cannot show: an empty change set, ROLLBACK_COMPLETE with and without --yes, and
//! a failed creation's events.

use super::*;
use crate::aws::testing::mocked_client;
use crate::state::Silent;
use aws_sdk_cloudformation::error::ErrorMetadata;
use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput;
use aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput;
use aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
use aws_sdk_cloudformation::operation::describe_stacks::{DescribeStacksError, DescribeStacksOutput};
use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
use aws_sdk_cloudformation::operation::get_template::GetTemplateOutput;
use aws_sdk_cloudformation::types::{ResourceStatus, Stack, StackEvent};
use aws_smithy_mocks::{mock, Rule, RuleMode};

const ID: &str = "arn:aws:cloudformation:us-east-2:222222222222:stack/eks-cluster-frontend-stack/6a1f0c80-0000-11ef-a000-0a1b2c3d4e5f";
const CS: &str = "arn:aws:cloudformation:us-east-2:222222222222:changeSet/meshctl-1/0c4e1a2b-0000-4d6e-8f00-112233445566";

fn client(rules: &[&Rule]) -> Client {
    mocked_client!(aws_sdk_cloudformation, RuleMode::Sequential, rules)
}

fn spec() -> StackSpec {
    StackSpec {
        account: "frontend".into(),
        profile: "frontend".into(),
        name: "eks-cluster-frontend-stack".into(),
        body: "Resources: {}\n".into(),
        params: BTreeMap::from([("ClusterName".to_string(), "eks-cluster-frontend".to_string())]),
        tags: BTreeMap::from([("meshctl:managed-by".to_string(), "meshctl".to_string())]),
    }
}

fn stack(status: StackStatus) -> DescribeStacksOutput {
    DescribeStacksOutput::builder()
        .stacks(
            Stack::builder()
                .stack_id(ID)
                .stack_name("eks-cluster-frontend-stack")
                .stack_status(status)
                .creation_time(aws_smithy_types::DateTime::from_secs(1))
                .parameters(Parameter::builder().parameter_key("ClusterName").parameter_value("eks-cluster-frontend").build())
                .tags(Tag::builder().key("meshctl:managed-by").value("meshctl").build())
                .build(),
        )
        .build()
}

/// The stack as someone else created it: same name, no meshctl tag.
fn foreign(status: StackStatus) -> DescribeStacksOutput {
    let mut out = stack(status);
    for s in out.stacks.iter_mut().flatten() {
        s.tags = Some(vec![Tag::builder().key("team").value("networking").build()]);
    }
    out
}

fn not_found() -> DescribeStacksError {
    DescribeStacksError::generic(
        ErrorMetadata::builder().code("ValidationError").message("Stack with id eks-cluster-frontend-stack does not exist").build(),
    )
}

fn failed_events() -> DescribeStackEventsOutput {
    let ev = |logical: &str, ty: &str, status: ResourceStatus, reason: &str| {
        StackEvent::builder()
            .stack_id(ID)
            .event_id(format!("{logical}-{}", status.as_str()))
            .stack_name("eks-cluster-frontend-stack")
            .logical_resource_id(logical)
            .resource_type(ty)
            .resource_status(status)
            .resource_status_reason(reason)
            .timestamp(aws_smithy_types::DateTime::from_secs(2))
            .build()
    };
    // newest first, as AWS returns them
    DescribeStackEventsOutput::builder()
        .stack_events(ev("eks-cluster-frontend-stack", "AWS::CloudFormation::Stack", ResourceStatus::RollbackComplete, ""))
        .stack_events(ev(
            "Cluster",
            "AWS::EKS::Cluster",
            ResourceStatus::CreateFailed,
            "Resource handler returned message: \"Cannot create cluster because us-east-2d does not have sufficient capacity\"",
        ))
        .stack_events(ev("NodeRole", "AWS::IAM::Role", ResourceStatus::CreateFailed, "Resource creation cancelled"))
        .stack_events(ev("eks-cluster-frontend-stack", "AWS::CloudFormation::Stack", ResourceStatus::CreateInProgress, "User Initiated"))
        .stack_events(ev("OldThing", "AWS::EC2::VPC", ResourceStatus::CreateFailed, "from an older operation"))
        .build()
}

#[test]
fn every_known_status_is_classified() {
    for s in StackStatus::values() {
        let status = StackStatus::from(*s);
        assert_ne!(classify(&status), StackPhase::Unknown, "{s} is not classified");
    }
    assert_eq!(classify(&StackStatus::from("SOMETHING_NEW")), StackPhase::Unknown);
    assert_eq!(classify(&StackStatus::RollbackComplete), StackPhase::RollbackComplete);
    assert_eq!(classify(&StackStatus::UpdateRollbackComplete), StackPhase::Stable);
}

#[tokio::test]
async fn an_empty_change_set_is_up_to_date_and_deleted() {
    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::UpdateComplete));
    let create = mock!(Client::create_change_set)
        .match_requests(|r| {
            r.change_set_type() == Some(&ChangeSetType::Update) && r.capabilities().contains(&Capability::CapabilityNamedIam)
        })
        .then_output(|| CreateChangeSetOutput::builder().id(CS).stack_id(ID).build());
    let cs = mock!(Client::describe_change_set).then_output(|| {
        DescribeChangeSetOutput::builder()
            .change_set_id(CS)
            .status(ChangeSetStatus::Failed)
            .status_reason("The submitted information didn't contain changes. Submit different information to create a change set.")
            .build()
    });
    let delete = mock!(Client::delete_change_set)
        .match_requests(|r| r.change_set_name() == Some(CS))
        .then_output(|| DeleteChangeSetOutput::builder().build());
    let c = client(&[&describe, &create, &cs, &delete]);
    let changed = deploy(&c, &spec(), Allowed::default(), &Silent).await.unwrap();
    assert!(!changed);
    assert_eq!(delete.num_calls(), 1, "the empty change set is deleted");
}

#[tokio::test]
async fn a_new_stack_is_created_through_a_change_set() {
    let describe = mock!(Client::describe_stacks).then_error(not_found);
    let create = mock!(Client::create_change_set)
        .match_requests(|r| {
            r.change_set_type() == Some(&ChangeSetType::Create)
                && r.tags().iter().any(|t| t.key() == Some("meshctl:managed-by"))
                && r.parameters().iter().any(|p| p.parameter_key() == Some("ClusterName"))
        })
        .then_output(|| CreateChangeSetOutput::builder().id(CS).stack_id(ID).build());
    let cs = mock!(Client::describe_change_set)
        .then_output(|| DescribeChangeSetOutput::builder().change_set_id(CS).status(ChangeSetStatus::CreateComplete).build());
    let exec = mock!(Client::execute_change_set).then_output(|| ExecuteChangeSetOutput::builder().build());
    let done = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::CreateComplete));
    let c = client(&[&describe, &create, &cs, &exec, &done]);
    assert!(deploy(&c, &spec(), Allowed::default(), &Silent).await.unwrap());
    assert_eq!(exec.num_calls(), 1);
}

#[tokio::test]
async fn rollback_complete_is_reported_without_yes() {
    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::RollbackComplete));
    let events = mock!(Client::describe_stack_events).then_output(failed_events);
    let c = client(&[&describe, &events]);
    let err = deploy(&c, &spec(), Allowed::default(), &Silent).await.unwrap_err().chain();
    assert!(err.contains("account frontend (profile frontend): stack eks-cluster-frontend-stack"), "{err}");
    assert!(err.contains("ROLLBACK_COMPLETE"), "{err}");
    assert!(err.contains("Cluster (AWS::EKS::Cluster): Resource handler returned message"), "{err}");
    assert!(!err.contains("Resource creation cancelled") && !err.contains("older operation"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(err.contains("aws cloudformation describe-stack-events --stack-name eks-cluster-frontend-stack --profile frontend"), "{err}");
}

#[tokio::test]
async fn rollback_complete_is_deleted_and_recreated_with_yes() {
    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::RollbackComplete));
    // delete(): reads the stack again, deletes, waits for it to be gone
    let describe2 = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::RollbackComplete));
    let del =
        mock!(Client::delete_stack).match_requests(|r| r.stack_name() == Some(ID)).then_output(|| DeleteStackOutput::builder().build());
    let gone = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::DeleteComplete));
    let create = mock!(Client::create_change_set)
        .match_requests(|r| r.change_set_type() == Some(&ChangeSetType::Create))
        .then_output(|| CreateChangeSetOutput::builder().id(CS).stack_id(ID).build());
    let cs = mock!(Client::describe_change_set)
        .then_output(|| DescribeChangeSetOutput::builder().change_set_id(CS).status(ChangeSetStatus::CreateComplete).build());
    let exec = mock!(Client::execute_change_set).then_output(|| ExecuteChangeSetOutput::builder().build());
    let done = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::CreateComplete));
    let c = client(&[&describe, &describe2, &del, &gone, &create, &cs, &exec, &done]);
    assert!(deploy(&c, &spec(), Allowed { recreate_failed: true, adopt: false }, &Silent).await.unwrap());
    assert_eq!(del.num_calls(), 1);
    assert_eq!(exec.num_calls(), 1);
}

/// An interrupted `up` (killed between CreateChangeSet and ExecuteChangeSet) leaves the stack
/// in REVIEW_IN_PROGRESS: `check` calls it drift (so `down` deletes it), `deploy` deletes the
/// empty stack with its change set and creates it again, so one stack and one change set remain.
#[tokio::test]
async fn a_stack_left_in_review_is_drift_and_is_deleted_and_created_again() {
    let review = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::ReviewInProgress));
    let c = client(&[&review]);
    assert_eq!(check(&c, &spec()).await.unwrap(), Status::Drifted(review_reason()));

    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::ReviewInProgress));
    let describe2 = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::ReviewInProgress));
    let del =
        mock!(Client::delete_stack).match_requests(|r| r.stack_name() == Some(ID)).then_output(|| DeleteStackOutput::builder().build());
    let gone = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::DeleteComplete));
    let create = mock!(Client::create_change_set)
        .match_requests(|r| r.change_set_type() == Some(&ChangeSetType::Create))
        .then_output(|| CreateChangeSetOutput::builder().id(CS).stack_id(ID).build());
    let cs = mock!(Client::describe_change_set)
        .then_output(|| DescribeChangeSetOutput::builder().change_set_id(CS).status(ChangeSetStatus::CreateComplete).build());
    let exec = mock!(Client::execute_change_set).then_output(|| ExecuteChangeSetOutput::builder().build());
    let done = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::CreateComplete));
    let c = client(&[&describe, &describe2, &del, &gone, &create, &cs, &exec, &done]);
    assert!(deploy(&c, &spec(), Allowed::default(), &Silent).await.unwrap(), "no --yes needed: the stack holds nothing");
    assert_eq!((del.num_calls(), create.num_calls(), exec.num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn check_compares_template_parameters_and_tags() {
    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::CreateComplete));
    let tpl = mock!(Client::get_template).then_output(|| GetTemplateOutput::builder().template_body("Resources: {}\n").build());
    let c = client(&[&describe, &tpl]);
    assert_eq!(check(&c, &spec()).await.unwrap(), Status::UpToDate);

    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::UpdateComplete));
    let tpl = mock!(Client::get_template).then_output(|| GetTemplateOutput::builder().template_body("Resources: {Old: 1}\n").build());
    let c = client(&[&describe, &tpl]);
    let mut s = spec();
    s.params.insert("ClusterName".into(), "renamed".into());
    match check(&c, &s).await.unwrap() {
        Status::Drifted(why) => {
            assert!(why.contains("parameter ClusterName: eks-cluster-frontend → renamed"), "{why}");
            assert!(why.contains("template changed"), "{why}");
        }
        other => panic!("{other:?}"),
    }

    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::RollbackComplete));
    let c = client(&[&describe]);
    assert!(matches!(check(&c, &spec()).await.unwrap(), Status::Drifted(w) if w.contains("--yes")));

    let describe = mock!(Client::describe_stacks).then_error(not_found);
    let c = client(&[&describe]);
    assert_eq!(check(&c, &spec()).await.unwrap(), Status::Missing);
}

#[test]
fn template_comments_layout_and_metadata_are_not_drift() {
    let want = "# ours\nMetadata:\n  cfn-lint: {config: {ignore_checks: [W2001]}}\nResources:\n  Vpc:\n    Type: AWS::EC2::VPC\n    Properties: {CidrBlock: !Ref Cidr}\n";
    let live = "Resources:\n  Vpc: {Type: 'AWS::EC2::VPC', Properties: {CidrBlock: !Ref Cidr}}  # older comment\n";
    assert!(same_template(live, want));
    assert!(!same_template(&live.replace("!Ref Cidr", "!Ref Other"), want), "a changed intrinsic is drift");
    assert!(!same_template("Resources: {}\n", want));
    assert!(same_template("{not yaml", "{not yaml\n"), "unparsable bodies compare as text");
}

#[tokio::test]
async fn delete_of_an_absent_stack_succeeds() {
    let describe = mock!(Client::describe_stacks).then_error(not_found);
    let c = client(&[&describe]);
    delete(&c, &spec(), false, &Silent).await.unwrap();
}

/// Polls at most every 5 s: this test waits one interval.
#[tokio::test]
async fn a_failed_creation_names_the_failed_resources_and_the_next_command() {
    let describe = mock!(Client::describe_stacks).then_error(not_found);
    let create = mock!(Client::create_change_set).then_output(|| CreateChangeSetOutput::builder().id(CS).stack_id(ID).build());
    let cs = mock!(Client::describe_change_set)
        .then_output(|| DescribeChangeSetOutput::builder().change_set_id(CS).status(ChangeSetStatus::CreateComplete).build());
    let exec = mock!(Client::execute_change_set).then_output(|| ExecuteChangeSetOutput::builder().build());
    let running = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::CreateInProgress));
    let failed = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::RollbackComplete));
    let events = mock!(Client::describe_stack_events).then_output(failed_events);
    let c = client(&[&describe, &create, &cs, &exec, &running, &failed, &events]);
    let t = std::time::Instant::now();
    let err = deploy(&c, &spec(), Allowed::default(), &Silent).await.unwrap_err().chain();
    assert!(t.elapsed() >= POLL_FIRST, "polled after {:?}", t.elapsed());
    assert!(err.contains("ended in ROLLBACK_COMPLETE"), "{err}");
    assert!(err.contains("Cluster (AWS::EKS::Cluster)"), "{err}");
    assert!(err.contains("describe-stack-events --stack-name eks-cluster-frontend-stack --profile frontend"), "{err}");
}

// ------------------------------------------------------------------ stacks meshctl did not create

#[tokio::test]
async fn a_foreign_stack_is_drift_not_created_by_meshctl() {
    // Read only: no GetTemplate either, the reason is the ownership.
    let describe = mock!(Client::describe_stacks).then_output(|| foreign(StackStatus::CreateComplete));
    let c = client(&[&describe]);
    match check(&c, &spec()).await.unwrap() {
        Status::Drifted(why) => assert!(why.starts_with("not created by meshctl") && why.contains("--adopt"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn update_of_a_foreign_stack_is_refused_without_adopt() {
    // Only the read is answered: any CreateChangeSet would find no rule and fail the test.
    let describe = mock!(Client::describe_stacks).then_output(|| foreign(StackStatus::UpdateComplete));
    let c = client(&[&describe]);
    let err = deploy(&c, &spec(), Allowed { recreate_failed: true, adopt: false }, &Silent).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotOurs);
    assert_eq!(
        err.chain(),
        "account frontend (profile frontend): stack eks-cluster-frontend-stack: exists but was not created by meshctl (it has no \
         meshctl:managed-by tag), so meshctl will not update it; if it is meant to be meshctl's, rerun with --adopt to take it over \
         (`up --adopt` updates it to meshctl's template and tags it, `down --adopt` deletes it); else set another stack_name for account frontend"
    );
    assert_eq!(describe.num_calls(), 1);
}

#[tokio::test]
async fn delete_of_a_foreign_stack_is_refused_without_adopt() {
    let describe = mock!(Client::describe_stacks).then_output(|| foreign(StackStatus::CreateComplete));
    let c = client(&[&describe]);
    let err = delete(&c, &spec(), false, &Silent).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotOurs);
    let text = err.chain();
    assert!(
        text.starts_with("account frontend (profile frontend): stack eks-cluster-frontend-stack: exists but was not created by meshctl"),
        "{text}"
    );
    assert!(text.contains("will not delete it") && text.contains("--adopt"), "{text}");

    // Adopted: deleted as one of meshctl's own.
    let describe = mock!(Client::describe_stacks).then_output(|| foreign(StackStatus::CreateComplete));
    let del =
        mock!(Client::delete_stack).match_requests(|r| r.stack_name() == Some(ID)).then_output(|| DeleteStackOutput::builder().build());
    let gone = mock!(Client::describe_stacks).then_output(|| foreign(StackStatus::DeleteComplete));
    let c = client(&[&describe, &del, &gone]);
    delete(&c, &spec(), true, &Silent).await.unwrap();
    assert_eq!(del.num_calls(), 1);
}

#[tokio::test]
async fn adopt_updates_a_foreign_stack_and_adds_the_tag() {
    let describe = mock!(Client::describe_stacks).then_output(|| foreign(StackStatus::CreateComplete));
    let create = mock!(Client::create_change_set)
        .match_requests(|r| {
            r.change_set_type() == Some(&ChangeSetType::Update)
                && r.tags().iter().any(|t| t.key() == Some("meshctl:managed-by") && t.value() == Some("meshctl"))
                && r.template_body() == Some("Resources: {}\n")
        })
        .then_output(|| CreateChangeSetOutput::builder().id(CS).stack_id(ID).build());
    let cs = mock!(Client::describe_change_set)
        .then_output(|| DescribeChangeSetOutput::builder().change_set_id(CS).status(ChangeSetStatus::CreateComplete).build());
    let exec = mock!(Client::execute_change_set)
        .match_requests(|r| r.change_set_name() == Some(CS))
        .then_output(|| ExecuteChangeSetOutput::builder().build());
    let done = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::UpdateComplete));
    let c = client(&[&describe, &create, &cs, &exec, &done]);
    assert!(deploy(&c, &spec(), Allowed { recreate_failed: false, adopt: true }, &Silent).await.unwrap());
    assert_eq!((create.num_calls(), exec.num_calls()), (1, 1));
}

// ------------------------------------------------------------------ throttling
//
// The mocked clients run meshctl's own retry policy (aws::retry_config) with a sleep that
// returns at once; aws::testing::backoffs says what the SDK waited before each retry. Throttling
// answers come as AWS sends them (HTTP 400, the query protocol's XML error), so the SDK's own
// deserializer and retry classifier decide.

use crate::aws::{testing, INITIAL_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF};

const THROTTLED: &str = "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\">\
    <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
    <RequestId>5d3c6a1e-0000-4000-8000-0123456789ab</RequestId></ErrorResponse>";

/// The backoff before each retry stays within the standard mode's bounds: at most the
/// initial backoff doubled per retry, capped at the maximum; and it waits at all.
fn assert_backed_off(waits: &[Duration], retries: usize) {
    assert_eq!(waits.len(), retries, "one wait before each retry: {waits:?}");
    for (i, w) in waits.iter().enumerate() {
        let cap = INITIAL_BACKOFF.saturating_mul(1u32 << i.min(16)).min(MAX_BACKOFF);
        assert!(*w <= cap, "wait before retry {}: {w:?} > {cap:?}", i + 1);
    }
    assert!(waits.iter().any(|w| !w.is_zero()), "no backoff at all: {waits:?}");
}

#[tokio::test]
async fn describe_stacks_throttled_for_a_while_is_retried_with_backoff_and_succeeds() {
    testing::backoffs();
    let throttled = 6;
    let rule = mock!(Client::describe_stacks)
        .sequence()
        .http_status(400, Some(THROTTLED.to_string()))
        .times(throttled)
        .output(|| stack(StackStatus::CreateComplete))
        .build();
    let c = client(&[&rule]);
    let live = describe(&c, "eks-cluster-frontend-stack").await.unwrap().expect("the stack, once AWS answered");
    assert_eq!(live.status, Some(StackStatus::CreateComplete));
    assert_eq!(rule.num_calls(), throttled + 1, "{throttled} throttled attempts, then the one that answered");
    assert_backed_off(&testing::backoffs(), throttled);
}

#[tokio::test]
async fn a_call_still_throttled_after_every_attempt_says_rerun_or_lower_concurrency() {
    testing::backoffs();
    let rule = mock!(Client::describe_stacks).sequence().http_status(400, Some(THROTTLED.to_string())).times(MAX_ATTEMPTS as usize).build();
    let c = client(&[&rule]);
    let err = check(&c, &spec()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled);
    assert_eq!(rule.num_calls(), MAX_ATTEMPTS as usize, "every attempt was made");
    assert_backed_off(&testing::backoffs(), MAX_ATTEMPTS as usize - 1);
    assert_eq!(
        err.chain(),
        format!(
            "account frontend (profile frontend): stack eks-cluster-frontend-stack: cannot read it: Throttling: Rate exceeded; throttled by AWS: still throttled after {MAX_ATTEMPTS} attempts with backoff; rerun the command (it continues where it stopped), or lower --concurrency so fewer steps call AWS at once"
        )
    );
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    testing::backoffs();
    let rule = mock!(Client::describe_stacks).sequence().error(not_found).times(3).build();
    let c = client(&[&rule]);
    assert!(describe(&c, "eks-cluster-frontend-stack").await.unwrap().is_none());
    assert_eq!(rule.num_calls(), 1, "ValidationError is an answer, not a reason to retry");
    assert!(testing::backoffs().is_empty(), "no retry");
}

/// The deploy path with every call throttled a few times: the stack is created, each write is
/// made (and counted) once, and meshctl's own polling never had to back off.
#[tokio::test]
async fn a_throttled_deployment_goes_through_and_each_write_counts_once() {
    testing::backoffs();
    let throttled = || mock!(Client::describe_stacks).sequence().http_status(400, Some(THROTTLED.to_string()));
    let absent = throttled().times(2).error(not_found).build();
    let create = mock!(Client::create_change_set)
        .sequence()
        .http_status(400, Some(THROTTLED.to_string()))
        .times(3)
        .output(|| CreateChangeSetOutput::builder().id(CS).stack_id(ID).build())
        .build();
    let computed = mock!(Client::describe_change_set)
        .sequence()
        .http_status(400, Some(THROTTLED.to_string()))
        .output(|| DescribeChangeSetOutput::builder().change_set_id(CS).status(ChangeSetStatus::CreateComplete).build())
        .build();
    let exec = mock!(Client::execute_change_set)
        .sequence()
        .http_status(400, Some(THROTTLED.to_string()))
        .times(2)
        .output(|| ExecuteChangeSetOutput::builder().build())
        .build();
    let done = throttled().output(|| stack(StackStatus::CreateComplete)).build();
    let ctx = testing::ctx(&[("frontend", RuleMode::Sequential, &[&absent, &create, &computed, &exec, &done])]);
    let c = ctx.aws.cloudformation("frontend").await.unwrap();
    assert!(deploy(&c, &spec(), Allowed::default(), &Silent).await.unwrap(), "created");
    let attempts = [absent.num_calls(), create.num_calls(), computed.num_calls(), exec.num_calls(), done.num_calls()];
    assert_eq!(attempts, [3, 4, 2, 3, 2], "DescribeStacks, CreateChangeSet, DescribeChangeSet, ExecuteChangeSet, DescribeStacks");
    assert_eq!(
        ctx.aws.writes().calls(),
        ["CloudFormation:CreateChangeSet", "CloudFormation:ExecuteChangeSet"],
        "a retried write is one write"
    );
    let waits = testing::backoffs();
    assert_eq!(waits.len(), 2 + 3 + 1 + 2 + 1, "one backoff per retry: {waits:?}");
    assert!(waits.iter().all(|w| *w <= MAX_BACKOFF), "{waits:?}");
}
