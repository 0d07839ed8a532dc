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

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, Scope};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{KubeClient, KubeError, FIELD_MANAGER, MANAGED_BY};
use crate::engine::Status;

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
        let value = serde_json::Value::deserialize(doc).map_err(|e| KubeError::Manifest { origin: source.to_string(), message: format!("document {}: {e}", i + 1) })?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value).map_err(|e| KubeError::Manifest { origin: source.to_string(), message: format!("document {}: {e}", i + 1) })?;
        if obj.types.as_ref().is_none_or(|t| t.api_version.is_empty() || t.kind.is_empty()) || obj.metadata.name.is_none() {
            return Err(KubeError::Manifest { origin: source.to_string(), message: format!("document {} needs apiVersion, kind and metadata.name", i + 1) });
        }
        out.push(obj);
    }
    Ok(out)
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
    let obj: DynamicObject = serde_json::from_value(value).map_err(|e| KubeError::Manifest { origin: ar.kind.clone(), message: e.to_string() })?;
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

/// Dotted paths where two JSON values differ, at most `max`.
pub fn diff_paths(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>, max: usize) {
    use serde_json::Value;
    if out.len() >= max {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => diff_paths(&p, l, r, out, max),
                    _ => {
                        if out.len() < max {
                            out.push(p)
                        }
                    }
                }
            }
        }
        _ if a != b => out.push(if prefix.is_empty() { "<root>".into() } else { prefix.to_string() }),
        _ => {}
    }
}

impl KubeClient {
    fn api_err(&self, verb: &'static str, object: String, e: kube::Error) -> KubeError {
        let status = match &e {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        };
        let message = match &e {
            kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
            other => super::error_chain(other),
        };
        KubeError::Api { context: self.context.clone(), verb, object, message, status }
    }

    /// Resolves a manifest object's kind through discovery.
    pub async fn resolve(&self, obj: DynamicObject) -> Result<Target, KubeError> {
        let types = obj.types.clone().unwrap_or_default();
        let gvk = GroupVersionKind::try_from(&types).map_err(|e| KubeError::Manifest { origin: types.kind.clone(), message: e.to_string() })?;
        let (ar, caps): (ApiResource, ApiCapabilities) = kube::discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| KubeError::Discovery {
            context: self.context.clone(),
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
            message: super::error_chain(&e),
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
        let dry = self.dyn_api(t).patch(t.name(), &pp, &Patch::Apply(Self::labelled(t))).await.map_err(|e| self.api_err("dry-run apply", t.describe(), e))?;
        let mut paths = Vec::new();
        diff_paths("", &normalize(&live), &normalize(&dry), &mut paths, 5);
        Ok(if paths.is_empty() { Status::UpToDate } else { Status::Drifted(format!("{} differs at {}", t.describe(), paths.join(", "))) })
    }

    /// Checks a typed object.
    pub async fn check_typed<K>(&self, obj: &K) -> Result<Status, KubeError>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        self.check(&typed(obj)?).await
    }

    /// Checks every target; the first that is not up to date decides (missing before drifted).
    pub async fn check_all(&self, targets: &[Target]) -> Result<Status, KubeError> {
        let mut missing = Vec::new();
        let mut drifted = Vec::new();
        for t in targets {
            match self.check(t).await? {
                Status::UpToDate => {}
                Status::Missing => missing.push(t.describe()),
                Status::Drifted(r) => drifted.push(r),
            }
        }
        Ok(if missing.len() == targets.len() && !targets.is_empty() {
            Status::Missing
        } else if !missing.is_empty() || !drifted.is_empty() {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("missing: {}", missing.join(", ")));
            }
            parts.extend(drifted);
            Status::Drifted(parts.join("; "))
        } else {
            Status::UpToDate
        })
    }

    /// Creates an object only when absent (for objects meshctl must not take over).
    pub async fn create_if_absent(&self, t: &Target) -> Result<DynamicObject, KubeError> {
        if let Some(o) = self.get(t).await? {
            return Ok(o);
        }
        self.dyn_api(t).create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &Self::labelled(t)).await.map_err(|e| self.api_err("create", t.describe(), e))
    }

    /// Deletes (foreground); returns the uid of the object that was asked to go, `None` when it
    /// was already absent.
    pub async fn delete(&self, t: &Target) -> Result<Option<String>, KubeError> {
        let Some(live) = self.get(t).await? else { return Ok(None) };
        let uid = live.metadata.uid.clone().unwrap_or_default();
        let dp = DeleteParams { preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }), ..DeleteParams::foreground() };
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
}
