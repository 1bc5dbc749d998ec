//! The one path every tool call takes: read the arguments, set up the caller, run the body, and
//! turn any failure, whichever step it comes from, into the same kind of result.
//!
//! - Arguments arrive as the raw JSON object and are read here, not by rmcp's extractor, so a
//!   mistake (unknown field, bad enum value, wrong type, missing field) is a tool result with
//!   `isError` naming the argument, which the model can read and correct (spec 2025-11-25,
//!   SEP-1303), never a JSON-RPC error. The schema advertised is still the argument type's.
//! - A token the API rejects is forgotten from the identity cache at whichever step the API
//!   said so, so a fixed or rotated token is tried afresh on the next call.

use std::marker::PhantomData;

use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::JsonObject;
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde::de::DeserializeOwned;

use super::{Json, ToolFailure};
use crate::error::Error;
use crate::server::ExternalServer;
use crate::tools::ToolCall;

/// A tool's arguments as sent, to be read as an `A` inside [`ExternalServer::run`].
///
/// Named like rmcp's own extractor on purpose: `#[tool]` advertises the schema of a parameter
/// typed `Parameters<A>` as the tool's `inputSchema`, whichever module it comes from. Unlike
/// rmcp's, extracting it never fails.
#[derive(Debug)]
pub struct Parameters<A> {
    arguments: JsonObject,
    wanted: PhantomData<fn() -> A>,
}

impl<A> Parameters<A> {
    pub fn new(arguments: JsonObject) -> Self {
        Self {
            arguments,
            wanted: PhantomData,
        }
    }
}

impl<A: DeserializeOwned> Parameters<A> {
    /// The arguments as an `A`, or an [`Error::InvalidInput`] naming the argument at fault.
    pub fn read(self) -> Result<A, Error> {
        serde_path_to_error::deserialize(serde_json::Value::Object(self.arguments)).map_err(
            |error| {
                let path = error.path().to_string();
                let detail = error.into_inner().to_string();
                if path == "." {
                    Error::InvalidInput(format!("the arguments are wrong: {detail}"))
                } else {
                    Error::InvalidInput(format!("the argument `{path}` is wrong: {detail}"))
                }
            },
        )
    }
}

impl<S, A> FromContextPart<ToolCallContext<'_, S>> for Parameters<A> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, McpError> {
        Ok(Self::new(context.arguments.take().unwrap_or_default()))
    }
}

impl<A: JsonSchema> JsonSchema for Parameters<A> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        A::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        A::json_schema(generator)
    }
}

impl ExternalServer {
    /// Runs one tool call: `action` names it in messages ("list incidents"), `body` does the work.
    pub(crate) async fn run<A, T>(
        &self,
        parameters: Parameters<A>,
        context: RequestContext<RoleServer>,
        action: &str,
        body: impl AsyncFnOnce(&ToolCall, A) -> Result<T, Error>,
    ) -> Result<Json<T>, ToolFailure>
    where
        A: DeserializeOwned,
    {
        let arguments = parameters
            .read()
            .map_err(|error| ToolFailure::new(action, &error))?;
        let caller = self
            .caller(&context)
            .await
            .map_err(|error| self.failure(action, None, &error))?;
        let digest = caller.token.digest();
        let call = self.tool_call(caller, &context);
        body(&call, arguments)
            .await
            .map(Json)
            .map_err(|error| self.failure(action, Some(&digest), &error))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::tools::Severity;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        service: String,
        severity: Option<Severity>,
        limit: Option<u32>,
    }

    #[test]
    fn argument_errors_name_the_argument_and_what_it_accepts() {
        let check = |arguments: serde_json::Value, expected: &[&str]| {
            let serde_json::Value::Object(arguments) = arguments else {
                panic!("an object");
            };
            let message = Parameters::<Example>::new(arguments)
                .read()
                .unwrap_err()
                .to_string();
            for part in expected {
                assert!(message.contains(part), "{part:?} missing from {message}");
            }
        };
        check(
            serde_json::json!({ "service": "a", "colour": "red" }),
            &["unknown field `colour`", "`service`"],
        );
        check(
            serde_json::json!({ "service": "a", "severity": "urgent" }),
            &["`severity`", "`urgent`", "`critical`"],
        );
        check(
            serde_json::json!({ "service": "a", "limit": "ten" }),
            &["`limit`", "invalid type", "u32"],
        );
        check(serde_json::json!({}), &["missing field `service`"]);
    }
}
