//! The `envoy` provider (the default): Envoy sidecars that meshctl configures itself, SPIRE
//! for identities over SDS, STRICT mTLS with exact SPIFFE ID checks on every hop. No control
//! plane, no AWS service beyond EKS: SPIRE's own Envoy examples run this way.
//!
//! For every workload it adds to the core's objects:
//! - ConfigMap `<service>-envoy` with the bootstrap ([`bootstrap`]);
//! - an `envoy` container in the Deployment (image `mesh.envoy.image`), the agent socket's
//!   directory mounted read-only from the node, `hostAliases` pointing the names the app
//!   dials at 127.0.0.1, readiness from the Envoy admin through the health listener, and an
//!   annotation with the bootstrap's digest so a new bootstrap rolls the pods;
//! - the Service of a workload with callers sends its port to the inbound (mTLS) port; with
//!   callers in another account it is also an internal Network Load Balancer (TCP
//!   passthrough: TLS ends in the sidecars, never in the load balancer), whose address the
//!   callers' egress clusters dial across the Transit Gateway. The public entry point (a
//!   `load_balancer_port`) goes to the application container directly: browsers hold no SVID.

pub mod bootstrap;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, HostAlias, HostPathVolumeSource, Probe, Service,
    ServicePort, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use self::bootstrap::{Ports, Upstream};
use super::{AppObjects, MeshProvider, VerifyProfile, Wait, WorkloadObjects};
use crate::config::{is_image_ref, Config, ConfigError};
use crate::engine::Step;
use crate::error::{Error, ErrorKind};
use crate::kube::wait::load_balancer_address;
use crate::session::Session;
use crate::state::Progress;
use crate::topology::{Peer, Workload};
use crate::verify::Hints;

/// The Envoy version the tests run, as the official image's tag.
pub const DEFAULT_IMAGE: &str = "docker.io/envoyproxy/envoy:v1.40.0";
/// The sidecar container's name (the SPIRE workload entries select it).
pub const CONTAINER: &str = "envoy";
/// Where the bootstrap is mounted in the sidecar.
pub const BOOTSTRAP_DIR: &str = "/etc/envoy";
pub const BOOTSTRAP_KEY: &str = "envoy.yaml";
/// Pod annotation carrying the bootstrap's digest.
pub const BOOTSTRAP_ANNOTATION: &str = "meshctl.io/envoy-bootstrap";
/// The suffix of the public Service of a workload that also has callers (`<name>-public`).
pub const PUBLIC_SUFFIX: &str = "-public";
/// The longest `load_balancer_timeout_seconds`: a day.
pub const MAX_LOAD_BALANCER_TIMEOUT: u64 = 86_400;
/// Service annotations that make the in-tree AWS cloud provider create an internal NLB.
pub const NLB_ANNOTATIONS: [(&str, &str); 2] =
    [("service.beta.kubernetes.io/aws-load-balancer-type", "nlb"), ("service.beta.kubernetes.io/aws-load-balancer-internal", "true")];

/// `[mesh.envoy]` as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    image: Option<String>,
    inbound_port: Option<u16>,
    admin_port: Option<u16>,
    health_port: Option<u16>,
    /// How long `up` waits for a callee's load balancer address.
    load_balancer_timeout_seconds: Option<u64>,
}

/// `[mesh.envoy]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub image: String,
    pub ports: Ports,
    pub load_balancer_timeout: Duration,
}

/// Reads and validates `[mesh.envoy]` against the topology: every port a pod uses must be
/// distinct, or a listener would not bind.
pub fn settings(config: &Config) -> Result<Settings, ConfigError> {
    let raw: RawSettings = super::registry::section(config, "envoy")?;
    let s = Settings {
        image: raw.image.unwrap_or_else(|| DEFAULT_IMAGE.to_string()),
        ports: Ports {
            inbound: raw.inbound_port.unwrap_or(15443),
            admin: raw.admin_port.unwrap_or(9901),
            health: raw.health_port.unwrap_or(15021),
        },
        load_balancer_timeout: Duration::from_secs(raw.load_balancer_timeout_seconds.unwrap_or(600).min(MAX_LOAD_BALANCER_TIMEOUT)),
    };
    if let Some(t) = raw.load_balancer_timeout_seconds {
        if !(1..=MAX_LOAD_BALANCER_TIMEOUT).contains(&t) {
            return Err(ConfigError::new(
                "mesh.envoy.load_balancer_timeout_seconds",
                format!("{t} is not valid: 1 to {MAX_LOAD_BALANCER_TIMEOUT} seconds (default 600)"),
            ));
        }
    }
    if !is_image_ref(&s.image) {
        return Err(ConfigError::new(
            "mesh.envoy.image",
            format!("{:?} has no tag: pin the Envoy version, e.g. {DEFAULT_IMAGE} (the version meshctl is tested with)", s.image),
        ));
    }
    let sidecar = [
        ("mesh.envoy.inbound_port", s.ports.inbound),
        ("mesh.envoy.admin_port", s.ports.admin),
        ("mesh.envoy.health_port", s.ports.health),
    ];
    for (i, (k, p)) in sidecar.iter().enumerate() {
        if *p == 0 {
            return Err(ConfigError::new(*k, "0 is not a port: use 1-65535"));
        }
        if let Some((other, _)) = sidecar[..i].iter().find(|(_, q)| q == p) {
            return Err(ConfigError::new(*k, format!("{p} is also {other}: the sidecar's ports must differ")));
        }
    }
    let socket_dir = std::path::Path::new(&config.spire.agent_socket).parent().map(|p| p.display().to_string()).unwrap_or_default();
    if socket_dir == BOOTSTRAP_DIR {
        return Err(ConfigError::new(
            "spire.agent_socket",
            format!("{:?} is in {BOOTSTRAP_DIR}, where the sidecar mounts its bootstrap: the agent socket's directory needs a path of its own (default /run/spire/sockets)", config.spire.agent_socket),
        ));
    }
    for (i, svc) in config.services.iter().enumerate() {
        let key = |k: &str| format!("services[{i}].{k}");
        if svc.name == CONTAINER {
            return Err(ConfigError::new(key("name"), format!("{CONTAINER:?} is the sidecar container's name in every meshed pod (the app container is named after its service): choose another name")));
        }
        if svc.load_balancer_port.is_some() && !config.callers_of(&svc.name).is_empty() {
            // Callers reach it through its own Service; the public entry point is a second one.
            let public = format!("{}{PUBLIC_SUFFIX}", svc.name);
            if public.len() > 63 {
                return Err(ConfigError::new(
                    key("name"),
                    format!(
                        "{:?} is too long for a service with callers and a load_balancer_port: its public Service is named <name>{PUBLIC_SUFFIX}, at most 63 characters, so the name has at most {}",
                        svc.name,
                        63 - PUBLIC_SUFFIX.len()
                    ),
                ));
            }
            if let Some(j) = config.services.iter().position(|o| o.name == public && o.account == svc.account) {
                return Err(ConfigError::new(
                    key("load_balancer_port"),
                    format!("the public Service of {} is named {public}, which is services[{j}]'s Service in the same account: rename one of them", svc.name),
                ));
            }
        }
        if let Some((k, _)) = sidecar.iter().find(|(_, p)| *p == svc.port) {
            return Err(ConfigError::new(
                key("port"),
                format!("{} is the sidecar's {k}: the app and its Envoy share the pod's network; choose another port or set {k}", svc.port),
            ));
        }
        let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
        for b in &svc.backends {
            let Some(callee) = config.service(b) else { continue };
            if callee.port == svc.port {
                return Err(ConfigError::new(
                    key("backends"),
                    format!(
                        "backend {b} listens on {}, the port {} itself listens on: its Envoy could not bind the egress listener 127.0.0.1:{} in the same pod",
                        callee.port, svc.name, callee.port
                    ),
                ));
            }
            if let Some(first) = seen.insert(callee.port, b) {
                return Err(ConfigError::new(
                    key("backends"),
                    format!(
                        "backends {first} and {b} both listen on {}: one pod cannot have two egress listeners on 127.0.0.1:{}",
                        callee.port, callee.port
                    ),
                ));
            }
            if let Some((k, _)) = sidecar.iter().find(|(_, p)| *p == callee.port) {
                return Err(ConfigError::new(
                    key("backends"),
                    format!("backend {b} listens on {}, which is {k} in {}'s pod", callee.port, svc.name),
                ));
            }
        }
    }
    Ok(s)
}

pub fn from_config(config: &Config) -> Result<Arc<dyn MeshProvider>, ConfigError> {
    Ok(Arc::new(EnvoyMesh { settings: settings(config)? }))
}

pub struct EnvoyMesh {
    pub settings: Settings,
}

/// FNV-1a of a text, as 16 hex digits: stable across builds.
fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The FQDN of a Service in the cluster.
pub fn service_fqdn(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.cluster.local")
}

/// Where a caller in `caller_account` reaches backend `b`: its Service's FQDN in the same
/// cluster, else its load balancer's address (`remote`, `None` while it has none). Never the
/// short name the app dials: in the pod that resolves to 127.0.0.1 (hostAliases) and would
/// loop back into the sidecar.
pub fn upstream(b: &Peer, caller_account: &str, namespace: &str, remote: Option<String>) -> Option<Upstream> {
    let address = if b.account == caller_account { Some(service_fqdn(&b.name, namespace)) } else { remote }?;
    Some(Upstream { name: b.name.clone(), spiffe_id: b.spiffe_id.clone(), port: b.port, address, address_port: b.port })
}

impl EnvoyMesh {
    /// The address of a backend in another account: its Service's load balancer, read in its
    /// cluster. `None` while it has none.
    async fn remote_address(&self, session: &Session, b: &Peer) -> Result<Option<String>, Error> {
        let ns = &session.topology.namespace;
        let kc = session.kube.cluster_client(&b.account).await?;
        let svc: Option<Service> = kc.get_typed(ns, &b.name).await?;
        Ok(svc.as_ref().and_then(load_balancer_address))
    }

    /// Where each backend of `w` is reached from its pod; the names of backends whose
    /// address is not known yet.
    async fn upstreams(
        &self,
        session: &Session,
        w: &Workload,
        wait: Wait,
        progress: &dyn Progress,
    ) -> Result<(Vec<Upstream>, Vec<String>), Error> {
        let ns = &session.topology.namespace;
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for b in &w.backends {
            let remote = if b.account == w.account {
                None
            } else {
                let deadline = match wait {
                    Wait::No => None,
                    Wait::Up(d) => Some(tokio::time::Instant::now() + d),
                };
                let mut found = self.remote_address(session, b).await?;
                while found.is_none() && deadline.is_some_and(|d| tokio::time::Instant::now() < d) && !progress.cancelled() {
                    progress.progress(format!("waiting for the load balancer of Service {ns}/{} in account {}", b.name, b.account));
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    found = self.remote_address(session, b).await?;
                }
                if found.is_none() && wait != Wait::No {
                    return Err(Error::new(
                        ErrorKind::Other,
                        format!(
                            "account {}: Service {ns}/{} has no load balancer address after {}s; callers in {} need it. Is a load balancer \
                             controller running in that cluster? Look: `kubectl --context <{}> -n {ns} describe service {}`",
                            b.account,
                            b.name,
                            self.settings.load_balancer_timeout.as_secs(),
                            w.account,
                            b.account,
                            b.name
                        ),
                    ));
                }
                found
            };
            match upstream(b, &w.account, ns, remote) {
                Some(u) => out.push(u),
                None => pending.push(format!("load balancer address of {} ({}) not known yet", b.name, b.account)),
            }
        }
        Ok((out, pending))
    }

    /// Adds the sidecar to one workload's objects for a rendered bootstrap; returns its
    /// bootstrap ConfigMap.
    pub fn decorate_workload(&self, wo: &mut WorkloadObjects, namespace: &str, socket: &str, bootstrap_text: &str) -> ConfigMap {
        let w = &wo.workload;
        let ports = self.settings.ports;
        let config_map_name = format!("{}-envoy", w.name);
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(config_map_name.clone());
        cm.metadata.namespace = Some(namespace.to_string());
        cm.data = Some([(BOOTSTRAP_KEY.to_string(), bootstrap_text.to_string())].into());

        let socket_dir =
            std::path::Path::new(socket).parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/run/spire/sockets".into());
        let mut container_ports =
            vec![ContainerPort { name: Some("envoy-health".into()), container_port: ports.health.into(), ..Default::default() }];
        if !w.callers.is_empty() {
            container_ports
                .insert(0, ContainerPort { name: Some("mesh".into()), container_port: ports.inbound.into(), ..Default::default() });
        }
        let sidecar = Container {
            name: CONTAINER.into(),
            image: Some(self.settings.image.clone()),
            command: Some(vec!["/usr/local/bin/envoy".into()]),
            args: Some(vec!["-c".into(), format!("{BOOTSTRAP_DIR}/{BOOTSTRAP_KEY}"), "--log-level".into(), "info".into()]),
            ports: Some(container_ports),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/ready".into()),
                    port: IntOrString::String("envoy-health".into()),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                failure_threshold: Some(3),
                ..Default::default()
            }),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "envoy-bootstrap".into(),
                    mount_path: BOOTSTRAP_DIR.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "spire-agent-socket".into(),
                    mount_path: socket_dir.clone(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let template = wo.deployment.spec.get_or_insert_with(Default::default).template.clone();
        let mut template = template;
        template
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(BOOTSTRAP_ANNOTATION.into(), digest(bootstrap_text));
        let pod = template.spec.get_or_insert_with(Default::default);
        pod.containers.push(sidecar);
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        volumes.push(Volume {
            name: "envoy-bootstrap".into(),
            config_map: Some(ConfigMapVolumeSource { name: config_map_name, ..Default::default() }),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "spire-agent-socket".into(),
            host_path: Some(HostPathVolumeSource { path: socket_dir, type_: Some("Directory".into()) }),
            ..Default::default()
        });
        if !w.backends.is_empty() {
            pod.host_aliases =
                Some(vec![HostAlias { ip: "127.0.0.1".into(), hostnames: Some(w.backends.iter().map(|b| b.name.clone()).collect()) }]);
        }
        wo.deployment.spec.get_or_insert_with(Default::default).template = template;

        // Services: the mesh Service sends the service port to the sidecar; the public one
        // (if any) to the app.
        let mut services = Vec::new();
        let base = wo.services.first().cloned().unwrap_or_default();
        if !w.callers.is_empty() {
            let mut mesh = base.clone();
            let spec = mesh.spec.get_or_insert_with(Default::default);
            spec.ports = Some(vec![ServicePort {
                name: Some("mesh".into()),
                port: w.port.into(),
                target_port: Some(IntOrString::String("mesh".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]);
            if w.called_across() {
                spec.type_ = Some("LoadBalancer".into());
                let ann = mesh.metadata.annotations.get_or_insert_with(Default::default);
                for (k, v) in NLB_ANNOTATIONS {
                    ann.insert(k.into(), v.into());
                }
            } else {
                spec.type_ = Some("ClusterIP".into());
            }
            services.push(mesh);
        }
        if let Some(public) = w.public_port {
            let mut svc = base.clone();
            if !w.callers.is_empty() {
                svc.metadata.name = Some(format!("{}{PUBLIC_SUFFIX}", w.name));
            }
            let spec = svc.spec.get_or_insert_with(Default::default);
            spec.type_ = Some("LoadBalancer".into());
            spec.ports = Some(vec![ServicePort {
                name: Some("http".into()),
                port: public.into(),
                target_port: Some(IntOrString::Int(w.port.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]);
            services.push(svc);
        }
        if services.is_empty() {
            services.push(base);
        }
        wo.services = services;
        cm
    }
}

#[async_trait::async_trait]
impl MeshProvider for EnvoyMesh {
    fn name(&self) -> &'static str {
        "envoy"
    }

    fn control_plane(&self, _session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
        Vec::new()
    }

    fn workload_selectors(&self, w: &Workload, namespace: &str) -> Vec<String> {
        super::k8s_selectors(w, namespace, CONTAINER)
    }

    async fn decorate(
        &self,
        session: &Session,
        objects: &mut AppObjects,
        wait: Wait,
        progress: &dyn Progress,
    ) -> Result<Vec<String>, Error> {
        let topo = &session.topology;
        let wait = match wait {
            Wait::Up(_) => Wait::Up(self.settings.load_balancer_timeout),
            Wait::No => Wait::No,
        };
        let mut pending = Vec::new();
        let mut config_maps = Vec::new();
        for wo in objects.workloads.iter_mut() {
            let (upstreams, missing) = self.upstreams(session, &wo.workload, wait, progress).await?;
            pending.extend(missing);
            let b = bootstrap::bootstrap(&wo.workload, &topo.bundle_id(), &topo.agent_socket, self.settings.ports, &upstreams);
            let text = serde_yaml_ng::to_string(&b)?;
            config_maps.push(self.decorate_workload(wo, &topo.namespace, &topo.agent_socket, &text));
        }
        for cm in config_maps {
            objects.mesh.push(crate::kube::to_dynamic(&cm)?);
        }
        Ok(pending)
    }

    fn verify_profile(&self) -> VerifyProfile {
        VerifyProfile { admin_port: self.settings.ports.admin, hints: Arc::new(EnvoyHints) }
    }
}

/// Where to look when a check of a meshctl-configured Envoy fails.
struct EnvoyHints;

impl Hints for EnvoyHints {
    fn sds_not_configured(&self, workload: &str, socket: &str) -> String {
        format!(
            "the bootstrap of {workload} has no SDS cluster on {socket}: it is ConfigMap {workload}-envoy, written by `meshctl up --only yelb`; \
             a pod started from an older bootstrap needs a restart (`kubectl rollout restart deployment/{workload}`)"
        )
    }
    fn svid_missing(&self, workload: &str, spiffe_id: &str) -> String {
        format!(
            "no SPIRE registration entry matches the envoy container of {workload}, or the agent has not issued it: compare \
             `spire-server entry show -spiffeID {spiffe_id}` (in the spire-server pod) with the pod's namespace, service account, \
             labels and container name `{CONTAINER}`; `meshctl up --only register` fixes the entry"
        )
    }
    fn listener_sans(&self, workload: &str) -> String {
        format!("the inbound listener's SAN matchers come from the callers in the configuration: `meshctl up --only yelb` rewrites ConfigMap {workload}-envoy")
    }
    fn no_tls_listener(&self, workload: &str) -> String {
        format!("{workload} has callers but its Envoy has no mTLS inbound listener: `meshctl up --only yelb` rewrites ConfigMap {workload}-envoy")
    }
    fn egress_missing(&self, workload: &str, backend: &str) -> String {
        format!("{workload}'s Envoy has no listener or TLS cluster for backend {backend}: is {backend} in its backends? `meshctl up --only yelb` rewrites ConfigMap {workload}-envoy")
    }
    fn egress_plaintext(&self, workload: &str, backend: &str) -> String {
        format!("traffic from {workload} to {backend} leaves in plain text: the egress cluster has no UpstreamTlsContext; rewrite ConfigMap {workload}-envoy with `meshctl up --only yelb`")
    }
    fn egress_sans(&self, workload: &str, backend: &str) -> String {
        format!("the egress cluster of {workload} to {backend} must accept exactly {backend}'s SPIFFE ID: `meshctl up --only yelb` rewrites ConfigMap {workload}-envoy")
    }
    fn no_client_cert(&self) -> String {
        "the caller's Envoy does not present its SVID: its egress cluster needs tls_certificate_sds_secret_configs (meshctl's bootstrap has it)".into()
    }
}

#[cfg(test)]
mod tests;
