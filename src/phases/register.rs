//! Phase 7: SPIRE registration entries: one node entry per spoke's agents, one workload entry
//! per meshed service, created through `spire-server entry` in the server pod.
//!
//! Every command is `<spire.server_binary> entry show|create|update|delete ... -socketPath
//! <spire.server_socket>`, run by kube exec into container `spire-server` of pod
//! `spire-server-0` with its arguments as a vector. `check` reads `entry show -spiffeID`;
//! `apply` creates a missing entry or updates one whose parent or selectors differ; `destroy`
//! deletes only the entries meshctl would have created (that SPIFFE ID under that parent).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use super::ids;
use crate::context::Ctx;
use crate::engine::{Context, Status, Step, StepCx, StepError, StepMeta};
use crate::spire::charts::{SERVER_CONTAINER, SERVER_POD};
use crate::spire::entries::{self, EntryCli, Plan, PodExec, WantedEntry};

pub fn steps(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    let mut out: Vec<Arc<dyn Step>> = Vec::new();
    for s in &c.spokes {
        out.push(Arc::new(EntryStep {
            ctx: ctx.clone(),
            wanted: Some(entries::node_entry(c, s)),
            meta: StepMeta::new("register", &format!("node-{}", s.name), &c.hub.name, format!("register node entry {}", c.agent_spiffe_id(s)))
                .needs([ids::spire_server()]),
        }));
    }
    for svc in &c.services {
        out.push(Arc::new(EntryStep {
            ctx: ctx.clone(),
            // None only when the service names no spoke: validation rejects that config.
            wanted: entries::workload_entry(c, svc),
            meta: StepMeta::new("register", &svc.name, &c.hub.name, format!("register workload entry {}", c.spiffe_id(&svc.spiffe_path)))
                .needs([ids::register_node(&svc.account)]),
        }));
    }
    out
}

/// One registration entry, kept as the configuration says.
pub struct EntryStep {
    ctx: Arc<Ctx>,
    wanted: Option<WantedEntry>,
    meta: StepMeta,
}

impl EntryStep {
    fn wanted(&self) -> Result<&WantedEntry, StepError> {
        self.wanted.as_ref().ok_or_else(|| StepError::new(format!("{}: the service's account is not a spoke in the configuration", self.meta.id)))
    }

    /// The server CLI in the hub's server pod.
    pub async fn cli(ctx: &Ctx) -> Result<PodExec, StepError> {
        let c = &ctx.config;
        let kc = ctx.kube.client(&c.hub.name).await.map_err(|e| StepError::new(e.to_string()))?;
        let context = ctx.kube.context(&c.hub.name).unwrap_or("?");
        Ok(PodExec {
            pods: Api::<Pod>::namespaced(kc, &c.spire.namespace),
            pod: SERVER_POD.to_string(),
            container: SERVER_CONTAINER.to_string(),
            binary: c.spire.server_binary.clone(),
            socket: c.spire.server_socket.clone(),
            where_: format!("namespace {}, cluster {}, context {context}", c.spire.namespace, c.hub.cluster_name),
        })
    }
}

#[async_trait::async_trait]
impl Step for EntryStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        let wanted = self.wanted()?;
        let cli = Self::cli(&self.ctx).await?;
        if !server_pod_exists(&self.ctx, &cli).await? {
            // No server pod: no entries (and `down` has nothing to delete).
            return Ok(Status::Missing);
        }
        let live = entries::show(&cli, &wanted.spiffe_id).await.context("reading registration entries")?;
        Ok(match entries::plan(wanted, &live) {
            Plan::UpToDate { .. } => Status::UpToDate,
            Plan::Create => Status::Missing,
            Plan::Update { reason, .. } => Status::Drifted(reason),
        })
    }

    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        let wanted = self.wanted()?;
        let cli = Self::cli(&self.ctx).await?;
        cx.progress(format!("entry {}", wanted.spiffe_id));
        let done = entries::ensure(&cli as &dyn EntryCli, wanted).await.context(format!("registering {}", wanted.spiffe_id))?;
        match done {
            Plan::UpToDate { id } => cx.progress(format!("entry {id} already as wanted")),
            Plan::Create => cx.progress(format!("created entry {}", wanted.spiffe_id)),
            Plan::Update { reason, .. } => cx.progress(format!("updated {reason}")),
        }
        Ok(())
    }

    async fn destroy(&self, cx: &StepCx) -> Result<(), StepError> {
        let wanted = self.wanted()?;
        // No server pod (already uninstalled, or never installed): nothing is registered.
        let cli = Self::cli(&self.ctx).await?;
        if !server_pod_exists(&self.ctx, &cli).await? {
            return Ok(());
        }
        let n = entries::remove(&cli, wanted).await.context(format!("deleting entries of {}", wanted.spiffe_id))?;
        cx.progress(format!("deleted {n} entr{} of {}", if n == 1 { "y" } else { "ies" }, wanted.spiffe_id));
        Ok(())
    }
}

async fn server_pod_exists(ctx: &Ctx, cli: &PodExec) -> Result<bool, StepError> {
    let c = &ctx.config;
    match cli.pods.get_opt(SERVER_POD).await {
        Ok(p) => Ok(p.is_some()),
        Err(e) => Err(StepError::new(format!("reading pod {}/{SERVER_POD} in cluster {} ({}): {e}", c.spire.namespace, c.hub.cluster_name, cli.where_))),
    }
}
