//! The command line: argument types only, validated by clap, no I/O. Usage errors (unknown
//! phase, conflicting flags) exit 2 through clap before anything else happens.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Stand up, prove and tear down a multi-account EKS service mesh with SPIRE-issued mTLS.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Configuration file [default: ./meshctl.toml when present, else built-in defaults]
    #[arg(long, global = true, value_name = "PATH", env = "MESHCTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override one configuration key, e.g. --set spire.server_address=10.0.1.5 (repeatable)
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output format: text (progress lines or bars) or json (one event per line)
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// More logs on stderr (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How many steps may run at once
    #[arg(long, global = true, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Answer yes to confirmations of destructive actions (required when not on a terminal)
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Take over AWS stacks of the configured names that meshctl did not create: `up` updates
    /// and tags them, `down` deletes them (without it both refuse)
    #[arg(long, global = true)]
    pub adopt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// A walkthrough phase that contributes steps to the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Stacks,
    Ram,
    Kubeconfig,
    AwsAuth,
    Mesh,
    Spire,
    Register,
    Yelb,
}

impl Phase {
    /// Every phase, in the walkthrough's order (what `up --from` counts from).
    pub const ALL: [Phase; 8] =
        [Phase::Stacks, Phase::Ram, Phase::Kubeconfig, Phase::AwsAuth, Phase::Mesh, Phase::Spire, Phase::Register, Phase::Yelb];

    /// What `meshctl cleanup` removes: everything that lives in or for the clusters, and
    /// nothing of the stacks and shares that make them.
    pub const CLEANUP: [Phase; 6] = [Phase::Kubeconfig, Phase::AwsAuth, Phase::Mesh, Phase::Spire, Phase::Register, Phase::Yelb];

    /// This phase and every later one.
    pub fn and_later(self) -> Vec<Phase> {
        Phase::ALL.into_iter().skip_while(|p| *p != self).collect()
    }

    /// The position in the walkthrough.
    pub fn order(self) -> usize {
        Phase::ALL.iter().position(|p| *p == self).expect("every phase is in ALL")
    }

    /// The name used in step ids and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Stacks => "stacks",
            Phase::Ram => "ram",
            Phase::Kubeconfig => "kubeconfig",
            Phase::AwsAuth => "aws-auth",
            Phase::Mesh => "mesh",
            Phase::Spire => "spire",
            Phase::Register => "register",
            Phase::Yelb => "yelb",
        }
    }

    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct PhaseArgs {
    /// Remove only this phase's resources
    #[arg(long)]
    pub destroy: bool,
    /// Also run the steps of earlier phases this one needs, instead of requiring them done
    #[arg(long, conflicts_with = "destroy")]
    pub with_deps: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update everything that is not already up to date
    Up {
        /// Start at this phase; earlier phases are not checked (done by an earlier run, or
        /// clusters made elsewhere: examples/bring-your-own-clusters.toml)
        #[arg(long, value_enum, value_name = "PHASE", conflicts_with = "only")]
        from: Option<Phase>,
        /// Run only these phases (repeatable; their needs must already be done)
        #[arg(long, value_enum, value_name = "PHASE")]
        only: Vec<Phase>,
        /// Also delete what meshctl created for this mesh that the configuration no longer
        /// names (`plan` lists it as orphaned): a removed spoke's stacks, EKS cluster
        /// included, and the SPIRE entries of removed spokes and services
        #[arg(long)]
        prune: bool,
    },
    /// Destroy everything meshctl created, in reverse dependency order, stacks last
    Down {
        /// Delete the stacks even when an in-cluster cleanup step failed (after naming what
        /// is left); without it such a failure stops the stacks from being deleted
        #[arg(long)]
        force: bool,
    },
    /// Show what `up` (or `down`) would do, per step, without changing anything
    Plan {
        /// Contact nothing: print the static step graph
        #[arg(long)]
        offline: bool,
        /// Plan the teardown instead
        #[arg(long)]
        down: bool,
    },
    /// Per phase and step: done, missing, drifted or failed (live checks)
    Status,
    /// Inspect the configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    #[command(flatten)]
    Phase(PhaseCommand),
    /// Phase 9: prove mTLS from every meshed workload's Envoy admin interface
    Verify(crate::verify::VerifyArgs),
    /// Phase 10: remove everything above the stacks; keeps the clusters
    Cleanup,
    /// Print an EKS bearer token as an ExecCredential (used by kubeconfig exec auth)
    Token {
        #[arg(long)]
        cluster: String,
        /// Assume this role first (cross-account access)
        #[arg(long)]
        role_arn: Option<String>,
        /// AWS profile to sign with
        #[arg(long)]
        profile: Option<String>,
        /// AWS region [default: the profile's or the configuration's]
        #[arg(long)]
        region: Option<String>,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The subcommands that run one phase.
#[derive(Debug, Subcommand)]
pub enum PhaseCommand {
    /// Phase 1: one CloudFormation stack per account, plus each spoke's TGW attachment stack
    Stacks(PhaseArgs),
    /// Phase 2: accept the Transit Gateway share in each spoke account
    Ram(PhaseArgs),
    /// Phase 3: kubeconfig contexts, and the spoke kubeconfigs the SPIRE server uses
    Kubeconfig(PhaseArgs),
    /// Phase 4: let each spoke's access role into its cluster
    AwsAuth(PhaseArgs),
    /// Phase 5: the mesh provider's control plane (none for the default envoy provider)
    Mesh(PhaseArgs),
    /// Phase 6: SPIRE server in the hub, bundle and agents in the spokes
    Spire(PhaseArgs),
    /// Phase 7: SPIRE node and workload entries
    Register(PhaseArgs),
    /// Phase 8: the application's workloads with their sidecars
    Yelb(PhaseArgs),
}

impl PhaseCommand {
    /// The phase and its arguments.
    pub fn split(&self) -> (Phase, &PhaseArgs) {
        match self {
            PhaseCommand::Stacks(a) => (Phase::Stacks, a),
            PhaseCommand::Ram(a) => (Phase::Ram, a),
            PhaseCommand::Kubeconfig(a) => (Phase::Kubeconfig, a),
            PhaseCommand::AwsAuth(a) => (Phase::AwsAuth, a),
            PhaseCommand::Mesh(a) => (Phase::Mesh, a),
            PhaseCommand::Spire(a) => (Phase::Spire, a),
            PhaseCommand::Register(a) => (Phase::Register, a),
            PhaseCommand::Yelb(a) => (Phase::Yelb, a),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults + file + environment + --set) as TOML
    Show,
}
