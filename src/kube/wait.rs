//! Waits: kube-runtime `await_condition` predicates over `Option<&K>` (a missing object is a
//! normal state) plus a timeout whose error says what was waited for, and one readiness rule
//! ([`Rollout`]) for every kind of workload meshctl waits on.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::wait::{await_condition, conditions, Condition};

use super::apply::Target;
use super::{KubeClient, KubeError};

/// A workload object whose pods roll out: ready when the controller has seen its latest spec
/// and every wanted pod is updated and ready (available, for a Deployment). `Err` says how far
/// it is, for a timeout message and for a check's drift reason.
pub trait Rollout:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Send
    + Sync
    + serde::de::DeserializeOwned
    + 'static
{
    fn rollout(&self) -> Result<(), String>;
    /// Its pod selector, to say why its pods are not ready.
    fn pod_selector(&self) -> Option<&LabelSelector>;
}

/// `Ok` when nothing is `pending`, else "1/2 replicas ready, 2/2 updated[, <pending>]".
fn progress_text(pending: Option<&str>, ready: i32, updated: i32, want: i32, noun: &str) -> Result<(), String> {
    match pending {
        None => Ok(()),
        Some(why) => Err(format!(
            "{ready}/{want} {noun} ready, {updated}/{want} updated{}",
            if why.is_empty() { String::new() } else { format!(", {why}") }
        )),
    }
}

/// What a StatefulSet or a DaemonSet still waits for: its controller to see the new
/// generation, then its pods.
fn sets_pending(fresh: bool, ready: i32, updated: i32, want: i32) -> Option<&'static str> {
    if !fresh {
        Some("rollout not observed yet")
    } else if ready < want || updated < want {
        Some("")
    } else {
        None
    }
}

impl Rollout for Deployment {
    fn rollout(&self) -> Result<(), String> {
        let want = self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = self.status.clone().unwrap_or_default();
        let fresh = st.observed_generation.unwrap_or(0) >= self.metadata.generation.unwrap_or(0);
        let available = st.conditions.as_ref().is_some_and(|cs| cs.iter().any(|c| c.type_ == "Available" && c.status == "True"));
        // As `kubectl rollout status`: no old replica left and every updated one available
        // (availableReplicas alone counts the old pods still serving during a rollout).
        let (updated, total, avail) = (st.updated_replicas.unwrap_or(0), st.replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
        let old = total - updated;
        let why = if !fresh {
            Some("rollout not observed yet".to_string())
        } else if old > 0 {
            Some(format!("{old} old replica(s) still running"))
        } else if !available {
            Some("not Available yet".to_string())
        } else if avail < updated || updated < want {
            Some("waiting for its new pods".to_string())
        } else {
            None
        };
        progress_text(why.as_deref(), avail.min(updated), updated, want, "replicas available and")
    }
    fn pod_selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
}

impl Rollout for StatefulSet {
    fn rollout(&self) -> Result<(), String> {
        let want = self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = self.status.clone().unwrap_or_default();
        let fresh = st.observed_generation.unwrap_or(0) >= self.metadata.generation.unwrap_or(0);
        let (ready, updated) = (st.ready_replicas.unwrap_or(0), st.updated_replicas.unwrap_or(0));
        progress_text(sets_pending(fresh, ready, updated, want), ready, updated, want, "replicas")
    }
    fn pod_selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
}

impl Rollout for DaemonSet {
    fn rollout(&self) -> Result<(), String> {
        let st = self.status.clone().unwrap_or_default();
        let fresh = st.observed_generation.unwrap_or(0) >= self.metadata.generation.unwrap_or(0);
        let (ready, updated, want) = (st.number_ready, st.updated_number_scheduled.unwrap_or(0), st.desired_number_scheduled);
        progress_text(sets_pending(fresh, ready, updated, want), ready, updated, want, "pods")
    }
    fn pod_selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
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
        .filter_map(|c| {
            c.state.as_ref()?.waiting.as_ref().map(|w| format!("container {} {}", c.name, text(w.reason.as_ref(), w.message.as_ref())))
        })
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
    list.items.iter().filter_map(|p| Some(format!("; pod {} is {}", p.metadata.name.as_deref()?, pod_problem(p)?))).take(3).collect()
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
            await_condition(api, name, cond).await.map_err(|e| KubeError::Wait {
                context: self.context.clone(),
                what: what.to_string(),
                message: crate::error::chain(&e),
            })
        })
        .await
    }

    /// Waits until the CRD `name` (`meshes.appmesh.k8s.aws`) is Established.
    pub async fn wait_crd_established(&self, name: &str, timeout: Duration) -> Result<(), KubeError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        self.wait_for(api, name, &format!("CustomResourceDefinition {name} to be Established"), timeout, conditions::is_crd_established())
            .await
            .map(|_| ())
    }

    /// Waits until the workload `ns/name` (Deployment, StatefulSet, DaemonSet) has rolled out;
    /// a timeout says how far it got and why its pods are not ready.
    pub async fn wait_rolled_out<K: Rollout>(&self, ns: &str, name: &str, timeout: Duration) -> Result<(), KubeError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let kind = K::kind(&());
        let cond = |o: Option<&K>| o.is_some_and(|o| o.rollout().is_ok());
        match self.wait_for(api.clone(), name, &format!("{kind} {ns}/{name} to be ready"), timeout, cond).await {
            Err(KubeError::Timeout { context, what, secs }) => {
                let state = match api.get_opt(name).await {
                    Ok(Some(o)) => {
                        let pods = pod_problems(self.client.clone(), ns, o.pod_selector()).await;
                        format!(": {}{pods}", o.rollout().err().unwrap_or_else(|| "ready now".into()))
                    }
                    Ok(None) => ": it does not exist".into(),
                    Err(e) => format!(": cannot read it: {e}"),
                };
                Err(KubeError::Timeout { context, what: format!("{what}{state}"), secs })
            }
            other => other.map(|_| ()),
        }
    }

    /// The rollout state of workload `ns/name`: up to date when rolled out, missing when
    /// absent, else drifted with how far it is. A momentary unavailability is reported, not
    /// hidden, so `up` waits for it again.
    pub async fn rollout_status<K: Rollout>(&self, ns: &str, name: &str) -> Result<crate::state::Status, KubeError> {
        use crate::state::Status;
        let kind = K::kind(&());
        Ok(match self.get_typed::<K>(ns, name).await? {
            None => Status::Missing,
            Some(o) => match o.rollout() {
                Ok(()) => Status::UpToDate,
                Err(state) => Status::Drifted(format!("{kind} {ns}/{name} not ready: {state}")),
            },
        })
    }

    /// Waits until Service `ns/name` has a load balancer address; returns it.
    pub async fn wait_load_balancer(&self, ns: &str, name: &str, timeout: Duration) -> Result<String, KubeError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let what = format!("a load balancer address on Service {ns}/{name}");
        let cond = |s: Option<&Service>| s.and_then(load_balancer_address).is_some();
        let svc = self.wait_for(api, name, &what, timeout, cond).await?;
        svc.as_ref().and_then(load_balancer_address).ok_or_else(|| KubeError::Wait {
            context: self.context.clone(),
            what,
            message: "the Service was deleted".into(),
        })
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

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "yelb-appserver", "generation": generation }, "spec": { "replicas": 1, "selector": {}, "template": {} }, "status": status })).unwrap()
    }

    #[test]
    fn a_deployment_mid_rollout_is_not_rolled_out_while_an_old_pod_serves() {
        let available = serde_json::json!([{ "type": "Available", "status": "True" }]);
        // The new pod exists (updated 1) but is not ready; the old one still counts as available.
        let mid = deployment(
            3,
            serde_json::json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1, "conditions": available }),
        );
        assert!(mid.rollout().unwrap_err().contains("1 old replica(s) still running"), "an old replica is still there");
        let old_gone_new_unready = deployment(
            3,
            serde_json::json!({ "observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0, "conditions": available }),
        );
        assert!(old_gone_new_unready.rollout().is_err());
        let unobserved = deployment(
            4,
            serde_json::json!({ "observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "conditions": available }),
        );
        assert!(unobserved.rollout().unwrap_err().contains("not observed"));
        let done = deployment(
            3,
            serde_json::json!({ "observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "conditions": available }),
        );
        assert_eq!(done.rollout(), Ok(()));
    }

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
