//! Waits: kube-runtime `await_condition` predicates over `Option<&K>` (a missing object is a
//! normal state) plus a timeout whose error says what was waited for.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::wait::{await_condition, conditions, Condition};

use super::apply::Target;
use super::{KubeClient, KubeError};

/// True once a Deployment has as many available replicas as it wants, for its latest spec.
pub fn is_deployment_available() -> impl Condition<Deployment> {
    |obj: Option<&Deployment>| {
        let Some(d) = obj else { return false };
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let Some(s) = &d.status else { return false };
        let fresh = s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        let available = s.conditions.as_ref().is_some_and(|cs| cs.iter().any(|c| c.type_ == "Available" && c.status == "True"));
        fresh && available && s.available_replicas.unwrap_or(0) >= want && s.updated_replicas.unwrap_or(0) >= want
    }
}

/// The first LoadBalancer ingress's hostname or IP.
pub fn load_balancer_address(svc: &Service) -> Option<String> {
    let ing = svc.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.first()?;
    ing.hostname.clone().filter(|h| !h.is_empty()).or_else(|| ing.ip.clone().filter(|i| !i.is_empty()))
}

/// Why a pod is not ready (`Pending: 0/1 nodes are available: 1 node(s) didn't have free ports
/// for the requested pod ports.`), or None when it is ready or going away.
pub fn pod_problem(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
    if (phase == "Running" && condition("Ready").is_some_and(|c| c.status == "True")) || phase == "Succeeded" {
        return None;
    }
    let text = |reason: Option<&String>, message: Option<&String>| {
        [reason, message].into_iter().flatten().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(": ")
    };
    let unscheduled = condition("PodScheduled").filter(|c| c.status == "False").map(|c| text(c.reason.as_ref(), c.message.as_ref()));
    let waiting = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref().map(|w| format!("container {} {}", c.name, text(w.reason.as_ref(), w.message.as_ref()))))
        .collect::<Vec<_>>();
    let why = unscheduled
        .or_else(|| (!waiting.is_empty()).then(|| waiting.join("; ")))
        .or_else(|| status.map(|s| text(s.reason.as_ref(), s.message.as_ref())))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "not ready".into());
    Some(format!("{phase}: {why}"))
}

/// The problems of the pods `selector` selects in `ns` (see [`pod_problem`]), as one phrase
/// for a timeout message: `; pod spire-agent-x7k2p is Pending: …`. Empty when every pod is
/// ready, none matches, or the pods cannot be read.
pub async fn pod_problems(client: kube::Client, ns: &str, selector: Option<&LabelSelector>) -> String {
    let Some(labels) = selector.and_then(|s| s.match_labels.as_ref()).filter(|l| !l.is_empty()) else { return String::new() };
    let query = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let Ok(list) = pods.list(&ListParams::default().labels(&query)).await else { return String::new() };
    list.items
        .iter()
        .filter_map(|p| Some(format!("; pod {} is {}", p.metadata.name.as_deref()?, pod_problem(p)?)))
        .take(3)
        .collect()
}

impl KubeClient {
    /// Runs a wait with a deadline; the error names `what`.
    pub async fn with_timeout<T, F>(&self, what: &str, timeout: Duration, fut: F) -> Result<T, KubeError>
    where
        F: Future<Output = Result<T, KubeError>>,
    {
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(KubeError::Timeout { context: self.context.clone(), what: what.to_string(), secs: timeout.as_secs() }),
        }
    }

    /// Waits for `cond` on the object `name` of `api`.
    pub async fn wait_for<K, C>(&self, api: Api<K>, name: &str, what: &str, timeout: Duration, cond: C) -> Result<Option<K>, KubeError>
    where
        K: Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + kube::Resource + 'static,
        C: Condition<K>,
    {
        self.with_timeout(what, timeout, async {
            await_condition(api, name, cond).await.map_err(|e| KubeError::Wait { context: self.context.clone(), what: what.to_string(), message: super::error_chain(&e) })
        })
        .await
    }

    /// Waits until the CRD `name` (`meshes.appmesh.k8s.aws`) is Established.
    pub async fn wait_crd_established(&self, name: &str, timeout: Duration) -> Result<(), KubeError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        self.wait_for(api, name, &format!("CustomResourceDefinition {name} to be Established"), timeout, conditions::is_crd_established()).await.map(|_| ())
    }

    /// Waits until Deployment `ns/name` is available.
    pub async fn wait_deployment_available(&self, ns: &str, name: &str, timeout: Duration) -> Result<(), KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        match self.wait_for(api.clone(), name, &format!("Deployment {ns}/{name} to be available"), timeout, is_deployment_available()).await {
            Err(KubeError::Timeout { context, what, secs }) => {
                let selector = api.get_opt(name).await.ok().flatten().and_then(|d| d.spec).map(|s| s.selector);
                let pods = pod_problems(self.client.clone(), ns, selector.as_ref()).await;
                Err(KubeError::Timeout { context, what: format!("{what}{pods}"), secs })
            }
            other => other.map(|_| ()),
        }
    }

    /// Waits until Service `ns/name` has a load balancer address; returns it.
    pub async fn wait_load_balancer(&self, ns: &str, name: &str, timeout: Duration) -> Result<String, KubeError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let what = format!("a load balancer address on Service {ns}/{name}");
        let cond = |s: Option<&Service>| s.and_then(load_balancer_address).is_some();
        let svc = self.wait_for(api, name, &what, timeout, cond).await?;
        svc.as_ref().and_then(load_balancer_address).ok_or_else(|| KubeError::Wait { context: self.context.clone(), what, message: "the Service was deleted".into() })
    }

    /// Waits until the object with `uid` is gone; a timeout names the finalizers it is stuck on.
    pub async fn wait_deleted(&self, t: &Target, uid: &str, timeout: Duration) -> Result<(), KubeError> {
        let api: Api<DynamicObject> = self.dyn_api(t);
        let what = format!("{} to be deleted", t.describe());
        match self.wait_for(api, t.name(), &what, timeout, conditions::is_deleted::<DynamicObject>(uid)).await {
            Ok(_) => Ok(()),
            Err(KubeError::Timeout { context, what, secs }) => {
                let stuck = self.get(t).await.ok().flatten().and_then(|o| o.metadata.finalizers).unwrap_or_default();
                let what = if stuck.is_empty() { what } else { format!("{what} (stuck on finalizers {})", stuck.join(", ")) };
                Err(KubeError::Timeout { context, what, secs })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "spire-agent-x7k2p" }, "status": status })).unwrap()
    }

    #[test]
    fn pod_problem_says_why_a_pod_is_not_ready() {
        let unschedulable = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{ "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports." }]
        }));
        assert_eq!(
            pod_problem(&unschedulable).as_deref(),
            Some("Pending: Unschedulable: 0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.")
        );
        let pulling = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{ "type": "PodScheduled", "status": "True" }],
            "containerStatuses": [{ "name": "spire-agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"i\"" } } }]
        }));
        assert_eq!(pod_problem(&pulling).as_deref(), Some("Pending: container spire-agent ImagePullBackOff: Back-off pulling image \"i\""));
        let unready = pod(serde_json::json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "False" }] }));
        assert_eq!(pod_problem(&unready).as_deref(), Some("Running: not ready"));
        let ready = pod(serde_json::json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] }));
        assert_eq!(pod_problem(&ready), None);
        assert_eq!(pod_problem(&pod(serde_json::json!({ "phase": "Succeeded" }))), None);
    }
}
