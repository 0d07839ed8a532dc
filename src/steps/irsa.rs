//! IAM roles for service accounts (IRSA), per cluster: the IAM OIDC provider of the cluster's
//! issuer and one role that a given service account of that cluster may assume, with the
//! managed policies it needs. Used by any phase or provider whose pods call AWS.

use std::sync::Arc;

use crate::engine::{Error, Status, Step, StepMeta, StepRun};
use crate::error::{ErrorKind, ResultExt};
use crate::names::{partition, MANAGED_BY, TAG_CLUSTER, TAG_MANAGED_BY};
use crate::session::Session;

/// The audience of IRSA tokens.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// SHA-1 thumbprint of the root CA of the EKS OIDC endpoints (IAM ignores it for them today,
/// but the API still takes one).
const OIDC_THUMBPRINT: &str = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280";

/// The role a service account gets.
#[derive(Debug, Clone)]
pub struct IrsaRole {
    /// The account (and its cluster) the role lives in.
    pub account: String,
    pub role: String,
    pub namespace: String,
    pub service_account: String,
    /// AWS managed policy names (`AWSAppMeshFullAccess`).
    pub policies: Vec<String>,
    /// What the role is for, in its IAM description.
    pub purpose: String,
}

/// The trust policy of a role: web identity from the cluster's OIDC provider, only for that
/// service account and the STS audience.
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

/// What the step wants in the account, derived from the live cluster.
/// A role as IAM has it.
struct LiveRole {
    trust: Option<serde_json::Value>,
    ours: bool,
}

struct Want {
    provider_arn: String,
    issuer_url: String,
    trust: serde_json::Value,
    policies: Vec<String>,
}

/// One IRSA role and the OIDC provider it trusts.
pub struct IrsaStep {
    meta: StepMeta,
    session: Arc<Session>,
    role: IrsaRole,
}

impl IrsaStep {
    pub fn step(meta: StepMeta, session: &Arc<Session>, role: IrsaRole) -> Arc<dyn Step> {
        Arc::new(IrsaStep { meta, session: session.clone(), role })
    }

    fn who(&self) -> String {
        crate::aws::who(&self.session.aws, &self.role.account)
    }

    fn cluster(&self) -> &str {
        self.session.config.account(&self.role.account).map(|a| a.cluster_name.as_str()).unwrap_or_default()
    }

    async fn iam(&self) -> Result<aws_sdk_iam::Client, Error> {
        Ok(self.session.aws.iam(&self.role.account).await?)
    }

    /// The cluster's issuer from EKS DescribeCluster; `None` when the cluster is gone.
    async fn issuer(&self) -> Result<Option<String>, Error> {
        let eks = self.session.aws.eks(&self.role.account).await?;
        match eks.describe_cluster().name(self.cluster()).send().await {
            Ok(out) => Ok(out.cluster.and_then(|c| c.identity).and_then(|i| i.oidc).and_then(|o| o.issuer)),
            Err(e) => {
                let e = Error::from(e);
                if e.is(ErrorKind::NotFound) {
                    Ok(None)
                } else {
                    Err(e.context(format!("{}: EKS DescribeCluster {}", self.who(), self.cluster())))
                }
            }
        }
    }

    fn provider_arn(&self, account_id: &str, issuer: &str) -> String {
        format!("arn:{}:iam::{account_id}:oidc-provider/{}", partition(self.session.aws.region()), issuer.trim_start_matches("https://"))
    }

    async fn want(&self) -> Result<Want, Error> {
        let issuer = self.issuer().await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "{}: EKS cluster {} has no OIDC issuer (does it exist? run `meshctl up --only stacks`)",
                    self.who(),
                    self.cluster()
                ),
            )
        })?;
        let host = issuer.trim_start_matches("https://").to_string();
        let id = self.session.aws.account_id(&self.role.account).await?;
        let provider_arn = self.provider_arn(&id, &issuer);
        let part = partition(self.session.aws.region());
        Ok(Want {
            trust: trust_policy(&provider_arn, &host, &self.role.namespace, &self.role.service_account),
            provider_arn,
            issuer_url: format!("https://{host}"),
            policies: self.role.policies.iter().map(|p| format!("arn:{part}:iam::aws:policy/{p}")).collect(),
        })
    }

    /// ARNs of the managed policies attached to the role.
    async fn attached_policies(&self, iam: &aws_sdk_iam::Client) -> Result<Vec<String>, Error> {
        let out = iam.list_attached_role_policies().role_name(&self.role.role).send().await.context(format!(
            "{}: ListAttachedRolePolicies {}",
            self.who(),
            self.role.role
        ))?;
        Ok(out.attached_policies.unwrap_or_default().into_iter().filter_map(|p| p.policy_arn).collect())
    }

    async fn oidc_provider(&self, iam: &aws_sdk_iam::Client, arn: &str) -> Result<Option<Vec<String>>, Error> {
        match iam.get_open_id_connect_provider().open_id_connect_provider_arn(arn).send().await {
            Ok(p) => Ok(Some(p.client_id_list.unwrap_or_default())),
            Err(e) => not_found_is_none(e.into()).context(format!("{}: GetOpenIDConnectProvider {arn}", self.who())),
        }
    }

    async fn live_trust(&self, iam: &aws_sdk_iam::Client) -> Result<Option<Option<serde_json::Value>>, Error> {
        Ok(self.live_role(iam).await?.map(|r| r.trust))
    }

    /// The role as it is: its trust policy and whether meshctl created it (its
    /// `meshctl:managed-by` tag); `None` when it does not exist.
    async fn live_role(&self, iam: &aws_sdk_iam::Client) -> Result<Option<LiveRole>, Error> {
        match iam.get_role().role_name(&self.role.role).send().await {
            Ok(r) => Ok(r.role.map(|r| LiveRole {
                ours: r.tags().iter().any(|t| t.key() == TAG_MANAGED_BY && t.value() == MANAGED_BY),
                trust: r.assume_role_policy_document.as_deref().and_then(decode_policy),
            })),
            Err(e) => not_found_is_none(e.into()).context(format!("{}: GetRole {}", self.who(), self.role.role)),
        }
    }

    /// Refuses to `what` (update, delete) a role of the wanted name that meshctl did not
    /// create, unless adopting it: it may be someone else's, with their permissions.
    fn ensure_ours(&self, live: &LiveRole, adopt: bool, what: &str) -> Result<(), Error> {
        if live.ours || adopt {
            return Ok(());
        }
        let role = &self.role.role;
        Err(Error::new(
            ErrorKind::NotOurs,
            format!("{}: IAM role {role} exists but was not created by meshctl (no {TAG_MANAGED_BY} tag), so meshctl will not {what} it", self.who()),
        )
        .hint(format!(
            "if it is meant to be meshctl's, rerun with --adopt (`up --adopt` sets meshctl's trust policy and tag on it, `down --adopt` deletes it); else delete or rename role {role} in account {}",
            self.role.account
        )))
    }

    /// Differences between live IAM and `want`: `None` when nothing exists, else the
    /// reasons (empty when up to date).
    async fn differences(&self, iam: &aws_sdk_iam::Client, want: &Want) -> Result<Option<Vec<String>>, Error> {
        let mut why = Vec::new();
        let provider = self.oidc_provider(iam, &want.provider_arn).await?;
        match &provider {
            None => why.push(format!("OIDC provider {} missing", want.provider_arn)),
            Some(ids) if !ids.iter().any(|c| c == STS_AUDIENCE) => why.push(format!("OIDC provider lacks audience {STS_AUDIENCE}")),
            Some(_) => {}
        }
        let Some(trust) = self.live_trust(iam).await? else {
            if provider.is_none() {
                return Ok(None);
            }
            why.push(format!("role {} missing", self.role.role));
            return Ok(Some(why));
        };
        if trust.as_ref() != Some(&want.trust) {
            why.push(format!("role {} trust policy differs", self.role.role));
        }
        let have = self.attached_policies(iam).await?;
        why.extend(want.policies.iter().filter(|p| !have.contains(p)).map(|p| format!("policy {p} not attached")));
        Ok(Some(why))
    }
}

/// `Ok(None)` for a not-found error, the error otherwise.
fn not_found_is_none<T>(e: Error) -> Result<Option<T>, Error> {
    if e.is(ErrorKind::NotFound) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// `Ok(())` for a not-found error (already gone), the error otherwise.
fn gone_is_done(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
        other => other,
    }
}

fn tag(k: &str, v: &str) -> aws_sdk_iam::types::Tag {
    aws_sdk_iam::types::Tag::builder().key(k).value(v).build().expect("key and value set")
}

#[async_trait::async_trait]
impl Step for IrsaStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _run: &StepRun) -> Result<Status, Error> {
        let iam = self.iam().await?;
        if self.issuer().await?.is_none() {
            // No cluster: nothing can be wanted yet; a role left from an earlier cluster is
            // reported so that `down` removes it.
            return Ok(match self.live_trust(&iam).await? {
                Some(_) => Status::Drifted(format!("cluster {} is gone but role {} is left", self.cluster(), self.role.role)),
                None => Status::Missing,
            });
        }
        if self.live_role(&iam).await?.is_some_and(|r| !r.ours) {
            return Ok(Status::Drifted(format!(
                "role {} was not created by meshctl (no {TAG_MANAGED_BY} tag); `meshctl up --adopt` takes it over",
                self.role.role
            )));
        }
        let want = self.want().await?;
        Ok(match self.differences(&iam, &want).await? {
            None => Status::Missing,
            Some(why) if why.is_empty() => Status::UpToDate,
            Some(why) => Status::Drifted(why.join("; ")),
        })
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let w = self.who();
        let want = self.want().await?;
        let iam = self.iam().await?;
        let role = &self.role.role;
        match self.oidc_provider(&iam, &want.provider_arn).await? {
            Some(ids) if ids.iter().any(|c| c == STS_AUDIENCE) => {}
            Some(_) => {
                iam.add_client_id_to_open_id_connect_provider()
                    .open_id_connect_provider_arn(&want.provider_arn)
                    .client_id(STS_AUDIENCE)
                    .send()
                    .await
                    .context(format!("{w}: AddClientIDToOpenIDConnectProvider"))?;
            }
            None => {
                iam.create_open_id_connect_provider()
                    .url(&want.issuer_url)
                    .client_id_list(STS_AUDIENCE)
                    .thumbprint_list(OIDC_THUMBPRINT)
                    .tags(tag(TAG_MANAGED_BY, MANAGED_BY))
                    .tags(tag(TAG_CLUSTER, self.cluster()))
                    .send()
                    .await
                    .context(format!("{w}: CreateOpenIDConnectProvider {}", want.issuer_url))?;
            }
        }
        let trust = want.trust.to_string();
        let live = self.live_role(&iam).await?;
        if let Some(live) = &live {
            self.ensure_ours(live, run.adopt, "update")?;
            if !live.ours {
                iam.tag_role()
                    .role_name(role)
                    .tags(tag(TAG_MANAGED_BY, MANAGED_BY))
                    .tags(tag(TAG_CLUSTER, self.cluster()))
                    .send()
                    .await
                    .context(format!("{w}: TagRole {role} (adopting it)"))?;
            }
        }
        match live.map(|l| l.trust) {
            Some(live) if live.as_ref() == Some(&want.trust) => {}
            Some(_) => {
                iam.update_assume_role_policy()
                    .role_name(role)
                    .policy_document(&trust)
                    .send()
                    .await
                    .context(format!("{w}: UpdateAssumeRolePolicy {role}"))?;
            }
            None => {
                iam.create_role()
                    .role_name(role)
                    .assume_role_policy_document(&trust)
                    .description(format!("{} of EKS cluster {} (IRSA, meshctl)", self.role.purpose, self.cluster()))
                    .tags(tag(TAG_MANAGED_BY, MANAGED_BY))
                    .tags(tag(TAG_CLUSTER, self.cluster()))
                    .send()
                    .await
                    .context(format!("{w}: CreateRole {role}"))?;
            }
        }
        let have = self.attached_policies(&iam).await?;
        for p in want.policies.iter().filter(|p| !have.contains(p)) {
            iam.attach_role_policy().role_name(role).policy_arn(p).send().await.context(format!("{w}: AttachRolePolicy {p} to {role}"))?;
        }
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let w = self.who();
        let iam = self.iam().await?;
        let role = &self.role.role;
        // Role: detach every managed policy, drop inline ones, delete.
        if let Some(live) = self.live_role(&iam).await? {
            self.ensure_ours(&live, run.adopt, "delete")?;
            for p in self.attached_policies(&iam).await? {
                gone_is_done(iam.detach_role_policy().role_name(role).policy_arn(&p).send().await.map(|_| ()).map_err(Error::from))
                    .context(format!("{w}: DetachRolePolicy {p} from {role}"))?;
            }
            let inline = iam.list_role_policies().role_name(role).send().await.context(format!("{w}: ListRolePolicies {role}"))?;
            for name in inline.policy_names {
                gone_is_done(iam.delete_role_policy().role_name(role).policy_name(&name).send().await.map(|_| ()).map_err(Error::from))
                    .context(format!("{w}: DeleteRolePolicy {name} of {role}"))?;
            }
            gone_is_done(iam.delete_role().role_name(role).send().await.map(|_| ()).map_err(Error::from))
                .context(format!("{w}: DeleteRole {role}"))?;
        }
        // OIDC provider: the cluster's issuer if the cluster still exists; else whichever
        // provider meshctl tagged for this cluster.
        let mut arns = Vec::new();
        if let Some(issuer) = self.issuer().await? {
            let id = self.session.aws.account_id(&self.role.account).await?;
            arns.push(self.provider_arn(&id, &issuer));
        } else {
            let list = iam.list_open_id_connect_providers().send().await.context(format!("{w}: ListOpenIDConnectProviders"))?;
            for p in list.open_id_connect_provider_list.unwrap_or_default().into_iter().filter_map(|p| p.arn) {
                let d = iam
                    .get_open_id_connect_provider()
                    .open_id_connect_provider_arn(&p)
                    .send()
                    .await
                    .context(format!("{w}: GetOpenIDConnectProvider {p}"))?;
                if d.tags.unwrap_or_default().iter().any(|t| t.key == TAG_CLUSTER && t.value == self.cluster()) {
                    arns.push(p);
                }
            }
        }
        for arn in arns {
            gone_is_done(
                iam.delete_open_id_connect_provider().open_id_connect_provider_arn(&arn).send().await.map(|_| ()).map_err(Error::from),
            )
            .context(format!("{w}: DeleteOpenIDConnectProvider {arn}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_is_scoped_to_the_service_account_and_audience() {
        let t = trust_policy(
            "arn:aws:iam::1:oidc-provider/oidc.eks.us-east-2.amazonaws.com/id/ABC",
            "oidc.eks.us-east-2.amazonaws.com/id/ABC",
            "appmesh-system",
            "appmesh-controller",
        );
        let cond = &t["Statement"][0]["Condition"]["StringEquals"];
        assert_eq!(cond["oidc.eks.us-east-2.amazonaws.com/id/ABC:sub"], "system:serviceaccount:appmesh-system:appmesh-controller");
        assert_eq!(cond["oidc.eks.us-east-2.amazonaws.com/id/ABC:aud"], "sts.amazonaws.com");
        assert_eq!(t["Statement"][0]["Action"], "sts:AssumeRoleWithWebIdentity");
    }

    mod foreign {
        use aws_sdk_eks::operation::describe_cluster::DescribeClusterOutput;
        use aws_sdk_eks::types::{Cluster, Identity, Oidc};
        use aws_sdk_iam::operation::get_open_id_connect_provider::GetOpenIdConnectProviderOutput;
        use aws_sdk_iam::operation::get_role::GetRoleOutput;
        use aws_sdk_iam::operation::tag_role::TagRoleOutput;
        use aws_sdk_iam::operation::update_assume_role_policy::UpdateAssumeRolePolicyOutput;
        use aws_sdk_iam::types::Role;
        use aws_smithy_mocks::{mock, Rule, RuleMode};
        use aws_smithy_types::DateTime;

        use super::*;
        use crate::aws::testing;
        use crate::engine::StepId;

        const ROLE: &str = "eks-cluster-frontend-appmesh-controller";
        const ISSUER: &str = "https://oidc.eks.us-east-2.amazonaws.com/id/ABC";

        fn irsa(ctx: &Arc<Session>) -> Arc<dyn Step> {
            let role = IrsaRole {
                account: "frontend".into(),
                role: ROLE.into(),
                namespace: "appmesh-system".into(),
                service_account: "appmesh-controller".into(),
                policies: vec![],
                purpose: "the appmesh-controller".into(),
            };
            IrsaStep::step(StepMeta::new(StepId::new("mesh", "irsa-frontend"), "frontend", "IRSA"), ctx, role)
        }

        fn cluster_rule() -> Rule {
            mock!(aws_sdk_eks::Client::describe_cluster).then_output(|| {
                let oidc = Oidc::builder().issuer(ISSUER).build();
                DescribeClusterOutput::builder()
                    .cluster(Cluster::builder().identity(Identity::builder().oidc(oidc).build()).build())
                    .build()
            })
        }

        /// A role of the wanted name whose trust policy is someone else's and that has no
        /// meshctl tag.
        fn someone_elses_role() -> Rule {
            mock!(aws_sdk_iam::Client::get_role).match_requests(|r| r.role_name() == Some(ROLE)).then_output(|| {
                let role = Role::builder()
                    .path("/")
                    .role_name(ROLE)
                    .role_id("AROAEXAMPLE")
                    .arn(format!("arn:aws:iam::{}:role/{ROLE}", testing::FRONTEND))
                    .create_date(DateTime::from_secs(0))
                    .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
                    .tags(tag("team", "payments"))
                    .build()
                    .unwrap();
                GetRoleOutput::builder().role(role).build()
            })
        }

        fn provider_rule() -> Rule {
            mock!(aws_sdk_iam::Client::get_open_id_connect_provider)
                .then_output(|| GetOpenIdConnectProviderOutput::builder().client_id_list(STS_AUDIENCE).build())
        }

        #[tokio::test]
        async fn a_role_meshctl_did_not_create_is_drift_and_neither_updated_nor_deleted() {
            let (cluster, role, provider) = (cluster_rule(), someone_elses_role(), provider_rule());
            let update =
                mock!(aws_sdk_iam::Client::update_assume_role_policy).then_output(|| UpdateAssumeRolePolicyOutput::builder().build());
            let rules: &[&Rule] = &[&cluster, &role, &provider, &update];
            let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, rules)]);
            let step = irsa(&ctx);
            let run = StepRun::detached("mesh/irsa-frontend");
            match step.check(&run).await.unwrap() {
                Status::Drifted(why) => assert!(why.contains(ROLE) && why.contains("--adopt"), "{why}"),
                other => panic!("a foreign role is drift, not {other:?}"),
            }
            let err = step.apply(&run).await.unwrap_err();
            assert!(err.is(ErrorKind::NotOurs), "{err:?}");
            let text = err.chain();
            assert!(text.contains(ROLE) && text.contains("not created by meshctl") && text.contains("--adopt"), "{text}");
            let err = step.destroy(&run).await.unwrap_err().chain();
            assert!(err.contains("will not delete"), "{err}");
            assert_eq!(update.num_calls(), 0, "the role's trust policy is left as it is");
            assert_eq!(ctx.aws.writes().count(), 0, "nothing written");
        }

        #[tokio::test]
        async fn adopting_a_role_tags_it_and_sets_meshctls_trust_policy() {
            let (cluster, role, provider) = (cluster_rule(), someone_elses_role(), provider_rule());
            let tagged = mock!(aws_sdk_iam::Client::tag_role)
                .match_requests(|r| {
                    r.role_name() == Some(ROLE) && r.tags().iter().any(|t| t.key() == TAG_MANAGED_BY && t.value() == MANAGED_BY)
                })
                .then_output(|| TagRoleOutput::builder().build());
            let update = mock!(aws_sdk_iam::Client::update_assume_role_policy)
                .match_requests(|r| {
                    r.policy_document().is_some_and(|d| d.contains("system:serviceaccount:appmesh-system:appmesh-controller"))
                })
                .then_output(|| UpdateAssumeRolePolicyOutput::builder().build());
            let attached = mock!(aws_sdk_iam::Client::list_attached_role_policies)
                .then_output(|| aws_sdk_iam::operation::list_attached_role_policies::ListAttachedRolePoliciesOutput::builder().build());
            let rules: &[&Rule] = &[&cluster, &role, &provider, &tagged, &update, &attached];
            let ctx = testing::ctx(&[("frontend", RuleMode::MatchAny, rules)]);
            let mut run = StepRun::detached("mesh/irsa-frontend");
            run.adopt = true;
            irsa(&ctx).apply(&run).await.unwrap();
            assert_eq!((tagged.num_calls(), update.num_calls()), (1, 1));
        }
    }

    #[test]
    fn policies_decode_encoded_or_plain() {
        let plain = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let enc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(decode_policy(plain), decode_policy(enc));
        assert!(decode_policy(plain).is_some());
    }
}
