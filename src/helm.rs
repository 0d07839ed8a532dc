//! A small wrapper over the `helm` binary: the one external tool meshctl runs.
//!
//! The binary is `$MESHCTL_HELM` when set, else `helm` from `PATH`. Every invocation names the
//! kubeconfig file and context explicitly, passes its arguments as a vector (never a shell
//! string) and values through a temporary values file, so nothing is quoted or interpolated.
//! Errors carry helm's stderr together with the release, namespace and context.
//!
//! Every release meshctl installs carries the value [`OWNER_KEY`]` = "meshctl"` (what `helm get
//! values` shows, whatever the helm version), so a release of the same name that someone else
//! installed is told apart: meshctl neither upgrades nor uninstalls it unless adopting it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

/// Environment variable naming the helm binary.
pub const HELM_ENV: &str = "MESHCTL_HELM";

#[derive(Debug, Clone, thiserror::Error)]
pub enum HelmError {
    /// The binary could not be started at all.
    #[error("cannot run helm ({binary}): {message}; install helm 3 or set {HELM_ENV} to its path")]
    Spawn { binary: String, message: String },
    /// helm ran and failed.
    #[error("helm {action} of release {release} in namespace {namespace} (context {context}) failed: {stderr}")]
    Failed { action: String, release: String, namespace: String, context: String, stderr: String },
    /// helm's output was not what we expected.
    #[error("helm {action} of release {release} in namespace {namespace} (context {context}): unexpected output: {message}")]
    Output { action: String, release: String, namespace: String, context: String, message: String },
    /// Writing a temporary file (values, embedded chart) failed.
    #[error("helm: {0}")]
    Io(String),
    /// A release of the wanted name exists and meshctl did not install it.
    #[error(
        "release {release} in namespace {namespace} (context {context}) exists but was not installed by meshctl \
         (its values lack {OWNER_KEY}), so meshctl will not {action} it; rerun with --adopt to take it over, \
         or set another release name"
    )]
    Foreign { release: String, namespace: String, context: String, action: String },
}

impl From<HelmError> for crate::error::Error {
    fn from(e: HelmError) -> crate::error::Error {
        use crate::error::ErrorKind;
        let kind = match &e {
            HelmError::Spawn { .. } => ErrorKind::InvalidInput,
            HelmError::Foreign { .. } => ErrorKind::NotOurs,
            HelmError::Failed { stderr, .. } if stderr.contains("forbidden") || stderr.contains("Unauthorized") => ErrorKind::Denied,
            HelmError::Failed { stderr, .. } if stderr.contains("another operation") || stderr.contains("in progress") => {
                ErrorKind::Conflict
            }
            _ => ErrorKind::Other,
        };
        crate::error::Error::new(kind, e.to_string())
    }
}

/// What `helm status` and `helm get values` say about an installed release.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseInfo {
    /// `deployed`, `failed`, `pending-install`, `pending-upgrade`, ...
    pub status: String,
    /// `name-version` of the chart, e.g. `spire-server-0.1.0`.
    pub chart: String,
    pub revision: u64,
    /// The user-supplied values (`helm get values -o json`), `{}` when none.
    pub values: serde_json::Value,
}

impl ReleaseInfo {
    pub fn deployed(&self) -> bool {
        self.status == "deployed"
    }
}

/// The value marking a release as meshctl's.
pub const OWNER_KEY: &str = "meshctlManagedBy";
const OWNER: &str = "meshctl";

/// `values` with meshctl's ownership mark (an object; anything else becomes one).
pub fn owned(values: &serde_json::Value) -> serde_json::Value {
    let mut v = if values.is_object() { values.clone() } else { serde_json::json!({}) };
    v[OWNER_KEY] = serde_json::Value::String(OWNER.into());
    v
}

/// Whether meshctl installed the release.
pub fn is_ours(info: &ReleaseInfo) -> bool {
    info.values.get(OWNER_KEY).and_then(|v| v.as_str()) == Some(OWNER)
}

/// Why a release of the wanted name is not meshctl's to change.
pub fn foreign_reason() -> String {
    format!("not installed by meshctl (its values lack {OWNER_KEY}); `meshctl up --adopt` takes it over")
}

/// Compares a release with what is wanted: `None` when up to date, else the reason it is not.
/// Up to date means installed by meshctl, deployed and `get values` equal to `wanted` plus
/// the ownership mark (JSON equality).
pub fn drift(info: &ReleaseInfo, wanted: &serde_json::Value) -> Option<String> {
    if !is_ours(info) {
        return Some(foreign_reason());
    }
    if !info.deployed() {
        return Some(format!("release status is {} (revision {})", info.status, info.revision));
    }
    let norm = |v: &serde_json::Value| owned(v);
    if norm(&info.values) != norm(wanted) {
        let mut keys = Vec::new();
        crate::state::diff_paths("", &norm(&info.values), &norm(wanted), &mut keys, 5);
        return Some(format!("values differ ({})", keys.join(", ")));
    }
    None
}

#[derive(Debug, Clone)]
pub struct Helm {
    kubeconfig: PathBuf,
    context: String,
    binary: OsString,
}

#[derive(Deserialize)]
struct StatusJson {
    #[serde(default)]
    info: StatusInfo,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    chart: Option<ChartJson>,
}

#[derive(Deserialize, Default)]
struct StatusInfo {
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
struct ChartJson {
    metadata: ChartMeta,
}

#[derive(Deserialize)]
struct ChartMeta {
    name: String,
    #[serde(default)]
    version: String,
}

impl Helm {
    /// helm against `context` of `kubeconfig`; the binary from `$MESHCTL_HELM` or `PATH`.
    pub fn new(kubeconfig: impl Into<PathBuf>, context: impl Into<String>) -> Helm {
        let binary = std::env::var_os(HELM_ENV).filter(|v| !v.is_empty()).unwrap_or_else(|| "helm".into());
        Helm { kubeconfig: kubeconfig.into(), context: context.into(), binary }
    }

    /// The same, with an explicit binary (tests).
    pub fn with_binary(mut self, binary: impl Into<OsString>) -> Helm {
        self.binary = binary.into();
        self
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--kube-context")
            .arg(&self.context)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs helm; `Ok(Err(stderr))` when it ran and exited non-zero.
    async fn run(&self, args: Vec<OsString>) -> Result<Result<Vec<u8>, String>, HelmError> {
        let out = self
            .command(&args)
            .output()
            .await
            .map_err(|e| HelmError::Spawn { binary: PathBuf::from(&self.binary).display().to_string(), message: e.to_string() })?;
        if out.status.success() {
            Ok(Ok(out.stdout))
        } else {
            let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if msg.is_empty() {
                msg = format!("exit status {}", out.status);
            }
            Ok(Err(msg))
        }
    }

    fn failed(&self, action: &str, release: &str, ns: &str, stderr: String) -> HelmError {
        HelmError::Failed { action: action.into(), release: release.into(), namespace: ns.into(), context: self.context.clone(), stderr }
    }

    fn output(&self, action: &str, release: &str, ns: &str, message: String) -> HelmError {
        HelmError::Output { action: action.into(), release: release.into(), namespace: ns.into(), context: self.context.clone(), message }
    }

    /// The release's status, chart, revision and user values; `None` when not installed.
    pub async fn status(&self, release: &str, ns: &str) -> Result<Option<ReleaseInfo>, HelmError> {
        let args = os(["status", release, "--namespace", ns, "--output", "json"]);
        let stdout = match self.run(args).await? {
            Ok(s) => s,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.failed("status", release, ns, e)),
        };
        let st: StatusJson = serde_json::from_slice(&stdout).map_err(|e| self.output("status", release, ns, e.to_string()))?;
        let chart = st.chart.map(|c| format!("{}-{}", c.metadata.name, c.metadata.version)).unwrap_or_default();
        let args = os(["get", "values", release, "--namespace", ns, "--output", "json"]);
        let values = match self.run(args).await? {
            Ok(s) => {
                let text = String::from_utf8_lossy(&s);
                let text = text.trim();
                if text.is_empty() || text == "null" {
                    serde_json::json!({})
                } else {
                    serde_json::from_str(text).map_err(|e| self.output("get values", release, ns, e.to_string()))?
                }
            }
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.failed("get values", release, ns, e)),
        };
        Ok(Some(ReleaseInfo { status: st.info.status, chart, revision: st.version, values }))
    }

    /// `None` when the release is deployed with exactly `wanted` values, else why not.
    pub async fn check(&self, release: &str, ns: &str, wanted: &serde_json::Value) -> Result<Option<String>, HelmError> {
        Ok(match self.status(release, ns).await? {
            None => Some("release not installed".into()),
            Some(info) => drift(&info, wanted),
        })
    }

    /// `helm upgrade --install` with `--create-namespace`; values through a temp file.
    /// `chart` is a local path, `repo/chart` of a configured repo, or a chart name in `repo`
    /// (a URL passed as `--repo`). `wait_timeout` adds `--wait --timeout`.
    /// A release of that name that meshctl did not install is refused unless `adopt`.
    #[allow(clippy::too_many_arguments)]
    pub async fn upgrade_install(
        &self,
        release: &str,
        ns: &str,
        chart: &str,
        version: Option<&str>,
        repo: Option<&str>,
        values: &serde_json::Value,
        wait_timeout: Option<Duration>,
        adopt: bool,
    ) -> Result<(), HelmError> {
        if let Some(info) = self.ensure_ours(release, ns, adopt, "upgrade").await? {
            self.recover(release, ns, &info).await?;
        }
        let dir = tempdir().map_err(|e| HelmError::Io(format!("cannot create a temporary directory: {e}")))?;
        let values_file = dir.path().join("values.json");
        // JSON is YAML: helm reads it as a values file.
        let text = serde_json::to_vec_pretty(&owned(values)).map_err(|e| HelmError::Io(e.to_string()))?;
        std::fs::write(&values_file, text).map_err(|e| HelmError::Io(format!("cannot write {}: {e}", values_file.display())))?;
        let mut args = os(["upgrade", "--install", release, chart, "--namespace", ns, "--create-namespace"]);
        args.push("--values".into());
        args.push(values_file.into_os_string());
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            args.extend(os(["--version", v]));
        }
        if let Some(r) = repo.filter(|r| !r.is_empty()) {
            args.extend(os(["--repo", r]));
        }
        if let Some(t) = wait_timeout {
            args.push("--wait".into());
            args.push("--timeout".into());
            args.push(format!("{}s", t.as_secs().max(1)).into());
        }
        match self.run(args).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed("upgrade --install", release, ns, e)),
        }
    }

    /// `helm uninstall`; a release that is not there is success, one meshctl did not install
    /// is refused unless `adopt`.
    pub async fn uninstall(&self, release: &str, ns: &str, adopt: bool) -> Result<(), HelmError> {
        self.ensure_ours(release, ns, adopt, "uninstall").await?;
        self.uninstall_unchecked(release, ns).await
    }

    async fn uninstall_unchecked(&self, release: &str, ns: &str) -> Result<(), HelmError> {
        let args = os(["uninstall", release, "--namespace", ns, "--wait"]);
        match self.run(args).await? {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.failed("uninstall", release, ns, e)),
        }
    }

    /// The newest revision of the release that was deployed (`deployed` or `superseded`).
    async fn last_deployed_revision(&self, release: &str, ns: &str) -> Result<Option<u64>, HelmError> {
        #[derive(Deserialize)]
        struct Rev {
            revision: u64,
            #[serde(default)]
            status: String,
        }
        let args = os(["history", release, "--namespace", ns, "--max", "256", "--output", "json"]);
        let stdout = match self.run(args).await? {
            Ok(s) => s,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.failed("history", release, ns, e)),
        };
        let revs: Vec<Rev> = serde_json::from_slice(&stdout).map_err(|e| self.output("history", release, ns, e.to_string()))?;
        Ok(revs.into_iter().filter(|r| r.status == "deployed" || r.status == "superseded").map(|r| r.revision).max())
    }
}

impl Helm {
    /// Refuses to `what` a release of this name that exists and is not meshctl's, unless
    /// `adopt`. Returns what `helm status` said.
    async fn ensure_ours(&self, release: &str, ns: &str, adopt: bool, what: &str) -> Result<Option<ReleaseInfo>, HelmError> {
        match self.status(release, ns).await? {
            Some(info) if !adopt && !is_ours(&info) => Err(HelmError::Foreign {
                release: release.into(),
                namespace: ns.into(),
                context: self.context.clone(),
                action: what.into(),
            }),
            info => Ok(info),
        }
    }

    /// A helm killed in the middle of an operation leaves its release `pending-install`,
    /// `pending-upgrade`, `pending-rollback` or `uninstalling`, and helm then refuses any other
    /// operation on it ("another operation (install/upgrade/rollback) is in progress", "has no
    /// deployed releases"). meshctl is what runs helm on its releases, so such a state is an
    /// interrupted meshctl: an install or uninstall is finished as an uninstall, an upgrade or
    /// rollback is rolled back to the newest revision that was deployed (uninstalled when there
    /// is none). The caller's upgrade then starts from a settled release.
    async fn recover(&self, release: &str, ns: &str, info: &ReleaseInfo) -> Result<(), HelmError> {
        match info.status.as_str() {
            "pending-install" | "uninstalling" => self.uninstall_unchecked(release, ns).await,
            "pending-upgrade" | "pending-rollback" => match self.last_deployed_revision(release, ns).await? {
                Some(rev) => {
                    let args = os(["rollback", release, &rev.to_string(), "--namespace", ns]);
                    match self.run(args).await? {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            Err(self.failed(&format!("rollback (of the interrupted {}) to revision {rev}", info.status), release, ns, e))
                        }
                    }
                }
                None => self.uninstall_unchecked(release, ns).await,
            },
            _ => Ok(()),
        }
    }
}

/// helm's wording for a release (or its namespace) that does not exist.
fn is_not_found(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("release: not found") || (s.contains("not found") && s.contains("release"))
}

fn os<const N: usize>(a: [&str; N]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

/// A temporary directory removed on drop (no extra dependency for a handful of files).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tempdir() -> std::io::Result<TempDir> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let p = base.join(format!("meshctl-{}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos));
        match std::fs::create_dir(&p) {
            Ok(()) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
                }
                return Ok(TempDir(p));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary directory name"))
}

/// A chart embedded in the binary: its files, written to a temporary directory on demand.
pub struct EmbeddedChart {
    pub name: &'static str,
    /// (path relative to the chart root, contents)
    pub files: &'static [(&'static str, &'static str)],
}

impl EmbeddedChart {
    /// Writes the chart to a fresh temporary directory; the chart is at `dir/<name>`.
    pub fn materialize(&self) -> Result<TempDir, HelmError> {
        let dir = tempdir().map_err(|e| HelmError::Io(format!("cannot create a temporary directory: {e}")))?;
        let root = dir.path().join(self.name);
        for (rel, text) in self.files {
            let p = root.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| HelmError::Io(format!("cannot create {}: {e}", parent.display())))?;
            }
            std::fs::write(&p, text).map_err(|e| HelmError::Io(format!("cannot write {}: {e}", p.display())))?;
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(status: &str, values: serde_json::Value) -> ReleaseInfo {
        ReleaseInfo { status: status.into(), chart: "c-0.1.0".into(), revision: 1, values: owned(&values) }
    }

    #[test]
    fn up_to_date_only_when_ours_deployed_with_equal_values() {
        assert_eq!(drift(&info("deployed", json!({"a": 1})), &json!({"a": 1})), None);
        assert_eq!(drift(&info("deployed", json!(null)), &json!({})), None);
        assert!(drift(&info("failed", json!({"a": 1})), &json!({"a": 1})).unwrap().contains("failed"));
        let d = drift(&info("deployed", json!({"a": 1, "b": {"c": 2}})), &json!({"a": 1, "b": {"c": 3}})).unwrap();
        assert!(d.contains("b.c"), "{d}");
        let foreign = ReleaseInfo { status: "deployed".into(), chart: "c-0.1.0".into(), revision: 1, values: json!({"a": 1}) };
        assert!(!is_ours(&foreign));
        assert_eq!(drift(&foreign, &json!({"a": 1})), Some(foreign_reason()));
    }

    #[test]
    fn a_foreign_release_is_refused_with_the_way_out() {
        let e = HelmError::Foreign {
            release: "spire-server".into(),
            namespace: "spire".into(),
            context: "shared".into(),
            action: "upgrade".into(),
        };
        let text = e.to_string();
        assert!(text.contains("spire-server") && text.contains("shared") && text.contains("--adopt"), "{text}");
        assert_eq!(crate::error::Error::from(e).kind(), crate::error::ErrorKind::NotOurs);
    }

    #[test]
    fn not_found_wording() {
        assert!(is_not_found("Error: release: not found"));
        assert!(is_not_found("Error: uninstall: Release not loaded: x: release: not found"));
        assert!(!is_not_found("Error: Kubernetes cluster unreachable"));
    }

    #[tokio::test]
    async fn missing_binary_is_a_clear_error() {
        let h = Helm::new("/nonexistent", "ctx").with_binary("/nonexistent/helm");
        let e = h.status("r", "ns").await.unwrap_err().to_string();
        assert!(e.contains("/nonexistent/helm") && e.contains(HELM_ENV), "{e}");
    }
}
