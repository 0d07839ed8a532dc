//! Rules a resolved configuration must meet before anything runs. Each rule names the key
//! and what is allowed, so the error alone tells the user what to write.

use std::collections::BTreeMap;

use super::{Config, ConfigError, EKS_VERSIONS};

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
        && s.split('/').all(|seg| {
            !seg.is_empty() && seg != "." && seg != ".." && all_chars(seg, |c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        })
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

/// A Go-style duration made of whole units (`1h`, `90m`, `1h30m`, `45s`), in seconds.
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
        total += n * match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty()).then_some(total)
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

/// `a.b.c.d/n` with a prefix from /16 to /24 (a VPC must hold the six subnets, 16 blocks of
/// 1/16th each, that the stacks carve out of it); returns (network, prefix).
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

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let len = a.1.min(b.1);
    let mask = u32::MAX << (32 - len);
    a.0 & mask == b.0 & mask
}

/// Every rule; the first broken one is returned.
pub(super) fn validate(c: &Config) -> Check {
    rule("region", &c.region, is_region(&c.region), "an AWS region such as us-east-2")?;
    rule("mesh.name", &c.mesh.name, is_dns_subdomain(&c.mesh.name), "lowercase letters, digits, '-' and '.', at most 253 characters")?;
    rule("mesh.trust_domain", &c.mesh.trust_domain, is_trust_domain(&c.mesh.trust_domain), "a SPIFFE trust domain: lowercase letters, digits, '.', '-', '_' (no spiffe:// prefix)")?;
    let ns_rule = "a Kubernetes namespace: lowercase letters, digits and '-', at most 63 characters";
    rule("mesh.app_namespace", &c.mesh.app_namespace, is_dns_label(&c.mesh.app_namespace), ns_rule)?;
    rule("spire.namespace", &c.spire.namespace, is_dns_label(&c.spire.namespace), ns_rule)?;
    rule("mesh.provider", &c.mesh.provider, is_dns_label(&c.mesh.provider), "a provider name such as envoy or appmesh")?;
    for (key, v) in [
        ("spire.server_release", &c.spire.server_release),
        ("spire.agent_release", &c.spire.agent_release),
    ] {
        rule(key, v, is_dns_label(v), "lowercase letters, digits and '-', at most 63 characters")?;
    }
    for (key, port) in [("spire.server_port", c.spire.server_port), ("spire.agent_health_port", c.spire.agent_health_port)] {
        if port == 0 {
            return fail(key, "0 is not a port: use 1-65535");
        }
    }
    let svid = parse_ttl(&c.spire.svid_ttl).ok_or_else(|| ConfigError::new("spire.svid_ttl", format!("{:?} is not a duration: use e.g. 1h, 30m, 90s", c.spire.svid_ttl)))?;
    let ca = parse_ttl(&c.spire.ca_ttl).ok_or_else(|| ConfigError::new("spire.ca_ttl", format!("{:?} is not a duration: use e.g. 24h, 168h", c.spire.ca_ttl)))?;
    if svid < 60 {
        return fail("spire.svid_ttl", format!("{} is too short: at least 1m (Envoy must fetch the SVID and use it)", c.spire.svid_ttl));
    }
    if ca < 2 * svid {
        return fail(
            "spire.ca_ttl",
            format!("{} must be at least twice spire.svid_ttl ({}): SPIRE caps every SVID at its CA's remaining lifetime", c.spire.ca_ttl, c.spire.svid_ttl),
        );
    }
    rule("spire.token_refresher_image", &c.spire.token_refresher_image, is_image_ref(&c.spire.token_refresher_image), "an image reference with a tag, e.g. public.ecr.aws/aws-cli/aws-cli:2.15.62")?;
    rule("spire.server.storage_class", &c.spire.server.storage_class, is_dns_subdomain(&c.spire.server.storage_class), "a StorageClass name")?;
    rule(
        "spire.server.storage_size",
        &c.spire.server.storage_size,
        is_quantity(&c.spire.server.storage_size),
        "a Kubernetes quantity such as 1Gi or 500Mi",
    )?;
    if c.spokes.is_empty() {
        return fail("spokes", "the list is empty: at least one spoke account is needed (the hub runs the SPIRE server, workloads run in spokes)");
    }

    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut profiles: BTreeMap<&str, String> = BTreeMap::new();
    let mut cidrs: Vec<((u32, u8), String)> = Vec::new();
    let mut psat: BTreeMap<&str, String> = BTreeMap::new();
    for (i, a) in c.accounts().enumerate() {
        let at = if i == 0 { "hub".to_string() } else { format!("spokes[{}]", i - 1) };
        let key = |k: &str| format!("{at}.{k}");
        rule(&key("name"), &a.name, is_dns_label(&a.name), "lowercase letters, digits and '-', at most 63 characters")?;
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
        rule(&key("cluster_name"), &a.cluster_name, is_eks_cluster_name(&a.cluster_name), "an EKS cluster name: letters, digits, '-' and '_', starting with a letter or digit, at most 100 characters")?;
        // The stacks name IAM roles after the cluster (`<cluster>-node-role`; the hub's also
        // `<cluster>-spire-server` and `<cluster>-ebs-csi-driver`), and a role name has at
        // most 64 characters.
        let longest_suffix = if i == 0 { "-ebs-csi-driver" } else { "-node-role" };
        if a.cluster_name.len() + longest_suffix.len() > 64 {
            return fail(
                key("cluster_name"),
                format!(
                    "{:?} is too long: at most {} characters here, because the IAM roles of its stack are named after it (<cluster>{longest_suffix}) and IAM role names have at most 64",
                    a.cluster_name,
                    64 - longest_suffix.len()
                ),
            );
        }
        rule(&key("stack_name"), &a.stack_name, is_stack_name(&a.stack_name), "a CloudFormation stack name: letters, digits and '-', starting with a letter, at most 128 characters")?;
        let Some(net) = parse_cidr(&a.vpc_cidr) else {
            return fail(key("vpc_cidr"), format!("{:?} is not valid: an IPv4 network such as 10.1.0.0/16 (prefix /16 to /28)", a.vpc_cidr));
        };
        if let Some((_, other)) = cidrs.iter().find(|(n, _)| overlaps(*n, net)) {
            return fail(key("vpc_cidr"), format!("{} overlaps {other}; the Transit Gateway routes between VPCs need distinct ranges", a.vpc_cidr));
        }
        cidrs.push((net, format!("{} ({at})", a.vpc_cidr)));
        rule(
            &key("kubernetes_version"),
            &a.kubernetes_version,
            EKS_VERSIONS.contains(&a.kubernetes_version.as_str()),
            &format!("a Kubernetes version EKS supports: {}", EKS_VERSIONS.join(", ")),
        )?;
        rule(&key("instance_type"), &a.instance_type, is_instance_type(&a.instance_type), "an EC2 instance type such as t3.medium or m7g.2xlarge")?;
        if !(1..=100).contains(&a.node_count) {
            return fail(key("node_count"), format!("{} is not valid: 1 to 100 nodes", a.node_count));
        }
        if !(20..=16384).contains(&a.disk_size) {
            return fail(key("disk_size"), format!("{} is not valid: a node's disk is 20 to 16384 GiB (EKS nodes need at least 20)", a.disk_size));
        }
        if let Some(ctx) = &a.kube_context {
            rule(&key("kube_context"), ctx, !ctx.is_empty(), "the name of a context in your kubeconfig")?;
        }
        if i > 0 {
            rule(&key("psat_cluster"), a.psat_cluster(), is_trust_domain(a.psat_cluster()) && !a.psat_cluster().contains('.'), "lowercase letters, digits, '-' and '_'")?;
            if let Some(first) = psat.insert(a.psat_cluster(), at.clone()) {
                return fail(key("psat_cluster"), format!("{:?} is also the psat cluster of {first}; SPIRE needs one name per cluster", a.psat_cluster()));
            }
            rule(&key("agent_service_account"), a.agent_service_account(), is_dns_subdomain(a.agent_service_account()), "a Kubernetes service account name")?;
            rule(&key("kubeconfig_configmap"), a.kubeconfig_configmap(), is_dns_subdomain(a.kubeconfig_configmap()), "a ConfigMap name")?;
            let k = a.kubeconfig_key();
            rule(&key("kubeconfig_key"), k, !k.is_empty() && all_chars(k, |ch| ch.is_ascii_alphanumeric() || "-._".contains(ch)), "a ConfigMap key: letters, digits, '-', '_' and '.'")?;
            rule(&key("access_role_name"), a.access_role_name(), is_iam_name(a.access_role_name()), "an IAM role name: letters, digits and +=,.@_-, at most 64 characters")?;
        }
    }
    let spoke_names: Vec<&str> = c.spokes.iter().map(|s| s.name.as_str()).collect();

    let mut svc_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut paths: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in c.services.iter().enumerate() {
        let key = |k: &str| format!("services[{i}].{k}");
        rule(&key("name"), &s.name, is_dns_label(&s.name), "lowercase letters, digits and '-', at most 63 characters")?;
        if let Some(first) = svc_names.insert(&s.name, i) {
            return fail(key("name"), format!("service {:?} is also services[{first}]", s.name));
        }
        if !spoke_names.contains(&s.account.as_str()) {
            return fail(key("account"), format!("{:?} is not a spoke; allowed: {}", s.account, spoke_names.join(", ")));
        }
        rule(&key("spiffe_path"), &s.spiffe_path, is_spiffe_path(&s.spiffe_path), "a SPIFFE ID path: segments of letters, digits, '.', '-', '_' separated by '/'")?;
        if let Some(first) = paths.insert(&s.spiffe_path, i) {
            return fail(key("spiffe_path"), format!("SPIFFE ID path {:?} is also services[{first}]'s; each workload needs its own identity", s.spiffe_path));
        }
        for (k, v) in [("app_label", &s.app_label), ("tier_label", &s.tier_label)] {
            rule(&key(k), v, is_dns_label(v) || is_dns_subdomain(v), "a Kubernetes label value")?;
        }
        if s.port == 0 {
            return fail(key("port"), "0 is not a port: use 1-65535");
        }
        if s.load_balancer_port == Some(0) {
            return fail(key("load_balancer_port"), "0 is not a port: use 1-65535");
        }
        if s.image.is_empty() {
            return fail(key("image"), format!("service {:?} has no image: set image = \"registry/name:tag\" (only the Yelb services have defaults)", s.name));
        }
        rule(&key("image"), &s.image, is_image_ref(&s.image), "an image reference with a tag or digest, e.g. docker.io/library/redis:4.0.2")?;
    }
    let all: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    for (i, s) in c.services.iter().enumerate() {
        for b in &s.backends {
            if !all.contains(&b.as_str()) || b == &s.name {
                return fail(format!("services[{i}].backends"), format!("{b:?} is not another service; allowed: {}", all.join(", ")));
            }
        }
    }
    Ok(())
}
