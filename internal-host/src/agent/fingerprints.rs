//! Remembers what each server's tools looked like, so a tool whose definition changed since the
//! host last listed it (a new description or schema, or a lost read-only annotation: what a
//! compromised or careless server would change to make a model misuse it) is flagged to the user.
//!
//! A tool's fingerprint is the SHA-256 of its canonical definition; one statement stores the new
//! fingerprints and returns the tools whose stored one differed.

use std::collections::BTreeMap;

use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::Error;
use crate::mcp::ToolDescription;

/// The SHA-256 of what the model and the policy read of `tool`.
pub fn digest(tool: &ToolDescription) -> Vec<u8> {
    let definition = json!({
        "description": tool.description,
        "input_schema": super::canonical(&tool.input_schema),
        "read_only": tool.read_only,
        "group": tool.group.as_ref().map(|group| (&group.name, &group.description)),
    });
    Sha256::digest(definition.to_string().as_bytes()).to_vec()
}

/// Stores the fingerprints of `server`'s `tools` and returns the names of those whose definition
/// differs from the one last stored (a tool seen for the first time has not changed).
pub async fn record(
    database: &PgPool,
    server: &str,
    tools: &[ToolDescription],
) -> Result<Vec<String>, Error> {
    // One row per name, or the upsert would touch a row twice.
    let seen: BTreeMap<&str, Vec<u8>> = tools
        .iter()
        .map(|tool| (tool.name.as_str(), digest(tool)))
        .collect();
    if seen.is_empty() {
        return Ok(Vec::new());
    }
    let (names, digests): (Vec<&str>, Vec<Vec<u8>>) = seen.into_iter().unzip();
    // Every part of the statement reads the table as it was before the upsert.
    let changed = sqlx::query_scalar(
        "WITH seen AS (
             SELECT * FROM unnest($2::text[], $3::bytea[]) AS listed (tool, digest)
         ), stored AS (
             INSERT INTO mcp_tool_fingerprints AS f (server, tool, digest)
             SELECT $1, tool, digest FROM seen
             ON CONFLICT (server, tool) DO UPDATE
                SET digest = EXCLUDED.digest, changed_at = now()
              WHERE f.digest <> EXCLUDED.digest
         )
         SELECT f.tool FROM mcp_tool_fingerprints f JOIN seen s USING (tool)
          WHERE f.server = $1 AND f.digest <> s.digest
          ORDER BY f.tool",
    )
    .bind(server)
    .bind(&names)
    .bind(&digests)
    .fetch_all(database)
    .await?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn tool(description: &str, schema: Value, read_only: bool) -> ToolDescription {
        ToolDescription {
            name: "run_select".into(),
            description: description.into(),
            input_schema: schema,
            read_only,
            group: None,
        }
    }

    #[test]
    fn the_digest_changes_with_what_the_model_reads_and_not_with_key_order() {
        let schema = json!({"type": "object", "properties": {"sql": {"type": "string"}, "limit": {"type": "integer"}}});
        let reordered = json!({"properties": {"limit": {"type": "integer"}, "sql": {"type": "string"}}, "type": "object"});
        let base = digest(&tool("Runs one SELECT.", schema.clone(), true));
        assert_eq!(base, digest(&tool("Runs one SELECT.", reordered, true)));
        assert_ne!(
            base,
            digest(&tool(
                "Runs one SELECT. Also email it.",
                schema.clone(),
                true
            ))
        );
        assert_ne!(
            base,
            digest(&tool("Runs one SELECT.", schema.clone(), false))
        );
        assert_ne!(
            base,
            digest(&tool(
                "Runs one SELECT.",
                json!({"type": "object", "properties": {"sql": {"type": "string"}}}),
                true
            ))
        );
    }
}
