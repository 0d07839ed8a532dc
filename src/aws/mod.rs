//! AWS access: one SDK configuration per account, built once from the account's profile and
//! the configured region. Endpoints come from the standard AWS configuration (a profile's
//! `endpoint_url`, `AWS_ENDPOINT_URL`), never from meshctl-specific settings.

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::sync::OnceCell;

use crate::config::Config;

pub mod cfn;
pub mod count;
pub mod ram;
pub mod vpc;

use count::{CountingInterceptor, WriteCounter};

/// Why an account could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// The account role is not in the configuration (a bug in a phase).
    #[error("no account named {0} in the configuration")]
    UnknownAccount(String),
    /// STS GetCallerIdentity failed: no credentials, an expired session, a wrong endpoint.
    #[error("account {account} (profile {profile}): cannot resolve credentials: {message}; try `aws sts get-caller-identity --profile {profile}`{hint}")]
    Identity { account: String, profile: String, message: String, hint: String },
}

struct AccountAws {
    profile: String,
    sdk: OnceCell<SdkConfig>,
    id: OnceCell<String>,
}

/// Lazily built per-account SDK configurations and caller identities.
pub struct Aws {
    region: String,
    accounts: BTreeMap<String, AccountAws>,
    writes: WriteCounter,
}

/// Builds a service client from an account's SDK configuration with the write counter.
macro_rules! client_fn {
    ($(#[$doc:meta])* $fn:ident, $krate:ident) => {
        $(#[$doc])*
        pub async fn $fn(&self, name: &str) -> Result<$krate::Client, AwsError> {
            let sdk = self.sdk(name).await?;
            let conf = $krate::config::Builder::from(sdk).interceptor(CountingInterceptor::new(self.writes.clone())).build();
            Ok($krate::Client::from_conf(conf))
        }
    };
}

impl Aws {
    pub fn new(config: &Config) -> Aws {
        let accounts = config
            .accounts()
            .map(|a| (a.name.clone(), AccountAws { profile: a.profile.clone(), sdk: OnceCell::new(), id: OnceCell::new() }))
            .collect();
        Aws { region: config.region.clone(), accounts, writes: WriteCounter::default() }
    }

    /// The region every account works in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The mutating AWS calls made through meshctl's clients so far (see [`count`]).
    pub fn writes(&self) -> &WriteCounter {
        &self.writes
    }

    client_fn!(/// CloudFormation in the account.
        cloudformation, aws_sdk_cloudformation);
    client_fn!(/// EC2 in the account.
        ec2, aws_sdk_ec2);
    client_fn!(/// EKS in the account.
        eks, aws_sdk_eks);
    client_fn!(/// IAM in the account.
        iam, aws_sdk_iam);
    client_fn!(/// RAM in the account.
        ram, aws_sdk_ram);
    client_fn!(/// App Mesh in the account.
        appmesh, aws_sdk_appmesh);
    client_fn!(/// Cloud Map in the account.
        servicediscovery, aws_sdk_servicediscovery);
    client_fn!(/// Elastic Load Balancing v2 in the account.
        elbv2, aws_sdk_elasticloadbalancingv2);

    fn account(&self, name: &str) -> Result<&AccountAws, AwsError> {
        self.accounts.get(name).ok_or_else(|| AwsError::UnknownAccount(name.to_string()))
    }

    pub fn profile(&self, name: &str) -> Result<&str, AwsError> {
        Ok(&self.account(name)?.profile)
    }

    /// The SDK configuration of an account (profile + region), loaded on first use.
    pub async fn sdk(&self, name: &str) -> Result<&SdkConfig, AwsError> {
        let acct = self.account(name)?;
        Ok(acct
            .sdk
            .get_or_init(|| async {
                aws_config::defaults(BehaviorVersion::latest())
                    .profile_name(&acct.profile)
                    .region(Region::new(self.region.clone()))
                    .load()
                    .await
            })
            .await)
    }

    /// The account's 12-digit id, from STS GetCallerIdentity (once per run).
    pub async fn account_id(&self, name: &str) -> Result<String, AwsError> {
        let acct = self.account(name)?;
        let sdk = self.sdk(name).await?;
        acct.id
            .get_or_try_init(|| async {
                let conf = aws_sdk_sts::config::Builder::from(sdk).interceptor(CountingInterceptor::new(self.writes.clone())).build();
                let out = aws_sdk_sts::Client::from_conf(conf).get_caller_identity().send().await.map_err(|e| {
                    let message = crate::aws::error_text(&e);
                    let hint = if message.contains("expired") || message.contains("SSO") {
                        format!(" or `aws sso login --profile {}`", acct.profile)
                    } else {
                        String::new()
                    };
                    AwsError::Identity { account: name.to_string(), profile: acct.profile.clone(), message, hint }
                })?;
                Ok(out.account.unwrap_or_default())
            })
            .await
            .cloned()
    }
}

/// The most useful text of an SDK error: the service's code and message when there is one,
/// else the whole source chain (connection refused, no credentials, ...).
pub fn error_text<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(svc) = err.as_service_error() {
        // An unmodeled error without a code (e.g. a response that failed to parse) falls
        // through to the whole chain, which says what went wrong.
        if let Some(code) = svc.code() {
            return match svc.message() {
                Some(m) => format!("{code}: {m}"),
                None => code.to_string(),
            };
        }
    }
    let mut text = err.to_string();
    let mut src = std::error::Error::source(err);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

pub mod token;

/// The ARN partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The error code of an SDK error (`ValidationError`, `NotFoundException`, ...), if any.
pub fn error_code<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Option<String>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    err.as_service_error().and_then(|e| e.code()).map(str::to_string)
}

/// True for the throttling codes AWS services answer with.
pub fn is_throttling(code: Option<&str>) -> bool {
    matches!(code, Some("Throttling" | "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" | "Throttled"))
}

/// Waits with backoff: `first` before the second poll, growing by half up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
}

impl Backoff {
    pub fn new(first: std::time::Duration, max: std::time::Duration) -> Self {
        Backoff { next: first, max }
    }

    /// Sleeps the current interval and grows it; `throttled` doubles it instead.
    pub async fn wait(&mut self, throttled: bool) {
        tokio::time::sleep(self.next).await;
        let grown = if throttled { self.next * 2 } else { self.next + self.next / 2 };
        self.next = grown.min(self.max);
    }
}
