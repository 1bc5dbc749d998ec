//! The tools a turn offers the model: each server's tools namespaced as `<server>__<tool>` (one
//! function builds the name, one splits it), minus the denied ones, with the schema the model sees
//! (never a `confirmation_token` argument: only the host confirms), plus the host's own tools.
//!
//! With skills on, a tool the server put in a capability group is offered only once the model
//! activated its group with `host__activate(group)`; until then the model reads a short index of
//! the groups instead of every definition, which is where the tokens are saved.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::policy::{Permission, ToolPolicies};
use crate::llm::ToolSpec;
use crate::mcp::ToolDescription;

/// Between a server's name and its tool's name.
pub const SEPARATOR: &str = "__";
/// The host's own tools are namespaced under this name.
pub const HOST: &str = "host";
/// `host__read_result(call_id, offset)`: the next page of a result that was cut.
pub const READ_RESULT: &str = "read_result";
/// `host__activate(group)`: offers a capability group's tools from the next model call on.
pub const ACTIVATE: &str = "activate";
/// The argument of two-step tools that carries the server's confirmation token. The model is
/// never offered it and a call that carries it is refused.
pub const CONFIRMATION_TOKEN_ARGUMENT: &str = "confirmation_token";

/// One tool as the turn offers it.
#[derive(Debug, Clone)]
pub(crate) struct OfferedTool {
    pub server: String,
    pub tool: String,
    pub permission: Permission,
    /// The server plans first and executes with a confirmation token (its schema has one).
    pub two_step: bool,
    /// The schema the model sees and the arguments are checked against.
    pub schema: Value,
    pub description: String,
    /// The capability group the server put the tool in.
    pub group: Option<String>,
}

/// A capability group of the turn's tools.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub description: String,
    /// The server's instructions for the group, handed to the model when it activates it.
    pub instructions: String,
    pub tools: Vec<String>,
}

/// The tools of one turn, by namespaced name.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToolSet {
    tools: BTreeMap<String, OfferedTool>,
    /// Offer grouped tools only once their group is active.
    skills: bool,
    groups: BTreeMap<String, Group>,
    active: BTreeSet<String>,
    /// `host__read_result` is offered only once a result was cut: with nothing to page, weak
    /// models call it instead of a real tool.
    paging: bool,
}

/// `internal-mcp` + `run_select` → `internal-mcp__run_select`.
pub fn qualified_name(server: &str, tool: &str) -> String {
    format!("{server}{SEPARATOR}{tool}")
}

/// `internal-mcp__run_select` → (`internal-mcp`, `run_select`); a name without the separator is
/// no tool of ours.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
        .filter(|(server, tool)| !server.is_empty() && !tool.is_empty())
}

impl ToolSet {
    pub fn new(skills: bool) -> Self {
        Self {
            skills,
            ..Self::default()
        }
    }

    /// Adds a server's tools under `policies`; denied tools are left out entirely.
    pub fn add_server(&mut self, server: &str, tools: &[ToolDescription], policies: &ToolPolicies) {
        for tool in tools {
            let permission = policies.permission(server, tool);
            if permission == Permission::Deny {
                continue;
            }
            let two_step = has_property(&tool.input_schema, CONFIRMATION_TOKEN_ARGUMENT);
            let mut description = tool.description.clone();
            if permission == Permission::Ask {
                description.push_str(
                    " [In this assistant: call it once, without any confirmation token. The host shows the plan to \
                     the user, who confirms or rejects it; you are told the outcome.]",
                );
            }
            let qualified = qualified_name(server, &tool.name);
            let group = tool.group.as_ref().map(|group| {
                self.groups
                    .entry(group.name.clone())
                    .or_insert_with(|| Group {
                        description: group.description.clone(),
                        instructions: group.instructions.clone(),
                        tools: Vec::new(),
                    })
                    .tools
                    .push(qualified.clone());
                group.name.clone()
            });
            self.tools.insert(
                qualified,
                OfferedTool {
                    group,
                    server: server.to_owned(),
                    tool: tool.name.clone(),
                    permission,
                    two_step,
                    schema: without_confirmation_token(&tool.input_schema),
                    description,
                },
            );
        }
    }

    pub fn get(&self, qualified: &str) -> Option<&OfferedTool> {
        self.tools.get(qualified)
    }

    /// False for a grouped tool whose group is not active yet (with skills on).
    pub fn is_offered(&self, tool: &OfferedTool) -> bool {
        !self.skills
            || tool
                .group
                .as_ref()
                .is_none_or(|group| self.active.contains(group))
    }

    /// Activates `group`; its tools are offered from the next model call on.
    pub fn activate(&mut self, group: &str) -> Result<&Group, String> {
        match self.groups.get(group) {
            Some(found) => {
                self.active.insert(group.to_owned());
                Ok(found)
            }
            None => Err(format!(
                "there is no capability group {group:?}; the groups are: {}",
                self.groups.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// With skills on and groups to offer: the index the model reads in place of their tools.
    pub fn index(&self) -> Option<String> {
        if !self.skills || self.groups.is_empty() {
            return None;
        }
        let lines: Vec<String> = self
            .groups
            .iter()
            .map(|(name, group)| {
                let state = if self.active.contains(name) {
                    "active"
                } else {
                    "not active"
                };
                format!(
                    "- {name} ({} tools, {state}): {}",
                    group.tools.len(),
                    group.description
                )
            })
            .collect();
        Some(format!(
            "{}\n{}",
            super::prompts::SKILLS_INDEX,
            lines.join("\n")
        ))
    }

    /// Every tool's definition, as the model would get them without skills.
    pub fn all_specs(&self) -> Vec<ToolSpec> {
        self.specs_where(|_| true)
    }

    /// What the model is offered: the servers' tools (of active groups), then the host's.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.specs_where(|tool| self.is_offered(tool))
    }

    fn specs_where(&self, offered: impl Fn(&OfferedTool) -> bool) -> Vec<ToolSpec> {
        let mut specs: Vec<ToolSpec> = self
            .tools
            .iter()
            .filter(|(_, tool)| offered(tool))
            .map(|(name, tool)| ToolSpec {
                name: name.clone(),
                description: tool.description.clone(),
                parameters: tool.schema.clone(),
            })
            .collect();
        // Only groups still to activate: a weak model cannot spend its steps activating again.
        let inactive: Vec<&String> = self
            .groups
            .keys()
            .filter(|group| !self.active.contains(*group))
            .collect();
        if self.skills && !inactive.is_empty() {
            specs.push(activate_spec_of(&inactive));
        }
        if self.paging {
            specs.push(read_result_spec());
        }
        specs
    }

    /// A result was cut: from now on the model is offered `host__read_result`.
    pub fn allow_paging(&mut self) {
        self.paging = true;
    }

    /// True once `host__read_result` is offered.
    pub fn offers_paging(&self) -> bool {
        self.paging
    }

    /// `host__activate` with every group name as its enum, as activations are checked.
    pub fn activate_spec(&self) -> ToolSpec {
        activate_spec_of(&self.groups.keys().collect::<Vec<_>>())
    }

    pub fn names(&self) -> Vec<String> {
        self.specs().into_iter().map(|spec| spec.name).collect()
    }
}

/// `host__activate`, with `groups` as its enum.
fn activate_spec_of(groups: &[&String]) -> ToolSpec {
    ToolSpec {
        name: qualified_name(HOST, ACTIVATE),
        description: "Activate a capability group from the index in the system prompt: its tools are offered to \
                      you from your next step on."
            .to_owned(),
        parameters: json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "group": {"type": "string", "enum": groups}
            },
            "required": ["group"]
        }),
    }
}

/// The host's pager over results that were cut.
pub(crate) fn read_result_spec() -> ToolSpec {
    ToolSpec {
        name: qualified_name(HOST, READ_RESULT),
        description: "Read more of a tool result that was cut to fit your context: give the call_id the result \
                      named and the offset (in characters) to continue from."
            .to_owned(),
        parameters: json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "call_id": {"type": "string", "description": "The id of the call whose result was cut."},
                "offset": {"type": "integer", "minimum": 0, "description": "Where to continue, in characters."}
            },
            "required": ["call_id", "offset"]
        }),
    }
}

fn has_property(schema: &Value, name: &str) -> bool {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|properties| properties.contains_key(name))
}

/// The schema without the confirmation-token argument, so the model is never invited to pass one.
fn without_confirmation_token(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.remove(CONFIRMATION_TOKEN_ARGUMENT);
    }
    if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|name| name != CONFIRMATION_TOKEN_ARGUMENT);
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        let name = qualified_name("internal-mcp", "run_select");
        assert_eq!(name, "internal-mcp__run_select");
        assert_eq!(split_name(&name), Some(("internal-mcp", "run_select")));
        assert_eq!(
            split_name("host__read_result"),
            Some(("host", "read_result"))
        );
        assert_eq!(split_name("run_select"), None);
        assert_eq!(split_name("__run_select"), None);
        assert_eq!(split_name("internal-mcp__"), None);
    }

    #[test]
    fn the_model_never_sees_a_confirmation_token_argument_and_denied_tools_are_left_out() {
        let annotate = ToolDescription {
            name: "annotate_incident".into(),
            description: "Add a note.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"incident": {"type": "string"}, "note": {"type": "string"},
                               "confirmation_token": {"type": ["string", "null"]}},
                "required": ["incident", "note"]
            }),
            read_only: false,
            group: None,
        };
        let select = ToolDescription {
            name: "run_select".into(),
            description: "Run SQL.".into(),
            input_schema: json!({"type": "object", "properties": {"sql": {"type": "string"}}}),
            read_only: true,
            group: None,
        };
        let mut set = ToolSet::default();
        let policies =
            ToolPolicies::from_annotations().tighten("internal-mcp__run_select", Permission::Deny);
        set.add_server("internal-mcp", &[annotate, select], &policies);
        let offered = set.get("internal-mcp__annotate_incident").expect("offered");
        assert!(offered.two_step);
        assert_eq!(offered.permission, Permission::Ask);
        assert!(!offered.schema.to_string().contains("confirmation_token"));
        assert!(set.get("internal-mcp__run_select").is_none());
        assert_eq!(set.names(), ["internal-mcp__annotate_incident"]);
        set.allow_paging();
        assert_eq!(
            set.names(),
            ["internal-mcp__annotate_incident", "host__read_result"],
            "paging is offered once a result was cut"
        );
    }
}
