//! Registration entries: what the configuration wants, what `spire-server entry show -output
//! json` says exists, the difference, and the `entry create|update|delete` argument vectors that
//! close it. Commands run through an [`EntryCli`]: in production a kube exec into the server pod
//! ([`PodExec`]); arguments are always a vector, never a shell string.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::config::{Account, Config};
use crate::error::{Error, ErrorKind};
use crate::topology::Workload;

/// One entry as meshctl wants it. Selectors are `type:value` strings, kept sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedEntry {
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: BTreeSet<String>,
}

/// One entry as the server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry {
    pub id: String,
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: BTreeSet<String>,
    /// The entry's hint: [`HINT`] on every entry meshctl creates.
    pub hint: String,
}

/// The hint meshctl puts on its entries (`-hint`): how it tells its own entries from others'
/// when it looks for the ones the configuration no longer names.
pub const HINT: &str = "meshctl";

/// The SPIFFE ID of the SPIRE server itself: the parent of node entries.
pub fn server_id(c: &Config) -> String {
    c.spiffe_id("spire/server")
}

/// The node entry of a spoke's agents (the walkthrough's `register_server_entries.sh`).
pub fn node_entry(c: &Config, spoke: &Account) -> WantedEntry {
    WantedEntry {
        spiffe_id: c.agent_spiffe_id(spoke),
        parent_id: server_id(c),
        selectors: [
            format!("k8s_psat:cluster:{}", spoke.psat_cluster()),
            format!("k8s_psat:agent_ns:{}", c.spire.namespace),
            format!("k8s_psat:agent_sa:{}", spoke.agent_service_account()),
        ]
        .into_iter()
        .collect(),
    }
}

/// The workload entry of a meshed workload, parented on its spoke's agents; `selectors` are
/// the provider's (they pick the container that holds the SVID). `None` when the workload's
/// account is not a spoke (validation rejects such a configuration).
pub fn workload_entry(c: &Config, w: &Workload, selectors: Vec<String>) -> Option<WantedEntry> {
    let spoke = c.spokes.iter().find(|s| s.name == w.account)?;
    Some(WantedEntry { spiffe_id: w.spiffe_id.clone(), parent_id: c.agent_spiffe_id(spoke), selectors: selectors.into_iter().collect() })
}

#[derive(Deserialize)]
struct ShowJson {
    #[serde(default)]
    entries: Vec<EntryJson>,
}

#[derive(Deserialize)]
struct EntryJson {
    #[serde(default)]
    id: String,
    spiffe_id: Option<IdJson>,
    parent_id: Option<IdJson>,
    #[serde(default)]
    selectors: Vec<SelectorJson>,
    #[serde(default)]
    hint: String,
}

#[derive(Deserialize)]
struct IdJson {
    #[serde(default)]
    trust_domain: String,
    #[serde(default)]
    path: String,
}

impl IdJson {
    fn to_id(&self) -> String {
        format!("spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[derive(Deserialize)]
struct SelectorJson {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// Parses `spire-server entry show -output json` (protojson of ListEntriesResponse).
pub fn parse_show(json: &str) -> Result<Vec<LiveEntry>, Error> {
    let show: ShowJson = serde_json::from_str(json.trim())
        .map_err(|e| Error::new(ErrorKind::Other, format!("cannot parse `entry show -output json`: {e}: {}", snippet(json))))?;
    Ok(show
        .entries
        .into_iter()
        .map(|e| LiveEntry {
            id: e.id,
            spiffe_id: e.spiffe_id.map(|i| i.to_id()).unwrap_or_default(),
            parent_id: e.parent_id.map(|i| i.to_id()).unwrap_or_default(),
            selectors: e.selectors.into_iter().map(|s| format!("{}:{}", s.kind, s.value)).collect(),
            hint: e.hint,
        })
        .collect())
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    if s.len() > 300 {
        format!("{}…", &s[..s.char_indices().nth(300).map(|(i, _)| i).unwrap_or(s.len())])
    } else {
        s.to_string()
    }
}

/// What to do about one wanted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    UpToDate {
        id: String,
    },
    Create,
    /// Update the existing entry `id`; `reason` says what differs.
    Update {
        id: String,
        reason: String,
    },
}

/// Compares the wanted entry with the live entries of the same SPIFFE ID. An entry with the
/// wanted parent is preferred; else the only entry of that SPIFFE ID is updated; with several
/// entries and none under our parent, a new one is created beside them (never touching theirs).
pub fn plan(wanted: &WantedEntry, live: &[LiveEntry]) -> Plan {
    let same_id: Vec<&LiveEntry> = live.iter().filter(|e| e.spiffe_id == wanted.spiffe_id).collect();
    if let Some(e) = same_id.iter().find(|e| e.parent_id == wanted.parent_id && e.selectors == wanted.selectors && e.hint == HINT) {
        return Plan::UpToDate { id: e.id.clone() };
    }
    let candidate =
        same_id.iter().find(|e| e.parent_id == wanted.parent_id).or_else(|| if same_id.len() == 1 { same_id.first() } else { None });
    match candidate {
        None => Plan::Create,
        Some(e) => {
            let mut why = Vec::new();
            if e.parent_id != wanted.parent_id {
                why.push(format!("parent {} (want {})", e.parent_id, wanted.parent_id));
            }
            let missing: Vec<&String> = wanted.selectors.difference(&e.selectors).collect();
            let extra: Vec<&String> = e.selectors.difference(&wanted.selectors).collect();
            if !missing.is_empty() {
                why.push(format!("missing selectors {}", join(&missing)));
            }
            if !extra.is_empty() {
                why.push(format!("extra selectors {}", join(&extra)));
            }
            if e.hint != HINT {
                why.push(format!("hint {:?} (want {HINT:?})", e.hint));
            }
            Plan::Update { id: e.id.clone(), reason: format!("entry {}: {}", e.id, why.join("; ")) }
        }
    }
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// Entries meshctl may delete on `down`: the SPIFFE ID and parent it would have created.
pub fn owned<'a>(wanted: &WantedEntry, live: &'a [LiveEntry]) -> Vec<&'a LiveEntry> {
    live.iter().filter(|e| e.spiffe_id == wanted.spiffe_id && e.parent_id == wanted.parent_id).collect()
}

/// Entries meshctl made (its hint) whose SPIFFE ID the configuration no longer wants: a
/// removed service's, a removed spoke's agents'.
pub fn orphans<'a>(wanted: &BTreeSet<String>, live: &'a [LiveEntry]) -> Vec<&'a LiveEntry> {
    live.iter().filter(|e| e.hint == HINT && !wanted.contains(&e.spiffe_id)).collect()
}

/// `entry show -spiffeID <id> -output json`; every entry without an id.
pub fn show_args(spiffe_id: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = vec!["entry".into(), "show".into()];
    if let Some(id) = spiffe_id {
        args.extend(["-spiffeID".into(), id.into()]);
    }
    args.extend(["-output".into(), "json".into()]);
    args
}

fn with_entry(mut args: Vec<String>, e: &WantedEntry) -> Vec<String> {
    args.extend(["-spiffeID".to_string(), e.spiffe_id.clone(), "-parentID".to_string(), e.parent_id.clone()]);
    args.extend(["-hint".to_string(), HINT.to_string()]);
    for s in &e.selectors {
        args.extend(["-selector".to_string(), s.clone()]);
    }
    args.extend(["-output".to_string(), "json".to_string()]);
    args
}

pub fn create_args(e: &WantedEntry) -> Vec<String> {
    with_entry(vec!["entry".into(), "create".into()], e)
}

pub fn update_args(id: &str, e: &WantedEntry) -> Vec<String> {
    with_entry(vec!["entry".into(), "update".into(), "-entryID".into(), id.into()], e)
}

pub fn delete_args(id: &str) -> Vec<String> {
    ["entry", "delete", "-entryID", id, "-output", "json"].map(String::from).to_vec()
}

/// Runs `spire-server <args> -socketPath <socket>` somewhere and returns its stdout.
#[async_trait::async_trait]
pub trait EntryCli: Send + Sync {
    async fn run(&self, args: Vec<String>) -> Result<String, Error>;
}

/// The server CLI inside the server pod, through the Kubernetes exec API.
pub struct PodExec {
    pub pods: Api<Pod>,
    pub pod: String,
    pub container: String,
    pub binary: String,
    pub socket: String,
    /// For messages: `context <ctx>, namespace <ns>`.
    pub where_: String,
}

#[async_trait::async_trait]
impl EntryCli for PodExec {
    async fn run(&self, args: Vec<String>) -> Result<String, Error> {
        let mut command = vec![self.binary.clone()];
        command.extend(args);
        command.extend(["-socketPath".to_string(), self.socket.clone()]);
        let shown = command.join(" ");
        let err =
            |m: String| Error::other(format!("exec `{shown}` in pod {} container {} ({}): {m}", self.pod, self.container, self.where_));
        let ap = AttachParams::default().container(self.container.clone()).stdin(false).stdout(true).stderr(true);
        let mut proc = self.pods.exec(&self.pod, command.clone(), &ap).await.map_err(|e| {
            crate::kube::api_error(e).context(format!("exec `{shown}` in pod {} container {} ({})", self.pod, self.container, self.where_))
        })?;
        let mut out = proc.stdout().ok_or_else(|| err("no stdout stream".into()))?;
        let mut errs = proc.stderr().ok_or_else(|| err("no stderr stream".into()))?;
        let status = proc.take_status().ok_or_else(|| err("no status channel".into()))?;
        let (mut so, mut se) = (Vec::new(), Vec::new());
        let (r1, r2) = tokio::join!(out.read_to_end(&mut so), errs.read_to_end(&mut se));
        r1.map_err(|e| err(format!("reading stdout: {e}")))?;
        r2.map_err(|e| err(format!("reading stderr: {e}")))?;
        let status = status.await;
        // The status says how the command ended; a failure to close the stream after it
        // cannot change that, so it is only logged.
        if let Err(e) = proc.join().await {
            tracing::debug!("closing the exec stream of `{shown}`: {e}");
        }
        let stdout = String::from_utf8_lossy(&so).into_owned();
        let stderr = String::from_utf8_lossy(&se).trim().to_string();
        match status {
            Some(s) if s.status.as_deref() == Some("Success") => Ok(stdout),
            Some(s) => {
                let why = s.message.unwrap_or_else(|| s.reason.unwrap_or_default());
                let detail = if stderr.is_empty() { snippet(&stdout) } else { stderr };
                Err(err(format!("{why}: {detail}")))
            }
            None => Err(err(format!("the exec stream ended without a status; stderr: {stderr}"))),
        }
    }
}

/// The live entries of one SPIFFE ID, or all of them.
pub async fn show(cli: &dyn EntryCli, spiffe_id: Option<&str>) -> Result<Vec<LiveEntry>, Error> {
    let out = cli.run(show_args(spiffe_id)).await?;
    parse_show(&out)
}

/// Makes the server's entry match `wanted`; returns what was done.
pub async fn ensure(cli: &dyn EntryCli, wanted: &WantedEntry) -> Result<Plan, Error> {
    let live = show(cli, Some(&wanted.spiffe_id)).await?;
    let p = plan(wanted, &live);
    match &p {
        Plan::UpToDate { .. } => {}
        Plan::Create => {
            cli.run(create_args(wanted)).await?;
        }
        Plan::Update { id, .. } => {
            cli.run(update_args(id, wanted)).await?;
        }
    }
    Ok(p)
}

/// Deletes the entries meshctl owns for `wanted`; returns how many were deleted.
pub async fn remove(cli: &dyn EntryCli, wanted: &WantedEntry) -> Result<usize, Error> {
    let live = show(cli, Some(&wanted.spiffe_id)).await?;
    let mine = owned(wanted, &live);
    for e in &mine {
        cli.run(delete_args(&e.id)).await?;
    }
    Ok(mine.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = r#"{
      "entries": [
        {
          "id": "a8335da4",
          "spiffe_id": {"trust_domain": "am-multi-account-mesh", "path": "/ns/spire/sa/spire-agent-back"},
          "parent_id": {"trust_domain": "am-multi-account-mesh", "path": "/spire/server"},
          "selectors": [
            {"type": "k8s_psat", "value": "agent_ns:spire"},
            {"type": "k8s_psat", "value": "agent_sa:spire-agent-back"},
            {"type": "k8s_psat", "value": "cluster:backend-k8s-cluster"}
          ],
          "x509_svid_ttl": 3600, "federates_with": [], "admin": false, "downstream": false,
          "expires_at": "0", "dns_names": [], "revision_number": "0", "store_svid": false,
          "jwt_svid_ttl": 300, "hint": "meshctl", "created_at": "1700000000"
        }
      ],
      "next_page_token": ""
    }"#;

    #[test]
    fn parses_show_json() {
        let live = parse_show(SHOW).unwrap();
        assert_eq!(live.len(), 1);
        let c = Config::default();
        let want = node_entry(&c, &c.spokes[1]);
        assert_eq!(live[0].spiffe_id, want.spiffe_id);
        assert_eq!(live[0].parent_id, want.parent_id);
        assert_eq!(live[0].selectors, want.selectors);
        assert_eq!(plan(&want, &live), Plan::UpToDate { id: "a8335da4".into() });
        assert_eq!(parse_show(r#"{"entries":[],"next_page_token":""}"#).unwrap(), vec![]);
    }

    #[test]
    fn plans_create_update_and_leaves_foreign_entries() {
        let c = Config::default();
        let t = crate::topology::Topology::new(&c);
        let w = t.workload("yelb-appserver").unwrap();
        let want = workload_entry(&c, w, crate::mesh::k8s_selectors(w, "yelb", "envoy")).unwrap();
        assert_eq!(want.spiffe_id, "spiffe://am-multi-account-mesh/yelbapp");
        assert_eq!(want.parent_id, "spiffe://am-multi-account-mesh/ns/spire/sa/spire-agent-back");
        assert!(want.selectors.contains("k8s:pod-label:tier:middletier"));
        assert!(want.selectors.contains("k8s:container-name:envoy"));
        assert_eq!(plan(&want, &[]), Plan::Create);

        let mut live = LiveEntry {
            id: "x".into(),
            spiffe_id: want.spiffe_id.clone(),
            parent_id: want.parent_id.clone(),
            selectors: want.selectors.clone(),
            hint: HINT.into(),
        };
        live.selectors.remove("k8s:sa:default");
        live.selectors.insert("k8s:sa:other".into());
        match plan(&want, std::slice::from_ref(&live)) {
            Plan::Update { id, reason } => {
                assert_eq!(id, "x");
                assert!(reason.contains("missing selectors k8s:sa:default") && reason.contains("extra selectors k8s:sa:other"), "{reason}");
            }
            p => panic!("{p:?}"),
        }
        // Two foreign entries under other parents: ours is created beside them.
        let a = LiveEntry { id: "a".into(), parent_id: "spiffe://x/p1".into(), ..live.clone() };
        let b = LiveEntry { id: "b".into(), parent_id: "spiffe://x/p2".into(), ..live.clone() };
        assert_eq!(plan(&want, &[a.clone(), b]), Plan::Create);
        // Only our parent's entries are ours to delete.
        assert!(owned(&want, std::slice::from_ref(&a)).is_empty());
        assert_eq!(owned(&want, std::slice::from_ref(&live)).len(), 1);
        // An entry of ours from before hints were set is updated to carry one.
        let unhinted = LiveEntry { selectors: want.selectors.clone(), hint: String::new(), ..live.clone() };
        match plan(&want, &[unhinted]) {
            Plan::Update { reason, .. } => assert!(reason.contains("hint"), "{reason}"),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn orphans_are_our_entries_of_ids_no_longer_wanted() {
        let e = |id: &str, spiffe: &str, hint: &str| LiveEntry {
            id: id.into(),
            spiffe_id: spiffe.into(),
            parent_id: "spiffe://td/p".into(),
            selectors: BTreeSet::new(),
            hint: hint.into(),
        };
        let live = [e("1", "spiffe://td/kept", HINT), e("2", "spiffe://td/removed", HINT), e("3", "spiffe://td/theirs", "")];
        let wanted: BTreeSet<String> = ["spiffe://td/kept".to_string()].into();
        let ids: Vec<&str> = orphans(&wanted, &live).iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["2"], "ours and unwanted only; an entry without our hint is someone else's");
    }

    #[test]
    fn args_are_vectors() {
        let c = Config::default();
        let want = node_entry(&c, &c.spokes[0]);
        let args = create_args(&want);
        assert_eq!(&args[..4], ["entry", "create", "-spiffeID", "spiffe://am-multi-account-mesh/ns/spire/sa/spire-agent-front"]);
        assert!(args.windows(2).any(|w| w == ["-selector", "k8s_psat:cluster:frontend-k8s-cluster"]));
        assert!(args.windows(2).any(|w| w == ["-hint", HINT]));
        assert_eq!(&update_args("id1", &want)[..4], ["entry", "update", "-entryID", "id1"]);
        assert_eq!(show_args(None), ["entry", "show", "-output", "json"]);
    }
}
