//! The manifests/ templates: `{{ name }}` placeholders filled from configuration, and
//! line-level `{{#if name}}` … `{{/if}}` sections kept only when the value is non-empty (not
//! `""`, `[]` or `false`). Sections do not nest. An unknown placeholder is an error, so a
//! typo in a template fails loudly instead of shipping `{{ x }}` to the API server.

use std::collections::BTreeMap;

use super::KubeError;

/// Values for a template. List values are written as JSON (a YAML flow sequence).
pub type Vars = BTreeMap<String, String>;

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| !v.is_empty() && v != "[]" && v != "false")
}

/// Renders `text` (named `name` in errors) with `vars`.
pub fn render(name: &str, text: &str, vars: &Vars) -> Result<String, KubeError> {
    let err = |message: String| KubeError::Manifest { origin: name.to_string(), message };
    let mut out = String::with_capacity(text.len());
    let mut keep = true;
    let mut in_section = false;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim();
        if let Some(key) = t.strip_prefix("{{#if ").and_then(|r| r.strip_suffix("}}")) {
            if in_section {
                return Err(err(format!("line {}: sections do not nest", n + 1)));
            }
            let key = key.trim();
            if !vars.contains_key(key) {
                return Err(err(format!("line {}: unknown value {key}", n + 1)));
            }
            in_section = true;
            keep = truthy(vars.get(key));
            continue;
        }
        if t == "{{/if}}" {
            in_section = false;
            keep = true;
            continue;
        }
        if !keep {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").ok_or_else(|| err(format!("line {}: unclosed {{{{", n + 1)))? + start;
            let key = rest[start + 2..end].trim();
            let value = vars.get(key).ok_or_else(|| err(format!("line {}: unknown value {key}", n + 1)))?;
            out.push_str(value);
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
    }
    if in_section {
        return Err(err("unclosed {{#if}} section".into()));
    }
    Ok(out)
}

/// A JSON string/list for a template value.
pub fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("template values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_sections() {
        let vars: Vars =
            [("a".to_string(), "x".to_string()), ("l".to_string(), "[]".to_string()), ("m".to_string(), "[\"s\"]".to_string())].into();
        let out = render("t", "k: {{ a }}-{{a}}\n{{#if l}}\ngone: 1\n{{/if}}\n{{#if m}}\nm: {{ m }}\n{{/if}}\n", &vars).unwrap();
        assert_eq!(out, "k: x-x\nm: [\"s\"]\n");
        assert!(render("t", "{{ nope }}", &vars).unwrap_err().to_string().contains("nope"));
    }
}
