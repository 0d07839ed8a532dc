//! Server-side apply, drift checks, reads and deletes of typed and dynamic objects.
//!
//! Everything goes through [`DynamicObject`]: a typed object is erased with its static
//! [`ApiResource`]; a manifest's object is resolved through discovery (so a custom resource
//! whose CRD is not served yet fails with a message naming its kind). Apply is `Patch::Apply`
//! with field manager [`FIELD_MANAGER`], forced (meshctl owns the fields it writes), and every
//! object carries the [`MANAGED_BY`] label. A drift check is a server-side dry-run of the same
//! apply compared with the live object, so defaults and normalisation are the API server's
//! own, not guessed here.

use std::fmt::Debug;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, Scope};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{KubeClient, KubeError, FIELD_MANAGER, MANAGED_BY};
use crate::state::{diff_paths, Status};

/// The pod-template annotation [`KubeClient::restart`] sets (kubectl's, so `kubectl rollout
/// history` reads it as a restart).
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The ConfigMaps a workload's pod template mounts as volumes.
pub fn mounted_config_maps(obj: &DynamicObject) -> Vec<String> {
    obj.data["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["configMap"]["name"].as_str().map(str::to_string))
        .collect()
}

/// A resolved object: what it is, where it is served, and whether it lives in a namespace.
#[derive(Clone, Debug)]
pub struct Target {
    pub obj: DynamicObject,
    pub ar: ApiResource,
    pub namespaced: bool,
}

impl Target {
    /// `Kind ns/name` or `Kind name`, for messages.
    pub fn describe(&self) -> String {
        describe(&self.ar.kind, self.obj.metadata.namespace.as_deref(), self.name())
    }

    pub fn name(&self) -> &str {
        self.obj.metadata.name.as_deref().unwrap_or_default()
    }
}

pub fn describe(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Splits multi-document YAML into objects; empty documents are skipped. Every object must
/// have apiVersion, kind and metadata.name. `source` names the template in errors.
pub fn parse_manifests(yaml: &str, source: &str) -> Result<Vec<DynamicObject>, KubeError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| KubeError::Manifest { origin: source.to_string(), message: format!("document {}: {e}", i + 1) })?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value)
            .map_err(|e| KubeError::Manifest { origin: source.to_string(), message: format!("document {}: {e}", i + 1) })?;
        if obj.types.as_ref().is_none_or(|t| t.api_version.is_empty() || t.kind.is_empty()) || obj.metadata.name.is_none() {
            return Err(KubeError::Manifest {
                origin: source.to_string(),
                message: format!("document {} needs apiVersion, kind and metadata.name", i + 1),
            });
        }
        out.push(obj);
    }
    Ok(out)
}

fn namespace_target(name: &str, labels: &std::collections::BTreeMap<String, String>) -> Result<Target, KubeError> {
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some(name.to_string());
    ns.metadata.labels = Some(labels.clone());
    typed(&ns)
}

/// Whether meshctl made the object (it carries the managed-by label).
pub fn is_ours(obj: &DynamicObject) -> bool {
    obj.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str) == Some(MANAGED_BY.1)
}

/// Erases a typed object into a [`Target`] without discovery.
pub fn typed<K>(obj: &K) -> Result<Target, KubeError>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let ar = ApiResource::erase::<K>(&());
    let mut value = serde_json::to_value(obj).map_err(|e| KubeError::Manifest { origin: ar.kind.clone(), message: e.to_string() })?;
    if let Some(m) = value.as_object_mut() {
        m.insert("apiVersion".into(), ar.api_version.clone().into());
        m.insert("kind".into(), ar.kind.clone().into());
    }
    let obj: DynamicObject =
        serde_json::from_value(value).map_err(|e| KubeError::Manifest { origin: ar.kind.clone(), message: e.to_string() })?;
    let namespaced = obj.metadata.namespace.is_some();
    Ok(Target { obj, ar, namespaced })
}

/// Reads a dynamic object back as a typed one.
pub fn to_typed<K: DeserializeOwned>(obj: DynamicObject) -> Result<K, KubeError> {
    let kind = obj.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
    serde_json::to_value(&obj).and_then(serde_json::from_value).map_err(|e| KubeError::Manifest { origin: kind, message: e.to_string() })
}

/// Removes what a dry-run may legitimately change without a real difference.
fn normalize(obj: &DynamicObject) -> serde_json::Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    v
}

/// Erases a typed object into a [`DynamicObject`] (apiVersion and kind set), for lists of
/// mixed objects.
pub fn to_dynamic<K>(obj: &K) -> Result<DynamicObject, KubeError>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    Ok(typed(obj)?.obj)
}

impl KubeClient {
    fn api_err(&self, verb: &'static str, object: String, e: kube::Error) -> KubeError {
        let status = match &e {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        };
        let message = match &e {
            kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
            other => crate::error::chain(other),
        };
        KubeError::Api { context: self.context.clone(), verb, object, message, status }
    }

    /// Resolves a manifest object's kind through discovery.
    pub async fn resolve(&self, obj: DynamicObject) -> Result<Target, KubeError> {
        let types = obj.types.clone().unwrap_or_default();
        let gvk =
            GroupVersionKind::try_from(&types).map_err(|e| KubeError::Manifest { origin: types.kind.clone(), message: e.to_string() })?;
        let (ar, caps): (ApiResource, ApiCapabilities) =
            kube::discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| KubeError::Discovery {
                context: self.context.clone(),
                api_version: types.api_version.clone(),
                kind: types.kind.clone(),
                message: crate::error::chain(&e),
            })?;
        let namespaced = caps.scope == Scope::Namespaced;
        let mut obj = obj;
        if !namespaced {
            obj.metadata.namespace = None;
        }
        Ok(Target { obj, ar, namespaced })
    }

    /// Resolves every object of a manifest list (one discovery request per object).
    pub async fn resolve_all(&self, objs: Vec<DynamicObject>) -> Result<Vec<Target>, KubeError> {
        let mut out = Vec::with_capacity(objs.len());
        for o in objs {
            out.push(self.resolve(o).await?);
        }
        Ok(out)
    }

    pub fn dyn_api(&self, t: &Target) -> Api<DynamicObject> {
        match (t.namespaced, t.obj.metadata.namespace.as_deref()) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &t.ar),
            (true, None) => Api::default_namespaced_with(self.client.clone(), &t.ar),
            (false, _) => Api::all_with(self.client.clone(), &t.ar),
        }
    }

    fn labelled(t: &Target) -> DynamicObject {
        let mut obj = t.obj.clone();
        obj.metadata.labels.get_or_insert_with(Default::default).insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        obj.metadata.resource_version = None;
        obj.metadata.managed_fields = None;
        obj.types = Some(kube::api::TypeMeta { api_version: t.ar.api_version.clone(), kind: t.ar.kind.clone() });
        obj
    }

    /// The live object, `None` when absent (or its kind is not served any more).
    pub async fn get(&self, t: &Target) -> Result<Option<DynamicObject>, KubeError> {
        self.dyn_api(t).get_opt(t.name()).await.map_err(|e| self.api_err("get", t.describe(), e)).or_else(|e| match e {
            KubeError::Api { status: Some(404), .. } => Ok(None),
            e => Err(e),
        })
    }

    /// Server-side apply; returns the object as stored.
    pub async fn apply(&self, t: &Target) -> Result<DynamicObject, KubeError> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        self.dyn_api(t).patch(t.name(), &pp, &Patch::Apply(Self::labelled(t))).await.map_err(|e| self.api_err("apply", t.describe(), e))
    }

    /// Restarts a workload's pods the way `kubectl rollout restart` does: a new pod-template
    /// annotation, written by its own field manager so meshctl's applied fields stay as
    /// rendered. For pods whose mounted ConfigMap meshctl repaired while their template did
    /// not change (Envoy reads its bootstrap once, at start).
    pub async fn restart(&self, t: &Target, at: &str) -> Result<(), KubeError> {
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}});
        let pp = PatchParams { field_manager: Some(format!("{FIELD_MANAGER}-restart")), ..Default::default() };
        self.dyn_api(t).patch(t.name(), &pp, &Patch::Merge(patch)).await.map_err(|e| self.api_err("restart", t.describe(), e))?;
        Ok(())
    }

    /// Applies a typed object; returns it as stored.
    pub async fn apply_typed<K>(&self, obj: &K) -> Result<K, KubeError>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let t = typed(obj)?;
        to_typed(self.apply(&t).await?)
    }

    /// Compares the live object with what applying `t` would make of it (server-side dry run).
    pub async fn check(&self, t: &Target) -> Result<Status, KubeError> {
        let Some(live) = self.get(t).await? else { return Ok(Status::Missing) };
        let pp = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        let dry = self
            .dyn_api(t)
            .patch(t.name(), &pp, &Patch::Apply(Self::labelled(t)))
            .await
            .map_err(|e| self.api_err("dry-run apply", t.describe(), e))?;
        let mut paths = Vec::new();
        diff_paths("", &normalize(&live), &normalize(&dry), &mut paths, 5);
        Ok(if paths.is_empty() { Status::UpToDate } else { Status::Drifted(format!("{} differs at {}", t.describe(), paths.join(", "))) })
    }

    /// Checks every target: missing when all are, up to date when all are, else drifted
    /// with what differs.
    pub async fn check_all(&self, targets: &[Target]) -> Result<Status, KubeError> {
        let mut parts = Vec::new();
        for t in targets {
            let status = match self.check(t).await? {
                // The reason of a drifted object already names it.
                Status::Drifted(r) => Status::Drifted(r.trim_start_matches(&format!("{} ", t.describe())).to_string()),
                other => other,
            };
            parts.push((t.describe(), status));
        }
        Ok(Status::all(parts))
    }

    /// A typed object by namespace and name; `None` when absent.
    pub async fn get_typed<K>(&self, ns: &str, name: &str) -> Result<Option<K>, KubeError>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        api.get_opt(name).await.map_err(|e| self.api_err("get", describe(&K::kind(&()), Some(ns), name), e))
    }

    /// Creates namespace `name` labelled as meshctl's when it does not exist. A namespace
    /// meshctl created (labelled managed-by) gets `labels` applied when they differ: labels
    /// meshctl set before and no longer asks for are removed (server-side apply drops the
    /// fields its field manager owned and no longer sends). A namespace someone else made is
    /// left as it is (applying labels to it would take it over). Returns whether it was
    /// created.
    pub async fn ensure_namespace(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> Result<bool, KubeError> {
        let t = namespace_target(name, labels)?;
        match self.get(&t).await? {
            None => {
                self.apply(&t).await?;
                Ok(true)
            }
            Some(live) if is_ours(&live) => {
                if self.check(&t).await? != Status::UpToDate {
                    self.apply(&t).await?;
                }
                Ok(false)
            }
            Some(_) => Ok(false),
        }
    }

    /// Namespace `name` against `labels` as [`KubeClient::ensure_namespace`] would leave it:
    /// missing, drifted when it is meshctl's and its labels differ, else up to date (a
    /// namespace someone else made is not meshctl's to relabel).
    pub async fn namespace_status(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> Result<Status, KubeError> {
        let t = namespace_target(name, labels)?;
        match self.get(&t).await? {
            None => Ok(Status::Missing),
            Some(live) if is_ours(&live) => self.check(&t).await,
            Some(_) => Ok(Status::UpToDate),
        }
    }

    /// Deletes namespace `name` when meshctl created it (labelled managed-by) and waits until
    /// it is gone; a namespace someone else made is left in place. Returns whether it was
    /// deleted.
    pub async fn delete_namespace_if_ours(&self, name: &str, timeout: std::time::Duration) -> Result<bool, KubeError> {
        let t = namespace_target(name, &Default::default())?;
        let Some(live) = self.get(&t).await? else { return Ok(false) };
        if !is_ours(&live) {
            return Ok(false);
        }
        self.delete_and_wait(&t, timeout).await
    }

    /// Deletes (foreground); returns the uid of the object that was asked to go, `None` when it
    /// was already absent.
    pub async fn delete(&self, t: &Target) -> Result<Option<String>, KubeError> {
        let Some(live) = self.get(t).await? else { return Ok(None) };
        let uid = live.metadata.uid.clone().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..DeleteParams::foreground()
        };
        match self.dyn_api(t).delete(t.name(), &dp).await {
            Ok(_) => Ok(Some(uid)),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Some(uid)),
            Err(e) => Err(self.api_err("delete", t.describe(), e)),
        }
    }

    /// Deletes and waits until the object with that uid is gone; on timeout the error names
    /// the finalizers it is stuck on.
    pub async fn delete_and_wait(&self, t: &Target, timeout: std::time::Duration) -> Result<bool, KubeError> {
        let Some(uid) = self.delete(t).await? else { return Ok(false) };
        self.wait_deleted(t, &uid, timeout).await?;
        Ok(true)
    }

    /// Whether namespace `name` exists and meshctl created it (labelled managed-by), also while
    /// it is being deleted: a step whose objects are gone still owns it (a `down` interrupted
    /// before deleting it).
    pub async fn namespace_is_ours(&self, name: &str) -> Result<bool, KubeError> {
        let t = namespace_target(name, &Default::default())?;
        Ok(self.get(&t).await?.is_some_and(|live| is_ours(&live)))
    }
}
