//! AWS access: one SDK configuration per account, built once from the account's profile and
//! the configured region. Endpoints come from the standard AWS configuration (a profile's
//! `endpoint_url`, `AWS_ENDPOINT_URL`), never from meshctl-specific settings.
//!
//! Every client retries with backoff ([`retry_config`]): throttling from many concurrent steps
//! is absorbed by the SDK, and only a call still throttled after every attempt reaches a step,
//! as an [`ErrorKind::Throttled`] error that says to rerun or lower `--concurrency`.

use std::collections::BTreeMap;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::retry::RetryConfig;
use tokio::sync::OnceCell;

use crate::config::Config;

pub mod access_entries;
pub mod cfn;
pub mod count;
pub mod ram;
pub mod vpc;

use count::{CountingInterceptor, WriteCounter};

use crate::error::{Error, ErrorKind};

/// Why an account could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// The account role is not in the configuration (a bug in a phase).
    #[error("no account named {0} in the configuration")]
    UnknownAccount(String),
    /// STS GetCallerIdentity failed: no credentials, an expired session, a wrong endpoint.
    #[error("account {account} (profile {profile}): cannot resolve credentials: {message}; try `aws sts get-caller-identity --profile {profile}`{hint}")]
    Identity { account: String, profile: String, message: String, hint: String },
    /// STS GetCallerIdentity was still throttled after every attempt.
    #[error("account {account} (profile {profile}): STS GetCallerIdentity: {message}; {}", throttled_hint())]
    Throttled { account: String, profile: String, message: String },
}

impl From<AwsError> for Error {
    fn from(e: AwsError) -> Error {
        let kind = match &e {
            AwsError::UnknownAccount(_) => ErrorKind::InvalidInput,
            AwsError::Identity { message, .. } if message.contains("expired") || message.contains("InvalidClientTokenId") => {
                ErrorKind::Denied
            }
            AwsError::Identity { .. } => ErrorKind::Other,
            AwsError::Throttled { .. } => ErrorKind::Throttled,
        };
        Error::new(kind, e.to_string())
    }
}

/// An SDK error as an [`Error`]: the service's code and message (or the whole chain when
/// the request never got an answer), classified by the code. CloudFormation answers a
/// missing stack with `ValidationError ... does not exist`: that is not-found.
impl<E, R> From<aws_smithy_runtime_api::client::result::SdkError<E, R>> for Error
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn from(e: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Error {
        let text = error_text(&e);
        let kind = match error_code(&e).as_deref() {
            Some("ValidationError") if text.contains("does not exist") => ErrorKind::NotFound,
            Some(code) => ErrorKind::from_aws_code(code),
            None => ErrorKind::Other,
        };
        let err = Error::new(kind, text);
        // The SDK retried it with backoff already (retry_config): say what is left to do.
        if kind == ErrorKind::Throttled {
            return err.hint(throttled_hint());
        }
        err
    }
}

/// How many times meshctl tries one AWS call: the first attempt and up to nine retries.
/// The SDK's default (3) gives up within seconds when many steps run at once
/// (`--concurrency`) and an API's rate limit is shared by them.
pub const MAX_ATTEMPTS: u32 = 10;
/// The wait before the first retry, and the longest wait between two attempts: the SDK's
/// standard mode doubles the wait after each failed attempt (1 s, 2 s, 4 s, ... up to 20 s,
/// each drawn at random below that bound), at most about two minutes in all before it gives up.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The retry policy of every AWS client meshctl builds (production and the mocked clients of
/// the tests): the SDK's standard retry mode with [`MAX_ATTEMPTS`] attempts and exponential
/// backoff with jitter. It retries what the SDK classifies as throttling (`Throttling`,
/// `ThrottlingException`, `RequestLimitExceeded`, `TooManyRequestsException`, ...), transient
/// errors (5xx, timeouts) and connection failures; never a client error such as
/// `ValidationError` or `AccessDenied`. A profile's or the environment's `max_attempts` /
/// `retry_mode` do not apply: the policy is meshctl's, the same on every machine.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS).with_initial_backoff(INITIAL_BACKOFF).with_max_backoff(MAX_BACKOFF)
}

/// What a step's error says when AWS still throttled a call after every attempt.
pub fn throttled_hint() -> String {
    format!(
        "throttled by AWS: still throttled after {MAX_ATTEMPTS} attempts with backoff; rerun the command (it continues where it stopped), or lower --concurrency so fewer steps call AWS at once"
    )
}

struct AccountAws {
    profile: String,
    sdk: OnceCell<SdkConfig>,
    id: OnceCell<String>,
    /// Unit tests only: the mock interceptor every client of the account answers from
    /// (see [`testing`]).
    #[cfg(test)]
    mock: Option<aws_smithy_runtime_api::client::interceptors::SharedInterceptor>,
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
            #[allow(unused_mut)]
            let mut conf = $krate::config::Builder::from(sdk).interceptor(CountingInterceptor::new(self.writes.clone()));
            #[cfg(test)]
            if let Some(mock) = &self.account(name)?.mock {
                conf.push_interceptor(mock.clone());
                conf.push_interceptor(aws_smithy_runtime_api::client::interceptors::SharedInterceptor::new(testing::RetryMarks));
            }
            Ok($krate::Client::from_conf(conf.build()))
        }
    };
}

impl AccountAws {
    fn new(profile: &str) -> AccountAws {
        AccountAws {
            profile: profile.to_string(),
            sdk: OnceCell::new(),
            id: OnceCell::new(),
            #[cfg(test)]
            mock: None,
        }
    }
}

impl Aws {
    pub fn new(config: &Config) -> Aws {
        let accounts = config.accounts().map(|a| (a.name.clone(), AccountAws::new(&a.profile))).collect();
        Aws { region: config.region.clone(), accounts, writes: WriteCounter::default() }
    }

    /// Clients for one account the configuration does not name (a removed spoke, known from
    /// the tags of what meshctl left for it): same region, same write counter. In unit tests
    /// it answers from the mock of the configured account that uses the same profile.
    pub fn other(&self, name: &str, profile: &str) -> Aws {
        #[allow(unused_mut)]
        let mut acct = AccountAws::new(profile);
        #[cfg(test)]
        {
            acct.mock = self.accounts.values().find(|a| a.profile == profile).and_then(|a| a.mock.clone());
        }
        Aws { region: self.region.clone(), accounts: BTreeMap::from([(name.to_string(), acct)]), writes: self.writes.clone() }
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
    client_fn!(/// Elastic Load Balancing v2 (ALB, NLB) in the account.
        elbv2, aws_sdk_elasticloadbalancingv2);
    client_fn!(/// Classic Elastic Load Balancing in the account.
        elb, aws_sdk_elasticloadbalancing);
    #[cfg(feature = "appmesh")]
    client_fn!(/// App Mesh in the account.
        appmesh, aws_sdk_appmesh);
    #[cfg(feature = "appmesh")]
    client_fn!(/// Cloud Map in the account.
        servicediscovery, aws_sdk_servicediscovery);

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
            .get_or_init(|| async { sdk_loader().profile_name(&acct.profile).region(Region::new(self.region.clone())).load().await })
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
                    if is_throttling(error_code(&e).as_deref()) {
                        return AwsError::Throttled { account: name.to_string(), profile: acct.profile.clone(), message };
                    }
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

/// The SDK's HTTPS client: rustls on *ring*, the same TLS stack kube-rs uses, so the binary
/// carries one crypto library. Built once per process and shared by every account.
pub fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    static CLIENT: std::sync::OnceLock<SharedHttpClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()).clone()
}

/// The SDK configuration loader every account and `meshctl token` start from: the standard
/// AWS configuration (profiles, environment, SSO) with [`http_client`] and [`retry_config`].
pub fn sdk_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client()).retry_config(retry_config())
}

/// The most useful text of an SDK error: the service's code and message when there is one,
/// else the whole source chain (connection refused, no credentials, ...).
pub fn error_text<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let (Some(svc), Some(code)) = (err.as_service_error(), error_code(err)) {
        return match svc.message() {
            Some(m) if !m.is_empty() => format!("{code}: {m}"),
            _ => code,
        };
    }
    // No service answer (connection refused, no credentials, a response that failed to
    // parse): the whole chain says what went wrong.
    crate::error::chain(err)
}

pub mod token;

/// The error code of an SDK error (`ValidationError`, `NotFoundException`, ...), if any: the
/// response's code, else the name of the modeled exception (`ResourceNotFoundException: ...`
/// is how a modeled error displays itself).
pub fn error_code<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Option<String>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error,
{
    let svc = err.as_service_error()?;
    if let Some(code) = svc.code() {
        return Some(code.to_string());
    }
    let shown = svc.to_string();
    let name = shown.split(':').next().unwrap_or_default().trim();
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')).then(|| name.to_string())
}

/// True for the throttling codes AWS services answer with.
pub fn is_throttling(code: Option<&str>) -> bool {
    code.is_some_and(|c| ErrorKind::from_aws_code(c) == ErrorKind::Throttled)
}

/// Who and where, for messages: `account frontend (profile frontend)`.
pub fn who(aws: &Aws, account: &str) -> String {
    format!("account {account} (profile {})", aws.profile(account).unwrap_or("?"))
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

/// Mocked AWS for unit tests (aws-smithy-mocks): the paths moto cannot show, with responses
/// shaped like AWS's.
///
/// * [`mocked_client!`](crate::aws::testing::mocked_client) builds one service client answering
///   from a list of rules (`mocked_client!(aws_sdk_ram, RuleMode::MatchAny, &[&rule])`), for
///   functions that take a client;
/// * [`ctx`] builds a whole [`Ctx`](crate::context::Ctx) for the default configuration whose
///   accounts are already resolved (no STS call, ids [`SHARED`], [`FRONTEND`], [`BACKEND`]) and
///   whose clients answer, per account, from that account's rules, for testing steps. An account
///   given no rules panics on any call, so a test also proves which accounts were not called.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_credential_types::Credentials;
    use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode};
    use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;

    use super::*;
    use crate::session::Session;

    pub(crate) const REGION: &str = "us-east-2";
    /// The account ids of the default configuration's accounts (as in the test bed).
    pub(crate) const SHARED: &str = "111111111111";
    pub(crate) const FRONTEND: &str = "222222222222";
    pub(crate) const BACKEND: &str = "333333333333";

    /// An SDK configuration that never leaves the process: region, static credentials, the
    /// mock HTTP client (the interceptor supplies the responses), and meshctl's own retry
    /// policy ([`retry_config`]) with a sleep that returns at once and logs how long it was
    /// asked to wait ([`sleeps`]), so a retried call costs no time.
    pub(crate) fn sdk_config() -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new("AKID", "SECRET", None, None, "test")))
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .retry_config(retry_config())
            .sleep_impl(InstantSleep)
            .build()
    }

    thread_local! {
        /// Every sleep the SDK asked for on this thread (a `current_thread` test runtime runs
        /// every future on the test's thread).
        static SLEPT: std::cell::RefCell<Vec<std::time::Duration>> = const { std::cell::RefCell::new(Vec::new()) };
        /// The backoff before each retry.
        static BACKOFFS: std::cell::RefCell<Vec<std::time::Duration>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The backoff the SDK waited before each retry on this thread since the last call: one
    /// entry per retry, so its length is the number of retries.
    pub(crate) fn backoffs() -> Vec<std::time::Duration> {
        SLEPT.with(|s| s.borrow_mut().clear());
        BACKOFFS.with(|b| std::mem::take(&mut *b.borrow_mut()))
    }

    /// The SDK's sleep for tests: logs the duration and returns at once (the SDK also sleeps
    /// for timeouts it races against; those futures lose to the mocked answers).
    #[derive(Debug)]
    struct InstantSleep;

    impl aws_sdk_sts::config::AsyncSleep for InstantSleep {
        fn sleep(&self, duration: std::time::Duration) -> aws_sdk_sts::config::Sleep {
            SLEPT.with(|s| s.borrow_mut().push(duration));
            aws_sdk_sts::config::Sleep::new(std::future::ready(()))
        }
    }

    /// Marks each retry on every mocked client: the SDK sleeps its backoff right before the
    /// next attempt, so when an attempt after the first starts, the last sleep logged is
    /// the backoff it waited.
    #[derive(Debug)]
    pub(crate) struct RetryMarks;

    impl aws_smithy_runtime_api::client::interceptors::Intercept for RetryMarks {
        fn name(&self) -> &'static str {
            "meshctl::aws::testing::RetryMarks"
        }

        fn read_before_attempt(
            &self,
            _ctx: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
            _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
            cfg: &mut aws_smithy_types::config_bag::ConfigBag,
        ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
            let attempt = cfg.load::<aws_smithy_runtime_api::client::retries::RequestAttempts>().map(|a| a.attempts()).unwrap_or(1);
            if attempt > 1 {
                let waited = SLEPT.with(|s| s.borrow().last().copied()).unwrap_or_default();
                BACKOFFS.with(|b| b.borrow_mut().push(waited));
            }
            Ok(())
        }
    }

    /// The interceptor answering from `rules` (a call no rule matches panics).
    pub(crate) fn interceptor(mode: RuleMode, rules: &[&Rule]) -> MockResponseInterceptor {
        rules.iter().fold(MockResponseInterceptor::new().rule_mode(mode), |i, r| i.with_rule(r))
    }

    /// A client of service crate `$krate` answering from `$rules` in `$mode`.
    macro_rules! mocked_client {
        ($krate:ident, $mode:expr, $rules:expr) => {
            $krate::Client::from_conf(
                $krate::config::Builder::from(&$crate::aws::testing::sdk_config())
                    .interceptor($crate::aws::testing::interceptor($mode, $rules))
                    .interceptor($crate::aws::testing::RetryMarks)
                    .build(),
            )
        };
    }
    pub(crate) use mocked_client;

    /// A session on the default configuration (hub `shared`, spokes `frontend`, `backend`)
    /// whose account `name` answers from `rules` in `mode`, for each `(name, mode, rules)`.
    pub(crate) fn ctx(accounts: &[(&str, RuleMode, &[&Rule])]) -> Arc<Session> {
        session(crate::config::Config::default(), accounts)
    }

    /// The same for any configuration whose accounts are the default ones.
    pub(crate) fn session(config: crate::config::Config, accounts: &[(&str, RuleMode, &[&Rule])]) -> Arc<Session> {
        let mut aws = Aws::new(&config);
        for (name, acct) in aws.accounts.iter_mut() {
            let id = match name.as_str() {
                "shared" => SHARED,
                "frontend" => FRONTEND,
                "backend" => BACKEND,
                other => panic!("no test account id for {other}"),
            };
            acct.id = OnceCell::new_with(Some(id.to_string()));
            acct.sdk = OnceCell::new_with(Some(sdk_config()));
            let (mode, rules) = accounts.iter().find(|(n, _, _)| n == name).map(|(_, m, r)| (*m, *r)).unwrap_or((RuleMode::MatchAny, &[]));
            acct.mock = Some(SharedInterceptor::new(interceptor(mode, rules)));
        }
        for (name, _, _) in accounts {
            assert!(aws.accounts.contains_key(*name), "no account {name} in the default configuration");
        }
        let mut s = Session::new(config).expect("a valid test configuration");
        s.aws = aws;
        Arc::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::retry::RetryMode;

    /// Production clients get meshctl's retry policy from the one loader, whatever a profile
    /// says; each service client inherits it.
    #[tokio::test]
    async fn every_client_retries_with_meshctls_policy() {
        let sdk = sdk_loader().region(Region::new("us-east-2")).load().await;
        let rc = sdk.retry_config().expect("a retry config");
        assert_eq!(
            (rc.mode(), rc.max_attempts(), rc.initial_backoff(), rc.max_backoff()),
            (RetryMode::Standard, MAX_ATTEMPTS, INITIAL_BACKOFF, MAX_BACKOFF)
        );
        let cfn = aws_sdk_cloudformation::config::Config::from(&sdk);
        assert_eq!(cfn.retry_config(), Some(&retry_config()));
        const { assert!(MAX_ATTEMPTS >= 8, "enough attempts to ride out a burst of throttling") };
    }

    #[test]
    fn an_identity_still_throttled_is_a_throttled_error_with_the_hint() {
        let e = Error::from(AwsError::Throttled {
            account: "frontend".into(),
            profile: "frontend".into(),
            message: "Throttling: Rate exceeded".into(),
        });
        assert_eq!(e.kind(), ErrorKind::Throttled);
        assert!(
            e.message()
                .starts_with("account frontend (profile frontend): STS GetCallerIdentity: Throttling: Rate exceeded; throttled by AWS"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("lower --concurrency"), "{}", e.message());
    }
}
