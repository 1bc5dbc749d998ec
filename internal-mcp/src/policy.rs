//! Each tool's access policy, declared beside the tool in its `#[tool(meta = ...)]` attribute: the
//! least role that may see and call it, and whether it takes the two-step confirmation. The server
//! reads the declaration from the tool itself, so there is no separate list to keep in step, and a
//! tool without a declaration is denied to everyone.

use demo_backend::domain::kinds::Role;
use rmcp::model::{MetaObject, Tool};
use serde_json::{Value, json};

use crate::error::Error;

/// The `_meta` key of the declaration (clients see it in `tools/list`; it holds no secret).
pub const POLICY_KEY: &str = "internal-mcp/policy";

/// What a tool requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolPolicy {
    pub required_role: Role,
    /// The tool changes something: it plans first and executes only with a confirmation token
    /// bound to the whole arguments (see `operations`).
    pub two_step: bool,
}

/// The declaration for a tool that only reads, open to `role` and above.
pub fn reads(role: Role) -> MetaObject {
    declare(ToolPolicy {
        required_role: role,
        two_step: false,
    })
}

/// The declaration for a tool that changes something, open to `role` and above, in two steps.
pub fn changes(role: Role) -> MetaObject {
    declare(ToolPolicy {
        required_role: role,
        two_step: true,
    })
}

fn declare(policy: ToolPolicy) -> MetaObject {
    let mut meta = MetaObject::new();
    meta.insert(
        POLICY_KEY.to_owned(),
        json!({ "required_role": role_name(policy.required_role), "two_step": policy.two_step }),
    );
    meta
}

/// The tool's declared policy, or `None` when it declares none (or one this server cannot read).
pub fn policy_of(tool: &Tool) -> Option<ToolPolicy> {
    let declared = tool.meta.as_ref()?.get(POLICY_KEY)?;
    let required_role = match declared.get("required_role").and_then(Value::as_str)? {
        "viewer" => Role::Viewer,
        "responder" => Role::Responder,
        "admin" => Role::Admin,
        _ => return None,
    };
    let two_step = declared.get("two_step").and_then(Value::as_bool)?;
    Some(ToolPolicy {
        required_role,
        two_step,
    })
}

/// Whether `role` may see and call `tool`: only when the tool declares a policy and the role
/// reaches its required role. Deny by default.
pub fn may_call(role: Role, tool: &Tool) -> Result<ToolPolicy, Error> {
    let Some(policy) = policy_of(tool) else {
        return Err(Error::Refused(format!(
            "{} declares no access policy, so nobody may call it",
            tool.name
        )));
    };
    if role < policy.required_role {
        return Err(Error::Refused(format!(
            "{} requires the {} role; your role is {}",
            tool.name,
            role_name(policy.required_role),
            role_name(role)
        )));
    }
    Ok(policy)
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Responder => "responder",
        Role::Admin => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(meta: Option<MetaObject>) -> Tool {
        let tool = Tool::new("some_tool", "does things", rmcp::model::JsonObject::new());
        match meta {
            Some(meta) => tool.with_meta(meta),
            None => tool,
        }
    }

    #[test]
    fn a_tool_without_a_declaration_is_denied_to_every_role() {
        for role in [Role::Viewer, Role::Responder, Role::Admin] {
            assert!(may_call(role, &tool(None)).is_err());
            assert!(may_call(role, &tool(Some(MetaObject::new()))).is_err());
        }
    }

    #[test]
    fn declarations_are_read_back_and_enforced() {
        let privileged = tool(Some(changes(Role::Responder)));
        assert_eq!(
            policy_of(&privileged),
            Some(ToolPolicy {
                required_role: Role::Responder,
                two_step: true
            })
        );
        assert!(may_call(Role::Viewer, &privileged).is_err());
        assert!(may_call(Role::Responder, &privileged).is_ok());
        assert!(may_call(Role::Viewer, &tool(Some(reads(Role::Viewer)))).is_ok());
        assert!(may_call(Role::Responder, &tool(Some(reads(Role::Admin)))).is_err());
    }
}
