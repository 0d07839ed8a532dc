//! Two small vocabularies shared by the engine and the libraries below it, so that `aws`,
//! `kube` and `helm` can answer in the engine's terms without knowing the engine:
//! [`Status`] (live state against what is wanted) and [`Progress`] (what a long operation
//! reports while it runs, and whether it should stop).

use serde::Serialize;

/// The live state of a resource compared with what the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "kebab-case")]
pub enum Status {
    /// Exists and matches: `up` does nothing.
    UpToDate,
    /// Does not exist: `up` creates it, `down` has nothing to do.
    Missing,
    /// Exists but differs; the reason says how.
    Drifted(String),
    /// Exists, made by meshctl for this mesh, but the configuration no longer names it (a
    /// removed spoke's stacks, a removed service's entry); the reason lists what. `up` keeps
    /// it unless asked to prune; `down` removes it.
    Orphaned(String),
}

impl Status {
    /// Combines the statuses of several parts of one step: missing when every part is
    /// missing, up to date when every part is, else drifted with every part's reason.
    pub fn all(parts: impl IntoIterator<Item = (String, Status)>) -> Status {
        let mut missing = Vec::new();
        let mut drifted = Vec::new();
        let mut total = 0;
        for (what, s) in parts {
            total += 1;
            match s {
                Status::UpToDate => {}
                Status::Missing => missing.push(what),
                Status::Drifted(why) => drifted.push(format!("{what}: {why}")),
                Status::Orphaned(why) => drifted.push(format!("{what}: orphaned: {why}")),
            }
        }
        if total > 0 && missing.len() == total {
            return Status::Missing;
        }
        if missing.is_empty() && drifted.is_empty() {
            return Status::UpToDate;
        }
        if !missing.is_empty() {
            drifted.insert(0, format!("missing: {}", missing.join(", ")));
        }
        Status::Drifted(drifted.join("; "))
    }
}

/// Dotted paths (`spec.template.spec.containers`) where two JSON values differ, at most
/// `max`: the reason of a drift, for Kubernetes objects and Helm values alike.
pub fn diff_paths(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>, max: usize) {
    use serde_json::Value;
    if out.len() >= max {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => diff_paths(&p, l, r, out, max),
                    _ if out.len() < max => out.push(p),
                    _ => {}
                }
            }
        }
        _ if a != b => out.push(if prefix.is_empty() { "<root>".into() } else { prefix.to_string() }),
        _ => {}
    }
}

/// What a long operation (a stack deploy, a wait) reports and obeys while it runs.
pub trait Progress: Send + Sync {
    /// The operation's current sub-state (`CREATE_IN_PROGRESS`, "waiting for ...").
    fn progress(&self, message: String);
    /// True once the user asked to stop: waits end at their next safe point.
    fn cancelled(&self) -> bool;
}

/// Progress nobody watches (tests, one-off reads).
pub struct Silent;

impl Progress for Silent {
    fn progress(&self, _: String) {}
    fn cancelled(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_differences_are_named_by_path() {
        let mut out = Vec::new();
        diff_paths(
            "",
            &serde_json::json!({"a": {"b": 1, "c": 2}, "d": 1}),
            &serde_json::json!({"a": {"b": 1, "c": 3}, "e": 1}),
            &mut out,
            5,
        );
        assert_eq!(out, ["a.c", "d", "e"]);
    }

    #[test]
    fn statuses_combine() {
        let s = |v: Status| ("x".to_string(), v);
        assert_eq!(Status::all([s(Status::Missing), s(Status::Missing)]), Status::Missing);
        assert_eq!(Status::all([s(Status::UpToDate)]), Status::UpToDate);
        assert_eq!(
            Status::all([("a".into(), Status::Missing), ("b".into(), Status::UpToDate), ("c".into(), Status::Drifted("d".into()))]),
            Status::Drifted("missing: a; c: d".into())
        );
    }
}
