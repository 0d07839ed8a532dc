//! Counts the AWS calls that change something, through an SDK interceptor on every client
//! meshctl builds. `meshctl` reports the count (a rerun of a finished `up` should make none),
//! and tests assert on it.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Operation-name prefixes of calls that only read. Everything else counts as a write.
const READ_PREFIXES: &[&str] = &["Describe", "Get", "List", "Search", "Discover", "Validate", "Estimate", "Lookup", "Detect", "Preview"];

/// True when the operation (e.g. `CreateChangeSet`) may change remote state.
pub fn is_mutating(operation: &str) -> bool {
    !READ_PREFIXES.iter().any(|p| operation.starts_with(p))
}

/// The log of mutating calls (`service:Operation`), shared by every client of a run.
#[derive(Debug, Clone, Default)]
pub struct WriteCounter {
    calls: Arc<Mutex<Vec<String>>>,
}

impl WriteCounter {
    pub fn count(&self) -> usize {
        self.calls.lock().expect("counter lock").len()
    }

    /// Every mutating call so far, in order, as `service:Operation`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("counter lock").clone()
    }

    pub fn reset(&self) {
        self.calls.lock().expect("counter lock").clear();
    }

    fn record(&self, service: &str, operation: &str) {
        self.calls.lock().expect("counter lock").push(format!("{service}:{operation}"));
    }
}

/// The interceptor: counts once per operation (not per retry attempt), and says on the log
/// (`-v`) when an attempt is a retry.
#[derive(Debug, Clone)]
pub struct CountingInterceptor {
    counter: WriteCounter,
}

impl CountingInterceptor {
    pub fn new(counter: WriteCounter) -> Self {
        CountingInterceptor { counter }
    }
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "meshctl::CountingInterceptor"
    }

    // Not read_before_execution: client interceptors run that before the operation's
    // configuration (with its Metadata) is in the bag. This hook runs once per operation too.
    fn read_before_serialization(
        &self,
        _ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            if is_mutating(meta.name()) {
                self.counter.record(meta.service(), meta.name());
            }
        }
        Ok(())
    }

    /// A retry (the SDK backed off after a throttled, 5xx or dropped attempt) is reported, not
    /// failed: the step goes on; only a call that exhausts its attempts fails it.
    fn read_before_attempt(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = cfg.load::<RequestAttempts>().map(|a| a.attempts()).unwrap_or(1);
        if attempt > 1 {
            let (service, operation) = cfg.load::<Metadata>().map(|m| (m.service(), m.name())).unwrap_or(("AWS", "call"));
            tracing::info!(
                "{service}:{operation}: attempt {attempt} of {} after a retryable error (throttled or transient), with backoff",
                super::MAX_ATTEMPTS
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_operations() {
        for op in ["DescribeStacks", "GetTemplate", "ListNamespaces", "GetCallerIdentity", "GetResourceShareInvitations"] {
            assert!(!is_mutating(op), "{op}");
        }
        for op in [
            "CreateChangeSet",
            "ExecuteChangeSet",
            "DeleteChangeSet",
            "DeleteStack",
            "AcceptResourceShareInvitation",
            "CreateMesh",
            "AttachRolePolicy",
            "TagResource",
        ] {
            assert!(is_mutating(op), "{op}");
        }
    }
}
