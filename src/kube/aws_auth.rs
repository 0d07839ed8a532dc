//! The `kube-system/aws-auth` ConfigMap's `mapRoles`, edited surgically: the document is
//! split into its list items, only the item whose `rolearn` is ours is added, replaced or
//! removed, and every other item (the node role mapping EKS seeded, other users' entries,
//! comments) keeps its exact bytes. When the text is not a block list that can be edited in
//! place (flow style, anchors), it is re-serialized instead.

use serde_yaml_ng::Value;

use crate::error::{Error, ErrorKind, ResultExt};
use crate::state::Status;

/// Namespace, name and key of the ConfigMap.
pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "aws-auth";
pub const MAP_ROLES: &str = "mapRoles";

/// The one mapRoles entry meshctl owns for a spoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping {
    pub rolearn: String,
    pub username: String,
    pub groups: Vec<String>,
}

impl RoleMapping {
    fn value(&self) -> Value {
        let mut m = serde_yaml_ng::Mapping::new();
        m.insert("rolearn".into(), self.rolearn.clone().into());
        m.insert("username".into(), self.username.clone().into());
        m.insert("groups".into(), Value::Sequence(self.groups.iter().map(|g| Value::from(g.clone())).collect()));
        Value::Mapping(m)
    }

    /// The entry as a block list item at `indent`.
    fn block(&self, indent: &str) -> String {
        let mut s =
            format!("{indent}- rolearn: {}\n{indent}  username: {}\n{indent}  groups:\n", quote(&self.rolearn), quote(&self.username));
        for g in &self.groups {
            s.push_str(&format!("{indent}  - {}\n", quote(g)));
        }
        s
    }
}

/// A plain scalar when YAML reads it back unchanged, else double-quoted.
fn quote(s: &str) -> String {
    match serde_yaml_ng::from_str::<Value>(s) {
        Ok(Value::String(back)) if back == s && !s.contains(": ") && !s.contains(" #") => s.to_string(),
        _ => serde_json::to_string(s).expect("a string serializes"),
    }
}

/// mapRoles split into its list items, each with its exact text.
struct Blocks {
    head: String,
    items: Vec<String>,
    indent: String,
}

fn split_blocks(text: &str) -> Option<Blocks> {
    let mut indent: Option<String> = None;
    let mut head = String::new();
    let mut items: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let lead = &line[..line.len() - trimmed.len()];
        let starts_item = trimmed.starts_with("- ") || trimmed.trim_end() == "-";
        if indent.is_none() && starts_item {
            indent = Some(lead.to_string());
        }
        match &indent {
            Some(ind) if starts_item && lead == ind => items.push(line.to_string()),
            Some(_) => items.last_mut().expect("an item started").push_str(line),
            None => head.push_str(line),
        }
    }
    if items.is_empty() && head.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
        return None; // `[]` or another flow form: nothing to append to in place
    }
    let blocks = Blocks { head, items, indent: indent.unwrap_or_default() };
    // The split must mean the same as the whole, else we fall back to re-serializing.
    let whole: Value = serde_yaml_ng::from_str(text).ok()?;
    let whole = if whole.is_null() { Value::Sequence(vec![]) } else { whole };
    let parts = Value::Sequence(blocks.items.iter().map(|b| item_value(b)).collect::<Option<Vec<_>>>()?);
    (whole == parts).then_some(blocks)
}

fn item_value(block: &str) -> Option<Value> {
    match serde_yaml_ng::from_str::<Value>(block).ok()? {
        Value::Sequence(mut v) if v.len() == 1 => v.pop(),
        _ => None,
    }
}

fn rolearn_of(v: &Value) -> Option<&str> {
    v.get("rolearn").and_then(Value::as_str)
}

/// mapRoles with `ours` added or fixed; `None` when it is already there exactly.
pub fn merge_map_roles(text: &str, ours: &RoleMapping) -> Result<Option<String>, Error> {
    let want = ours.value();
    if let Some(mut b) = split_blocks(text) {
        let pos = b.items.iter().position(|i| item_value(i).as_ref().and_then(rolearn_of) == Some(ours.rolearn.as_str()));
        match pos {
            Some(p) if item_value(&b.items[p]).as_ref() == Some(&want) => return Ok(None),
            Some(p) => b.items[p] = ours.block(&b.indent),
            None => {
                if let Some(last) = b.items.last_mut() {
                    if !last.ends_with('\n') {
                        last.push('\n');
                    }
                } else if !b.head.is_empty() && !b.head.ends_with('\n') {
                    b.head.push('\n');
                }
                b.items.push(ours.block(&b.indent));
            }
        }
        return Ok(Some(format!("{}{}", b.head, b.items.concat())));
    }
    // Not a block list we can edit in place (flow style, anchors): re-serialize.
    let mut list = parse_list(text)?;
    match list.iter().position(|v| rolearn_of(v) == Some(ours.rolearn.as_str())) {
        Some(p) if list[p] == want => return Ok(None),
        Some(p) => list[p] = want,
        None => list.push(want),
    }
    Ok(Some(serde_yaml_ng::to_string(&Value::Sequence(list))?))
}

/// mapRoles without the entry of `rolearn`; `None` when it is not there.
pub fn remove_map_roles(text: &str, rolearn: &str) -> Result<Option<String>, Error> {
    if let Some(mut b) = split_blocks(text) {
        let before = b.items.len();
        b.items.retain(|i| item_value(i).as_ref().and_then(rolearn_of) != Some(rolearn));
        if b.items.len() == before {
            return Ok(None);
        }
        let out = format!("{}{}", b.head, b.items.concat());
        return Ok(Some(if out.trim().is_empty() { String::new() } else { out }));
    }
    let mut list = parse_list(text)?;
    let before = list.len();
    list.retain(|v| rolearn_of(v) != Some(rolearn));
    if list.len() == before {
        return Ok(None);
    }
    Ok(Some(serde_yaml_ng::to_string(&Value::Sequence(list))?))
}

fn parse_list(text: &str) -> Result<Vec<Value>, Error> {
    match serde_yaml_ng::from_str::<Value>(text).context("mapRoles is not valid YAML")? {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(v) => Ok(v),
        _ => Err(Error::new(ErrorKind::InvalidInput, "mapRoles is not a YAML list")),
    }
}

/// The state of our entry in a mapRoles text.
pub fn map_roles_status(text: &str, ours: &RoleMapping) -> Result<Status, Error> {
    let list = parse_list(text)?;
    Ok(match list.iter().find(|v| rolearn_of(v) == Some(ours.rolearn.as_str())) {
        None => Status::Missing,
        Some(v) if *v == ours.value() => Status::UpToDate,
        Some(_) => Status::Drifted(format!("aws-auth mapRoles entry for {} differs", ours.rolearn)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEEDED: &str = "- rolearn: arn:aws:iam::222222222222:role/frontend-node-role\n  username: system:node:{{EC2PrivateDNSName}}\n  groups:\n  - system:bootstrappers\n  - system:nodes\n";

    fn ours() -> RoleMapping {
        RoleMapping {
            rolearn: "arn:aws:iam::222222222222:role/eks-cluster-frontend-access-role".into(),
            username: "eks-cluster-frontend-access-role".into(),
            groups: vec!["meshctl:spire-server".into()],
        }
    }

    #[test]
    fn adds_after_the_seeded_entry_keeping_its_bytes() {
        let merged = merge_map_roles(SEEDED, &ours()).unwrap().unwrap();
        assert!(merged.starts_with(SEEDED), "{merged}");
        assert_eq!(map_roles_status(&merged, &ours()).unwrap(), Status::UpToDate);
        assert_eq!(merge_map_roles(&merged, &ours()).unwrap(), None, "second merge changes nothing");
        assert_eq!(remove_map_roles(&merged, &ours().rolearn).unwrap().unwrap(), SEEDED);
        assert_eq!(remove_map_roles(SEEDED, &ours().rolearn).unwrap(), None);
    }

    #[test]
    fn fixes_only_our_entry() {
        let mut wrong = ours();
        wrong.groups = vec!["system:masters".into()];
        let text = format!("{SEEDED}{}", wrong.block(""));
        assert!(matches!(map_roles_status(&text, &ours()).unwrap(), Status::Drifted(_)));
        let fixed = merge_map_roles(&text, &ours()).unwrap().unwrap();
        assert!(fixed.starts_with(SEEDED));
        assert_eq!(map_roles_status(&fixed, &ours()).unwrap(), Status::UpToDate);
        assert!(!fixed.contains("system:masters"));
    }

    #[test]
    fn indented_and_flow_documents() {
        let indented = "  - rolearn: arn:aws:iam::1:role/a\n    username: a\n    groups: [x]\n";
        let m = merge_map_roles(indented, &ours()).unwrap().unwrap();
        assert!(m.starts_with(indented));
        assert_eq!(parse_list(&m).unwrap().len(), 2);
        let flow = "[{rolearn: 'arn:aws:iam::1:role/a', username: a, groups: [x]}]";
        let m = merge_map_roles(flow, &ours()).unwrap().unwrap();
        assert_eq!(parse_list(&m).unwrap().len(), 2);
        assert_eq!(merge_map_roles("", &ours()).unwrap().map(|t| parse_list(&t).unwrap().len()), Some(1));
    }

    fn arn() -> impl Strategy<Value = String> {
        ("[0-9]{12}", "[A-Za-z0-9+=,.@_-]{1,20}").prop_map(|(a, r)| format!("arn:aws:iam::{a}:role/{r}"))
    }

    fn entry() -> impl Strategy<Value = Value> {
        (arn(), "[a-z:{}A-Z0-9_-]{1,20}", proptest::collection::vec("[a-z:]{1,12}", 0..3)).prop_map(|(a, u, g)| {
            let mut m = serde_yaml_ng::Mapping::new();
            m.insert("rolearn".into(), a.into());
            m.insert("username".into(), u.into());
            m.insert("groups".into(), Value::Sequence(g.into_iter().map(Value::from).collect()));
            Value::Mapping(m)
        })
    }

    proptest! {
        /// Merge then remove leaves any valid mapRoles document semantically identical, and
        /// foreign entries keep their exact text after a merge.
        #[test]
        fn merge_then_remove_is_identity(entries in proptest::collection::vec(entry(), 0..5), flow in any::<bool>(), indent in 0usize..3) {
            let entries: Vec<Value> = entries.into_iter().filter(|e| rolearn_of(e) != Some(ours().rolearn.as_str())).collect();
            let text = if flow {
                serde_json::to_string(&entries).unwrap()
            } else {
                let plain = serde_yaml_ng::to_string(&Value::Sequence(entries.clone())).unwrap();
                let pad = " ".repeat(indent);
                if entries.is_empty() { String::new() } else { plain.lines().map(|l| format!("{pad}{l}\n")).collect() }
            };
            let merged = merge_map_roles(&text, &ours()).unwrap().expect("ours was absent");
            prop_assert_eq!(map_roles_status(&merged, &ours()).unwrap(), Status::UpToDate);
            if !flow && !entries.is_empty() {
                prop_assert!(merged.starts_with(&text), "foreign text changed:\n{}\n---\n{}", text, merged);
            }
            let mut want = entries.clone();
            want.push(ours().value());
            prop_assert_eq!(parse_list(&merged).unwrap(), want);
            let removed = remove_map_roles(&merged, &ours().rolearn).unwrap().expect("ours was present");
            prop_assert_eq!(parse_list(&removed).unwrap(), entries);
        }
    }
}
