//! `aws`: the test bed's stand-in for the AWS CLI in image `public.ecr.aws/aws-cli/aws-cli`.
//!
//! It implements one command, the one meshctl's SPIRE server token refresher runs:
//!
//! ```text
//! aws eks get-token --cluster-name C [--role-arn R] [--session-name S] [--region X]
//!                   [--query status.token|status.expirationTimestamp] [--output json|text]
//! ```
//!
//! and `aws --version`. Anything else exits 2 with a message naming what is implemented.
//!
//! The real CLI signs an STS `GetCallerIdentity` URL with the pod's credentials (EKS Pod
//! Identity, after assuming `--role-arn`); the token is `k8s-aws-v1.` + base64url of that URL,
//! and the cluster's authenticator calls STS with it. Nothing here can reach STS, so the token
//! carries what the test bed's authentication webhook (scripts/testbed-moto.py,
//! `/_testbed/eks-authn/<cluster>`) needs to decide as EKS would: `k8s-aws-v1.` + base64url
//! (no padding) of the JSON object
//!
//! ```text
//! {"cluster": C, "role_arn": R, "region": X, "session_name": S, "issued_at": <unix seconds>,
//!  "pod_token": <the pod's service-account token>}
//! ```
//!
//! The pod's service-account token (`/var/run/secrets/kubernetes.io/serviceaccount/token`;
//! `AWS_STANDIN_POD_TOKEN_FILE` overrides the path) stands in for its Pod Identity
//! credentials: the webhook reviews it against the hub API server and looks up the Pod Identity
//! association of its service account. Static credentials in the environment are refused: this
//! stand-in signs nothing.
//!
//! Without `--query` the output is the ExecCredential object, as the real CLI prints it
//! (`apiVersion` from `KUBERNETES_EXEC_INFO`, else `client.authentication.k8s.io/v1beta1`;
//! `expirationTimestamp` 14 minutes ahead).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

const VERSION: &str = "aws-cli/2.15.62 Python/3.11.8 Linux/x86_64 exe/x86_64 (meshctl test bed stand-in)";
const POD_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const DEFAULT_SESSION: &str = "EKSGetTokenAuth";
const BETA_API: &str = "client.authentication.k8s.io/v1beta1";
const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// Exit codes: 2 for a command line the stand-in does not implement or cannot parse, 255 when
/// a token cannot be made (as the real CLI's errors).
const USAGE: i32 = 2;
const FAILED: i32 = 255;

#[derive(Debug, Default, PartialEq)]
struct GetToken {
    cluster: String,
    role_arn: Option<String>,
    session_name: Option<String>,
    region: Option<String>,
    query: Option<String>,
    output: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Cmd {
    Version,
    GetToken(GetToken),
}

fn implemented() -> &'static str {
    "this is the meshctl test bed's stand-in for the AWS CLI: it implements only\n  \
     aws eks get-token --cluster-name NAME [--role-arn ARN] [--session-name NAME] [--region REGION]\n                    \
     [--query status.token|status.expirationTimestamp] [--output json|text]\n\
     and aws --version"
}

/// Parses the command line (without argv[0]). Options may come before or after the command
/// words, as with the real CLI; `--opt=value` and `--opt value` both work.
fn parse(args: &[String]) -> Result<Cmd, String> {
    let mut words: Vec<&str> = Vec::new();
    let mut g = GetToken::default();
    let mut cluster = None;
    let mut version = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if let Some(opt) = a.strip_prefix("--") {
            let (name, inline) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (opt, None),
            };
            // flags without a value
            match name {
                "version" => {
                    version = true;
                    i += 1;
                    continue;
                }
                "no-cli-pager" | "no-paginate" | "debug" | "no-cli-auto-prompt" => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).cloned().ok_or_else(|| format!("argument --{name}: expected one argument"))?
                }
            };
            match name {
                "cluster-name" => cluster = Some(value),
                "role-arn" => g.role_arn = Some(value),
                "session-name" => g.session_name = Some(value),
                "region" => g.region = Some(value),
                "query" => g.query = Some(value),
                "output" => g.output = Some(value),
                "cluster-id" => return Err("--cluster-id (EKS local clusters on Outposts) is not implemented".into()),
                other => return Err(format!("option --{other} is not implemented")),
            }
        } else {
            words.push(a);
        }
        i += 1;
    }
    if version && words.is_empty() {
        return Ok(Cmd::Version);
    }
    match words.as_slice() {
        ["eks", "get-token"] => {}
        [] => return Err("no command given".into()),
        other => return Err(format!("`aws {}` is not implemented", other.join(" "))),
    }
    g.cluster = cluster.ok_or("Either parameter --cluster-name or --cluster-id must be specified.")?;
    if g.cluster.is_empty() {
        return Err("--cluster-name is empty".into());
    }
    match g.output.as_deref() {
        None | Some("json") | Some("text") => {}
        Some(o) => return Err(format!("--output {o} is not implemented (json, text)")),
    }
    match g.query.as_deref() {
        None | Some("status.token") | Some("status.expirationTimestamp") => {}
        Some(q) => return Err(format!("--query {q} is not implemented (status.token, status.expirationTimestamp)")),
    }
    if g.output.as_deref() == Some("text") && g.query.is_none() {
        return Err("--output text without --query is not implemented".into());
    }
    Ok(Cmd::GetToken(g))
}

/// base64url without padding (RFC 4648 §5), as the CLI's token.
fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for k in 0..chars {
            out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    out
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// RFC 3339 UTC (`2024-04-11T20:59:56Z`) of a Unix time.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // days since 1970-01-01 -> civil date (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3_600, rem / 60 % 60, rem % 60)
}

/// The ExecCredential apiVersion the caller asked for in KUBERNETES_EXEC_INFO (as the CLI).
fn exec_api_version(exec_info: Option<&str>) -> String {
    let Some(info) = exec_info.filter(|s| !s.trim().is_empty()) else { return BETA_API.into() };
    // the value of "apiVersion" (a flat JSON string; no escapes in an API version)
    let v = info
        .split_once("\"apiVersion\"")
        .and_then(|(_, rest)| rest.trim_start().strip_prefix(':'))
        .and_then(|rest| rest.trim_start().strip_prefix('"'))
        .and_then(|rest| rest.split_once('"'))
        .map(|(v, _)| v.to_string());
    match v.as_deref() {
        Some(
            v @ ("client.authentication.k8s.io/v1" | "client.authentication.k8s.io/v1beta1" | "client.authentication.k8s.io/v1alpha1"),
        ) => v.into(),
        _ => BETA_API.into(),
    }
}

fn token(g: &GetToken, region: &str, pod_token: &str, now: u64) -> String {
    let role = g.role_arn.as_deref().map(json_str).unwrap_or_else(|| "null".into());
    let session = g.session_name.as_deref().unwrap_or(DEFAULT_SESSION);
    let body = format!(
        "{{\"cluster\":{},\"role_arn\":{role},\"region\":{},\"session_name\":{},\"issued_at\":{now},\"pod_token\":{}}}",
        json_str(&g.cluster),
        json_str(region),
        json_str(session),
        json_str(pod_token.trim())
    );
    format!("{TOKEN_PREFIX}{}", base64url(body.as_bytes()))
}

fn render(g: &GetToken, token: &str, expires: &str, api_version: &str) -> String {
    match (g.query.as_deref(), g.output.as_deref()) {
        (Some("status.token"), Some("text")) => format!("{token}\n"),
        (Some("status.expirationTimestamp"), Some("text")) => format!("{expires}\n"),
        (Some("status.token"), _) => format!("{}\n", json_str(token)),
        (Some(_), _) => format!("{}\n", json_str(expires)),
        (None, _) => format!(
            "{{\n    \"kind\": \"ExecCredential\",\n    \"apiVersion\": {},\n    \"spec\": {{}},\n    \"status\": {{\n        \"expirationTimestamp\": {},\n        \"token\": {}\n    }}\n}}\n",
            json_str(api_version),
            json_str(expires),
            json_str(token)
        ),
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("aws: {msg}");
    std::process::exit(code)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let g = match parse(&args) {
        Ok(Cmd::Version) => {
            println!("{VERSION}");
            return;
        }
        Ok(Cmd::GetToken(g)) => g,
        Err(e) => fail(USAGE, &format!("{e}\n{}", implemented())),
    };
    let region = g
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| fail(FAILED, "You must specify a region. You can also configure your region by running \"aws configure\"."));
    if env("AWS_ACCESS_KEY_ID").is_some() || env("AWS_PROFILE").is_some() {
        fail(
            FAILED,
            "static credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE) are set, but this stand-in signs nothing: \
             its only credentials are the pod's service-account token (the test bed's EKS Pod Identity)",
        );
    }
    let path = env("AWS_STANDIN_POD_TOKEN_FILE").unwrap_or_else(|| POD_TOKEN.into());
    let pod_token = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => t,
        Ok(_) => fail(FAILED, &format!("Unable to locate credentials: {path} is empty")),
        Err(e) => fail(
            FAILED,
            &format!(
                "Unable to locate credentials: no service-account token at {path} ({e}); the test bed's EKS Pod Identity stands on it"
            ),
        ),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let t = token(&g, &region, &pod_token, now);
    let out = render(&g, &t, &rfc3339(now + 14 * 60), &exec_api_version(env("KUBERNETES_EXEC_INFO").as_deref()));
    let mut so = std::io::stdout().lock();
    if so.write_all(out.as_bytes()).and_then(|_| so.flush()).is_err() {
        std::process::exit(FAILED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_refreshers_command_line_parses() {
        let c = parse(&args(
            "eks get-token --region us-east-2 --cluster-name c1 --role-arn arn:aws:iam::1:role/r --query status.token --output text",
        ))
        .unwrap();
        let Cmd::GetToken(g) = c else { panic!("{c:?}") };
        assert_eq!(g.cluster, "c1");
        assert_eq!(g.role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
        assert_eq!(g.region.as_deref(), Some("us-east-2"));
        assert_eq!((g.query.as_deref(), g.output.as_deref()), (Some("status.token"), Some("text")));
        // options before the command words and --opt=value
        let c = parse(&args("--region=eu-west-1 eks get-token --cluster-name=x")).unwrap();
        assert_eq!(c, Cmd::GetToken(GetToken { cluster: "x".into(), region: Some("eu-west-1".into()), ..Default::default() }));
        assert_eq!(parse(&args("--version")).unwrap(), Cmd::Version);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "s3 ls",
            "eks describe-cluster --name x",
            "eks get-token",
            "eks get-token --cluster-name x --query status",
            "eks get-token --cluster-name x --output yaml",
            "eks get-token --cluster-name x --output text",
            "eks get-token --cluster-name x --profile p",
            "eks get-token --cluster-name",
            "",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn base64url_has_no_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_712_869_196), "2024-04-11T20:59:56Z");
    }

    #[test]
    fn token_and_exec_credential() {
        let g = GetToken { cluster: "c".into(), role_arn: Some("arn:r".into()), query: None, ..Default::default() };
        let t = token(&g, "us-east-2", "jwt.x.y\n", 7);
        let body = "{\"cluster\":\"c\",\"role_arn\":\"arn:r\",\"region\":\"us-east-2\",\"session_name\":\"EKSGetTokenAuth\",\"issued_at\":7,\"pod_token\":\"jwt.x.y\"}";
        assert_eq!(t, format!("k8s-aws-v1.{}", base64url(body.as_bytes())));
        assert!(!t.contains('='));
        let ec = render(&g, &t, "1970-01-01T00:14:07Z", &exec_api_version(None));
        assert!(ec.contains("\"kind\": \"ExecCredential\""), "{ec}");
        assert!(ec.contains("\"apiVersion\": \"client.authentication.k8s.io/v1beta1\""), "{ec}");
        assert!(ec.contains(&format!("\"token\": \"{t}\"")), "{ec}");
        let v1 = exec_api_version(Some(
            r#"{"kind":"ExecCredential","apiVersion": "client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
        ));
        assert_eq!(v1, "client.authentication.k8s.io/v1");
        assert_eq!(exec_api_version(Some("garbage")), BETA_API);
        let text = GetToken { query: Some("status.token".into()), output: Some("text".into()), ..g };
        assert_eq!(render(&text, &t, "e", BETA_API), format!("{t}\n"));
    }
}
