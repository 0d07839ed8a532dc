//! The `appmesh` provider: the walkthrough as it was written. The mesh in the hub account
//! shared to the spokes through RAM, a Cloud Map namespace, per cluster the appmesh-controller
//! (IRSA role, Helm release) and the `Mesh` resource ([`control_plane`], [`controller`]); per
//! spoke the virtual nodes, services and routers with STRICT mTLS from SPIRE over SDS
//! ([`app`]); the controller injects the Envoy sidecars.
//!
//! AWS App Mesh reached end of support on 2026-09-30: its API and resources are gone on real
//! accounts. `preflight` says so, before `up` changes anything, when the API refuses; `down`
//! goes on (the clusters, stacks and roles still need removing), and so does removing this
//! provider's control plane once another provider is selected: a refused App Mesh call while
//! reading or deleting the mesh means that nothing is left there ([`api_gone`]). Built only
//! with the `appmesh` cargo feature.

pub mod app;
pub mod control_plane;
pub mod controller;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{AppObjects, MeshProvider, VerifyProfile, Wait};
use crate::config::{is_dns_label, is_dns_subdomain, Config, ConfigError};
use crate::engine::{Error, ErrorKind, Mode, Step, StepId, StepRun};
use crate::error::ResultExt;
use crate::session::Session;
use crate::state::Progress;
use crate::topology::Workload;
use crate::verify::Hints;

/// The day AWS App Mesh reached end of support.
pub const END_OF_SUPPORT: &str = "2026-09-30";

/// Whether an App Mesh call's error means the API is gone (end of support): every error but
/// throttling — after the end of support the API's answers vary (access denied, unknown
/// endpoint, ...), and none of them leaves anything to read or delete.
pub fn api_gone(e: &Error) -> bool {
    !e.is(ErrorKind::Throttled)
}

/// The ids of the provider's steps, spelled once.
pub mod step_ids {
    use crate::engine::StepId;
    use crate::phases::ids;

    pub fn mesh() -> StepId {
        ids::mesh("appmesh")
    }
    pub fn share() -> StepId {
        ids::mesh("share")
    }
    pub fn accept(spoke: &str) -> StepId {
        ids::mesh(&format!("accept-{spoke}"))
    }
    pub fn cloudmap() -> StepId {
        ids::mesh("cloudmap")
    }
    pub fn irsa(account: &str) -> StepId {
        ids::mesh(&format!("irsa-{account}"))
    }
    pub fn controller(account: &str) -> StepId {
        ids::mesh(&format!("controller-{account}"))
    }
    pub fn resource(account: &str) -> StepId {
        ids::mesh(&format!("resource-{account}"))
    }
}

/// The appmesh-controller's release (`[mesh.appmesh.controller]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub namespace: String,
    pub release: String,
    pub chart_repo: String,
    pub chart: String,
    pub chart_version: String,
    /// A local chart directory or archive; wins over repo/chart/version.
    pub chart_path: Option<String>,
    pub service_account: String,
}

/// `[mesh.appmesh]`, resolved: the walkthrough's values by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mesh_share: String,
    pub cloudmap_namespace: String,
    /// The spoke that owns the Cloud Map namespace.
    pub cloudmap_account: String,
    /// VirtualNode listener ports that differ from the workload's port (the walkthrough's
    /// yelb-ui listens on 4567).
    pub listener_ports: BTreeMap<String, u16>,
    pub controller: Controller,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            mesh_share: "mesh-share".into(),
            cloudmap_namespace: "am-multi-account.local".into(),
            cloudmap_account: "backend".into(),
            listener_ports: [("yelb-ui".to_string(), 4567)].into(),
            controller: Controller {
                namespace: "appmesh-system".into(),
                release: "appmesh-controller".into(),
                chart_repo: "https://aws.github.io/eks-charts".into(),
                chart: "appmesh-controller".into(),
                chart_version: "1.13.1".into(),
                chart_path: None,
                service_account: "appmesh-controller".into(),
            },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    mesh_share: Option<String>,
    cloudmap_namespace: Option<String>,
    cloudmap_account: Option<String>,
    listener_ports: Option<BTreeMap<String, u16>>,
    #[serde(default)]
    controller: RawController,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawController {
    namespace: Option<String>,
    release: Option<String>,
    chart_repo: Option<String>,
    chart: Option<String>,
    chart_version: Option<String>,
    chart_path: Option<String>,
    service_account: Option<String>,
}

/// Reads and validates `[mesh.appmesh]`.
pub fn settings(config: &Config) -> Result<Settings, ConfigError> {
    let raw: RawSettings = super::registry::section(config, "appmesh")?;
    let d = Settings::default();
    let rc = raw.controller;
    let s = Settings {
        mesh_share: raw.mesh_share.unwrap_or(d.mesh_share),
        cloudmap_namespace: raw.cloudmap_namespace.unwrap_or(d.cloudmap_namespace),
        cloudmap_account: raw.cloudmap_account.unwrap_or(d.cloudmap_account),
        listener_ports: raw.listener_ports.unwrap_or(d.listener_ports),
        controller: Controller {
            namespace: rc.namespace.unwrap_or(d.controller.namespace),
            release: rc.release.unwrap_or(d.controller.release),
            chart_repo: rc.chart_repo.unwrap_or(d.controller.chart_repo),
            chart: rc.chart.unwrap_or(d.controller.chart),
            chart_version: rc.chart_version.unwrap_or(d.controller.chart_version),
            chart_path: rc.chart_path,
            service_account: rc.service_account.unwrap_or(d.controller.service_account),
        },
    };
    let label = "lowercase letters, digits and '-', at most 63 characters";
    for (key, v) in [
        ("mesh.appmesh.controller.namespace", &s.controller.namespace),
        ("mesh.appmesh.controller.release", &s.controller.release),
        ("mesh.appmesh.controller.service_account", &s.controller.service_account),
    ] {
        if !is_dns_label(v) {
            return Err(ConfigError::new(key, format!("{v:?} is not valid: {label}")));
        }
    }
    if !is_dns_subdomain(&s.cloudmap_namespace) {
        return Err(ConfigError::new(
            "mesh.appmesh.cloudmap_namespace",
            format!("{:?} is not valid: a DNS name such as am-multi-account.local", s.cloudmap_namespace),
        ));
    }
    let spokes: Vec<&str> = config.spokes.iter().map(|a| a.name.as_str()).collect();
    if !spokes.contains(&s.cloudmap_account.as_str()) {
        return Err(ConfigError::new(
            "mesh.appmesh.cloudmap_account",
            format!("{:?} is not a spoke; allowed: {}", s.cloudmap_account, spokes.join(", ")),
        ));
    }
    if s.mesh_share.is_empty() {
        return Err(ConfigError::new("mesh.appmesh.mesh_share", "a RAM share name is needed"));
    }
    Ok(s)
}

pub fn from_config(config: &Config) -> Result<Arc<dyn MeshProvider>, ConfigError> {
    Ok(Arc::new(AppMesh { settings: Arc::new(settings(config)?), mesh_name: config.mesh.name.clone() }))
}

pub struct AppMesh {
    pub settings: Arc<Settings>,
    /// The mesh's name: the app namespace's `mesh` label that the Mesh resource selects.
    mesh_name: String,
}

#[async_trait::async_trait]
impl MeshProvider for AppMesh {
    fn name(&self) -> &'static str {
        "appmesh"
    }

    /// Whether App Mesh still answers in the hub account: after its end of support it does
    /// not, and `up` (or its plan) cannot work. Any other walk goes on with a note: `down`
    /// must still remove the clusters, and App Mesh resources count as gone.
    async fn preflight(&self, session: &Session, run: &StepRun) -> Result<(), Error> {
        let hub = &session.config.hub.name;
        let who = crate::aws::who(&session.aws, hub);
        let client = session.aws.appmesh(hub).await?;
        match client.list_meshes().limit(1).send().await.map_err(Error::from) {
            Ok(_) => Ok(()),
            Err(e) if !api_gone(&e) => Err(e.context(format!("{who}: App Mesh ListMeshes"))),
            Err(e) if !matches!(run.mode, Mode::Up | Mode::Plan) => {
                run.progress(format!(
                    "{who}: App Mesh refused ListMeshes ({}): it reached end of support on {END_OF_SUPPORT}; its resources count as gone",
                    e.chain()
                ));
                Ok(())
            }
            Err(e) => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("mesh.provider = \"appmesh\": AWS App Mesh reached end of support on {END_OF_SUPPORT} and its API refused in {who}"),
            )
            .with_source(e)
            .hint("nothing was changed; use mesh.provider = \"envoy\" (the default: the same names, SPIFFE IDs and SAN rules with meshctl's own Envoy sidecars); `meshctl down` still tears everything down")),
        }
    }

    fn control_plane(&self, session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
        let mut out = control_plane::steps(session, &self.settings);
        out.extend(controller::steps(session, &self.settings));
        out
    }

    fn app_needs(&self, account: &str) -> Vec<StepId> {
        let mut out = vec![step_ids::resource(account)];
        if account == self.settings.cloudmap_account {
            out.push(step_ids::cloudmap());
        }
        out
    }

    fn namespace_labels(&self) -> BTreeMap<String, String> {
        // The Mesh resource selects the namespace; the controller's webhook injects Envoy.
        BTreeMap::from([
            ("mesh".to_string(), self.mesh_name.clone()),
            ("appmesh.k8s.aws/sidecarInjectorWebhook".to_string(), "enabled".to_string()),
        ])
    }

    fn workload_selectors(&self, w: &Workload, namespace: &str) -> Vec<String> {
        super::k8s_selectors(w, namespace, "envoy")
    }

    async fn decorate(
        &self,
        session: &Session,
        objects: &mut AppObjects,
        wait: Wait,
        progress: &dyn Progress,
    ) -> Result<Vec<String>, Error> {
        app::decorate(session, &self.settings, objects, wait, progress)
            .await
            .context(format!("account {}: App Mesh objects", objects.account))
    }

    fn verify_profile(&self) -> VerifyProfile {
        VerifyProfile { admin_port: 9901, hints: Arc::new(AppMeshHints) }
    }
}

/// Where to look when a check of an App Mesh Envoy fails: the controller and the virtual
/// nodes configure them.
struct AppMeshHints;

impl Hints for AppMeshHints {
    fn sds_not_configured(&self, _workload: &str, socket: &str) -> String {
        format!("SDS must be enabled in the appmesh-controller (sds.enabled=true, sds.udsPath={socket}) before the pod starts; restart the pod after fixing it")
    }
    fn svid_missing(&self, _workload: &str, spiffe_id: &str) -> String {
        format!(
            "no SPIRE registration entry matches this workload (selectors k8s:ns, k8s:sa, k8s:pod-label:app, k8s:container-name:envoy) or the agent has not issued it; \
             check `spire-server entry show -spiffeID {spiffe_id}` in the spire-server pod and the virtual node's tls.certificate.sds.secretName"
        )
    }
    fn listener_sans(&self, _workload: &str) -> String {
        "fix the virtual node listener's tls.validation.subjectAlternativeNames.match.exact (tls mode STRICT)".into()
    }
    fn no_tls_listener(&self, _workload: &str) -> String {
        "set the virtual node listener's tls (mode STRICT)".into()
    }
    fn egress_missing(&self, _workload: &str, backend: &str) -> String {
        format!("is {backend} listed in the virtual node's backends?")
    }
    fn egress_plaintext(&self, _workload: &str, backend: &str) -> String {
        format!("set the backend's clientPolicy.tls (enforce: true) with subjectAlternativeNames exact = {backend}'s SPIFFE ID")
    }
    fn egress_sans(&self, _workload: &str, _backend: &str) -> String {
        "fix the client policy's tls.validation.subjectAlternativeNames.match.exact".into()
    }
    fn no_client_cert(&self) -> String {
        "the caller does not originate mTLS: check its client policy tls.enforce".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walkthrough_section_and_its_rules() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/walkthrough.toml");
        let c = Config::load(Some(&path), &[], &[]).unwrap();
        let s = settings(&c).unwrap();
        assert_eq!(s, Settings::default());
        let bad = Config::load(None, &[], &["mesh.provider=appmesh".into(), "mesh.appmesh.cloudmap_account=shared".into()]).unwrap();
        assert_eq!(settings(&bad).unwrap_err().key, "mesh.appmesh.cloudmap_account");
        let session = Session::new(c).unwrap();
        assert_eq!(session.mesh.name(), "appmesh");
        let needs = session.mesh.app_needs("backend");
        assert_eq!(needs, [step_ids::resource("backend"), step_ids::cloudmap()]);
    }

    /// What the app step's inventory holds after App Mesh and what switching to (and back
    /// from) the envoy provider deletes, in the backend spoke (no remote backend there, so
    /// both render offline).
    #[tokio::test]
    async fn switching_providers_leaves_exactly_the_other_ones_objects_stale() {
        use crate::kube::inventory::ObjectKey;
        use crate::phases::yelb;
        let appmesh = Session::new(Config::load(None, &[], &["mesh.provider=appmesh".into()]).unwrap()).unwrap();
        let envoy = Session::new(Config::default()).unwrap();
        let old = yelb::inventory(&appmesh, "backend", &crate::state::Silent).await.unwrap();
        let new = yelb::inventory(&envoy, "backend", &crate::state::Silent).await.unwrap();
        assert_eq!(old.facts[yelb::INVENTORY_PROVIDER], "appmesh");
        assert_eq!(new.facts[yelb::INVENTORY_PROVIDER], "envoy");
        let lines = |keys: Vec<ObjectKey>| keys.iter().map(ObjectKey::line).collect::<Vec<_>>();
        assert_eq!(
            lines(old.stale(&new)),
            [
                "appmesh.k8s.aws/v1beta2 VirtualNode redis-server",
                "appmesh.k8s.aws/v1beta2 VirtualNode yelb-appserver",
                "appmesh.k8s.aws/v1beta2 VirtualNode yelb-db",
                "appmesh.k8s.aws/v1beta2 VirtualRouter yelb-appserver-router",
                "appmesh.k8s.aws/v1beta2 VirtualService redis-server",
                "appmesh.k8s.aws/v1beta2 VirtualService yelb-appserver",
                "appmesh.k8s.aws/v1beta2 VirtualService yelb-db",
            ]
        );
        assert_eq!(
            lines(new.stale(&old)),
            ["v1 ConfigMap redis-server-envoy", "v1 ConfigMap yelb-appserver-envoy", "v1 ConfigMap yelb-db-envoy"]
        );
    }
}
