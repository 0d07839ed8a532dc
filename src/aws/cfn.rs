//! CloudFormation stacks, the way meshctl deploys them: compare the live stack with the wanted
//! template, parameters and tags; create or update through a change set ("no changes" is up to
//! date and the empty change set is deleted); wait with backoff, showing the stack's status;
//! on failure say which resources failed and why, and the command that shows more. A stack of
//! the wanted name that meshctl did not create (no ownership tag) is neither updated nor
//! deleted unless the caller adopts it.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudformation::types::{Capability, ChangeSetStatus, ChangeSetType, Parameter, StackStatus, Tag, TemplateStage};
use aws_sdk_cloudformation::Client;

use super::Backoff;
use crate::error::{Error, ErrorKind, ResultExt};
use crate::names::{MANAGED_BY, TAG_MANAGED_BY, TAG_MESH};
use crate::state::{Progress, Status};

/// First interval between two polls of a stack or change set, and the longest one.
pub const POLL_FIRST: Duration = Duration::from_secs(5);
pub const POLL_MAX: Duration = Duration::from_secs(30);

/// A stack as meshctl wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    /// The account role (`shared`, `frontend`, ...), for messages.
    pub account: String,
    /// The account's profile, for the commands messages suggest.
    pub profile: String,
    pub name: String,
    pub body: String,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl StackSpec {
    fn who(&self) -> String {
        format!("account {} (profile {}): stack {}", self.account, self.profile, self.name)
    }

    /// The console-free command that shows what CloudFormation did.
    pub fn events_hint(&self) -> String {
        format!("see `aws cloudformation describe-stack-events --stack-name {} --profile {}`", self.name, self.profile)
    }
}

/// What a stack status means for meshctl. Derived by an exhaustive match, so a status AWS
/// adds later is reported rather than misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackPhase {
    /// Settled and usable: the last operation succeeded (or rolled back to a usable state).
    Stable,
    /// An operation is running: wait for it.
    InProgress,
    /// Creation failed and was rolled back: only deleting it helps.
    RollbackComplete,
    /// Settled in a failed state that needs a human (or a delete).
    Failed,
    /// Created by a CREATE change set that was never executed: no resources yet.
    Review,
    /// Deleted.
    Gone,
    /// A status this version of meshctl does not know.
    Unknown,
}

pub fn classify(status: &StackStatus) -> StackPhase {
    match status {
        StackStatus::CreateComplete
        | StackStatus::UpdateComplete
        | StackStatus::ImportComplete
        | StackStatus::UpdateRollbackComplete
        | StackStatus::ImportRollbackComplete => StackPhase::Stable,
        StackStatus::CreateInProgress
        | StackStatus::DeleteInProgress
        | StackStatus::ImportInProgress
        | StackStatus::ImportRollbackInProgress
        | StackStatus::RollbackInProgress
        | StackStatus::UpdateCompleteCleanupInProgress
        | StackStatus::UpdateInProgress
        | StackStatus::UpdateRollbackCompleteCleanupInProgress
        | StackStatus::UpdateRollbackInProgress => StackPhase::InProgress,
        StackStatus::RollbackComplete => StackPhase::RollbackComplete,
        StackStatus::CreateFailed
        | StackStatus::DeleteFailed
        | StackStatus::ImportRollbackFailed
        | StackStatus::RollbackFailed
        | StackStatus::UpdateFailed
        | StackStatus::UpdateRollbackFailed => StackPhase::Failed,
        StackStatus::ReviewInProgress => StackPhase::Review,
        StackStatus::DeleteComplete => StackPhase::Gone,
        _ => StackPhase::Unknown,
    }
}

/// The live stack, as far as meshctl reads it.
#[derive(Debug, Clone, Default)]
pub struct LiveStack {
    pub id: String,
    pub name: String,
    pub status: Option<StackStatus>,
    pub reason: Option<String>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
}

impl LiveStack {
    pub fn phase(&self) -> StackPhase {
        self.status.as_ref().map(classify).unwrap_or(StackPhase::Unknown)
    }
    pub fn status_str(&self) -> &str {
        self.status.as_ref().map(|s| s.as_str()).unwrap_or("UNKNOWN")
    }
}

/// Whether meshctl created the stack: it carries the ownership tag meshctl puts on every stack.
pub fn is_ours(live: &LiveStack) -> bool {
    live.tags.get(TAG_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
}

/// What a caller allows [`deploy`] and [`delete`] beyond creating, updating and deleting
/// meshctl's own stacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Delete a stack stuck in ROLLBACK_COMPLETE and create it again (`--yes`).
    pub recreate_failed: bool,
    /// Update or delete a stack of the wanted name that meshctl did not create (`--adopt`).
    pub adopt: bool,
}

/// Refuses to `what` (update, delete) a stack meshctl did not create, unless adopting it: a
/// stack of the same name may hold someone else's VPC or cluster.
pub fn ensure_ours(spec: &StackSpec, live: &LiveStack, adopt: bool, what: &str) -> Result<(), Error> {
    if adopt || is_ours(live) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::NotOurs,
        format!("{}: exists but was not created by meshctl (it has no {TAG_MANAGED_BY} tag), so meshctl will not {what} it", spec.who()),
    )
    .hint(format!("if it is meant to be meshctl's, rerun with --adopt to take it over (`up --adopt` updates it to meshctl's template and tags it, `down --adopt` deletes it); else set another stack_name for account {}", spec.account)))
}

/// The drift reason of a stack meshctl did not create.
pub fn foreign_reason() -> String {
    format!("not created by meshctl (no {TAG_MANAGED_BY} tag); `meshctl up --adopt` takes it over")
}

/// Reads a stack; `None` when it does not exist.
pub async fn describe(client: &Client, name: &str) -> Result<Option<LiveStack>, Error> {
    let out = match client.describe_stacks().stack_name(name).send().await {
        Ok(o) => o,
        Err(e) => {
            let e = Error::from(e);
            if e.is(ErrorKind::NotFound) {
                return Ok(None);
            }
            return Err(e);
        }
    };
    Ok(out.stacks.unwrap_or_default().into_iter().next().map(live))
}

/// Every stack in the client's account that meshctl made for the mesh `mesh` (its
/// [`TAG_MESH`] tag), deleted ones left out.
pub async fn list_mesh(client: &Client, mesh: &str) -> Result<Vec<LiveStack>, Error> {
    let mut out = Vec::new();
    let mut pages = client.describe_stacks().into_paginator().send();
    while let Some(page) = pages.next().await {
        for s in page?.stacks.unwrap_or_default().into_iter().map(live) {
            if is_ours(&s) && s.tags.get(TAG_MESH).map(String::as_str) == Some(mesh) && s.phase() != StackPhase::Gone {
                out.push(s);
            }
        }
    }
    Ok(out)
}

fn live(s: aws_sdk_cloudformation::types::Stack) -> LiveStack {
    LiveStack {
        id: s.stack_id.unwrap_or_default(),
        name: s.stack_name.unwrap_or_default(),
        status: s.stack_status,
        reason: s.stack_status_reason,
        params: s
            .parameters
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.parameter_key?, p.parameter_value.unwrap_or_default())))
            .collect(),
        tags: s.tags.unwrap_or_default().into_iter().filter_map(|t| Some((t.key?, t.value.unwrap_or_default()))).collect(),
        outputs: s
            .outputs
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| Some((o.output_key?, o.output_value.unwrap_or_default())))
            .collect(),
    }
}

/// How the live stack differs from the spec; `None` when it matches. Reads the template
/// CloudFormation stored (GetTemplate, Original stage).
pub async fn diff(client: &Client, spec: &StackSpec, live: &LiveStack) -> Result<Option<String>, Error> {
    let mut why = Vec::new();
    for (k, want) in &spec.params {
        match live.params.get(k) {
            Some(have) if have == want => {}
            Some(have) => why.push(format!("parameter {k}: {have} → {want}")),
            None => why.push(format!("parameter {k}: (none) → {want}")),
        }
    }
    for (k, want) in &spec.tags {
        if live.tags.get(k) != Some(want) {
            why.push(format!("tag {k}"));
        }
    }
    let tpl = client.get_template().stack_name(&live.id).template_stage(TemplateStage::Original).send().await?;
    if !same_template(tpl.template_body.as_deref().unwrap_or_default(), &spec.body) {
        why.push("template changed".into());
    }
    Ok((!why.is_empty()).then(|| why.join("; ")))
}

/// Whether two template bodies deploy the same thing. Comments, formatting and the
/// template-level `Metadata` section are not compared: CloudFormation refuses an update that
/// changes only those ("no changes"), so treating them as drift would make every later `up`
/// create and delete an empty change set. Bodies that do not parse are compared as text.
pub fn same_template(live: &str, want: &str) -> bool {
    fn semantic(body: &str) -> Option<serde_yaml_ng::Value> {
        let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(body).ok()?;
        if let Some(m) = v.as_mapping_mut() {
            m.remove("Metadata");
        }
        Some(v)
    }
    match (semantic(live), semantic(want)) {
        (Some(a), Some(b)) => a == b,
        _ => live.trim_end() == want.trim_end(),
    }
}

/// The check of a stack step: live state against the spec.
pub async fn check(client: &Client, spec: &StackSpec) -> Result<Status, Error> {
    let live = describe(client, &spec.name).await.context(format!("{}: cannot read it", spec.who()))?;
    let Some(live) = live else { return Ok(Status::Missing) };
    Ok(match live.phase() {
        StackPhase::Gone => Status::Missing,
        _ if !is_ours(&live) => Status::Drifted(foreign_reason()),
        // A change set of an interrupted run that was never executed: no resources, but the
        // stack is there (`down` must delete it, `up` replaces it).
        StackPhase::Review => Status::Drifted(review_reason()),
        StackPhase::RollbackComplete => {
            Status::Drifted("ROLLBACK_COMPLETE: its creation failed; `meshctl up --yes` deletes and recreates it".into())
        }
        StackPhase::Failed | StackPhase::Unknown => {
            Status::Drifted(format!("{}: {}", live.status_str(), live.reason.clone().unwrap_or_default()))
        }
        StackPhase::InProgress => Status::Drifted(format!("{}: an operation is running", live.status_str())),
        StackPhase::Stable => match diff(client, spec, &live).await.context(format!("{}: cannot read its template", spec.who()))? {
            None => Status::UpToDate,
            Some(why) => Status::Drifted(why),
        },
    })
}

/// The drift reason of a stack left in REVIEW_IN_PROGRESS.
pub fn review_reason() -> String {
    "REVIEW_IN_PROGRESS: a change set of an interrupted run was never executed; `meshctl up` deletes the empty stack and creates it again"
        .into()
}

/// Failed events of the stack's latest operation, oldest first: `Logical (Type): reason`. When
/// the events cannot be read, the one line says why.
pub async fn failure_reasons(client: &Client, stack: &str) -> Vec<String> {
    let out = match client.describe_stack_events().stack_name(stack).send().await {
        Ok(out) => out,
        Err(e) => return vec![format!("(its events could not be read: {})", Error::from(e))],
    };
    let mut reasons = Vec::new();
    for e in out.stack_events.unwrap_or_default() {
        let status = e.resource_status.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default();
        let is_stack = e.resource_type.as_deref() == Some("AWS::CloudFormation::Stack");
        if is_stack && e.resource_status_reason.as_deref() == Some("User Initiated") {
            break; // the start of the latest operation
        }
        if status.ends_with("_FAILED") {
            if let Some(r) = e.resource_status_reason.filter(|r| !r.is_empty() && !r.contains("Resource creation cancelled")) {
                reasons.push(format!("{} ({}): {r}", e.logical_resource_id.unwrap_or_default(), e.resource_type.unwrap_or_default()));
            }
        }
        if reasons.len() >= 5 {
            break;
        }
    }
    reasons.reverse();
    reasons
}

async fn failure(client: &Client, spec: &StackSpec, live: &LiveStack, what: &str) -> Error {
    let reasons = failure_reasons(client, if live.id.is_empty() { &spec.name } else { &live.id }).await;
    let detail =
        if reasons.is_empty() { live.reason.clone().unwrap_or_else(|| "no failed resource events".into()) } else { reasons.join("; ") };
    Error::other(format!("{}: {what} ended in {}: {detail}; {}", spec.who(), live.status_str(), spec.events_hint()))
}

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Any settled state (before starting an operation).
    Settled,
    /// A successful create or update.
    Success,
    /// The stack is gone.
    Deleted,
}

/// Polls the stack until it reaches the goal: first read at once, then every 5 s growing
/// to 30 s (doubling on throttling), showing its status on the progress line.
async fn wait(client: &Client, spec: &StackSpec, stack_ref: &str, goal: Goal, cx: &dyn Progress) -> Result<Option<LiveStack>, Error> {
    let mut backoff = Backoff::new(POLL_FIRST, POLL_MAX);
    loop {
        let mut throttled = false;
        match client.describe_stacks().stack_name(stack_ref).send().await {
            Ok(out) => {
                let Some(s) = out.stacks.unwrap_or_default().into_iter().next() else {
                    if goal == Goal::Deleted {
                        return Ok(None);
                    }
                    return Err(Error::new(ErrorKind::NotFound, format!("{}: disappeared while waiting", spec.who())));
                };
                let live = LiveStack {
                    id: s.stack_id.unwrap_or_default(),
                    status: s.stack_status,
                    reason: s.stack_status_reason,
                    ..Default::default()
                };
                cx.progress(format!("{} {}", live.status_str(), spec.name));
                match (live.phase(), goal) {
                    (StackPhase::InProgress, _) => {}
                    (StackPhase::Gone, Goal::Deleted) => return Ok(None),
                    (_, Goal::Settled) => return Ok(Some(live)),
                    (StackPhase::Stable, Goal::Success) => {
                        // UPDATE_ROLLBACK_COMPLETE is settled but means the update failed.
                        if live.status == Some(StackStatus::UpdateRollbackComplete) {
                            return Err(failure(client, spec, &live, "the update").await);
                        }
                        return Ok(Some(live));
                    }
                    (_, Goal::Success) => return Err(failure(client, spec, &live, "the deployment").await),
                    (_, Goal::Deleted) => return Err(failure(client, spec, &live, "the deletion").await),
                }
            }
            Err(e) => {
                let e = Error::from(e);
                if goal == Goal::Deleted && e.is(ErrorKind::NotFound) {
                    return Ok(None);
                }
                if !e.is(ErrorKind::Throttled) {
                    return Err(e.context(format!("{}: cannot read it while waiting", spec.who())));
                }
                throttled = true;
                cx.progress(format!("throttled, backing off ({})", spec.name));
            }
        }
        if cx.cancelled() {
            return Err(Error::other(format!(
                "{}: aborted while waiting; the operation goes on in CloudFormation; {}",
                spec.who(),
                spec.events_hint()
            )));
        }
        backoff.wait(throttled).await;
    }
}

/// Deletes the stack and waits until it is gone. Absent is success; a stack meshctl did not
/// create is refused unless `adopt`.
pub async fn delete(client: &Client, spec: &StackSpec, adopt: bool, cx: &dyn Progress) -> Result<(), Error> {
    let live = describe(client, &spec.name).await.context(format!("{}: cannot read it", spec.who()))?;
    let Some(live) = live else { return Ok(()) };
    if live.phase() == StackPhase::Gone {
        return Ok(());
    }
    ensure_ours(spec, &live, adopt, "delete")?;
    if live.phase() == StackPhase::InProgress {
        wait(client, spec, &live.id, Goal::Settled, cx).await?;
    }
    cx.progress(format!("DELETE_IN_PROGRESS {}", spec.name));
    client.delete_stack().stack_name(&live.id).send().await.context(format!("{}: DeleteStack ({})", spec.who(), spec.events_hint()))?;
    wait(client, spec, &live.id, Goal::Deleted, cx).await?;
    Ok(())
}

fn no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

/// Creates or updates the stack through a change set and waits for it. Returns `false`
/// when CloudFormation found nothing to change (the empty change set is deleted). A stack in
/// ROLLBACK_COMPLETE is deleted and created again only with `allowed.recreate_failed`
/// (`--yes`); a stack meshctl did not create is updated (and so tagged) only with
/// `allowed.adopt`.
pub async fn deploy(client: &Client, spec: &StackSpec, allowed: Allowed, cx: &dyn Progress) -> Result<bool, Error> {
    let who = spec.who();
    let mut live = describe(client, &spec.name).await.context(format!("{who}: cannot read it"))?;
    if let Some(l) = live.as_ref().filter(|l| l.phase() != StackPhase::Gone) {
        ensure_ours(spec, l, allowed.adopt, "update")?;
    }
    if let Some(l) = &live {
        if l.phase() == StackPhase::InProgress {
            wait(client, spec, &l.id, Goal::Settled, cx).await?;
            live = describe(client, &spec.name).await.context(format!("{who}: cannot read it"))?;
        }
    }
    let kind = match &live {
        None => ChangeSetType::Create,
        Some(l) => match l.phase() {
            StackPhase::Gone => ChangeSetType::Create,
            StackPhase::Review => {
                // An interrupted run created it with a CREATE change set and never executed it:
                // it holds no resources. Deleting it (with its change sets) and starting over
                // leaves one stack and one change set, whatever the earlier run had done.
                cx.progress(format!("deleting {} (REVIEW_IN_PROGRESS: an earlier run's change set was never executed)", spec.name));
                delete(client, spec, allowed.adopt, cx).await?;
                ChangeSetType::Create
            }
            StackPhase::Stable => ChangeSetType::Update,
            StackPhase::RollbackComplete => {
                if !allowed.recreate_failed {
                    return Err(failure(client, spec, l, "its creation").await.hint(
                        "it must be deleted before it can be created again: rerun with --yes to let meshctl delete and recreate it",
                    ));
                }
                cx.progress(format!("deleting {} (ROLLBACK_COMPLETE) to recreate it", spec.name));
                delete(client, spec, allowed.adopt, cx).await?;
                ChangeSetType::Create
            }
            StackPhase::Failed | StackPhase::Unknown | StackPhase::InProgress => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{who}: is {} ({}); fix or delete it first; {}",
                        l.status_str(),
                        l.reason.clone().unwrap_or_default(),
                        spec.events_hint()
                    ),
                ))
            }
        },
    };
    let cs_name = format!("meshctl-{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let params: Vec<Parameter> =
        spec.params.iter().map(|(k, v)| Parameter::builder().parameter_key(k).parameter_value(v).build()).collect();
    let tags: Vec<Tag> = spec.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    cx.progress(format!("creating change set {cs_name} ({})", kind.as_str()));
    let created = client
        .create_change_set()
        .stack_name(&spec.name)
        .change_set_name(&cs_name)
        .change_set_type(kind.clone())
        .template_body(&spec.body)
        .set_parameters(Some(params))
        .set_tags(Some(tags))
        .capabilities(Capability::CapabilityNamedIam)
        .description("meshctl up")
        .send()
        .await
        .context(format!("{who}: CreateChangeSet"))?;
    let cs_id = created.id.unwrap_or(cs_name);
    // Wait for the change set to be computed.
    let mut backoff = Backoff::new(POLL_FIRST, POLL_MAX);
    loop {
        let mut throttled = false;
        match client.describe_change_set().change_set_name(&cs_id).stack_name(&spec.name).send().await {
            Ok(cs) => {
                let status = cs.status.clone();
                let reason = cs.status_reason.clone().unwrap_or_default();
                match status {
                    Some(ChangeSetStatus::CreateComplete) => break,
                    Some(ChangeSetStatus::Failed) if no_changes(&reason) => {
                        client
                            .delete_change_set()
                            .change_set_name(&cs_id)
                            .stack_name(&spec.name)
                            .send()
                            .await
                            .context(format!("{who}: DeleteChangeSet of the empty change set"))?;
                        return Ok(false);
                    }
                    Some(ChangeSetStatus::Failed) | Some(ChangeSetStatus::DeleteFailed) => {
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            format!(
                                "{who}: change set {cs_id} failed: {reason}; see `aws cloudformation describe-change-set --change-set-name {cs_id} --profile {}`",
                                spec.profile
                            ),
                        ))
                    }
                    Some(ChangeSetStatus::DeleteComplete) => {
                        return Err(Error::new(ErrorKind::Conflict, format!("{who}: change set {cs_id} was deleted by someone else")))
                    }
                    Some(ChangeSetStatus::CreateInProgress)
                    | Some(ChangeSetStatus::CreatePending)
                    | Some(ChangeSetStatus::DeleteInProgress)
                    | Some(ChangeSetStatus::DeletePending)
                    | None => cx.progress(format!("change set {}", status.as_ref().map(|s| s.as_str()).unwrap_or("PENDING"))),
                    Some(other) => cx.progress(format!("change set {}", other.as_str())),
                }
            }
            Err(e) => {
                let e = Error::from(e);
                if !e.is(ErrorKind::Throttled) {
                    return Err(e.context(format!("{who}: DescribeChangeSet")));
                }
                throttled = true;
                cx.progress(format!("throttled, backing off ({})", spec.name));
            }
        }
        if cx.cancelled() {
            return Err(Error::other(format!("{who}: aborted before the change set {cs_id} was executed")));
        }
        backoff.wait(throttled).await;
    }
    cx.progress(format!("{}_IN_PROGRESS {}", if kind == ChangeSetType::Create { "CREATE" } else { "UPDATE" }, spec.name));
    client
        .execute_change_set()
        .change_set_name(&cs_id)
        .stack_name(&spec.name)
        .send()
        .await
        .context(format!("{who}: ExecuteChangeSet ({})", spec.events_hint()))?;
    wait(client, spec, &spec.name, Goal::Success, cx).await?;
    Ok(true)
}

/// The outputs of a stack that must exist (for steps that build on it).
pub async fn outputs(client: &Client, account: &str, profile: &str, stack: &str) -> Result<BTreeMap<String, String>, Error> {
    let live = describe(client, stack).await.context(format!("account {account} (profile {profile}): stack {stack}: cannot read it"))?;
    match live {
        Some(l) if l.phase() == StackPhase::Stable => Ok(l.outputs),
        Some(l) => Err(Error::new(
            ErrorKind::Conflict,
            format!("account {account} (profile {profile}): stack {stack} is {}; run `meshctl up --only stacks` first", l.status_str()),
        )),
        None => Err(Error::new(
            ErrorKind::NotFound,
            format!("account {account} (profile {profile}): stack {stack} does not exist; run `meshctl up --only stacks` first"),
        )),
    }
}

/// One output of a stack's outputs, or an error naming it.
pub fn output<'a>(outputs: &'a BTreeMap<String, String>, account: &str, stack: &str, key: &str) -> Result<&'a str, Error> {
    outputs.get(key).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "account {account}: stack {stack} has no output {key} (outputs: {}); was it created by this meshctl's template?",
                outputs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests;
