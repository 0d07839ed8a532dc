//! An inventory of applied objects, in the spirit of kubectl's ApplySet: a ConfigMap beside
//! the objects that lists every object one owner applied (`apiVersion kind name`, one per
//! line, sorted) with a few facts of the owner's own. What a later apply no longer renders
//! but the inventory lists is what that apply must delete: nothing is orphaned when the set
//! of objects changes (another mesh provider, a removed workload).
//!
//! Objects are compared by API group, kind and name, not version: the same object served
//! under a new version is not stale.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DynamicObject, TypeMeta};

use super::KubeError;

/// The data key holding the object lines.
pub const OBJECTS_KEY: &str = "objects";

/// One listed object, in the inventory's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl ObjectKey {
    /// The key of an object with apiVersion, kind and name (`None` without them).
    pub fn of(obj: &DynamicObject) -> Option<ObjectKey> {
        let t = obj.types.as_ref()?;
        Some(ObjectKey { api_version: t.api_version.clone(), kind: t.kind.clone(), name: obj.metadata.name.clone()? })
    }

    /// `apiVersion kind name`.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.api_version, self.kind, self.name)
    }

    /// Reads a line written by [`ObjectKey::line`].
    pub fn parse(line: &str) -> Option<ObjectKey> {
        let mut parts = line.split_whitespace();
        let key = ObjectKey { api_version: parts.next()?.to_string(), kind: parts.next()?.to_string(), name: parts.next()?.to_string() };
        parts.next().is_none().then_some(key)
    }

    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
    }

    /// What identifies the object whatever version serves it: group, kind, name.
    fn identity(&self) -> (&str, &str, &str) {
        (self.group(), &self.kind, &self.name)
    }

    /// `Kind name`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }

    /// An object that carries only this key, in `namespace`: enough to resolve, read and
    /// delete it.
    pub fn stub(&self, namespace: &str) -> DynamicObject {
        let mut obj = DynamicObject {
            types: Some(TypeMeta { api_version: self.api_version.clone(), kind: self.kind.clone() }),
            metadata: Default::default(),
            data: serde_json::Value::Object(Default::default()),
        };
        obj.metadata.name = Some(self.name.clone());
        obj.metadata.namespace = Some(namespace.to_string());
        obj
    }
}

/// The objects one owner applied, and its facts (data keys besides [`OBJECTS_KEY`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    pub objects: BTreeSet<ObjectKey>,
    pub facts: BTreeMap<String, String>,
}

impl Inventory {
    /// The inventory of `objects` (those without apiVersion, kind or name are left out).
    pub fn of<'a>(objects: impl IntoIterator<Item = &'a DynamicObject>, facts: impl IntoIterator<Item = (String, String)>) -> Inventory {
        Inventory { objects: objects.into_iter().filter_map(ObjectKey::of).collect(), facts: facts.into_iter().collect() }
    }

    /// The ConfigMap `name` in `namespace` holding this inventory.
    pub fn to_config_map(&self, name: &str, namespace: &str) -> ConfigMap {
        let mut data = self.facts.clone();
        let lines: String = self.objects.iter().map(|k| k.line() + "\n").collect();
        data.insert(OBJECTS_KEY.into(), lines);
        let mut cm = ConfigMap { data: Some(data), ..Default::default() };
        cm.metadata.name = Some(name.to_string());
        cm.metadata.namespace = Some(namespace.to_string());
        cm
    }

    /// Reads an inventory ConfigMap; a line that is not `apiVersion kind name` is an error
    /// naming the ConfigMap and the line.
    pub fn from_config_map(cm: &ConfigMap) -> Result<Inventory, KubeError> {
        let mut facts = cm.data.clone().unwrap_or_default();
        let lines = facts.remove(OBJECTS_KEY).unwrap_or_default();
        let mut objects = BTreeSet::new();
        for (i, line) in lines.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let key = ObjectKey::parse(line).ok_or_else(|| KubeError::Manifest {
                origin: format!(
                    "ConfigMap {}/{}",
                    cm.metadata.namespace.as_deref().unwrap_or_default(),
                    cm.metadata.name.as_deref().unwrap_or_default()
                ),
                message: format!("line {} of data.{OBJECTS_KEY} ({line:?}) is not `apiVersion kind name`; fix or delete the line", i + 1),
            })?;
            objects.insert(key);
        }
        Ok(Inventory { objects, facts })
    }

    /// What this inventory lists and `wanted` does not (by group, kind and name), sorted:
    /// what applying `wanted` leaves behind unless it deletes it.
    pub fn stale(&self, wanted: &Inventory) -> Vec<ObjectKey> {
        let keep: BTreeSet<(&str, &str, &str)> = wanted.objects.iter().map(ObjectKey::identity).collect();
        self.objects.iter().filter(|k| !keep.contains(&k.identity())).cloned().collect()
    }

    /// Both inventories' objects, with `newer`'s facts: what is on the cluster while an apply
    /// of `newer` is under way.
    pub fn union(&self, newer: &Inventory) -> Inventory {
        Inventory { objects: self.objects.union(&newer.objects).cloned().collect(), facts: newer.facts.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(api_version: &str, kind: &str, name: &str) -> ObjectKey {
        ObjectKey { api_version: api_version.into(), kind: kind.into(), name: name.into() }
    }

    fn inv(keys: &[ObjectKey], provider: &str) -> Inventory {
        Inventory { objects: keys.iter().cloned().collect(), facts: [("provider".to_string(), provider.to_string())].into() }
    }

    #[test]
    fn lines_are_sorted_and_read_back() {
        let objs: Vec<DynamicObject> =
            [key("v1", "Service", "yelb-ui"), key("apps/v1", "Deployment", "yelb-ui"), key("v1", "ConfigMap", "yelb-ui-envoy")]
                .iter()
                .map(|k| k.stub("yelb"))
                .collect();
        let i = Inventory::of(&objs, [("provider".to_string(), "envoy".to_string())]);
        let cm = i.to_config_map("meshctl-app-inventory", "yelb");
        let data = cm.data.clone().unwrap();
        assert_eq!(data[OBJECTS_KEY], "apps/v1 Deployment yelb-ui\nv1 ConfigMap yelb-ui-envoy\nv1 Service yelb-ui\n");
        assert_eq!(data["provider"], "envoy");
        assert_eq!(cm.metadata.namespace.as_deref(), Some("yelb"));
        assert_eq!(Inventory::from_config_map(&cm).unwrap(), i);
        let empty = Inventory::default().to_config_map("x", "y");
        assert_eq!(Inventory::from_config_map(&empty).unwrap(), Inventory::default());
    }

    #[test]
    fn a_line_that_is_not_a_key_names_the_config_map_and_the_line() {
        let mut cm = Inventory::default().to_config_map("meshctl-app-inventory", "yelb");
        cm.data.as_mut().unwrap().insert(OBJECTS_KEY.into(), "v1 Service yelb-ui\nVirtualNode\n".into());
        let e = Inventory::from_config_map(&cm).unwrap_err().to_string();
        assert_eq!(e, "manifest ConfigMap yelb/meshctl-app-inventory: line 2 of data.objects (\"VirtualNode\") is not `apiVersion kind name`; fix or delete the line");
    }

    #[test]
    fn stale_objects_are_those_listed_and_no_longer_wanted() {
        let appmesh = inv(
            &[
                key("appmesh.k8s.aws/v1beta2", "VirtualNode", "yelb-ui"),
                key("appmesh.k8s.aws/v1beta2", "VirtualService", "yelb-ui"),
                key("apps/v1", "Deployment", "yelb-ui"),
                key("v1", "Service", "yelb-appserver"),
                key("v1", "Service", "yelb-ui"),
            ],
            "appmesh",
        );
        let envoy = inv(
            &[key("apps/v1", "Deployment", "yelb-ui"), key("v1", "ConfigMap", "yelb-ui-envoy"), key("v1", "Service", "yelb-ui")],
            "envoy",
        );
        assert_eq!(
            appmesh.stale(&envoy),
            [
                key("appmesh.k8s.aws/v1beta2", "VirtualNode", "yelb-ui"),
                key("appmesh.k8s.aws/v1beta2", "VirtualService", "yelb-ui"),
                key("v1", "Service", "yelb-appserver")
            ]
        );
        assert_eq!(envoy.stale(&appmesh), [key("v1", "ConfigMap", "yelb-ui-envoy")], "and back");
        assert!(envoy.stale(&envoy).is_empty());
        // The same object under a new version of its API is not stale.
        let newer = inv(&[key("appmesh.k8s.aws/v1", "VirtualNode", "yelb-ui")], "appmesh");
        assert!(inv(&[key("appmesh.k8s.aws/v1beta2", "VirtualNode", "yelb-ui")], "appmesh").stale(&newer).is_empty());
        // A kind of another group with the same name is.
        let other = inv(&[key("example.com/v1", "VirtualNode", "yelb-ui")], "x");
        assert_eq!(other.stale(&newer).len(), 1);
        let u = appmesh.union(&envoy);
        assert_eq!(u.objects.len(), 6);
        assert_eq!(u.facts["provider"], "envoy");
        assert!(u.stale(&envoy).len() == 3 && appmesh.stale(&u).is_empty());
    }

    #[test]
    fn group_of_core_and_named_apis() {
        assert_eq!(key("v1", "Service", "a").group(), "");
        assert_eq!(key("apps/v1", "Deployment", "a").group(), "apps");
        assert_eq!(ObjectKey::parse("apps/v1 Deployment a"), Some(key("apps/v1", "Deployment", "a")));
        assert_eq!(ObjectKey::parse("apps/v1 Deployment a b"), None);
        let stub = key("apps/v1", "Deployment", "a").stub("ns");
        assert_eq!(ObjectKey::of(&stub), Some(key("apps/v1", "Deployment", "a")));
        assert_eq!(stub.metadata.namespace.as_deref(), Some("ns"));
    }
}
