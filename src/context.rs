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
        install_crypto_provider();
        Ctx { aws: Aws::new(&config), kube: Kube::new(&config), config }
    }
}

/// kube-rs brings rustls with *ring*, the AWS SDK with aws-lc-rs; with two providers compiled
/// in, rustls cannot pick one by itself and panics on the first TLS client. Pick *ring* once
/// per process (a second call is a harmless no-op).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
