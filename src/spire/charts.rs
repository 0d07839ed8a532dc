//! The SPIRE server and agent charts (embedded from `charts/`) and the values meshctl installs
//! them with, computed from the configuration only.

use serde_json::{json, Value};

use crate::config::{Account, Config};
use crate::helm::EmbeddedChart;

macro_rules! chart_file {
    ($chart:literal, $path:literal) => {
        ($path, include_str!(concat!("../../charts/", $chart, "/", $path)))
    };
}

pub static SERVER_CHART: EmbeddedChart = EmbeddedChart {
    name: "spire-server",
    files: &[
        chart_file!("spire-server", "Chart.yaml"),
        chart_file!("spire-server", "values.yaml"),
        chart_file!("spire-server", "templates/_helpers.tpl"),
        chart_file!("spire-server", "templates/bundle.yaml"),
        chart_file!("spire-server", "templates/configmap.yaml"),
        chart_file!("spire-server", "templates/rbac.yaml"),
        chart_file!("spire-server", "templates/service.yaml"),
        chart_file!("spire-server", "templates/statefulset.yaml"),
    ],
};

pub static AGENT_CHART: EmbeddedChart = EmbeddedChart {
    name: "spire-agent",
    files: &[
        chart_file!("spire-agent", "Chart.yaml"),
        chart_file!("spire-agent", "values.yaml"),
        chart_file!("spire-agent", "templates/_helpers.tpl"),
        chart_file!("spire-agent", "templates/configmap.yaml"),
        chart_file!("spire-agent", "templates/daemonset.yaml"),
        chart_file!("spire-agent", "templates/rbac.yaml"),
    ],
};

/// The ConfigMap the server publishes its trust bundle into, and its key.
pub const BUNDLE_CONFIGMAP: &str = "spire-bundle";
pub const BUNDLE_KEY: &str = "bundle.crt";
/// Fixed object names in the charts.
pub const SERVER_STATEFULSET: &str = "spire-server";
pub const SERVER_POD: &str = "spire-server-0";
pub const SERVER_CONTAINER: &str = "spire-server";
pub const SERVER_CONFIGMAP: &str = "spire-server";
pub const SERVER_PVC: &str = "spire-data-spire-server-0";
pub const AGENT_DAEMONSET: &str = "spire-agent";

/// Values key carrying a digest of the embedded chart: a meshctl whose chart changed sees its
/// releases as drifted and upgrades them, even when the configuration did not change.
pub const DIGEST_KEY: &str = "meshctlChartDigest";

/// FNV-1a over every file name and content: stable across builds and platforms.
pub fn digest(chart: &EmbeddedChart) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, text) in chart.files {
        for b in path.bytes().chain([0u8]).chain(text.bytes()).chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Where the token refresher writes each spoke's EKS token, in an in-memory volume shared by
/// the server's containers.
pub const TOKEN_DIR: &str = "/var/run/meshctl/spoke-tokens";
/// How often the refresher writes new tokens (EKS tokens are valid for 15 minutes).
pub const TOKEN_REFRESH_SECONDS: u64 = 300;
/// How soon the refresher tries again while a spoke has no token (its access role not
/// assumable yet).
pub const TOKEN_RETRY_SECONDS: u64 = 10;
/// The server's service account (its Pod Identity association names it).
pub const SERVER_SERVICE_ACCOUNT: &str = "spire-server";

/// The token file of a spoke, as the server's kubeconfig for that spoke names it.
pub fn spoke_token_path(_c: &Config, spoke: &Account) -> String {
    format!("{TOKEN_DIR}/{}.token", spoke.name)
}

/// How the server reaches one spoke's API server: the EKS cluster and the cross-account
/// role the refresher assumes for its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpokeAccess {
    pub spoke: Account,
    pub access_role_arn: String,
}

/// The server chart's values: trust domain, port, admin socket, image, TTLs, storage, one
/// k8s_psat cluster per spoke (allowed agent service account, kubeconfig ConfigMap and key),
/// and the token refresher that keeps each spoke's token file current.
pub fn server_values(c: &Config, spokes: &[SpokeAccess]) -> Value {
    let clusters: Vec<Value> = spokes
        .iter()
        .map(|a| {
            let s = &a.spoke;
            json!({
                "name": s.psat_cluster(),
                "role": s.name,
                "serviceAccount": s.agent_service_account(),
                "kubeconfigConfigMap": s.kubeconfig_configmap(),
                "kubeconfigKey": s.kubeconfig_key(),
            })
        })
        .collect();
    let tokens: Vec<Value> = spokes
        .iter()
        .map(|a| json!({"file": format!("{}.token", a.spoke.name), "cluster": a.spoke.cluster_name, "roleArn": a.access_role_arn}))
        .collect();
    json!({
        "image": c.spire.server_image,
        "trustDomain": c.mesh.trust_domain,
        "bindPort": c.spire.server_port,
        "socketPath": c.spire.server_socket,
        "defaultX509SvidTtl": c.spire.svid_ttl,
        "caTtl": c.spire.ca_ttl,
        "bundle": { "configMap": BUNDLE_CONFIGMAP, "key": BUNDLE_KEY },
        "clusters": clusters,
        "persistence": {
            "enabled": c.spire.server.persistence,
            "storageClass": c.spire.server.storage_class,
            "size": c.spire.server.storage_size,
        },
        "tokenRefresher": {
            "image": c.spire.token_refresher_image,
            "region": c.region,
            "dir": TOKEN_DIR,
            "intervalSeconds": TOKEN_REFRESH_SECONDS,
            "retrySeconds": TOKEN_RETRY_SECONDS,
            "spokes": tokens,
        },
        DIGEST_KEY: digest(&SERVER_CHART),
    })
}

/// The agent chart's values for one spoke; `server_address` is where the server is reachable.
pub fn agent_values(c: &Config, spoke: &Account, server_address: &str) -> Value {
    json!({
        "image": c.spire.agent_image,
        "serviceAccount": { "name": spoke.agent_service_account() },
        "trustDomain": c.mesh.trust_domain,
        "clusterName": spoke.psat_cluster(),
        "serverAddress": server_address,
        "serverPort": c.spire.server_port,
        "socketPath": c.spire.agent_socket,
        "healthPort": c.spire.agent_health_port,
        "bundle": { "configMap": BUNDLE_CONFIGMAP, "key": BUNDLE_KEY },
        DIGEST_KEY: digest(&AGENT_CHART),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_are_all_chart_files() {
        // Every file under charts/<name> is embedded, so the binary's chart is the repo's.
        for chart in [&SERVER_CHART, &AGENT_CHART] {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts").join(chart.name);
            let mut on_disk = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        on_disk.push(p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/"));
                    }
                }
            }
            on_disk.sort();
            let mut embedded: Vec<String> = chart.files.iter().map(|(p, _)| p.to_string()).collect();
            embedded.sort();
            assert_eq!(embedded, on_disk, "chart {} files", chart.name);
        }
    }

    fn access(c: &Config) -> Vec<SpokeAccess> {
        c.spokes
            .iter()
            .zip(["222222222222", "333333333333"])
            .map(|(s, id)| SpokeAccess { spoke: s.clone(), access_role_arn: crate::names::access_role_arn(c, s, id) })
            .collect()
    }

    #[test]
    fn server_values_list_every_spoke() {
        let c = Config::default();
        let v = server_values(&c, &access(&c));
        let clusters = v["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), c.spokes.len());
        assert_eq!(clusters[0]["name"], "frontend-k8s-cluster");
        assert_eq!(clusters[0]["serviceAccount"], "spire-agent-front");
        assert_eq!(clusters[0]["kubeconfigConfigMap"], "front-kubeconfig");
        assert_eq!(clusters[1]["kubeconfigKey"], "backend.conf");
        assert_eq!(v["trustDomain"], "am-multi-account-mesh");
        assert_eq!(digest(&SERVER_CHART).len(), 16);
        assert_eq!((v["defaultX509SvidTtl"].as_str(), v["caTtl"].as_str()), (Some("1h"), Some("24h")));
        assert_eq!(v["persistence"], json!({"enabled": true, "storageClass": "meshctl-gp3", "size": "1Gi"}));
        let t = &v["tokenRefresher"];
        assert_eq!(t["image"], "public.ecr.aws/aws-cli/aws-cli:2.15.62");
        assert_eq!(
            t["spokes"][1],
            json!({"file": "backend.token", "cluster": "eks-cluster-backend", "roleArn": "arn:aws:iam::333333333333:role/eks-cluster-backend-access-role"})
        );
        assert_eq!(spoke_token_path(&c, &c.spokes[1]), format!("{TOKEN_DIR}/backend.token"));
    }

    #[test]
    fn agent_values_name_the_spoke() {
        let c = Config::default();
        let v = agent_values(&c, &c.spokes[1], "10.0.0.9");
        assert_eq!(v["serviceAccount"]["name"], "spire-agent-back");
        assert_eq!(v["clusterName"], "backend-k8s-cluster");
        assert_eq!(v["serverAddress"], "10.0.0.9");
        assert_eq!(v["socketPath"], "/run/spire/sockets/agent.sock");
        assert_eq!(v["healthPort"], 8080);
    }
}
