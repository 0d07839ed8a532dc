//! Rules a resolved configuration must meet before anything runs. Each rule names the key
//! and what is allowed, so the error alone tells the user what to write.

use std::collections::BTreeMap;

use super::{Config, ConfigError};

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
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && all_chars(s, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: ConfigMap names, service accounts, DNS names.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
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

fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && all_chars(p, |c| c.is_ascii_lowercase()))
        && parts.last().is_some_and(|p| !p.is_empty() && all_chars(p, |c| c.is_ascii_digit()))
}

fn is_profile(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '[' || c == ']')
}

/// `a.b.c.d/n` with a VPC-sized prefix (/16 to /28); returns (network, prefix).
pub(crate) fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if !(16..=28).contains(&len) {
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
    rule("controller.namespace", &c.controller.namespace, is_dns_label(&c.controller.namespace), ns_rule)?;
    rule("spire.namespace", &c.spire.namespace, is_dns_label(&c.spire.namespace), ns_rule)?;
    for (key, v) in [
        ("controller.release", &c.controller.release),
        ("controller.service_account", &c.controller.service_account),
        ("spire.server_release", &c.spire.server_release),
        ("spire.agent_release", &c.spire.agent_release),
    ] {
        rule(key, v, is_dns_label(v), "lowercase letters, digits and '-', at most 63 characters")?;
    }
    rule("cloudmap.namespace", &c.cloudmap.namespace, is_dns_subdomain(&c.cloudmap.namespace), "a DNS name such as am-multi-account.local")?;
    for (key, port) in [("spire.server_port", c.spire.server_port), ("spire.agent_health_port", c.spire.agent_health_port)] {
        if port == 0 {
            return fail(key, "0 is not a port: use 1-65535");
        }
    }
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
        rule(&key("stack_name"), &a.stack_name, is_stack_name(&a.stack_name), "a CloudFormation stack name: letters, digits and '-', starting with a letter, at most 128 characters")?;
        let Some(net) = parse_cidr(&a.vpc_cidr) else {
            return fail(key("vpc_cidr"), format!("{:?} is not valid: an IPv4 network such as 10.1.0.0/16 (prefix /16 to /28)", a.vpc_cidr));
        };
        if let Some((_, other)) = cidrs.iter().find(|(n, _)| overlaps(*n, net)) {
            return fail(key("vpc_cidr"), format!("{} overlaps {other}; the Transit Gateway routes between VPCs need distinct ranges", a.vpc_cidr));
        }
        cidrs.push((net, format!("{} ({at})", a.vpc_cidr)));
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
    if !spoke_names.contains(&c.cloudmap.account.as_str()) {
        return fail("cloudmap.account", format!("{:?} is not a spoke; allowed: {}", c.cloudmap.account, spoke_names.join(", ")));
    }

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
