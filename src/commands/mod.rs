//! One function per subcommand. Loads the configuration, builds the session and the graph,
//! picks the steps, runs the engine and turns the result into an exit code. `verify` is a
//! command of its own ([`verify`]): a read-only checker run after `up`, not a graph step.

pub mod verify;

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::{Cli, Command, ConfigCommand, Global, OutputFormat, Phase};
use crate::config::{Config, ConfigError};
use crate::engine::{self, ErrorKind, Graph, Mode, Outcome, RunOptions, RunSummary, Status, StepId, StepMeta};
use crate::phases::{self, PREFLIGHT};
use crate::render::{self, Style};
use crate::session::Session;

/// Exit codes: what a script can rely on.
pub mod exit {
    pub const OK: u8 = 0;
    /// A step (or a verify check) failed.
    pub const FAILED: u8 = 1;
    /// Bad usage or configuration; nothing was changed.
    pub const USAGE: u8 = 2;
    /// Interrupted by Ctrl-C; a later run continues.
    pub const INTERRUPTED: u8 = 130;
}

/// Errors that end the program before or instead of a run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is invalid (exit 2).
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// The command cannot run as asked (exit 2): missing earlier phase, refused confirmation.
    #[error("{0}")]
    Usage(String),
    /// Something failed while running (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) | AppError::Usage(_) => exit::USAGE,
            AppError::Failed(_) => exit::FAILED,
        }
    }
}

/// The configuration file to read: `--config`, else ./meshctl.toml when present.
fn config_path(global: &Global) -> Option<PathBuf> {
    global.config.clone().or_else(|| {
        let p = PathBuf::from("meshctl.toml");
        p.exists().then_some(p)
    })
}

pub fn load_config(global: &Global) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("MESHCTL_")).collect();
    Config::load(config_path(global).as_deref(), &env, &global.set)
}

/// The configuration with its provider (whose section is validated here: exit 2 on error).
pub fn load_session(global: &Global) -> Result<Arc<Session>, AppError> {
    Ok(Arc::new(Session::new(load_config(global)?)?))
}

pub async fn run(cli: Cli) -> Result<u8, AppError> {
    let g = &cli.global;
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "meshctl", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Config { command: ConfigCommand::Show } => {
            print!("{}", load_config(g)?.to_toml());
            Ok(exit::OK)
        }
        Command::Token { cluster, role_arn, profile, region } => {
            let config = load_config(g)?;
            let region = match region {
                // the one region rule (config::is_region), for the flag as for the key
                Some(r) if !crate::config::is_region(r) => {
                    return Err(AppError::Config(ConfigError::new(
                        "--region",
                        format!("{r:?} is not valid: an AWS region such as us-east-2"),
                    )))
                }
                Some(r) => r.clone(),
                None => config.region,
            };
            crate::aws::token::print_exec_credential(cluster, role_arn.as_deref(), profile.as_deref(), &region)
                .await
                .map_err(|e| AppError::Failed(crate::error::chain(&e)))?;
            Ok(exit::OK)
        }
        Command::Plan { offline: true, down } => {
            let session = load_session(g)?;
            let graph = build_graph(&session)?;
            let mode = if *down { Mode::PlanDown } else { Mode::Plan };
            let metas = static_metas(&graph, mode);
            match g.output {
                OutputFormat::Json => println!("{}", render::graph_json(mode, &metas)),
                OutputFormat::Text => print!("{}", render::graph_text(mode, &metas)),
            }
            Ok(exit::OK)
        }
        Command::Plan { offline: false, down } => {
            let mode = if *down { Mode::PlanDown } else { Mode::Plan };
            run_graph(g, mode, Flags::default()).await
        }
        Command::Status => run_graph(g, Mode::Status, Flags::default()).await,
        Command::Up { from, only, prune } => {
            if *prune {
                confirm(g, "delete what meshctl created for this mesh that the configuration no longer names (a removed spoke's stacks and EKS cluster included)")?;
            }
            let flags = Flags { prune: *prune, ..Flags::default() };
            match (from, only.is_empty()) {
                // Earlier phases are the caller's word: done by an earlier run, or made
                // elsewhere (clusters of one's own, reached through kube_context).
                (Some(f), _) => run_phases(g, &f.and_later(), Mode::Up, Deps::Trust, flags).await,
                (None, false) => run_phases(g, only, Mode::Up, Deps::Require, flags).await,
                (None, true) => run_graph(g, Mode::Up, flags).await,
            }
        }
        Command::Down { force } => {
            confirm(g, "destroy every resource meshctl created, including the EKS clusters and their stacks")?;
            let session = load_session(g)?;
            let graph = build_graph(&session)?;
            execute(g, &graph, Mode::Down, None, Flags { force: *force, ..Flags::default() }).await
        }
        Command::Cleanup => {
            confirm(g, "remove everything above the stacks (workloads, SPIRE, mesh control plane, access mappings, kubeconfig entries)")?;
            run_phases(g, &Phase::CLEANUP, Mode::Down, Deps::Require, Flags::default()).await
        }
        Command::Verify(args) => verify::run(g, args).await,
        Command::Phase(p) => {
            let (phase, args) = p.split();
            if args.destroy {
                confirm(g, &format!("destroy the resources of phase {}", phase.name()))?;
                run_phases(g, &[phase], Mode::Down, Deps::Require, Flags::default()).await
            } else {
                run_phases(g, &[phase], Mode::Up, if args.with_deps { Deps::Run } else { Deps::Require }, Flags::default()).await
            }
        }
    }
}

fn build_graph(session: &Arc<Session>) -> Result<Graph, AppError> {
    phases::graph(session).map_err(|e| AppError::Usage(format!("the configuration gives an impossible step graph: {e}")))
}

/// The graph's steps as printed by `plan --offline`: for `down`, in teardown order (the
/// read-only checks first, as the engine runs them), each listing the steps that must be
/// destroyed before it (those that need it, and those it goes `after`).
pub fn static_metas(graph: &Graph, mode: Mode) -> Vec<StepMeta> {
    let meta = |id: &StepId| graph.get(id.as_str()).expect("id").meta().clone();
    if mode != Mode::PlanDown {
        return graph.topo_order().expect("validated").iter().map(meta).collect();
    }
    let read_only = |m: &StepMeta| graph.get(m.id.as_str()).is_some_and(|s| s.teardown() == engine::Teardown::ReadOnly);
    let mut down: Vec<StepMeta> = graph
        .down_order()
        .expect("validated")
        .iter()
        .map(|id| {
            let m = meta(id);
            let mut d = m.clone();
            d.needs = Vec::new();
            d.after = Vec::new();
            if !read_only(&m) {
                let first = graph.metas().filter(|o| o.needs.contains(&m.id)).map(|o| o.id.clone()).chain(m.after.iter().cloned());
                d = d.needs(first);
            }
            d
        })
        .collect();
    down.sort_by_key(|m| !read_only(m));
    down
}

/// Asks before destroying: `--yes` answers; a terminal is asked; anything else is refused.
fn confirm(g: &Global, what: &str) -> Result<(), AppError> {
    if g.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(AppError::Usage(format!("refusing to {what} without --yes when not on a terminal")));
    }
    eprint!("meshctl will {what}. Continue? [y/N] ");
    // A prompt that cannot be shown or answered is a refusal, not a yes.
    std::io::stderr().flush().map_err(|e| AppError::Usage(format!("cannot ask for confirmation: {e}")))?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| AppError::Usage(format!("cannot read the confirmation: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(AppError::Usage("cancelled; nothing was changed".into()))
    }
}

/// What a partial `up` does with the steps its phases need from earlier phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deps {
    /// They must check up to date, else exit 2 naming them (`meshctl <phase>`, `--only`).
    Require,
    /// They run too (`--with-deps`).
    Run,
    /// They are not checked (`--from`: done before, or made elsewhere).
    Trust,
}

/// Runs the phases' steps (plus the read-only preflight), with `deps` deciding about the
/// steps they need outside them.
async fn run_phases(g: &Global, phases: &[Phase], mode: Mode, deps: Deps, flags: Flags) -> Result<u8, AppError> {
    let session = load_session(g)?;
    let graph = build_graph(&session)?;
    let mut names: Vec<&str> = phases.iter().map(|p| p.name()).collect();
    names.push(PREFLIGHT);
    let mut selection: BTreeSet<StepId> = graph.ids_in_phases(&names).into_iter().collect();
    if mode == Mode::Up {
        let outside = graph.outside_needs(&selection);
        match deps {
            Deps::Run => selection.extend(outside),
            Deps::Require if !outside.is_empty() => require_done(g, &graph, outside).await?,
            Deps::Require => {}
            Deps::Trust => {
                if !outside.is_empty() && g.output != OutputFormat::Json {
                    let mut earlier: Vec<&str> = outside.iter().map(|id| id.phase()).collect();
                    earlier.dedup();
                    eprintln!("meshctl: --from: not checking the earlier phases ({}): they are taken as in place", earlier.join(", "));
                }
            }
        }
    } else {
        require_gone(g, &graph, &selection).await?;
    }
    execute(g, &graph, mode, Some(selection), flags).await
}

/// Exit 2 unless every step in `ids` checks up to date, naming each missing phase and the
/// command that makes it.
async fn require_done(g: &Global, graph: &Graph, ids: BTreeSet<StepId>) -> Result<(), AppError> {
    let mut opts = RunOptions::new(Mode::Plan);
    opts.concurrency = g.concurrency as usize;
    opts.selection = Some(ids);
    let quiet: Arc<dyn engine::EventSink> = Arc::new(engine::NullSink);
    let summary = engine::run(graph, &opts, quiet).await;
    let mut missing: Vec<String> = Vec::new();
    for (id, o) in &summary.done {
        if !matches!(o, Outcome::Checked(Status::UpToDate)) {
            missing.push(format!("{id}: {}", render::outcome_text(Mode::Plan, o)));
        }
    }
    for f in &summary.failed {
        missing.push(format!("{}: cannot check: {}", f.step, f.message));
    }
    for (id, m) in &summary.skipped {
        missing.push(format!("{id}: cannot check: {m}"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut phases: Vec<&str> = missing.iter().filter_map(|l| l.split('/').next()).filter(|p| *p != PREFLIGHT).collect();
    phases.sort_by_key(|p| Phase::from_name(p).map(Phase::order));
    phases.dedup();
    let commands: Vec<String> = phases.iter().map(|p| format!("`meshctl {p}`")).collect();
    Err(AppError::Usage(format!(
        "earlier steps are not in place:\n  {}\nrun {} first, or add --with-deps",
        missing.join("\n  "),
        if commands.is_empty() { "`meshctl up`".to_string() } else { commands.join(", then ") }
    )))
}

/// For a partial teardown: exit 2 while a step outside the selection that needs a selected
/// step still exists (destroying under it would strand it).
async fn require_gone(g: &Global, graph: &Graph, selection: &BTreeSet<StepId>) -> Result<(), AppError> {
    let dependents: BTreeSet<StepId> = graph
        .metas()
        .filter(|m| {
            !selection.contains(&m.id) && m.phase != PREFLIGHT && graph.ancestors(m.id.as_str()).iter().any(|a| selection.contains(a))
        })
        .map(|m| m.id.clone())
        .collect();
    if dependents.is_empty() {
        return Ok(());
    }
    let mut opts = RunOptions::new(Mode::PlanDown);
    opts.concurrency = g.concurrency as usize;
    opts.selection = Some(dependents);
    let summary = engine::run(graph, &opts, Arc::new(engine::NullSink)).await;
    let standing: Vec<&StepId> = summary
        .done
        .iter()
        .filter(|(_, o)| !matches!(o, Outcome::Checked(Status::Missing)))
        .map(|(id, _)| id)
        .chain(summary.failed.iter().map(|f| &f.step))
        .collect();
    if standing.is_empty() {
        return Ok(());
    }
    let list: Vec<&str> = standing.iter().map(|s| s.as_str()).collect();
    Err(AppError::Usage(format!(
        "these steps still stand on what would be destroyed: {}; destroy them first (e.g. `meshctl cleanup` or `meshctl <phase> --destroy`)",
        list.join(", ")
    )))
}

async fn run_graph(g: &Global, mode: Mode, flags: Flags) -> Result<u8, AppError> {
    let session = load_session(g)?;
    let graph = build_graph(&session)?;
    execute(g, &graph, mode, None, flags).await
}

/// What one command adds to the global flags: `down --force`, `up --prune`.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    force: bool,
    prune: bool,
}

async fn execute(g: &Global, graph: &Graph, mode: Mode, selection: Option<BTreeSet<StepId>>, flags: Flags) -> Result<u8, AppError> {
    let style = Style::detect(g.output == OutputFormat::Json);
    let renderer: Arc<dyn render::Renderer> = Arc::from(render::renderer(style));
    let opts = RunOptions {
        mode,
        concurrency: g.concurrency as usize,
        yes: g.yes,
        adopt: g.adopt,
        force: flags.force,
        prune: flags.prune,
        selection,
        ..RunOptions::new(mode)
    };
    // First Ctrl-C: no new step starts, running ones finish. Second: running waits stop.
    let (stop, abort) = (opts.stop.clone(), opts.abort.clone());
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
            eprintln!("\nmeshctl: stopping: no new step starts; running steps finish (Ctrl-C again to abort them)");
            if tokio::signal::ctrl_c().await.is_ok() {
                abort.cancel();
                eprintln!("\nmeshctl: aborting running steps at their next safe point");
            }
        }
    });
    let check_only = mode.check_only();
    let sink: Arc<dyn engine::EventSink> =
        if check_only && style != Style::Json { Arc::new(engine::NullSink) } else { Arc::new(Forward(renderer.clone())) };
    let summary = engine::run(graph, &opts, sink).await;
    signals.abort();
    if check_only && style != Style::Json {
        print!("{}", render::check_table(mode, &static_metas(graph, mode), &summary));
    }
    renderer.summary(mode, &summary);
    if style != Style::Json {
        if mode == Mode::Up && summary.ok() {
            println!("next: `meshctl verify` proves mTLS from every Envoy's admin interface");
        }
        if mode == Mode::Down && !summary.ok() && !summary.interrupted {
            print!("{}", leftovers(graph, &summary, flags.force));
        }
    }
    Ok(exit_code(&summary))
}

/// 130 when interrupted, 0 when every step is done, 2 when the only failures are refusals
/// of resources meshctl did not create (a usage error: rerun with `--adopt` or choose
/// another name), else 1.
pub fn exit_code(summary: &RunSummary) -> u8 {
    if summary.interrupted {
        exit::INTERRUPTED
    } else if summary.ok() {
        exit::OK
    } else if !summary.failed.is_empty() && summary.failed.iter().all(|f| f.kind == ErrorKind::NotOurs) {
        exit::USAGE
    } else {
        exit::FAILED
    }
}

/// After a `down` that did not finish: what is left, which stacks were therefore not
/// deleted (they hold running EKS clusters, NAT gateways: money), and how to finish.
pub fn leftovers(graph: &Graph, summary: &RunSummary, force: bool) -> String {
    let kept: Vec<&StepId> = summary.skipped.iter().map(|(id, _)| id).filter(|id| id.phase() == "stacks").collect();
    let mut t = String::from("\nleft in place:\n");
    for f in &summary.failed {
        let what = graph.get(f.step.as_str()).map(|s| s.meta().description.clone()).unwrap_or_default();
        t.push_str(&format!("  {} ({what}): its teardown failed\n", f.step));
    }
    for id in &kept {
        let what = graph.get(id.as_str()).map(|s| s.meta().description.clone()).unwrap_or_default();
        t.push_str(&format!("  {id} ({what}): NOT deleted, it still runs and costs money\n"));
    }
    if !kept.is_empty() && !force {
        t.push_str("fix the failures above and run `meshctl down` again, or run `meshctl down --force` to delete the stacks anyway (what is left inside the clusters goes with them)\n");
    }
    t
}

struct Forward(Arc<dyn render::Renderer>);
impl engine::EventSink for Forward {
    fn event(&self, e: &engine::Event) {
        self.0.event(e)
    }
}
