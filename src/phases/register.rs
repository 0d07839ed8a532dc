//! Phase 7: SPIRE registration entries: one node entry per spoke's agents, one workload entry
//! per meshed workload (its selectors from the mesh provider: the container holding the SVID),
//! created through `spire-server entry` in the server pod.
//!
//! Every command is `<spire.server_binary> entry show|create|update|delete ... -socketPath
//! <spire.server_socket>`, run by kube exec into container `spire-server` of pod
//! `spire-server-0` with its arguments as a vector. `check` reads `entry show -spiffeID`;
//! `apply` creates a missing entry or updates one whose parent or selectors differ; `destroy`
//! deletes only the entries meshctl would have created (that SPIFFE ID under that parent).
//!
//! Entries live in the server's datastore: a server pod that does not run holds none that a
//! command could reach, and its volume goes with `spire/server`. So when the pod is not
//! running, `check` says missing and `down` has nothing to do here.
//!
//! Every entry meshctl creates carries the hint `meshctl`. `register/orphans` finds those whose
//! SPIFFE ID the configuration no longer names (a removed service's, a removed spoke's
//! agents'): orphaned in `plan` and `status`, deleted by `up --prune`, gone with the server on
//! `down`.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use super::ids;
use crate::engine::{Error, Status, Step, StepMeta, StepRun, Teardown};
use crate::error::ResultExt;
use crate::session::Session;
use crate::spire::charts::{SERVER_CONTAINER, SERVER_POD};
use crate::spire::entries::{self, EntryCli, Plan, PodExec, WantedEntry};

pub fn steps(session: &Arc<Session>) -> Vec<Arc<dyn Step>> {
    let c = &session.config;
    let mut out: Vec<Arc<dyn Step>> = Vec::new();
    for s in &c.spokes {
        out.push(Arc::new(EntryStep {
            session: session.clone(),
            wanted: Some(entries::node_entry(c, s)),
            meta: StepMeta::new(ids::register_node(&s.name), &c.hub.name, format!("register node entry {}", c.agent_spiffe_id(s)))
                .needs([ids::spire_server()]),
        }));
    }
    for w in &session.topology.workloads {
        let selectors = session.mesh.workload_selectors(w, &session.topology.namespace);
        out.push(Arc::new(EntryStep {
            session: session.clone(),
            // None only when the workload names no spoke: validation rejects that config.
            wanted: entries::workload_entry(c, w, selectors),
            meta: StepMeta::new(ids::register_service(&w.name), &c.hub.name, format!("register workload entry {}", w.spiffe_id))
                .needs([ids::register_node(&w.account)]),
        }));
    }
    out.push(Arc::new(OrphanEntries {
        session: session.clone(),
        meta: StepMeta::new(
            ids::orphan_entries(),
            &c.hub.name,
            "find meshctl's entries whose SPIFFE ID the configuration no longer names (deleted by `up --prune`)",
        )
        // After the server without needing it: a running server's entries can be read (and
        // `plan` shows them) while its configuration is about to change for a removed spoke.
        .needs([ids::preflight()])
        .after([ids::spire_server()]),
    }));
    out
}

/// One registration entry, kept as the configuration says.
pub struct EntryStep {
    session: Arc<Session>,
    wanted: Option<WantedEntry>,
    meta: StepMeta,
}

impl EntryStep {
    fn wanted(&self) -> Result<&WantedEntry, Error> {
        self.wanted.as_ref().ok_or_else(|| {
            Error::new(
                crate::error::ErrorKind::InvalidInput,
                format!("{}: the workload's account is not a spoke in the configuration", self.meta.id),
            )
        })
    }

    /// The server CLI in the hub's server pod.
    pub async fn cli(session: &Session) -> Result<PodExec, Error> {
        let c = &session.config;
        let kc = session.kube.client(&c.hub.name).await?;
        let context = session.kube.context(&c.hub.name).unwrap_or("?");
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

/// Whether the server container runs, so its admin socket can answer.
async fn server_running(session: &Session, cli: &PodExec) -> Result<bool, Error> {
    let c = &session.config;
    let pod = cli
        .pods
        .get_opt(SERVER_POD)
        .await
        .map_err(crate::kube::api_error)
        .context(format!("reading pod {}/{SERVER_POD} in cluster {} ({})", c.spire.namespace, c.hub.cluster_name, cli.where_))?;
    Ok(pod
        .and_then(|p| p.status)
        .and_then(|s| s.container_statuses)
        .is_some_and(|cs| cs.iter().any(|c| c.name == SERVER_CONTAINER && c.state.as_ref().is_some_and(|s| s.running.is_some()))))
}

#[async_trait::async_trait]
impl Step for EntryStep {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let wanted = self.wanted()?;
        let cli = Self::cli(&self.session).await?;
        if !server_running(&self.session, &cli).await? {
            return Ok(Status::Missing);
        }
        let live = entries::show(&cli, Some(&wanted.spiffe_id)).await.context("reading registration entries")?;
        Ok(match entries::plan(wanted, &live) {
            Plan::UpToDate { .. } => Status::UpToDate,
            Plan::Create => Status::Missing,
            Plan::Update { reason, .. } => Status::Drifted(reason),
        })
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let wanted = self.wanted()?;
        let cli = Self::cli(&self.session).await?;
        run.progress(format!("entry {}", wanted.spiffe_id));
        let done = entries::ensure(&cli as &dyn EntryCli, wanted).await.context(format!("registering {}", wanted.spiffe_id))?;
        match done {
            Plan::UpToDate { id } => run.progress(format!("entry {id} already as wanted")),
            Plan::Create => run.progress(format!("created entry {}", wanted.spiffe_id)),
            Plan::Update { reason, .. } => run.progress(format!("updated {reason}")),
        }
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        let wanted = self.wanted()?;
        let cli = Self::cli(&self.session).await?;
        let n = entries::remove(&cli, wanted).await.context(format!("deleting entries of {}", wanted.spiffe_id))?;
        run.progress(format!("deleted {n} entr{} of {}", if n == 1 { "y" } else { "ies" }, wanted.spiffe_id));
        Ok(())
    }
}

/// `register/orphans`: meshctl's entries (hint `meshctl`) of SPIFFE IDs no longer configured.
pub struct OrphanEntries {
    session: Arc<Session>,
    meta: StepMeta,
}

impl OrphanEntries {
    /// The SPIFFE IDs the configuration registers: every spoke's agents, every workload.
    fn wanted(&self) -> BTreeSet<String> {
        let c = &self.session.config;
        let nodes = c.spokes.iter().map(|s| entries::node_entry(c, s).spiffe_id);
        nodes.chain(self.session.topology.workloads.iter().map(|w| w.spiffe_id.clone())).collect()
    }

    /// The orphaned entries; none while the server does not run.
    async fn find(&self) -> Result<(PodExec, Vec<entries::LiveEntry>), Error> {
        let cli = EntryStep::cli(&self.session).await?;
        if !server_running(&self.session, &cli).await? {
            return Ok((cli, Vec::new()));
        }
        let live = entries::show(&cli, None).await.context("reading registration entries")?;
        let orphans = entries::orphans(&self.wanted(), &live).into_iter().cloned().collect();
        Ok((cli, orphans))
    }
}

#[async_trait::async_trait]
impl Step for OrphanEntries {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }

    /// The server's datastore goes with `spire/server` on `down`.
    fn teardown(&self) -> Teardown {
        Teardown::WithParent
    }

    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        let (_, orphans) = self.find().await?;
        if orphans.is_empty() {
            return Ok(Status::UpToDate);
        }
        Ok(Status::Orphaned(orphans.iter().map(|e| format!("entry {} ({})", e.id, e.spiffe_id)).collect::<Vec<_>>().join(", ")))
    }

    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        let (cli, orphans) = self.find().await?;
        for e in &orphans {
            run.progress(format!("deleting orphaned entry {} ({})", e.id, e.spiffe_id));
            cli.run(entries::delete_args(&e.id)).await.context(format!("deleting orphaned entry {} ({})", e.id, e.spiffe_id))?;
        }
        Ok(())
    }

    async fn destroy(&self, run: &StepRun) -> Result<(), Error> {
        self.apply(run).await
    }
}
