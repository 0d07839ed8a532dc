//! Everything a step may reach at run time: the configuration and the per-account AWS and
//! Kubernetes clients, each built on first use and shared by every step.

use crate::aws::Aws;
use crate::config::Config;
use crate::kube::Kube;

pub struct Ctx {
    pub config: Config,
    pub aws: Aws,
    pub kube: Kube,
}

impl Ctx {
    pub fn new(config: Config) -> Ctx {
        Ctx { aws: Aws::new(&config), kube: Kube::new(&config), config }
    }
}
