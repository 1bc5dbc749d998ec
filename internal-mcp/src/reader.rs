//! Read-only SQL on the reader connection: the layered defences, in the order a query meets them.
//!
//! 1. The caller's SQL is wrapped as `SELECT left(row_to_json(q)::text, N) FROM (<sql>) AS q LIMIT
//!    <max_rows + 1>` and sent with the extended query protocol as one unnamed prepared statement.
//!    A subquery can only be a query: `SET`, `RESET`, `DO`, `CALL`, `COPY` and transaction control
//!    are syntax errors there, data-modifying `WITH` is refused inside a subquery, and PostgreSQL
//!    refuses several statements in one prepared statement (`COMMIT; DROP ...`).
//! 2. It runs as `internal_mcp_reader`, which may only SELECT the product's tables and cannot call
//!    the functions the migration took away (`set_config`, `pg_read_file`, advisory locks, ...).
//! 3. Inside `BEGIN READ ONLY`, with `SET LOCAL app.organization_id` (row-level security shows only
//!    that organisation's rows), `statement_timeout` and `lock_timeout`; the transaction is always
//!    rolled back.
//! 4. `EXPLAIN (FORMAT JSON)` first: a query whose estimated total cost exceeds the configured
//!    limit is refused with the plan's top line.
//! 5. Rows are read until `max_rows` or `max_result_bytes` is reached, and the result says whether
//!    it was truncated. Values keep their JSON types; timestamps are RFC 3339 in UTC.

use std::fmt::Write as _;
use std::time::Instant;

use futures_util::TryStreamExt as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sqlx::{Executor as _, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::config::Limits;
use crate::error::Error;

/// The longest SQL text accepted.
pub const MAX_SQL_CHARACTERS: usize = 100_000;

/// A read-only transaction on the reader connection, scoped to one organisation. Dropping it rolls
/// it back.
pub type ScopedTransaction = Transaction<'static, Postgres>;

/// The reader pool with the limits every query runs under.
#[derive(Debug, Clone)]
pub struct Reader {
    pool: PgPool,
    limits: Limits,
}

/// What `run_select` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectResult {
    /// Column names, in the query's order.
    pub columns: Vec<String>,
    /// One array per row, values in column order, with their JSON types (numbers stay numbers,
    /// timestamps are RFC 3339 strings in UTC, json/jsonb columns are JSON).
    pub rows: Vec<Vec<Value>>,
    pub row_count: usize,
    /// True when more rows exist than were returned.
    pub truncated: bool,
    /// Why the result stopped early, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    /// The planner's estimated total cost of the query.
    pub estimated_cost: f64,
    pub elapsed_ms: f64,
}

/// What `explain_select` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanSummary {
    /// The planner's estimated total cost, in PostgreSQL's arbitrary units.
    pub estimated_cost: f64,
    /// The planner's estimate of the rows the query produces.
    pub estimated_rows: f64,
    /// Queries above this cost are refused by `run_select`.
    pub cost_limit: f64,
    pub within_limit: bool,
    /// The plan, one node per line, indented by depth. The two top nodes (a Limit and a Subquery
    /// Scan on `q`) are internal-mcp's wrapper.
    pub plan: String,
}

/// A JSON object read with its keys in order (`serde_json::Map` would sort them).
struct OrderedObject(Vec<(String, Value)>);

impl Reader {
    pub fn new(pool: PgPool, limits: Limits) -> Self {
        Self { pool, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A failed query on this connection, as the caller should read it.
    pub fn failure(&self, error: sqlx::Error) -> Error {
        explain_query_error(error, &self.limits)
    }

    /// Starts a read-only transaction that sees only `organization_id`'s rows, with the statement
    /// and lock timeouts set and timestamps in UTC.
    pub async fn begin(&self, organization_id: Uuid) -> Result<ScopedTransaction, Error> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
            .await?;
        let timeout_ms = self.limits.statement_timeout.as_millis();
        // Fixed text: numbers, and a UUID (hex digits and dashes only). Several statements in one
        // simple-protocol message save round trips; no caller text ever goes through this path.
        let settings = format!(
            "SET LOCAL statement_timeout = {timeout_ms};
             SET LOCAL lock_timeout = {lock_timeout_ms};
             SET LOCAL idle_in_transaction_session_timeout = {idle_ms};
             SET LOCAL TimeZone = 'UTC';
             SET LOCAL app.organization_id = '{organization_id}'",
            lock_timeout_ms = (timeout_ms / 2).max(100),
            idle_ms = timeout_ms.saturating_mul(4).max(10_000),
        );
        // `Executor::execute` on a `&str` uses the simple protocol (several statements, one round trip).
        (&mut *transaction).execute(settings.as_str()).await?;
        Ok(transaction)
    }

    /// Runs one read-only query for `organization_id`, refusing it first when its estimated cost is
    /// over the limit. `max_rows` can only lower the configured cap.
    pub async fn run_select(
        &self,
        organization_id: Uuid,
        sql: &str,
        max_rows: Option<usize>,
    ) -> Result<SelectResult, Error> {
        let started = Instant::now();
        let sql = normalize_query(sql)?;
        let max_rows = max_rows
            .unwrap_or(self.limits.max_rows)
            .clamp(1, self.limits.max_rows);
        let max_bytes = self.limits.max_result_bytes;
        let wrapped = wrap_query(sql, max_rows, max_bytes);

        let mut transaction = self.begin(organization_id).await?;
        let plan = explain(&mut transaction, &wrapped, &self.limits).await?;
        let estimated_cost = plan_total_cost(&plan);
        if estimated_cost > self.limits.max_query_cost {
            return Err(Error::Refused(format!(
                "refused before running: the query's estimated cost is {estimated_cost:.0}, above the limit of {:.0}. \
                 The plan starts with: {}. Narrow it down: filter metric_samples by series_id and a ts range (its \
                 primary key), aggregate in SQL, avoid cross joins; explain_select shows the whole plan",
                self.limits.max_query_cost,
                user_plan_top_line(&plan)
            )));
        }

        let mut rows = Vec::new();
        let mut columns = Vec::new();
        let mut bytes = 0usize;
        let mut truncation = None;
        {
            let mut stream = sqlx::query_scalar::<_, String>(&wrapped)
                .persistent(false)
                .fetch(&mut *transaction);
            while let Some(text) = stream
                .try_next()
                .await
                .map_err(|error| explain_query_error(error, &self.limits))?
            {
                if rows.len() == max_rows {
                    truncation = Some(format!(
                        "only the first {max_rows} rows are returned; add ORDER BY and LIMIT, or aggregate"
                    ));
                    break;
                }
                if bytes + text.len() > max_bytes {
                    truncation = Some(format!(
                        "the result reached the limit of {max_bytes} bytes after {} rows; select fewer columns or rows",
                        rows.len()
                    ));
                    break;
                }
                bytes += text.len();
                let OrderedObject(fields) = serde_json::from_str(&text).map_err(|error| {
                    Error::Query(format!("a row could not be read as JSON: {error}"))
                })?;
                if columns.is_empty() {
                    columns = fields.iter().map(|(name, _)| name.clone()).collect();
                }
                rows.push(
                    fields
                        .into_iter()
                        .map(|(_, value)| value)
                        .collect::<Vec<_>>(),
                );
            }
        }
        transaction.rollback().await?;
        Ok(SelectResult {
            columns,
            row_count: rows.len(),
            rows,
            truncated: truncation.is_some(),
            truncation,
            estimated_cost,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The plan of a query as `run_select` would run it, without running it.
    pub async fn explain_select(
        &self,
        organization_id: Uuid,
        sql: &str,
    ) -> Result<PlanSummary, Error> {
        let sql = normalize_query(sql)?;
        let wrapped = wrap_query(sql, self.limits.max_rows, self.limits.max_result_bytes);
        let mut transaction = self.begin(organization_id).await?;
        let plan = explain(&mut transaction, &wrapped, &self.limits).await?;
        transaction.rollback().await?;
        let estimated_cost = plan_total_cost(&plan);
        let mut text = String::new();
        render_plan(&plan, 0, &mut text);
        Ok(PlanSummary {
            estimated_cost,
            estimated_rows: user_plan_root(&plan)
                .get("Plan Rows")
                .and_then(Value::as_f64)
                .unwrap_or_default(),
            cost_limit: self.limits.max_query_cost,
            within_limit: estimated_cost <= self.limits.max_query_cost,
            plan: text,
        })
    }
}

/// Turns a failure of a query on the reader connection into a message the caller can act on.
pub fn explain_query_error(error: sqlx::Error, limits: &Limits) -> Error {
    let sqlx::Error::Database(database_error) = &error else {
        return Error::Database(error);
    };
    let code = database_error
        .code()
        .map(|code| code.into_owned())
        .unwrap_or_default();
    let message = database_error.message();
    let advice = match code.as_str() {
        "57014" => format!(
            "The query ran longer than the statement timeout of {} ms and PostgreSQL cancelled it. Narrow it \
             (filter metric_samples by series_id and a ts range) or aggregate more.",
            limits.statement_timeout.as_millis()
        ),
        "42501" => "internal-mcp's reader role may only read the product's tables (see list_tables); \
                    credentials, administrative and file functions are out of its reach."
            .to_owned(),
        "25006" => "Only reads are allowed: queries run in a read-only transaction.".to_owned(),
        "42601" => "run_select takes exactly one query: a SELECT (or VALUES, or WITH ... SELECT). Other statements \
                    (SET, COPY, DO, CALL, transaction control) and several statements at once are not accepted."
            .to_owned(),
        "0A000" => "run_select takes one read-only query; data-modifying statements are not accepted.".to_owned(),
        "42P01" | "42703" | "42883" => "Check names and types with list_tables and describe_table.".to_owned(),
        "55P03" => "A lock could not be taken in time; try again.".to_owned(),
        "53100" | "53200" | "53400" | "54000" => "The query needs more memory or temporary space than allowed; narrow it.".to_owned(),
        _ => String::new(),
    };
    Error::Query(
        format!("PostgreSQL refused the query: {message} (SQLSTATE {code}). {advice}")
            .trim_end()
            .to_owned(),
    )
}

/// Trims whitespace and trailing semicolons, and refuses empty, oversized or NUL-containing text.
fn normalize_query(sql: &str) -> Result<&str, Error> {
    if sql.chars().count() > MAX_SQL_CHARACTERS {
        return Err(Error::InvalidArgument(format!(
            "sql is longer than {MAX_SQL_CHARACTERS} characters"
        )));
    }
    if sql.contains('\0') {
        return Err(Error::InvalidArgument(
            "sql contains a NUL character".into(),
        ));
    }
    let trimmed = sql
        .trim()
        .trim_end_matches(|character: char| character == ';' || character.is_whitespace());
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument(
            "sql is empty: pass one SELECT query".into(),
        ));
    }
    Ok(trimmed)
}

/// The caller's query as a subquery whose rows come back as JSON text, capped in rows and in
/// characters per row. The newlines keep a trailing `--` comment from swallowing the suffix.
fn wrap_query(sql: &str, max_rows: usize, max_bytes: usize) -> String {
    format!(
        "SELECT left(row_to_json(q)::text, {characters}) FROM (\n{sql}\n) AS q LIMIT {limit}",
        characters = max_bytes + 1,
        limit = max_rows + 1,
    )
}

/// `EXPLAIN (FORMAT JSON)` of `wrapped`, as the plan's root node.
async fn explain(
    transaction: &mut ScopedTransaction,
    wrapped: &str,
    limits: &Limits,
) -> Result<Value, Error> {
    let explained: sqlx::types::Json<Value> =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {wrapped}"))
            .persistent(false)
            .fetch_one(&mut **transaction)
            .await
            .map_err(|error| explain_query_error(error, limits))?;
    explained
        .0
        .get(0)
        .and_then(|entry| entry.get("Plan"))
        .cloned()
        .ok_or_else(|| {
            Error::Query("PostgreSQL returned a plan internal-mcp could not read".into())
        })
}

fn plan_total_cost(plan: &Value) -> f64 {
    plan.get("Total Cost")
        .and_then(Value::as_f64)
        .unwrap_or(f64::INFINITY)
}

/// The first node of the caller's own query, below internal-mcp's Limit and Subquery Scan.
fn user_plan_root(plan: &Value) -> &Value {
    let mut node = plan;
    loop {
        let node_type = node
            .get("Node Type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let is_wrapper = node_type == "Limit"
            || (node_type == "Subquery Scan"
                && node.get("Alias").and_then(Value::as_str) == Some("q"));
        match node.get("Plans").and_then(|plans| plans.get(0)) {
            Some(child) if is_wrapper => node = child,
            _ => return node,
        }
    }
}

fn user_plan_top_line(plan: &Value) -> String {
    let mut line = String::new();
    describe_node(user_plan_root(plan), &mut line);
    line
}

fn render_plan(node: &Value, depth: usize, out: &mut String) {
    out.push_str(&"  ".repeat(depth));
    describe_node(node, out);
    out.push('\n');
    for (label, key) in [
        ("index condition", "Index Cond"),
        ("filter", "Filter"),
        ("join filter", "Join Filter"),
        ("hash condition", "Hash Cond"),
        ("merge condition", "Merge Cond"),
    ] {
        if let Some(condition) = node.get(key).and_then(Value::as_str) {
            let _ = writeln!(out, "{}  {label}: {condition}", "  ".repeat(depth));
        }
    }
    if let Some(keys) = node.get("Sort Key").and_then(Value::as_array) {
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "{}  sort key: {}", "  ".repeat(depth), keys.join(", "));
    }
    for child in node
        .get("Plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        render_plan(child, depth + 1, out);
    }
}

/// One line for a plan node: `Seq Scan on metric_samples (cost=0.00..1234.00 rows=100000)`.
fn describe_node(node: &Value, out: &mut String) {
    let text = |key: &str| node.get(key).and_then(Value::as_str);
    let number = |key: &str| node.get(key).and_then(Value::as_f64).unwrap_or_default();
    out.push_str(text("Node Type").unwrap_or("?"));
    if let Some(strategy) = text("Strategy").filter(|strategy| *strategy != "Plain") {
        let _ = write!(out, " ({strategy})");
    }
    if let Some(relation) = text("Relation Name") {
        let _ = write!(out, " on {relation}");
        if let Some(alias) = text("Alias").filter(|alias| *alias != relation) {
            let _ = write!(out, " {alias}");
        }
    }
    if let Some(index) = text("Index Name") {
        let _ = write!(out, " using {index}");
    }
    let _ = write!(
        out,
        " (cost={:.2}..{:.2} rows={:.0})",
        number("Startup Cost"),
        number("Total Cost"),
        number("Plan Rows")
    );
}

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = OrderedObject;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    fields.push((name, value));
                }
                Ok(OrderedObject(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_trimmed_and_wrapped_as_one_subquery() {
        assert_eq!(normalize_query("  SELECT 1 ;; \n").unwrap(), "SELECT 1");
        assert!(normalize_query(" ; ").is_err());
        assert!(normalize_query("SELECT '\0'").is_err());
        let wrapped = wrap_query("SELECT 1 -- trailing comment", 10, 100);
        assert_eq!(
            wrapped,
            "SELECT left(row_to_json(q)::text, 101) FROM (\nSELECT 1 -- trailing comment\n) AS q LIMIT 11"
        );
    }

    #[test]
    fn rows_keep_their_column_order_and_duplicates() {
        let OrderedObject(fields) =
            serde_json::from_str(r#"{"z": 1, "a": "x", "z": 2.5}"#).unwrap();
        let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["z", "a", "z"]);
        assert_eq!(fields[2].1, serde_json::json!(2.5));
    }

    #[test]
    fn the_top_line_skips_the_wrapper() {
        let plan = serde_json::json!({
            "Node Type": "Limit", "Startup Cost": 0.0, "Total Cost": 10.0, "Plan Rows": 11.0,
            "Plans": [{"Node Type": "Subquery Scan", "Alias": "q", "Plans": [
                {"Node Type": "Nested Loop", "Startup Cost": 0.0, "Total Cost": 1e9, "Plan Rows": 1e12}
            ]}]
        });
        assert_eq!(
            user_plan_top_line(&plan),
            "Nested Loop (cost=0.00..1000000000.00 rows=1000000000000)"
        );
        let mut text = String::new();
        render_plan(&plan, 0, &mut text);
        assert_eq!(text.lines().count(), 3);
    }
}
