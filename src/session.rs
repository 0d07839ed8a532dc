//! Everything a step may reach at run time: the configuration, the topology derived from it,
//! the selected mesh provider, and the per-account AWS and Kubernetes clients, each built on
//! first use and shared by every step.

use std::sync::Arc;

use crate::aws::Aws;
use crate::config::{Config, ConfigError};
use crate::kube::Kube;
use crate::mesh::{registry, MeshProvider};
use crate::topology::Topology;

pub struct Session {
    pub config: Config,
    pub topology: Topology,
    pub mesh: Arc<dyn MeshProvider>,
    pub aws: Aws,
    pub kube: Kube,
}

impl Session {
    /// A session for the configuration; fails (exit 2) when the selected provider is not
    /// available or its section is invalid.
    pub fn new(config: Config) -> Result<Session, ConfigError> {
        let mesh = registry::provider(&config)?;
        Ok(Session::with_provider(config, mesh))
    }

    /// A session with a given provider (tests).
    pub fn with_provider(config: Config, mesh: Arc<dyn MeshProvider>) -> Session {
        Session { topology: Topology::new(&config), mesh, aws: Aws::new(&config), kube: Kube::new(&config), config }
    }
}
