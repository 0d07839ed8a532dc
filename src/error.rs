//! The one error type of everything below the command layer: what was being done (the
//! message, naming account, cluster and resource), what kind of failure it is, and the error
//! that caused it.
//!
//! The kind lets code decide without reading text ("already gone" on a delete is success, a
//! throttled call is retried, a conflict is re-read): AWS, Kubernetes and helm errors are
//! classified once, where they are converted (`From` impls in `aws`, `kube` and `helm`), and
//! nowhere else. Display shows the message only; [`chain`] shows the message with its
//! causes, which is what users read.

use std::fmt;

use serde::Serialize;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The resource does not exist (HTTP 404, `NoSuchEntity`, `ResourceNotFoundException`).
    NotFound,
    /// It exists already, or someone else changed it first (HTTP 409, `AlreadyExists`).
    Conflict,
    /// The remote side asked us to slow down (HTTP 429, `Throttling`, `RequestLimitExceeded`).
    Throttled,
    /// The caller may not do this (HTTP 401/403, `AccessDenied`, `UnauthorizedOperation`).
    Denied,
    /// The request or the configuration is wrong (HTTP 400/422, `ValidationError`).
    InvalidInput,
    /// A resource of the wanted name exists and meshctl did not create it (no ownership tag,
    /// label or value): refused without `--adopt`. A command whose only failures are these
    /// exits 2, like any other usage error.
    NotOurs,
    /// Anything else: a connection refused, a timeout, an unexpected answer.
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Denied => "denied",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::NotOurs => "not-ours",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of an HTTP status answered by an API server.
    pub fn from_http_status(code: u16) -> ErrorKind {
        match code {
            404 | 410 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            429 => ErrorKind::Throttled,
            401 | 403 => ErrorKind::Denied,
            400 | 422 => ErrorKind::InvalidInput,
            _ => ErrorKind::Other,
        }
    }

    /// The kind of an AWS error code (`NoSuchEntity`, `ThrottlingException`, ...).
    pub fn from_aws_code(code: &str) -> ErrorKind {
        let c = code.trim_end_matches("Exception").trim_end_matches("Fault");
        match c {
            "Throttling"
            | "TooManyRequests"
            | "RequestLimitExceeded"
            | "Throttled"
            | "SlowDown"
            | "RequestThrottled"
            | "PriorRequestNotComplete"
            | "EC2Throttled"
            | "BandwidthLimitExceeded" => ErrorKind::Throttled,
            "AccessDenied"
            | "UnauthorizedOperation"
            | "Unauthorized"
            | "AuthFailure"
            | "ExpiredToken"
            | "InvalidClientTokenId"
            | "UnrecognizedClient"
            | "Forbidden" => ErrorKind::Denied,
            "NoSuchEntity"
            | "ResourceNotFound"
            | "NotFound"
            | "UnknownResource"
            | "NamespaceNotFound"
            | "LoadBalancerNotFound"
            | "AccessPointNotFound"
            | "InvalidGroup.NotFound"
            | "InvalidNetworkInterfaceID.NotFound"
            | "MeshNotFound" => ErrorKind::NotFound,
            "EntityAlreadyExists"
            | "AlreadyExists"
            | "ResourceInUse"
            | "Conflict"
            | "ConcurrentModification"
            | "InvalidStateTransition"
            | "DependencyViolation"
            | "DeleteConflict"
            | "OperationInProgress"
            | "ResourceExists" => ErrorKind::Conflict,
            "ValidationError"
            | "Validation"
            | "InvalidParameter"
            | "InvalidParameterValue"
            | "InvalidParameterCombination"
            | "MalformedPolicyDocument"
            | "InvalidRequest"
            | "InvalidInput"
            | "BadRequest"
            | "MissingParameter" => ErrorKind::InvalidInput,
            _ if c.ends_with(".NotFound") || c.ends_with("NotFound") => ErrorKind::NotFound,
            _ if c.ends_with(".Duplicate") || c.ends_with("AlreadyExists") => ErrorKind::Conflict,
            _ => ErrorKind::Other,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error a user can act on: the message says what was being done and where, the kind
/// what sort of failure it was, the source what caused it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// What to do about it (the next command), said after the causes.
    hint: Option<String>,
    source: Option<Source>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), hint: None, source: None }
    }

    /// An error of kind [`ErrorKind::Other`].
    pub fn other(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Other, message)
    }

    /// The same error caused by `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// Wraps this error in one saying what was being done; the kind is kept.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error { kind: self.kind, message: what.to_string(), hint: None, source: Some(Box::new(self)) }
    }

    /// The same error with what to do about it (`run meshctl up --only stacks first`),
    /// shown after its causes. Several hints are joined with `; `.
    pub fn hint(mut self, hint: impl fmt::Display) -> Error {
        let h = hint.to_string();
        self.hint = Some(match self.hint.take() {
            Some(first) => format!("{first}; {h}"),
            None => h,
        });
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }

    /// The message of this error alone (without its causes).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message with every cause: what users read.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// An error and its causes as one line, `outer: inner: root; hint`. A cause whose text is
/// already part of what was written (libraries often repeat their source in their own
/// message) is left out, so nothing is said twice; the hints of every [`Error`] in the chain
/// come last, innermost first.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let hint_of = |x: &(dyn std::error::Error + 'static)| x.downcast_ref::<Error>().and_then(|x| x.hint.clone());
    let mut text = e.to_string();
    let mut hints: Vec<String> = hint_of(e).into_iter().collect();
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h) = hint_of(s) {
            hints.insert(0, h);
        }
        let t = s.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        src = s.source();
    }
    for h in hints {
        text.push_str("; ");
        text.push_str(&h);
    }
    text
}

/// `result.context("account frontend: reading stack X")?` for any error that converts into
/// an [`Error`].
pub trait ResultExt<T> {
    fn context(self, what: impl fmt::Display) -> Result<T, Error>;
}

impl<T, E: Into<Error>> ResultExt<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| e.into().context(what))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::Denied,
            std::io::ErrorKind::AlreadyExists => ErrorKind::Conflict,
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => ErrorKind::InvalidInput,
            _ => ErrorKind::Other,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::new(ErrorKind::InvalidInput, e.to_string())
    }
}

impl From<serde_yaml_ng::Error> for Error {
    fn from(e: serde_yaml_ng::Error) -> Error {
        Error::new(ErrorKind::InvalidInput, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind_and_the_chain_reads_outside_in() {
        let root = Error::new(ErrorKind::NotFound, "NoSuchEntity: role x");
        let e = root.context("account frontend: GetRole x");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "account frontend: GetRole x");
        assert_eq!(e.chain(), "account frontend: GetRole x: NoSuchEntity: role x");
    }

    #[test]
    fn hints_come_after_the_causes() {
        let e =
            Error::new(ErrorKind::Denied, "AccessDenied: no").context("account frontend: reading invitations").hint("try `aws ram ...`");
        assert_eq!(e.chain(), "account frontend: reading invitations: AccessDenied: no; try `aws ram ...`");
        assert_eq!(e.kind(), ErrorKind::Denied);
    }

    #[test]
    fn repeated_causes_are_said_once() {
        let io = std::io::Error::other("connection refused");
        let e = Error::other("GET /version: connection refused").with_source(io);
        assert_eq!(e.chain(), "GET /version: connection refused");
    }

    #[test]
    fn aws_codes_and_http_statuses_classify() {
        assert_eq!(ErrorKind::from_aws_code("ThrottlingException"), ErrorKind::Throttled);
        for code in [
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "ThrottledException",
            "EC2ThrottledException",
        ] {
            assert_eq!(ErrorKind::from_aws_code(code), ErrorKind::Throttled, "{code}");
        }
        assert_eq!(ErrorKind::from_aws_code("NoSuchEntity"), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_aws_code("InvalidGroup.NotFound"), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_aws_code("EntityAlreadyExists"), ErrorKind::Conflict);
        assert_eq!(ErrorKind::from_aws_code("AccessDeniedException"), ErrorKind::Denied);
        assert_eq!(ErrorKind::from_aws_code("ValidationError"), ErrorKind::InvalidInput);
        assert_eq!(ErrorKind::from_aws_code("InternalFailure"), ErrorKind::Other);
        assert_eq!(ErrorKind::from_http_status(404), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_http_status(409), ErrorKind::Conflict);
        assert_eq!(ErrorKind::from_http_status(403), ErrorKind::Denied);
        assert_eq!(ErrorKind::from_http_status(500), ErrorKind::Other);
    }
}
