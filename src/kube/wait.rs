//! Waits: kube-runtime `await_condition` predicates over `Option<&K>` (a missing object is a
//! normal state) plus a timeout whose error says what was waited for.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
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
        self.wait_for(api, name, &format!("Deployment {ns}/{name} to be available"), timeout, is_deployment_available()).await.map(|_| ())
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
