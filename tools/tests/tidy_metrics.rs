//! The metrics documentation stays true: every name in the README's table is defined in the
//! code, every metric the code defines is in the table, and the Grafana dashboard queries
//! only names from the table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The names in the README's metrics table.
fn documented() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `cess_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("cess_{n}"))
        .collect()
}

/// A name as exposed, back to the name the code registers: without `_total`, and without the
/// unit suffix the library appends.
fn registered_name(exposed: &str) -> &str {
    let name = exposed.strip_suffix("_total").unwrap_or(exposed);
    for unit in ["_bytes", "_seconds", "_blocks", "_tokens"] {
        if let Some(base) = name.strip_suffix(unit) {
            return base;
        }
    }
    name
}

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("tests") && !path.ends_with("target") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The names the code passes to the metrics library: every `"cess_…"` literal in the
/// sources of the roles that expose metrics (the one name made by `format!` is added by
/// hand below).
fn defined() -> BTreeSet<String> {
    let mut text = String::new();
    for dir in [
        "tools/src",
        "tools/node/src",
        "tools/tagger/src",
        "tools/http/src",
    ] {
        sources(&root().join(dir), &mut text);
    }
    let mut names: BTreeSet<String> = text
        .match_indices("\"cess_")
        .filter_map(|(at, _)| text[at + 1..].split('"').next())
        .filter(|s| {
            s.starts_with("cess_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(String::from)
        .collect();
    // `format!("cess_node_audit_{kind}s")` in tools/node/src/http.rs.
    assert!(text.contains("\"cess_node_audit_{kind}s\""));
    names.insert("cess_node_audit_rewards".into());
    names.insert("cess_node_audit_penalties".into());
    names
}

#[test]
fn the_readme_table_names_every_metric_and_only_those() {
    let documented = documented();
    assert!(
        documented.len() > 40,
        "the table went missing: {documented:?}"
    );
    let defined = defined();
    let registered: BTreeSet<String> = documented
        .iter()
        .map(|n| registered_name(n).to_string())
        .collect();
    let undefined: Vec<&String> = documented
        .iter()
        .filter(|n| !defined.contains(registered_name(n)))
        .collect();
    assert!(
        undefined.is_empty(),
        "in the README, not in the code: {undefined:?}"
    );
    let undocumented: Vec<&String> = defined.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "in the code, not in the README's table: {undocumented:?}"
    );
}

#[test]
fn the_grafana_dashboard_queries_documented_metrics() {
    let documented = documented();
    let text = std::fs::read_to_string(root().join("deploy/grafana/cess.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let used: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("cess_"))
                .collect();
            assert!(!used.is_empty(), "{expr}");
            for name in used {
                // A histogram's series carry `_bucket`, `_sum` or `_count`.
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    documented.contains(name) || documented.contains(base),
                    "{} queries {name}, which the README does not list",
                    panel["title"]
                );
            }
        }
    }
}
