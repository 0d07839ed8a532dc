//! Rules a resolved configuration must meet before anything runs. Each rule names the key
//! and what is allowed, so the error alone tells the user what to write.

use std::collections::BTreeMap;

use super::{Account, Config, ConfigError, EKS_VERSIONS};

type Check = Result<(), ConfigError>;

fn fail(key: impl Into<String>, message: impl Into<String>) -> Check {
    Err(ConfigError::new(key, message))
}

fn rule(key: &str, value: &str, ok: bool, allowed: &str) -> Check {
    if ok {
        Ok(())
    } else {
        fail(key, format!("{value:?} is not valid: {allowed}"))
    }
}

fn all_chars(s: &str, f: impl Fn(char) -> bool) -> bool {
    s.chars().all(f)
}

/// RFC 1123 label: Kubernetes namespace and most object names.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && all_chars(s, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: ConfigMap names, service accounts, DNS names.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_stack_name(s: &str) -> bool {
    s.len() <= 128 && s.starts_with(|c: char| c.is_ascii_alphabetic()) && all_chars(s, |c| c.is_ascii_alphanumeric() || c == '-')
}

fn is_eks_cluster_name(s: &str) -> bool {
    s.len() <= 100
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && all_chars(s, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_trust_domain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && all_chars(s, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
}

fn is_spiffe_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && all_chars(seg, |c| c.is_ascii_alphanumeric() || ".-_".contains(c)))
}

fn is_iam_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && all_chars(s, |c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// An AWS region name (`us-east-2`, `us-gov-west-1`): the one region rule of meshctl.
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && all_chars(p, |c| c.is_ascii_lowercase()))
        && parts.last().is_some_and(|p| !p.is_empty() && all_chars(p, |c| c.is_ascii_digit()))
}

/// An EC2 instance type: `family.size`, the family a lowercase letter then lowercase letters,
/// digits and '-' (`t3`, `m7g`, `u-6tb1`), the size lowercase letters and digits (`medium`,
/// `2xlarge`).
fn is_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else { return false };
    family.starts_with(|c: char| c.is_ascii_lowercase())
        && all_chars(family, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !size.is_empty()
        && all_chars(size, |c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn is_profile(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '[' || c == ']')
}

/// The longest duration SPIRE reads: Go's `time.ParseDuration` holds nanoseconds in an i64
/// (2562047h47m16.854775807s), so a longer TTL stops the server at start.
pub const MAX_TTL_SECONDS: u64 = (i64::MAX as u64) / 1_000_000_000;

/// A Go-style duration made of whole units (`1h`, `90m`, `1h30m`, `45s`), in seconds; `None`
/// when it is not one or is longer than Go (and so SPIRE) can hold ([`MAX_TTL_SECONDS`]).
pub fn parse_ttl(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        any = true;
    }
    (any && num.is_empty() && total <= MAX_TTL_SECONDS).then_some(total)
}

/// A Kubernetes storage quantity: digits and a binary or decimal suffix (`1Gi`, `500M`).
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && ["", "Ki", "Mi", "Gi", "Ti", "K", "M", "G", "T"].contains(&suffix)
}

/// An image reference with an explicit tag or digest (`name:tag`, `name@sha256:...`), no
/// spaces: an untagged image means whatever `latest` is on the day a node pulls it.
pub fn is_image_ref(s: &str) -> bool {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return false;
    }
    if let Some((name, digest)) = s.split_once('@') {
        return !name.is_empty() && digest.starts_with("sha256:") && digest.len() == 71;
    }
    // The tag is after the last ':' that comes after the last '/' (a registry may have a port).
    let last = s.rsplit('/').next().unwrap_or(s);
    matches!(last.split_once(':'), Some((n, t)) if !n.is_empty() && !t.is_empty())
}

/// `a.b.c.d/n` with a prefix from /16 to /24 (a VPC must hold the six subnets, blocks of
/// 1/16th each, that the stacks carve out of it, and AWS's smallest subnet is a /28); returns
/// (network, prefix). Whether AWS gives a VPC that range is [`vpc_range_problem`]'s question.
pub fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if !(16..=24).contains(&len) {
        return None;
    }
    let ip = u32::from(ip);
    let mask = u32::MAX << (32 - len);
    (ip & !mask == 0).then_some((ip, len))
}

/// Why a VPC cannot have this (valid) network, if it cannot: the ranges CreateVpc refuses
/// or nothing routes to (this network, loopback, link-local, multicast, reserved).
pub fn vpc_range_problem(net: (u32, u8)) -> Option<&'static str> {
    const RANGES: [((u32, u8), &str); 5] = [
        ((0x0000_0000, 8), "0.0.0.0/8 is \"this network\""),
        ((0x7f00_0000, 8), "127.0.0.0/8 is loopback"),
        ((0xa9fe_0000, 16), "169.254.0.0/16 is link-local (instance metadata, DNS)"),
        ((0xe000_0000, 4), "224.0.0.0/4 is multicast"),
        ((0xf000_0000, 4), "240.0.0.0/4 is reserved"),
    ];
    RANGES.iter().find(|(r, _)| overlaps(*r, net)).map(|(_, why)| *why)
}

/// The Kubernetes service range EKS gives a cluster whose VPC is `vpc` when none is set (the
/// stacks set none): 172.20.0.0/16 when the VPC is inside 10.0.0.0/8, else 10.100.0.0/16.
/// Pods of that cluster cannot reach addresses in it elsewhere (kube-proxy owns the range), so
/// no VPC the cluster talks to over the Transit Gateway may overlap it.
pub fn eks_service_range(vpc: (u32, u8)) -> ((u32, u8), &'static str) {
    if vpc.1 >= 8 && overlaps(vpc, (0x0a00_0000, 8)) {
        ((0xac14_0000, 16), "172.20.0.0/16")
    } else {
        ((0x0a64_0000, 16), "10.100.0.0/16")
    }
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let len = a.1.min(b.1);
    let mask = u32::MAX << (32 - len);
    a.0 & mask == b.0 & mask
}

/// A Kubernetes label value, not empty: at most 63 letters, digits, '-', '_' and '.', starting
/// and ending with a letter or digit.
pub fn is_label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && all_chars(s, |c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A Kubernetes Service name (RFC 1035 label): a DNS label that starts with a letter.
pub fn is_service_name(s: &str) -> bool {
    is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// A ConfigMap key (also a file name where the ConfigMap is mounted).
fn is_configmap_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && all_chars(k, |ch| ch.is_ascii_alphanumeric() || "-._".contains(ch))
        && k != "."
        && !k.starts_with("..")
}

/// Ports the kubelet, kube-proxy and the VPC CNI (aws-node) listen on, on every EKS node: the
/// SPIRE agent uses the node's network, so its health port must be none of them.
pub const EKS_NODE_PORTS: &[(u16, &str)] = &[
    (10248, "the kubelet's healthz"),
    (10249, "kube-proxy's metrics"),
    (10250, "the kubelet"),
    (10256, "kube-proxy's healthz"),
    (50051, "the VPC CNI's ipamd"),
    (61678, "the VPC CNI's metrics"),
    (61679, "the VPC CNI's introspection"),
];

/// The SPIRE server chart's health port (`healthPort` in charts/spire-server/values.yaml): it
/// listens beside `spire.server_port` in the server's container.
pub const SPIRE_SERVER_HEALTH_PORT: u16 = 8080;

/// Directories the SPIRE server chart mounts in the server's container (config, datastore,
/// the spoke tokens), besides `/etc/kubeconfig/<spoke>`: the admin socket's directory, an
/// emptyDir of its own, cannot be one of them.
pub const SPIRE_SERVER_MOUNTS: &[&str] = &["/run/spire/config", "/run/spire/data", "/var/run/meshctl/spoke-tokens"];

/// Directories the SPIRE agent chart mounts in the agent's container: the socket's directory,
/// a host directory of its own, cannot be one of them.
pub const SPIRE_AGENT_MOUNTS: &[&str] = &["/run/spire/config", "/run/spire/bundle", "/run/spire/data", "/var/run/secrets/tokens"];

/// Directories a socket's directory must not be: the agent's is mounted from the node
/// (read-write) and over the same path in every sidecar, the server's over the same path in its
/// container; either would replace a system directory.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr",
    "/var",
];

/// Helm refuses longer release names.
pub const HELM_RELEASE_MAX: usize = 53;

/// The longest unix socket path (`sun_path` holds 108 bytes with its terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// An absolute path without spaces, quotes, `.`/`..` segments or empty segments.
fn is_clean_absolute(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && !p.chars().any(|c| c.is_whitespace() || c.is_control() || "\"'\\$`".contains(c))
        && p[1..].split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A unix socket path in a directory of its own: `mounts` are the directories its container
/// mounts already.
fn socket_rule(key: &str, path: &str, mounts: &[&str]) -> Check {
    let allowed = format!(
        "an absolute path of at most {MAX_SOCKET_PATH} bytes without spaces or quotes, in a directory of its own (not /, a system directory such as /etc or /run, nor {})",
        mounts.join(", ")
    );
    if !is_clean_absolute(path) || path.len() > MAX_SOCKET_PATH {
        return fail(key, format!("{path:?} is not a socket path meshctl can use: {allowed}"));
    }
    let dir = path.rsplit_once('/').map(|(d, _)| if d.is_empty() { "/" } else { d }).unwrap_or("/");
    if SYSTEM_DIRS.contains(&dir) || mounts.contains(&dir) || dir.starts_with("/etc/kubeconfig") {
        return fail(key, format!("{path:?}: its directory {dir} is mounted whole into the pod (and, for the agent, from the node), which would replace or collide with {dir}: {allowed}"));
    }
    Ok(())
}

/// An IP address or a lowercase DNS name, without scheme or port.
fn is_host(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok() || (is_dns_subdomain(s) && !s.is_empty())
}

/// Every rule; the first broken one is returned.
pub(super) fn validate(c: &Config) -> Check {
    rule("region", &c.region, is_region(&c.region), "an AWS region such as us-east-2")?;
    rule("mesh.name", &c.mesh.name, is_dns_subdomain(&c.mesh.name), "lowercase letters, digits, '-' and '.', at most 253 characters")?;
    rule(
        "mesh.trust_domain",
        &c.mesh.trust_domain,
        is_trust_domain(&c.mesh.trust_domain),
        "a SPIFFE trust domain: lowercase letters, digits, '.', '-', '_' (no spiffe:// prefix)",
    )?;
    let ns_rule = "a Kubernetes namespace: lowercase letters, digits and '-', at most 63 characters";
    rule("mesh.app_namespace", &c.mesh.app_namespace, is_dns_label(&c.mesh.app_namespace), ns_rule)?;
    rule("spire.namespace", &c.spire.namespace, is_dns_label(&c.spire.namespace), ns_rule)?;
    if c.mesh.app_namespace == c.spire.namespace {
        return fail(
            "mesh.app_namespace",
            format!(
                "{:?} is also spire.namespace: removing the application (`meshctl yelb --destroy`, `down`) deletes its namespace, which would take the SPIRE agents with it; use another namespace",
                c.mesh.app_namespace
            ),
        );
    }
    rule("mesh.provider", &c.mesh.provider, is_dns_label(&c.mesh.provider), "a provider name such as envoy or appmesh")?;
    validate_network(c)?;
    validate_spire(c)?;
    if c.spokes.is_empty() {
        return fail(
            "spokes",
            "the list is empty: at least one spoke account is needed (the hub runs the SPIRE server, workloads run in spokes)",
        );
    }
    validate_accounts(c)?;
    validate_services(c)
}

fn validate_network(c: &Config) -> Check {
    let n = &c.network;
    rule(
        "network.tgw_name",
        &n.tgw_name,
        !n.tgw_name.is_empty() && n.tgw_name.chars().count() <= 256 && !n.tgw_name.chars().any(char::is_control),
        "the Transit Gateway's Name tag: 1 to 256 characters",
    )?;
    rule(
        "network.tgw_share",
        &n.tgw_share,
        !n.tgw_share.is_empty() && !n.tgw_share.chars().any(char::is_control),
        "the RAM share's name: at least one character, no control characters",
    )?;
    Ok(())
}

fn validate_spire(c: &Config) -> Check {
    let sp = &c.spire;
    for (key, v) in [("spire.server_release", &sp.server_release), ("spire.agent_release", &sp.agent_release)] {
        rule(
            key,
            v,
            is_dns_label(v) && v.len() <= HELM_RELEASE_MAX,
            &format!("a Helm release name: lowercase letters, digits and '-', at most {HELM_RELEASE_MAX} characters"),
        )?;
    }
    for (key, port) in [("spire.server_port", sp.server_port), ("spire.agent_health_port", sp.agent_health_port)] {
        if port == 0 {
            return fail(key, "0 is not a port: use 1-65535");
        }
    }
    if sp.server_port == SPIRE_SERVER_HEALTH_PORT {
        return fail(
            "spire.server_port",
            format!("{} is the SPIRE server's health port in the same container: use another port (default 8081)", sp.server_port),
        );
    }
    if let Some((_, what)) = EKS_NODE_PORTS.iter().find(|(p, _)| *p == sp.agent_health_port) {
        let taken: Vec<String> = EKS_NODE_PORTS.iter().map(|(p, _)| p.to_string()).collect();
        return fail(
            "spire.agent_health_port",
            format!(
                "{} is {what}'s port on every EKS node, and the agents use the node's network: use a free port (default 8080; not {})",
                sp.agent_health_port,
                taken.join(", ")
            ),
        );
    }
    let duration = |key: &str, v: &str, eg: &str| {
        parse_ttl(v).ok_or_else(|| {
            ConfigError::new(
                key,
                format!(
                    "{v:?} is not a duration SPIRE reads: whole hours, minutes and seconds such as {eg}, at most {}h",
                    MAX_TTL_SECONDS / 3600
                ),
            )
        })
    };
    let svid = duration("spire.svid_ttl", &sp.svid_ttl, "1h, 30m, 90s")?;
    let ca = duration("spire.ca_ttl", &sp.ca_ttl, "24h, 168h")?;
    if svid < 60 {
        return fail("spire.svid_ttl", format!("{} is too short: at least 1m (Envoy must fetch the SVID and use it)", sp.svid_ttl));
    }
    if ca < 2 * svid {
        return fail(
            "spire.ca_ttl",
            format!(
                "{} must be at least twice spire.svid_ttl ({}): SPIRE caps every SVID at its CA's remaining lifetime",
                sp.ca_ttl, sp.svid_ttl
            ),
        );
    }
    for (key, v, eg) in [
        ("spire.server_image", &sp.server_image, "ghcr.io/spiffe/spire-server:1.13.3"),
        ("spire.agent_image", &sp.agent_image, "ghcr.io/spiffe/spire-agent:1.13.3"),
        ("spire.token_refresher_image", &sp.token_refresher_image, "public.ecr.aws/aws-cli/aws-cli:2.15.62"),
    ] {
        rule(key, v, is_image_ref(v), &format!("an image reference with a tag or digest, e.g. {eg}"))?;
    }
    socket_rule("spire.agent_socket", &sp.agent_socket, SPIRE_AGENT_MOUNTS)?;
    socket_rule("spire.server_socket", &sp.server_socket, SPIRE_SERVER_MOUNTS)?;
    rule(
        "spire.server_binary",
        &sp.server_binary,
        is_clean_absolute(&sp.server_binary),
        "the absolute path of spire-server in its image, e.g. /opt/spire/bin/spire-server",
    )?;
    if let Some(a) = &sp.server_address {
        rule(
            "spire.server_address",
            a,
            is_host(a),
            "an IP address or a DNS name the agents dial, without scheme or port (the port is spire.server_port)",
        )?;
    }
    rule("spire.server.storage_class", &sp.server.storage_class, is_dns_subdomain(&sp.server.storage_class), "a StorageClass name")?;
    rule(
        "spire.server.storage_size",
        &sp.server.storage_size,
        is_quantity(&sp.server.storage_size),
        "a Kubernetes quantity such as 1Gi or 500Mi",
    )?;
    Ok(())
}

/// The longest spoke name: the SPIRE server mounts each spoke's kubeconfig as volume
/// `kubeconfig-<spoke>`, and a volume name is a DNS label (at most 63).
pub const MAX_SPOKE_NAME: usize = 63 - "kubeconfig-".len();

/// CloudFormation's longest stack name.
const MAX_STACK_NAME: usize = 128;

fn validate_accounts(c: &Config) -> Check {
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut profiles: BTreeMap<&str, String> = BTreeMap::new();
    let mut contexts: BTreeMap<&str, String> = BTreeMap::new();
    let mut cidrs: Vec<((u32, u8), String, &Account)> = Vec::new();
    let mut psat: BTreeMap<&str, String> = BTreeMap::new();
    let mut agent_sas: BTreeMap<&str, String> = BTreeMap::new();
    let mut config_maps: BTreeMap<&str, String> = BTreeMap::new();
    for (i, a) in c.accounts().enumerate() {
        let at = if i == 0 { "hub".to_string() } else { format!("spokes[{}]", i - 1) };
        let key = |k: &str| format!("{at}.{k}");
        rule(&key("name"), &a.name, is_dns_label(&a.name), "lowercase letters, digits and '-', at most 63 characters")?;
        if i > 0 && a.name.len() > MAX_SPOKE_NAME {
            return fail(
                key("name"),
                format!("{:?} is too long: a spoke's name has at most {MAX_SPOKE_NAME} characters, because the SPIRE server mounts its kubeconfig as volume kubeconfig-<spoke> (a DNS label, at most 63)", a.name),
            );
        }
        if let Some(first) = names.insert(&a.name, at.clone()) {
            return fail(key("name"), format!("account name {:?} is used twice ({first} and {at}); each account has one role", a.name));
        }
        rule(&key("profile"), &a.profile, is_profile(&a.profile), "an AWS profile name without spaces or brackets")?;
        if let Some(first) = profiles.insert(&a.profile, at.clone()) {
            return fail(
                key("profile"),
                format!("profile {:?} is used by {first} and {at}; each account needs its own profile (its own AWS account)", a.profile),
            );
        }
        rule(
            &key("cluster_name"),
            &a.cluster_name,
            is_eks_cluster_name(&a.cluster_name),
            "an EKS cluster name: letters, digits, '-' and '_', starting with a letter or digit, at most 100 characters",
        )?;
        // The stacks name IAM roles after the cluster (`<cluster>-node-role`; the hub's also
        // `<cluster>-spire-server` and `<cluster>-ebs-csi-driver`), and a role name has at
        // most 64 characters.
        let longest_suffix = if i == 0 { "-ebs-csi-driver" } else { "-node-role" };
        // A derived cluster name is the account name's doing: say so.
        let derived = if a.cluster_name == format!("eks-cluster-{}", a.name) {
            " (it is derived from the account's name: set cluster_name, or shorten the name)"
        } else {
            ""
        };
        if a.cluster_name.len() + longest_suffix.len() > 64 {
            return fail(
                key("cluster_name"),
                format!(
                    "{:?} is too long: at most {} characters here, because the IAM roles of its stack are named after it (<cluster>{longest_suffix}) and IAM role names have at most 64{derived}",
                    a.cluster_name,
                    64 - longest_suffix.len()
                ),
            );
        }
        if i > 0 && a.access_role_name() == format!("{}-access-role", a.cluster_name) && !is_iam_name(a.access_role_name()) {
            return fail(
                key("cluster_name"),
                format!(
                    "{:?} is too long for the access role named after it (<cluster>-access-role, an IAM role name of at most 64 characters): at most {} characters, or set access_role_name{derived}",
                    a.cluster_name,
                    64 - "-access-role".len()
                ),
            );
        }
        let context = a.kube_context.as_deref().unwrap_or(&a.cluster_name);
        if let Some(first) = contexts.insert(context, at.clone()) {
            let k = if a.kube_context.is_some() { "kube_context" } else { "cluster_name" };
            return fail(
                key(k),
                format!("{first} and {at} would both reach their cluster through kubeconfig context {context:?} (the kube_context, else the cluster name): each account needs its own"),
            );
        }
        rule(
            &key("stack_name"),
            &a.stack_name,
            is_stack_name(&a.stack_name),
            "a CloudFormation stack name: letters, digits and '-', starting with a letter, at most 128 characters",
        )?;
        if i > 0 && a.stack_name.len() + "-tgw".len() > MAX_STACK_NAME {
            return fail(
                key("stack_name"),
                format!("{:?} is too long: a spoke's stack name has at most {} characters, because its Transit Gateway stack is named <stack_name>-tgw", a.stack_name, MAX_STACK_NAME - 4),
            );
        }
        let Some(net) = parse_cidr(&a.vpc_cidr) else {
            return fail(
                key("vpc_cidr"),
                format!(
                    "{:?} is not valid: an IPv4 network such as 10.1.0.0/16 (prefix /16 to /24, the address the network's first)",
                    a.vpc_cidr
                ),
            );
        };
        if let Some(why) = vpc_range_problem(net) {
            return fail(
                key("vpc_cidr"),
                format!("{} cannot be a VPC's range: {why}; use a private range such as 10.1.0.0/16", a.vpc_cidr),
            );
        }
        if let Some((_, other, _)) = cidrs.iter().find(|(n, _, _)| overlaps(*n, net)) {
            return fail(
                key("vpc_cidr"),
                format!("{} overlaps {other}; the Transit Gateway routes between VPCs need distinct ranges", a.vpc_cidr),
            );
        }
        cidrs.push((net, format!("{} ({at})", a.vpc_cidr), a));
        rule(
            &key("kubernetes_version"),
            &a.kubernetes_version,
            EKS_VERSIONS.contains(&a.kubernetes_version.as_str()),
            &format!("a Kubernetes version EKS supports: {}", EKS_VERSIONS.join(", ")),
        )?;
        rule(
            &key("instance_type"),
            &a.instance_type,
            is_instance_type(&a.instance_type),
            "an EC2 instance type such as t3.medium or m7g.2xlarge",
        )?;
        if !(1..=100).contains(&a.node_count) {
            return fail(key("node_count"), format!("{} is not valid: 1 to 100 nodes", a.node_count));
        }
        if !(20..=16384).contains(&a.disk_size) {
            return fail(
                key("disk_size"),
                format!("{} is not valid: a node's disk is 20 to 16384 GiB (EKS nodes need at least 20)", a.disk_size),
            );
        }
        if let Some(ctx) = &a.kube_context {
            rule(&key("kube_context"), ctx, !ctx.is_empty(), "the name of a context in your kubeconfig")?;
        }
        if i > 0 {
            rule(
                &key("psat_cluster"),
                a.psat_cluster(),
                is_trust_domain(a.psat_cluster()) && !a.psat_cluster().contains('.'),
                "lowercase letters, digits, '-' and '_'",
            )?;
            if let Some(first) = psat.insert(a.psat_cluster(), at.clone()) {
                return fail(
                    key("psat_cluster"),
                    format!("{:?} is also the psat cluster of {first}; SPIRE needs one name per cluster", a.psat_cluster()),
                );
            }
            rule(
                &key("agent_service_account"),
                a.agent_service_account(),
                is_dns_subdomain(a.agent_service_account()),
                "a Kubernetes service account name",
            )?;
            if let Some(first) = agent_sas.insert(a.agent_service_account(), at.clone()) {
                return fail(
                    key("agent_service_account"),
                    format!(
                        "{:?} is also the agent service account of {first}: the agents' node entry is named after it (spiffe://<td>/ns/<spire ns>/sa/<sa>), so two spokes would share one entry; give each its own",
                        a.agent_service_account()
                    ),
                );
            }
            rule(&key("kubeconfig_configmap"), a.kubeconfig_configmap(), is_dns_subdomain(a.kubeconfig_configmap()), "a ConfigMap name")?;
            if let Some(first) = config_maps.insert(a.kubeconfig_configmap(), at.clone()) {
                return fail(
                    key("kubeconfig_configmap"),
                    format!(
                        "{:?} is also the kubeconfig ConfigMap of {first}: each spoke's kubeconfig needs its own ConfigMap in the hub",
                        a.kubeconfig_configmap()
                    ),
                );
            }
            let k = a.kubeconfig_key();
            rule(
                &key("kubeconfig_key"),
                k,
                is_configmap_key(k),
                "a ConfigMap key: letters, digits, '-', '_' and '.', at most 253 characters, not starting with '..'",
            )?;
            rule(
                &key("access_role_name"),
                a.access_role_name(),
                is_iam_name(a.access_role_name()),
                "an IAM role name: letters, digits and +=,.@_-, at most 64 characters",
            )?;
        }
    }
    // The hub holds one stack per spoke, named <hub stack_name>-<spoke name>.
    if let Some(long) = c.spokes.iter().max_by_key(|s| s.name.len()) {
        if c.hub.stack_name.len() + 1 + long.name.len() > MAX_STACK_NAME {
            return fail(
                "hub.stack_name",
                format!(
                    "{:?} is too long: at most {} characters with these spokes, because the hub holds a stack per spoke named <hub stack_name>-<spoke> (here {}-{}) and a stack name has at most {MAX_STACK_NAME}",
                    c.hub.stack_name,
                    MAX_STACK_NAME - 1 - long.name.len(),
                    c.hub.stack_name,
                    long.name
                ),
            );
        }
    }
    // A cluster's pods cannot reach a VPC inside its Kubernetes service range.
    for (net, _, a) in &cidrs {
        let (range, shown) = eks_service_range(*net);
        for (other, text, b) in &cidrs {
            if b.name != a.name && overlaps(range, *other) {
                let at = if b.name == c.hub.name {
                    "hub".to_string()
                } else {
                    format!("spokes[{}]", c.spokes.iter().position(|s| s.name == b.name).unwrap_or_default())
                };
                return fail(
                    format!("{at}.vpc_cidr"),
                    format!(
                        "{text} overlaps {shown}, the Kubernetes service range EKS gives cluster {} (VPC {}): its pods could not reach this VPC over the Transit Gateway; use a range outside {shown}",
                        a.cluster_name, a.vpc_cidr
                    ),
                );
            }
        }
    }
    Ok(())
}

fn validate_services(c: &Config) -> Check {
    let spoke_names: Vec<&str> = c.spokes.iter().map(|s| s.name.as_str()).collect();
    let agent_paths: Vec<String> = c.spokes.iter().map(|s| format!("ns/{}/sa/{}", c.spire.namespace, s.agent_service_account())).collect();
    let mut svc_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut paths: BTreeMap<&str, usize> = BTreeMap::new();
    let mut selectors: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for (i, s) in c.services.iter().enumerate() {
        let key = |k: &str| format!("services[{i}].{k}");
        rule(
            &key("name"),
            &s.name,
            is_service_name(&s.name),
            "a Kubernetes Service name: lowercase letters, digits and '-', starting with a letter, at most 63 characters",
        )?;
        if let Some(first) = svc_names.insert(&s.name, i) {
            return fail(key("name"), format!("service {:?} is also services[{first}]", s.name));
        }
        if !spoke_names.contains(&s.account.as_str()) {
            return fail(key("account"), format!("{:?} is not a spoke; allowed: {}", s.account, spoke_names.join(", ")));
        }
        rule(
            &key("spiffe_path"),
            &s.spiffe_path,
            is_spiffe_path(&s.spiffe_path),
            "a SPIFFE ID path: segments of letters, digits, '.', '-', '_' separated by '/'",
        )?;
        if s.spiffe_path == "spire" || s.spiffe_path.starts_with("spire/") {
            return fail(key("spiffe_path"), format!("{:?} is in SPIRE's own namespace (spiffe://<td>/spire/server, spiffe://<td>/spire/agent/...): choose a path outside spire/", s.spiffe_path));
        }
        if agent_paths.contains(&s.spiffe_path) {
            return fail(
                key("spiffe_path"),
                format!("{:?} is the SPIFFE ID of a spoke's SPIRE agents (their node entry): choose another path", s.spiffe_path),
            );
        }
        if let Some(first) = paths.insert(&s.spiffe_path, i) {
            return fail(
                key("spiffe_path"),
                format!("SPIFFE ID path {:?} is also services[{first}]'s; each workload needs its own identity", s.spiffe_path),
            );
        }
        for (k, v) in [("app_label", &s.app_label), ("tier_label", &s.tier_label)] {
            rule(
                &key(k),
                v,
                is_label_value(v),
                "a Kubernetes label value: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            )?;
        }
        if let Some(first) = selectors.insert((&s.account, &s.app_label, &s.tier_label), i) {
            return fail(
                key("tier_label"),
                format!(
                    "services[{first}] in account {} has the same app_label and tier_label ({}/{}): their Services and SPIRE entries would select each other's pods; give one another app_label or tier_label",
                    s.account, s.app_label, s.tier_label
                ),
            );
        }
        if s.port == 0 {
            return fail(key("port"), "0 is not a port: use 1-65535");
        }
        if s.load_balancer_port == Some(0) {
            return fail(key("load_balancer_port"), "0 is not a port: use 1-65535");
        }
        if s.image.is_empty() {
            return fail(
                key("image"),
                format!("service {:?} has no image: set image = \"registry/name:tag\" (only the Yelb services have defaults)", s.name),
            );
        }
        rule(
            &key("image"),
            &s.image,
            is_image_ref(&s.image),
            "an image reference with a tag or digest, e.g. docker.io/library/redis:4.0.2",
        )?;
    }
    let all: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    // Calls across accounts, account → accounts it calls: a caller's spoke is deployed after
    // its callees' (it needs their load balancer addresses), so these calls cannot go in a circle.
    let mut calls: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (i, s) in c.services.iter().enumerate() {
        for b in &s.backends {
            let Some(callee) = c.service(b).filter(|callee| callee.name != s.name) else {
                return fail(format!("services[{i}].backends"), format!("{b:?} is not another service; allowed: {}", all.join(", ")));
            };
            if callee.account == s.account {
                continue;
            }
            if let Some(path) = path_between(&calls, &callee.account, &s.account) {
                return fail(
                    format!("services[{i}].backends"),
                    format!(
                        "{b} runs in {}, whose workloads already call {} ({}): meshctl deploys a callee's spoke before its callers' (a caller needs the callee's load balancer address), so calls between spokes cannot go in a circle",
                        callee.account,
                        s.account,
                        path.join(" → ")
                    ),
                );
            }
            calls.entry(&s.account).or_default().push(&callee.account);
        }
    }
    Ok(())
}

/// A path of calls from account `from` to account `to`, if there is one.
fn path_between<'a>(calls: &BTreeMap<&'a str, Vec<&'a str>>, from: &'a str, to: &'a str) -> Option<Vec<&'a str>> {
    let mut stack = vec![vec![from]];
    let mut seen = std::collections::BTreeSet::from([from]);
    while let Some(path) = stack.pop() {
        let last = *path.last()?;
        if last == to {
            return Some(path);
        }
        for next in calls.get(last).into_iter().flatten() {
            if seen.insert(next) {
                let mut p = path.clone();
                p.push(next);
                stack.push(p);
            }
        }
    }
    None
}
