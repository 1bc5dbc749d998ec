//! What models see of this server: every tool's definition, checked for hints and output
//! schemas, kept small, and pinned by a reviewed snapshot.

use external_mcp::tools::{WRITE_TOOLS, all_tools};

/// The budget of the whole tools/list (names, descriptions, schemas, annotations), in bytes of
/// compact JSON: about 5,000 tokens, against the 16,000 to 45,000 tokens users of other servers
/// complained about.
const TOOL_DEFINITIONS_BUDGET_BYTES: usize = 20 * 1024;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/tools.json");

#[test]
fn every_tool_declares_all_four_hints_and_an_output_schema() {
    let tools = all_tools();
    assert_eq!(
        tools.len(),
        11,
        "{:?}",
        tools.iter().map(|tool| &tool.name).collect::<Vec<_>>()
    );
    for tool in &tools {
        let hints = tool
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no annotations", tool.name));
        let read_only = hints
            .read_only_hint
            .unwrap_or_else(|| panic!("{}: readOnlyHint", tool.name));
        assert!(
            hints.destructive_hint.is_some(),
            "{}: destructiveHint",
            tool.name
        );
        assert!(
            hints.idempotent_hint.is_some(),
            "{}: idempotentHint",
            tool.name
        );
        assert!(
            hints.open_world_hint.is_some(),
            "{}: openWorldHint",
            tool.name
        );
        assert_eq!(
            read_only,
            !WRITE_TOOLS.contains(&tool.name.as_ref()),
            "{}: readOnlyHint must match the write list",
            tool.name
        );
        let output = tool
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no outputSchema", tool.name));
        assert_eq!(
            output.get("type").and_then(|kind| kind.as_str()),
            Some("object"),
            "{}",
            tool.name
        );
        let description = tool.description.as_deref().unwrap_or_default();
        assert!(
            description.len() >= 60,
            "{} needs a description written for a model",
            tool.name
        );
    }
    let destructive: Vec<&str> = tools
        .iter()
        .filter(|tool| {
            tool.annotations
                .as_ref()
                .and_then(|hints| hints.destructive_hint)
                == Some(true)
        })
        .map(|tool| tool.name.as_ref())
        .collect();
    assert_eq!(
        destructive,
        vec!["resolve_incident"],
        "only resolving cannot be undone"
    );
}

#[test]
fn tool_definitions_stay_within_their_budget() {
    let tools = all_tools();
    let total = serde_json::to_string(&tools).expect("JSON").len();
    eprintln!(
        "tool definitions: {} tools, {total} bytes of {TOOL_DEFINITIONS_BUDGET_BYTES} budgeted",
        tools.len()
    );
    for tool in &tools {
        eprintln!(
            "  {:22} {:5} bytes",
            tool.name,
            serde_json::to_string(tool).expect("JSON").len()
        );
    }
    assert!(
        total <= TOOL_DEFINITIONS_BUDGET_BYTES,
        "tools/list is {total} bytes, over the {TOOL_DEFINITIONS_BUDGET_BYTES}-byte budget: trim descriptions or schemas"
    );
}

/// Any change to what models see shows up here for review. `UPDATE_SNAPSHOTS=1` rewrites it.
#[test]
fn the_tool_list_matches_its_reviewed_snapshot() {
    let actual = serde_json::to_string_pretty(&all_tools()).expect("JSON") + "\n";
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(SNAPSHOT, &actual).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(expected, actual)| expected != actual)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "the tool list changed (first difference at line {}):\n  snapshot: {}\n  now:      {}\n\
             Review the change, then run `UPDATE_SNAPSHOTS=1 cargo test -p external-mcp` and commit tests/snapshots/tools.json.",
            first_difference + 1,
            expected.lines().nth(first_difference).unwrap_or("<end>"),
            actual.lines().nth(first_difference).unwrap_or("<end>"),
        );
    }
}
