//! The EKS bearer token, generated natively: a presigned STS GetCallerIdentity URL.
//!
//! What `aws eks get-token` does, without the AWS CLI: sign `GET
//! https://sts.<region>.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15` with SigV4
//! in the query string (`X-Amz-Expires=60`), with the header `x-k8s-aws-id: <cluster>` among
//! the signed headers, then hand the URL to the API server as `k8s-aws-v1.` + unpadded
//! base64url of the URL. The API server's authenticator (aws-iam-authenticator) replays the
//! URL with the header and maps the answering ARN. The token is accepted for ~15 minutes, so
//! the ExecCredential says it expires after 14 (kubectl and kube-rs then ask again).
//!
//! Credentials come from the standard AWS chain for the profile (aws-config), optionally after
//! STS AssumeRole of `--role-arn`. The STS endpoint is the profile's configured `endpoint_url`
//! when there is one (the test bed's moto), else the regional STS endpoint.

use std::time::{Duration, SystemTime};

use aws_config::Region;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use base64::Engine as _;

/// The token's prefix, as aws-iam-authenticator expects it.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header naming the cluster, signed into the URL.
pub const CLUSTER_HEADER: &str = "x-k8s-aws-id";
/// How long the presigned URL is valid (what the authenticator expects).
pub const URL_EXPIRES: Duration = Duration::from_secs(60);
/// How long a client may reuse the token (the authenticator accepts ~15 minutes).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);
/// The ExecCredential API version meshctl writes into kubeconfigs and prints.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";

/// Why no token could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The credential chain of the profile gave nothing usable.
    #[error("cannot resolve AWS credentials{profile}: {message}")]
    Credentials { profile: String, message: String },
    /// STS AssumeRole of `--role-arn` failed.
    #[error("cannot assume role {role_arn}: {message}")]
    AssumeRole { role_arn: String, message: String },
    /// SigV4 refused the request (a malformed endpoint URL, a bad region).
    #[error("cannot presign STS GetCallerIdentity for cluster {cluster} at {endpoint}: {message}")]
    Sign { cluster: String, endpoint: String, message: String },
}

/// A bearer token and when clients should stop using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expiration: time::OffsetDateTime,
}

/// The regional STS endpoint (what the EKS authenticator replays against).
pub fn sts_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("https://sts.{region}.{suffix}")
}

/// Presigns GetCallerIdentity at `endpoint` for `cluster`; returns the full URL.
pub fn presign_url(cluster: &str, endpoint: &str, region: &str, creds: &Credentials, now: SystemTime) -> Result<String, TokenError> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
    use aws_sigv4::sign::v4;

    let err = |message: String| TokenError::Sign { cluster: cluster.to_string(), endpoint: endpoint.to_string(), message };
    let base = format!("{}/?Action=GetCallerIdentity&Version=2011-06-15", endpoint.trim_end_matches('/'));
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(URL_EXPIRES);
    let identity = creds.clone().into();
    let params: aws_sigv4::http_request::SigningParams = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| err(e.to_string()))?
        .into();
    let headers = [(CLUSTER_HEADER, cluster)];
    let signable =
        SignableRequest::new("GET", base.clone(), headers.iter().copied(), SignableBody::Bytes(&[])).map_err(|e| err(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| err(e.to_string()))?.into_parts();
    let mut request = http::Request::builder().method("GET").uri(&base).body(()).map_err(|e| err(e.to_string()))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request.uri().to_string())
}

/// `k8s-aws-v1.` + unpadded base64url of the URL.
pub fn token_from_url(url: &str) -> String {
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url))
}

/// The presigned URL inside a token, if it is one.
pub fn url_from_token(token: &str) -> Option<String> {
    let b64 = token.strip_prefix(TOKEN_PREFIX)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Credentials for `profile` (or the default chain), after AssumeRole of `role_arn` when
/// given; also the STS endpoint to presign for.
pub async fn resolve(profile: Option<&str>, region: &str, role_arn: Option<&str>) -> Result<(Credentials, String), TokenError> {
    let mut loader = crate::aws::sdk_loader().region(Region::new(region.to_string()));
    if let Some(p) = profile {
        loader = loader.profile_name(p);
    }
    let sdk = loader.load().await;
    let endpoint = sdk.endpoint_url().map(str::to_string).unwrap_or_else(|| sts_endpoint(region));
    let profile_text = profile.map(|p| format!(" for profile {p}")).unwrap_or_default();
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| TokenError::Credentials { profile: profile_text.clone(), message: "no credentials provider configured".into() })?;
    let base = provider
        .provide_credentials()
        .await
        .map_err(|e| TokenError::Credentials { profile: profile_text.clone(), message: crate::error::chain(&e) })?;
    let Some(role_arn) = role_arn else { return Ok((base, endpoint)) };
    let sts = aws_sdk_sts::Client::new(&sdk);
    let out = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("meshctl-token")
        .send()
        .await
        .map_err(|e| TokenError::AssumeRole { role_arn: role_arn.to_string(), message: crate::aws::error_text(&e) })?;
    let c = out
        .credentials
        .ok_or_else(|| TokenError::AssumeRole { role_arn: role_arn.to_string(), message: "STS returned no credentials".into() })?;
    let expiry = SystemTime::try_from(c.expiration).ok();
    let creds = Credentials::new(c.access_key_id, c.secret_access_key, Some(c.session_token), expiry, "meshctl-assume-role");
    Ok((creds, endpoint))
}

/// A token for `cluster`, signed now.
pub async fn token(cluster: &str, role_arn: Option<&str>, profile: Option<&str>, region: &str) -> Result<Token, TokenError> {
    let (creds, endpoint) = resolve(profile, region, role_arn).await?;
    let now = SystemTime::now();
    let url = presign_url(cluster, &endpoint, region, &creds, now)?;
    let expiration = time::OffsetDateTime::from(now + TOKEN_LIFETIME).replace_nanosecond(0).expect("0 is a valid nanosecond");
    Ok(Token { token: token_from_url(&url), expiration })
}

/// The ExecCredential kubectl and kube-rs read from an exec plugin's stdout.
pub fn exec_credential(token: &Token) -> serde_json::Value {
    let ts = token.expiration.format(&time::format_description::well_known::Rfc3339).expect("RFC 3339 formats any UTC time");
    serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": EXEC_API_VERSION,
        "spec": {},
        "status": {
            "expirationTimestamp": ts,
            "token": token.token,
        }
    })
}

/// Prints an ExecCredential for `meshctl token`.
pub async fn print_exec_credential(cluster: &str, role_arn: Option<&str>, profile: Option<&str>, region: &str) -> Result<(), TokenError> {
    let t = token(cluster, role_arn, profile, region).await?;
    println!("{}", exec_credential(&t));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> Vec<(String, String)> {
        let q = url.split_once('?').unwrap().1;
        q.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.replace("%3B", ";").replace("%2F", "/"))
            })
            .collect()
    }

    fn get<'a>(q: &'a [(String, String)], k: &str) -> &'a str {
        q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("{k} missing in {q:?}"))
    }

    #[test]
    fn token_decodes_to_a_presigned_get_caller_identity() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("session".into()), None, "test");
        let url = presign_url(
            "eks-cluster-frontend",
            &sts_endpoint("us-east-2"),
            "us-east-2",
            &creds,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .unwrap();
        let token = token_from_url(&url);
        assert!(token.starts_with("k8s-aws-v1."), "{token}");
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'), "unpadded base64url: {token}");
        let decoded = url_from_token(&token).unwrap();
        assert_eq!(decoded, url);
        assert!(decoded.starts_with("https://sts.us-east-2.amazonaws.com/?"), "{decoded}");
        let q = query(&decoded);
        assert_eq!(get(&q, "Action"), "GetCallerIdentity");
        assert_eq!(get(&q, "Version"), "2011-06-15");
        assert_eq!(get(&q, "X-Amz-Expires"), "60");
        assert_eq!(get(&q, "X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
        let signed: Vec<&str> = get(&q, "X-Amz-SignedHeaders").split(';').collect();
        assert!(signed.contains(&"x-k8s-aws-id") && signed.contains(&"host"), "{signed:?}");
        assert!(get(&q, "X-Amz-Credential").contains("/us-east-2/sts/aws4_request"), "{q:?}");
        assert_eq!(get(&q, "X-Amz-Security-Token"), "session");
        assert_eq!(get(&q, "X-Amz-Signature").len(), 64);
    }

    #[test]
    fn signature_depends_on_the_cluster() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = presign_url("a", "https://sts.us-east-2.amazonaws.com", "us-east-2", &creds, t).unwrap();
        let b = presign_url("b", "https://sts.us-east-2.amazonaws.com", "us-east-2", &creds, t).unwrap();
        assert_ne!(a, b, "the cluster header must be signed");
    }

    #[test]
    fn exec_credential_shape() {
        let exp = time::macros::datetime!(2026-11-28 04:20:00 UTC);
        let v = exec_credential(&Token { token: "k8s-aws-v1.abc".into(), expiration: exp });
        assert_eq!(v["apiVersion"], EXEC_API_VERSION);
        assert_eq!(v["kind"], "ExecCredential");
        assert_eq!(v["status"]["token"], "k8s-aws-v1.abc");
        assert_eq!(v["status"]["expirationTimestamp"], "2026-11-28T04:20:00Z");
    }

    #[test]
    fn china_regions_use_their_suffix() {
        assert_eq!(sts_endpoint("cn-north-1"), "https://sts.cn-north-1.amazonaws.com.cn");
    }
}
