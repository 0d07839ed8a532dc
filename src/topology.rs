//! The mesh as every provider sees it, whatever configures the Envoys: which workloads run in
//! which spoke, the SPIFFE ID each one holds, who may call it and what it calls.
//!
//! Built once from the configuration ([`Topology::new`]); the core's app, register and verify
//! phases and every mesh provider read this view instead of the configuration's service
//! list, so the rules derived from the service graph (callers, cross-account calls) are
//! written once.

use std::collections::BTreeMap;

use crate::config::{Config, Protocol};

/// The service account meshed pods run as (the walkthrough's workload entries select it).
pub const WORKLOAD_SERVICE_ACCOUNT: &str = "default";

/// One meshed workload: a Deployment with its Service, holding one SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    /// The spoke account it runs in.
    pub account: String,
    pub spiffe_id: String,
    /// Pod labels that select it (`app`, `tier`): the Deployment's selector, the Service's
    /// selector and the SPIRE workload entry's `k8s:pod-label` selectors.
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The port the application listens on.
    pub port: u16,
    pub protocol: Protocol,
    pub image: String,
    /// Exposed to the internet on this port (a public load balancer, no mTLS: browsers hold
    /// no SVID).
    pub public_port: Option<u16>,
    /// Workloads allowed to call it.
    pub callers: Vec<Peer>,
    /// Workloads it calls.
    pub backends: Vec<Peer>,
}

/// Another workload as seen from one workload: how to reach it and who it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub account: String,
    pub spiffe_id: String,
    pub port: u16,
    pub protocol: Protocol,
}

impl Workload {
    /// Called from a workload in another account.
    pub fn called_across(&self) -> bool {
        self.callers.iter().any(|c| c.account != self.account)
    }

    /// Its backends in other accounts.
    pub fn remote_backends(&self) -> impl Iterator<Item = &Peer> {
        self.backends.iter().filter(move |b| b.account != self.account)
    }

    /// `app=<app>,tier=<tier>`: a label selector for its pods.
    pub fn selector(&self) -> String {
        self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

/// Every workload of the mesh and the facts they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub trust_domain: String,
    /// Namespace every workload runs in.
    pub namespace: String,
    /// The SPIRE agent socket on every node (Workload API and SDS).
    pub agent_socket: String,
    pub workloads: Vec<Workload>,
}

impl Topology {
    pub fn new(c: &Config) -> Topology {
        let peer = |s: &crate::config::Service| Peer {
            name: s.name.clone(),
            account: s.account.clone(),
            spiffe_id: c.spiffe_id(&s.spiffe_path),
            port: s.port,
            protocol: s.protocol,
        };
        let workloads = c
            .services
            .iter()
            .map(|s| Workload {
                name: s.name.clone(),
                account: s.account.clone(),
                spiffe_id: c.spiffe_id(&s.spiffe_path),
                labels: [("app".to_string(), s.app_label.clone()), ("tier".to_string(), s.tier_label.clone())].into(),
                service_account: WORKLOAD_SERVICE_ACCOUNT.to_string(),
                port: s.port,
                protocol: s.protocol,
                image: s.image.clone(),
                public_port: s.load_balancer_port,
                callers: c.callers_of(&s.name).into_iter().map(peer).collect(),
                backends: s.backends.iter().filter_map(|b| c.service(b)).map(peer).collect(),
            })
            .collect();
        Topology {
            trust_domain: c.mesh.trust_domain.clone(),
            namespace: c.mesh.app_namespace.clone(),
            agent_socket: c.spire.agent_socket.clone(),
            workloads,
        }
    }

    /// `spiffe://<trust domain>`: the SDS name of the trust bundle.
    pub fn bundle_id(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }

    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// The workloads running in `account`.
    pub fn in_account<'a>(&'a self, account: &'a str) -> impl Iterator<Item = &'a Workload> + 'a {
        self.workloads.iter().filter(move |w| w.account == account)
    }

    /// The other accounts whose workloads the workloads of `account` call: their app steps
    /// go first, so the callers can be pointed at them.
    pub fn callee_accounts(&self, account: &str) -> Vec<String> {
        let mut out: Vec<String> = self.in_account(account).flat_map(|w| w.remote_backends().map(|b| b.account.clone())).collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walkthrough_graph() {
        let t = Topology::new(&Config::default());
        let app = t.workload("yelb-appserver").unwrap();
        assert_eq!(app.spiffe_id, "spiffe://am-multi-account-mesh/yelbapp");
        assert_eq!(app.callers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["yelb-ui"]);
        assert!(app.called_across());
        assert_eq!(app.backends.iter().map(|b| (b.name.as_str(), b.port)).collect::<Vec<_>>(), [("yelb-db", 5432), ("redis-server", 6379)]);
        assert_eq!(app.remote_backends().count(), 0);
        assert_eq!(app.selector(), "app=yelb-appserver,tier=middletier");
        let db = t.workload("yelb-db").unwrap();
        assert!(!db.called_across());
        assert_eq!(t.callee_accounts("frontend"), ["backend"]);
        assert!(t.callee_accounts("backend").is_empty());
        assert_eq!(t.bundle_id(), "spiffe://am-multi-account-mesh");
        assert_eq!(t.workload("yelb-ui").unwrap().public_port, Some(80));
    }
}
