//! `stacks/orphans`: the stacks meshctl made for this mesh (its `meshctl:mesh` tag) that the
//! configuration no longer names — a removed spoke's base and Transit Gateway stacks, the
//! hub's stack for it, a stack left under an account's former `stack_name`.
//!
//! Found by tag, not by name: every configured account's stacks are listed, and the hub's
//! stack for a spoke carries the spoke's profile and base stack name, so a spoke gone from the
//! configuration is still found (and reached through its profile). `plan` and `status` show
//! them as orphaned; `up` keeps them unless `--prune`; `down` deletes them, before the hub
//! stack whose Transit Gateway their attachments hold.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{clear_vpc, ids};
use crate::aws::cfn::{self, LiveStack, StackSpec};
use crate::aws::Aws;
use crate::engine::{Error, Status, Step, StepMeta, StepRun};
use crate::error::ResultExt;
use crate::names::{hub_peer_stack_name, tgw_stack_name, tgw_stack_of, TAG_ACCOUNT, TAG_SPOKE_PROFILE, TAG_SPOKE_STACK};
use crate::session::Session;

pub fn step(session: &Arc<Session>) -> Arc<dyn Step> {
    let c = &session.config;
    Arc::new(OrphanStacks {
        meta: StepMeta::new(
            ids::orphan_stacks(),
            &c.hub.name,
            "find the stacks of this mesh the configuration no longer names (deleted by `up --prune` and `down`)",
        )
        .needs([ids::stack(&c.hub.name)]),
        session: session.clone(),
    })
}

/// What a stack is, from its parameters (the templates differ in what they take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A spoke's attachment: deleted first (it holds the hub's Transit Gateway).
    Tgw,
    /// The hub's routes, share and SPIRE access for one spoke.
    HubPeer,
    /// VPC and EKS cluster: deleted last.
    Base,
}

fn kind(s: &LiveStack) -> Kind {
    if s.params.contains_key("SpokeName") {
        Kind::HubPeer
    } else if s.params.contains_key("TransitGatewayId") && s.params.contains_key("VpcId") {
        Kind::Tgw
    } else {
        Kind::Base
    }
}

/// One orphaned stack and where it lives.
#[derive(Debug, Clone)]
struct Orphan {
    /// The account role it was made for (its `meshctl:account` tag).
    account: String,
    profile: String,
    stack: LiveStack,
}

impl Orphan {
    fn kind(&self) -> Kind {
        kind(&self.stack)
    }

    fn describe(&self) -> String {
        format!("stack {} (account {}, profile {})", self.stack.name, self.account, self.profile)
    }
}

pub struct OrphanStacks {
    meta: StepMeta,
    session: Arc<Session>,
}

impl OrphanStacks {
    /// The stack names the configuration wants, per profile.
    fn wanted(&self) -> BTreeMap<String, BTreeSet<String>> {
        let c = &self.session.config;
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        out.entry(c.hub.profile.clone()).or_default().insert(c.hub.stack_name.clone());
        for s in &c.spokes {
            out.entry(c.hub.profile.clone()).or_default().insert(hub_peer_stack_name(&c.hub, s));
            out.entry(s.profile.clone()).or_default().extend([s.stack_name.clone(), tgw_stack_name(s)]);
        }
        out
    }

    /// Every orphan, in deletion order (attachments, then the hub's stacks for removed
    /// spokes, then base stacks).
    async fn find(&self) -> Result<Vec<Orphan>, Error> {
        let c = &self.session.config;
        let mesh = &c.hub.stack_name;
        let wanted = self.wanted();
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        let mut orphans: Vec<Orphan> = Vec::new();
        let mut add = |profile: &str, s: LiveStack, orphans: &mut Vec<Orphan>| {
            let known = wanted.get(profile).is_some_and(|w| w.contains(&s.name));
            if !known && seen.insert((profile.to_string(), s.name.clone())) {
                let account = s.tags.get(TAG_ACCOUNT).cloned().unwrap_or_default();
                orphans.push(Orphan { account, profile: profile.to_string(), stack: s });
            }
        };
        // The configured accounts, each profile once.
        let mut listed: BTreeSet<String> = BTreeSet::new();
        for a in c.accounts() {
            if !listed.insert(a.profile.clone()) {
                continue;
            }
            let client = self.session.aws.cloudformation(&a.name).await?;
            let stacks = cfn::list_mesh(&client, mesh)
                .await
                .context(format!("account {} (profile {}): cannot list its stacks", a.name, a.profile))?;
            for s in stacks {
                add(&a.profile, s, &mut orphans);
            }
        }
        // Removed spokes, from the tags of the hub's stacks for them.
        let removed: Vec<(String, String, String)> = orphans
            .iter()
            .filter(|o| o.kind() == Kind::HubPeer)
            .filter_map(|o| {
                let t = &o.stack.tags;
                Some((o.stack.params.get("SpokeName")?.clone(), t.get(TAG_SPOKE_PROFILE)?.clone(), t.get(TAG_SPOKE_STACK)?.clone()))
            })
            .collect();
        for (spoke, profile, base) in removed {
            let aws = self.session.aws.other(&spoke, &profile);
            let client = aws.cloudformation(&spoke).await?;
            for name in [tgw_stack_of(&base), base] {
                let live = cfn::describe(&client, &name).await.context(format!(
                    "account {spoke} (profile {profile}, removed from the configuration; named by the tags of the hub's stack for it): stack {name}: cannot read it; configure that profile, or add the spoke back and run `meshctl down`"
                ))?;
                if let Some(s) = live.filter(|s| cfn::is_ours(s) && s.phase() != cfn::StackPhase::Gone) {
                    add(&profile, s, &mut orphans);
                }
            }
        }
        orphans.sort_by_key(Orphan::kind);
        Ok(orphans)
    }

    /// Deletes the orphans in order, each base stack after clearing what Kubernetes left in
    /// its VPC (with `--yes`, as for configured stacks).
    async fn delete(&self, run: &StepRun) -> Result<(), Error> {
        let orphans = self.find().await?;
        // One SDK configuration per account, however many of its stacks go.
        let mut accounts: BTreeMap<(String, String), Aws> = BTreeMap::new();
        for o in &orphans {
            let aws =
                accounts.entry((o.account.clone(), o.profile.clone())).or_insert_with(|| self.session.aws.other(&o.account, &o.profile));
            let client = aws.cloudformation(&o.account).await?;
            let spec = StackSpec {
                account: o.account.clone(),
                profile: o.profile.clone(),
                name: o.stack.name.clone(),
                body: String::new(),
                params: BTreeMap::new(),
                tags: BTreeMap::new(),
            };
            run.progress(format!("deleting orphaned {}", o.describe()));
            if o.kind() == Kind::Base {
                let cluster = o.stack.params.get("ClusterName").cloned().unwrap_or_default();
                clear_vpc(aws, &client, &spec, &cluster, run).await?;
            }
            cfn::delete(&client, &spec, false, run).await.context(format!("orphaned {}", o.describe()))?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step for OrphanStacks {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, run: &StepRun) -> Result<Status, Error> {
        let orphans = self.find().await?;
        if orphans.is_empty() {
            return Ok(if run.mode.reversed() { Status::Missing } else { Status::UpToDate });
        }
        Ok(Status::Orphaned(orphans.iter().map(Orphan::describe).collect::<Vec<_>>().join(", ")))
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        self.delete(run).await
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        self.delete(run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(params: &[&str]) -> LiveStack {
        LiveStack { params: params.iter().map(|p| (p.to_string(), String::new())).collect(), ..Default::default() }
    }

    #[test]
    fn stacks_are_told_apart_by_their_parameters_and_deleted_attachments_first() {
        assert_eq!(kind(&stack(&["ClusterName", "SpokeName", "TransitGatewayId"])), Kind::HubPeer);
        assert_eq!(kind(&stack(&["ClusterName", "TransitGatewayId", "VpcId"])), Kind::Tgw);
        assert_eq!(kind(&stack(&["ClusterName", "VpcCidr"])), Kind::Base);
        assert_eq!(kind(&stack(&["ClusterName", "VpcCidr", "TransitGatewayName"])), Kind::Base, "the hub's base stack");
        assert!(Kind::Tgw < Kind::HubPeer && Kind::HubPeer < Kind::Base);
    }
}
