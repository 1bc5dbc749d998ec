//! The invariants of ARCHITECTURE.md that a machine can check, read from `cargo metadata`.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// The workspace's dependency graph: package name -> names of its direct normal dependencies,
/// and the same including dev-dependencies.
struct Graph {
    normal: HashMap<String, BTreeSet<String>>,
    any: HashMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let id_to_name: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            (
                package["id"].as_str().unwrap(),
                package["name"].as_str().unwrap(),
            )
        })
        .collect();
    let mut graph = Graph {
        normal: HashMap::new(),
        any: HashMap::new(),
    };
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let name = id_to_name[node["id"].as_str().unwrap()].to_owned();
        for dependency in node["deps"].as_array().unwrap() {
            let dependency_name = id_to_name[dependency["pkg"].as_str().unwrap()].to_owned();
            let kinds = dependency["dep_kinds"].as_array().unwrap();
            if kinds.iter().any(|kind| kind["kind"].is_null()) {
                graph
                    .normal
                    .entry(name.clone())
                    .or_default()
                    .insert(dependency_name.clone());
            }
            graph
                .any
                .entry(name.clone())
                .or_default()
                .insert(dependency_name);
        }
    }
    graph
}

/// Everything `package` needs to build and run, transitively through normal dependencies.
fn runtime_closure(graph: &Graph, package: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![package.to_owned()];
    while let Some(next) = stack.pop() {
        for dependency in graph.normal.get(&next).into_iter().flatten() {
            if seen.insert(dependency.clone()) {
                stack.push(dependency.clone());
            }
        }
    }
    seen
}

#[test]
fn external_mcp_reaches_neither_the_backend_crate_nor_a_database_driver() {
    let closure = runtime_closure(&graph(), "external-mcp");
    for forbidden in ["demo-backend", "sqlx", "sqlx-postgres", "internal-mcp"] {
        assert!(
            !closure.contains(forbidden),
            "external-mcp depends on {forbidden}"
        );
    }
    assert!(
        closure.contains("rmcp") && closure.contains("reqwest"),
        "{closure:?}"
    );
}

#[test]
fn nothing_depends_on_e2e_and_only_tests_use_the_test_harness() {
    let graph = graph();
    for (package, dependencies) in &graph.any {
        assert!(!dependencies.contains("e2e"), "{package} depends on e2e");
    }
    for (package, dependencies) in &graph.normal {
        assert!(
            package == "test-harness" || !dependencies.contains("test-harness"),
            "{package} depends on test-harness outside its tests"
        );
    }
}
