//! The kubeconfig file as a YAML document, not a typed model, so keys meshctl does not know
//! (extensions, preferences, other tools' fields) survive: only the cluster, user and context
//! entries of one name are added, replaced or removed, and `current-context` is only set when
//! the file has none. Writes are atomic (temporary file in the same directory, mode 0600,
//! rename) and the previous file is kept as `<file>.bak`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

use crate::aws::token::EXEC_API_VERSION;
use crate::error::{Error, ErrorKind, ResultExt};
use crate::state::Status;

/// Where a cluster's API server is and which CA signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub server: String,
    /// Base64 of the PEM bundle (`certificate-authority-data`).
    pub ca_data: String,
}

/// The three kubeconfig entries meshctl writes for one cluster, all named `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub cluster: Value,
    pub user: Value,
    pub context: Value,
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::String(k.into()), v);
    }
    Value::Mapping(m)
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

impl Entry {
    /// The entry of a cluster authenticating through an exec plugin.
    pub fn exec(name: &str, ep: &Endpoint, command: &str, args: &[String]) -> Entry {
        Entry {
            name: name.to_string(),
            cluster: map(vec![("certificate-authority-data", s(&ep.ca_data)), ("server", s(&ep.server))]),
            user: map(vec![(
                "exec",
                map(vec![
                    ("apiVersion", s(EXEC_API_VERSION)),
                    ("command", s(command)),
                    ("args", Value::Sequence(args.iter().map(|a| s(a)).collect())),
                    ("interactiveMode", s("Never")),
                    ("provideClusterInfo", Value::Bool(false)),
                ]),
            )]),
            context: map(vec![("cluster", s(name)), ("user", s(name))]),
        }
    }

    /// The entry of a cluster whose user reads a bearer token from a file (`tokenFile`):
    /// client-go reads the file again as it changes, so a refresher beside the client can
    /// keep a short-lived token there.
    pub fn token_file(name: &str, ep: &Endpoint, path: &str) -> Entry {
        Entry {
            name: name.to_string(),
            cluster: map(vec![("certificate-authority-data", s(&ep.ca_data)), ("server", s(&ep.server))]),
            user: map(vec![("tokenFile", s(path))]),
            context: map(vec![("cluster", s(name)), ("user", s(name))]),
        }
    }

    /// A whole kubeconfig holding only this entry, as YAML text.
    pub fn standalone(&self) -> String {
        let doc = merge(&Value::Null, self);
        let mut doc = doc;
        if let Value::Mapping(m) = &mut doc {
            m.insert(s("current-context"), s(&self.name));
        }
        serde_yaml_ng::to_string(&doc).expect("a kubeconfig serializes")
    }
}

const LISTS: [(&str, &str); 3] = [("clusters", "cluster"), ("users", "user"), ("contexts", "context")];

fn entry_value(e: &Entry, field: &str) -> Value {
    match field {
        "cluster" => e.cluster.clone(),
        "user" => e.user.clone(),
        _ => e.context.clone(),
    }
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

/// The document with `entry`'s cluster, user and context added or replaced; every other key
/// and list item untouched. A null/empty document becomes a fresh kubeconfig.
pub fn merge(doc: &Value, entry: &Entry) -> Value {
    let mut m = match doc {
        Value::Mapping(m) => m.clone(),
        _ => {
            let mut m = Mapping::new();
            m.insert(s("apiVersion"), s("v1"));
            m.insert(s("kind"), s("Config"));
            m.insert(s("preferences"), Value::Mapping(Mapping::new()));
            m
        }
    };
    for (list, field) in LISTS {
        let item = map(vec![("name", s(&entry.name)), (field, entry_value(entry, field))]);
        let key = s(list);
        let mut items = match m.get(&key) {
            Some(Value::Sequence(items)) => items.clone(),
            _ => Vec::new(),
        };
        match items.iter().position(|v| v.get("name").and_then(Value::as_str) == Some(entry.name.as_str())) {
            Some(i) => items[i] = item,
            None => items.push(item),
        }
        m.insert(key, Value::Sequence(items));
    }
    let cc = s("current-context");
    if m.get(&cc).and_then(Value::as_str).is_none_or(str::is_empty) {
        m.insert(cc, s(&entry.name));
    }
    Value::Mapping(m)
}

/// The document without the cluster, user and context named `name` (and without
/// `current-context` when it named that context).
pub fn remove(doc: &Value, name: &str) -> Value {
    let Value::Mapping(m) = doc else { return doc.clone() };
    let mut m = m.clone();
    for (list, _) in LISTS {
        let key = s(list);
        if let Some(Value::Sequence(items)) = m.get(&key) {
            let kept: Vec<Value> = items.iter().filter(|v| v.get("name").and_then(Value::as_str) != Some(name)).cloned().collect();
            m.insert(key, Value::Sequence(kept));
        }
    }
    let cc = s("current-context");
    if m.get(&cc).and_then(Value::as_str) == Some(name) {
        m.insert(cc, s(""));
    }
    Value::Mapping(m)
}

/// Whether the document already carries `entry` exactly.
pub fn entry_status(doc: &Value, entry: &Entry) -> Status {
    let mut missing = 0;
    let mut differ = Vec::new();
    for (list, field) in LISTS {
        let items = doc.get(list).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default();
        match named(items, &entry.name) {
            None => missing += 1,
            Some(v) if v.get(field) != Some(&entry_value(entry, field)) => differ.push(format!("{field} {}", entry.name)),
            Some(_) => {}
        }
    }
    if missing == LISTS.len() {
        Status::Missing
    } else if missing > 0 || !differ.is_empty() {
        Status::Drifted(if differ.is_empty() {
            format!("kubeconfig entries for {} incomplete", entry.name)
        } else {
            format!("kubeconfig {} differs", differ.join(", "))
        })
    } else {
        Status::UpToDate
    }
}

/// Reads a kubeconfig as YAML; a missing or empty file is `Null`.
pub fn read_doc(path: &Path) -> Result<Value, Error> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(Value::Null),
        Ok(t) => serde_yaml_ng::from_str(&t).context(format!("cannot parse kubeconfig {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(e) => Err(Error::from(e).context(format!("cannot read kubeconfig {}", path.display()))),
    }
}

/// Writes `doc` atomically with mode 0600, keeping the previous file as `<path>.bak`.
pub fn write_doc(path: &Path, doc: &Value) -> Result<(), Error> {
    use std::io::Write;
    let text = serde_yaml_ng::to_string(doc).context("cannot serialize kubeconfig")?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).context(format!("cannot create {}", dir.display()))?;
    if path.exists() {
        let bak = bak_path(path);
        std::fs::copy(path, &bak).context(format!("cannot back up {} to {}", path.display(), bak.display()))?;
        set_private(&bak)?;
    }
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{file_name}.meshctl-{}.tmp", std::process::id()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).context(format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).context(format!("cannot write {}", tmp.display()))?;
        set_private(&tmp)?;
        std::fs::rename(&tmp, path).context(format!("cannot replace {}", path.display()))
    })();
    if result.is_err() {
        // The temporary file may not exist (the open failed); the error above is the one
        // that matters.
        if let Err(e) = std::fs::remove_file(&tmp) {
            tracing::debug!("removing {}: {e}", tmp.display());
        }
    }
    result
}

fn set_private(p: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).context(format!("cannot chmod 600 {}", p.display()))?;
    }
    Ok(())
}

pub fn bak_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".bak");
    PathBuf::from(s)
}

/// The server and CA of an existing context in a kubeconfig document.
pub fn endpoint_of_context(doc: &Value, context: &str, file: &Path) -> Result<Endpoint, Error> {
    endpoint_in(doc, context, file).map_err(|m| Error::new(ErrorKind::NotFound, m))
}

fn endpoint_in(doc: &Value, context: &str, file: &Path) -> Result<Endpoint, String> {
    let seq = |k: &str| doc.get(k).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default().to_vec();
    let contexts = seq("contexts");
    let ctx = named(&contexts, context).ok_or_else(|| format!("context {context} not found in {}", file.display()))?;
    let cluster_name = ctx
        .get("context")
        .and_then(|c| c.get("cluster"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("context {context} names no cluster"))?;
    let clusters = seq("clusters");
    let cluster = named(&clusters, cluster_name)
        .and_then(|c| c.get("cluster"))
        .ok_or_else(|| format!("cluster {cluster_name} (of context {context}) not found in {}", file.display()))?;
    let server = cluster.get("server").and_then(Value::as_str).ok_or_else(|| format!("cluster {cluster_name} has no server"))?.to_string();
    let ca_data = match (
        cluster.get("certificate-authority-data").and_then(Value::as_str),
        cluster.get("certificate-authority").and_then(Value::as_str),
    ) {
        (Some(d), _) => d.to_string(),
        (None, Some(f)) => {
            let p = Path::new(f);
            let p = if p.is_relative() { file.parent().unwrap_or(Path::new(".")).join(p) } else { p.to_path_buf() };
            let pem = std::fs::read(&p).map_err(|e| format!("cannot read CA {} of cluster {cluster_name}: {e}", p.display()))?;
            base64::engine::general_purpose::STANDARD.encode(pem)
        }
        (None, None) => return Err(format!("cluster {cluster_name} has no certificate authority")),
    };
    Ok(Endpoint { server, ca_data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep() -> Endpoint {
        Endpoint { server: "https://ABC.gr7.us-east-2.eks.amazonaws.com".into(), ca_data: "LS0tLS1CRUdJTg==".into() }
    }

    /// An exec entry like the one `kubeconfig/<account>` writes.
    fn entry(name: &str, ep: &Endpoint) -> Entry {
        Entry::exec(name, ep, "meshctl", &["token".into(), "--cluster".into(), name.into()])
    }

    #[test]
    fn merge_is_idempotent_and_keeps_current_context() {
        let doc: Value =
            serde_yaml_ng::from_str("apiVersion: v1\nkind: Config\ncurrent-context: mine\nclusters: []\nx-extension: {keep: true}\n")
                .unwrap();
        let e = entry("eks-cluster-shared", &ep());
        assert_eq!(entry_status(&doc, &e), Status::Missing);
        let once = merge(&doc, &e);
        assert_eq!(entry_status(&once, &e), Status::UpToDate);
        assert_eq!(merge(&once, &e), once);
        assert_eq!(once["current-context"].as_str(), Some("mine"));
        assert_eq!(once["x-extension"]["keep"].as_bool(), Some(true));
        let changed = entry("eks-cluster-shared", &Endpoint { server: "https://other".into(), ca_data: "x".into() });
        assert!(matches!(entry_status(&once, &changed), Status::Drifted(_)));
    }

    #[test]
    fn atomic_write_is_private_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config");
        std::fs::write(&p, "apiVersion: v1\nkind: Config\nusers:\n- name: someone\n  user: {token: abc}\n").unwrap();
        let e = entry("eks-cluster-shared", &ep());
        let doc = read_doc(&p).unwrap();
        write_doc(&p, &merge(&doc, &e)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(bak_path(&p)).unwrap().contains("someone"));
        let after = read_doc(&p).unwrap();
        assert_eq!(entry_status(&after, &e), Status::UpToDate);
        assert!(named(after["users"].as_sequence().unwrap(), "someone").is_some());
        assert_eq!(remove(&after, &e.name)["users"].as_sequence().unwrap().len(), 1);
    }

    #[test]
    fn endpoint_from_context_reads_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "PEM").unwrap();
        let p = dir.path().join("config");
        let doc: Value = serde_yaml_ng::from_str("contexts:\n- name: shared\n  context: {cluster: c1, user: u}\nclusters:\n- name: c1\n  cluster: {server: 'https://127.0.0.1:6443', certificate-authority: ca.crt}\n").unwrap();
        let e = endpoint_of_context(&doc, "shared", &p).unwrap();
        assert_eq!(e.server, "https://127.0.0.1:6443");
        assert_eq!(e.ca_data, base64::engine::general_purpose::STANDARD.encode("PEM"));
        assert!(endpoint_of_context(&doc, "nope", &p).unwrap_err().to_string().contains("nope"));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,12}"
    }

    fn foreign_doc() -> impl Strategy<Value = Value> {
        let item = |field: &'static str| {
            (name(), proptest::collection::btree_map("[a-z-]{1,8}", "[ -~]{0,16}", 0..4)).prop_map(move |(n, kv)| {
                let mut inner = Mapping::new();
                for (k, v) in kv {
                    inner.insert(s(&k), s(&v));
                }
                map(vec![("name", s(&n)), (field, Value::Mapping(inner))])
            })
        };
        (
            proptest::collection::vec(item("cluster"), 0..4),
            proptest::collection::vec(item("user"), 0..4),
            proptest::collection::vec(item("context"), 0..4),
            proptest::option::of(name()),
            proptest::option::of("[ -~]{0,16}"),
        )
            .prop_map(|(clusters, users, contexts, current, ext)| {
                let mut m = Mapping::new();
                m.insert(s("apiVersion"), s("v1"));
                m.insert(s("kind"), s("Config"));
                m.insert(s("clusters"), Value::Sequence(clusters));
                m.insert(s("users"), Value::Sequence(users));
                m.insert(s("contexts"), Value::Sequence(contexts));
                if let Some(c) = current {
                    m.insert(s("current-context"), s(&c));
                }
                if let Some(x) = ext {
                    m.insert(s("preferences"), map(vec![("colors", s(&x))]));
                }
                Value::Mapping(m)
            })
    }

    proptest! {
        /// Merging our entry keeps every foreign entry and key exactly; removing it again gives
        /// back the foreign entries (the document round-trips through YAML text too).
        #[test]
        fn merge_keeps_foreign_entries(doc in foreign_doc(), which in 0usize..3) {
            let e = entry(["eks-cluster-shared", "eks-cluster-frontend", "eks-cluster-backend"][which], &ep());
            let merged = merge(&doc, &e);
            let text = serde_yaml_ng::to_string(&merged).unwrap();
            let reread: Value = serde_yaml_ng::from_str(&text).unwrap();
            prop_assert_eq!(&reread, &merged);
            prop_assert_eq!(entry_status(&merged, &e), Status::UpToDate);
            for (list, _) in LISTS {
                let before = doc[list].as_sequence().unwrap();
                let after = merged[list].as_sequence().unwrap();
                for item in before {
                    let n = item["name"].as_str().unwrap();
                    if n != e.name {
                        prop_assert!(after.contains(item), "{} lost {:?}", list, item);
                    }
                }
            }
            for (k, v) in doc.as_mapping().unwrap() {
                let k = k.as_str().unwrap();
                let ours = ["clusters", "users", "contexts"].contains(&k) || (k == "current-context" && v.as_str() == Some(""));
                if !ours {
                    prop_assert_eq!(&merged[k], v);
                }
            }
            let removed = remove(&merged, &e.name);
            for (list, _) in LISTS {
                let want: Vec<&Value> = doc[list].as_sequence().unwrap().iter().filter(|i| i["name"].as_str() != Some(e.name.as_str())).collect();
                let got: Vec<&Value> = removed[list].as_sequence().unwrap().iter().collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
