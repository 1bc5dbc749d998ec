//! Who decides whether a tool runs: allow (run it), ask (the signed-in user confirms first) or deny
//! (the model never sees it). The default comes from the tool's annotations: read-only and not
//! destructive → allow, anything else → ask. The operator may tighten any tool, per server or per
//! tool, but can never loosen one: the effective permission is the stricter of the default and the
//! configuration, so a changing tool can never be set to run without a human.

use std::collections::HashMap;

use crate::mcp::ToolDescription;

/// What happens when the model calls a tool. Ordered from the most to the least permissive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Ask,
    Deny,
}

/// The operator's tightenings: for a whole server (`"internal-mcp"`) or one tool
/// (`"internal-mcp__run_select"`).
#[derive(Debug, Clone, Default)]
pub struct ToolPolicies {
    tightened: HashMap<String, Permission>,
}

impl ToolPolicies {
    /// Every tool keeps the permission its annotations give it.
    pub fn from_annotations() -> Self {
        Self::default()
    }

    /// Sets `permission` for `target`: a server name or a namespaced tool. A looser permission
    /// than a tool's default has no effect (see [`Self::permission`]).
    pub fn tighten(mut self, target: &str, permission: Permission) -> Self {
        self.tightened.insert(target.to_owned(), permission);
        self
    }

    /// The permission of `tool` on `server`: the strictest of its default, the server's setting
    /// and the tool's setting.
    pub fn permission(&self, server: &str, tool: &ToolDescription) -> Permission {
        let default = default_permission(tool);
        let qualified = super::tools::qualified_name(server, &tool.name);
        [self.tightened.get(server), self.tightened.get(&qualified)]
            .into_iter()
            .flatten()
            .fold(default, |strictest, configured| strictest.max(*configured))
    }
}

/// Read-only tools run without asking; everything else asks.
pub fn default_permission(tool: &ToolDescription) -> Permission {
    if tool.read_only {
        Permission::Allow
    } else {
        Permission::Ask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, read_only: bool) -> ToolDescription {
        ToolDescription {
            name: name.to_owned(),
            description: String::new(),
            input_schema: json!({"type": "object"}),
            read_only,
            group: None,
        }
    }

    #[test]
    fn defaults_follow_annotations_and_configuration_only_tightens() {
        let select = tool("run_select", true);
        let annotate = tool("annotate_incident", false);
        let defaults = ToolPolicies::from_annotations();
        assert_eq!(
            defaults.permission("internal-mcp", &select),
            Permission::Allow
        );
        assert_eq!(
            defaults.permission("internal-mcp", &annotate),
            Permission::Ask
        );

        let configured = ToolPolicies::from_annotations()
            .tighten("internal-mcp__run_select", Permission::Ask)
            .tighten("internal-mcp__annotate_incident", Permission::Allow)
            .tighten("other", Permission::Deny);
        assert_eq!(
            configured.permission("internal-mcp", &select),
            Permission::Ask
        );
        assert_eq!(
            configured.permission("internal-mcp", &annotate),
            Permission::Ask,
            "a changing tool can never be loosened to allow"
        );
        assert_eq!(configured.permission("other", &select), Permission::Deny);

        let server_wide = ToolPolicies::from_annotations()
            .tighten("internal-mcp", Permission::Deny)
            .tighten("internal-mcp__run_select", Permission::Allow);
        assert_eq!(
            server_wide.permission("internal-mcp", &select),
            Permission::Deny
        );
    }
}
