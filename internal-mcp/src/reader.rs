//! Read-only SQL on the reader connection: the layered defences, in the order a query meets them.
//!
//! 1. The caller's SQL must stand on its own as exactly one plain query before anything is built
//!    around it: it is sent alone, as `EXPLAIN (FORMAT JSON) <sql>`, with the extended query
//!    protocol, which refuses several statements and text that does not parse (an unbalanced `)`,
//!    an open comment or string). A plan that writes or locks rows (`ModifyTable`, `LockRows`) is
//!    refused. Text that parses alone has balanced parentheses, quotes and comments, so once it is
//!    wrapped it can only be the wrapper's subquery: it cannot close the wrapper and append a branch.
//! 2. The cost check reads that plan of the caller's query itself, every node of it: the highest
//!    estimated total cost of any node must be under the limit. A `LIMIT` (the caller's or the
//!    wrapper's) scales its own node's cost down by the fraction of rows it expects to need, so the
//!    nodes below it are what tells a lazily-yielding huge join from a cheap query.
//! 3. The query then runs wrapped as `SELECT substring(convert_to(row_to_json(q)::text, 'UTF8') FOR
//!    N + 1) FROM (<sql>) AS q LIMIT <max_rows + 1>`: each row crosses the wire as at most N + 1
//!    *bytes* (not characters), so memory is bounded before anything is buffered. A subquery can
//!    only be a query: `SET`, `DECLARE`, `CREATE TABLE AS` and the like fail to parse there.
//! 4. It runs as `internal_mcp_reader`, which may only SELECT the product's tables and cannot call
//!    the functions the migrations took away ([`crate::hardening`] lists them).
//! 5. Inside `BEGIN READ ONLY`, with `SET LOCAL app.organization_id` (row-level security shows only
//!    that organisation's rows), `statement_timeout` and `lock_timeout`; the transaction is always
//!    rolled back.
//! 6. Rows are read until `max_rows` or `max_result_bytes` is reached, and the result says whether
//!    it was truncated. Values keep their JSON types; timestamps are RFC 3339 in UTC.
//!
//! What comes back about plans is deliberately coarse: the plan's shape, whether it is within the
//! limit and a cost band, never per-node row estimates or precise costs. PostgreSQL estimates with
//! column statistics gathered over every organisation's rows, so precise figures would tell one
//! tenant about another's values.

use std::fmt::Write as _;
use std::time::Instant;

use futures_util::TryStreamExt as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::config::Limits;
use crate::error::Error;

/// The longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 100_000;

/// Plan nodes that write or lock rows: a query whose plan holds one is not a plain read.
const WRITING_PLAN_NODES: [&str; 2] = ["ModifyTable", "LockRows"];

/// What `run_select` and `explain_select` say when the text is not exactly one plain query.
pub const NOT_ONE_QUERY: &str = "run_select takes exactly one query: a SELECT (or VALUES, TABLE, or WITH ... SELECT). \
     Other statements (SET, COPY, DO, CALL, DECLARE, transaction control), data-modifying statements, row locks \
     (FOR UPDATE) and several statements at once are not accepted";

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
    /// How the planner's cost compares with the limit, as a band (see [`CostBand`]).
    pub cost: CostBand,
    pub elapsed_ms: f64,
}

/// What `explain_select` returns: enough to write a cheaper query, nothing that depends on the
/// values of rows the caller cannot see.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Whether run_select would run it (the estimated cost is under the limit).
    pub within_limit: bool,
    /// How the estimated cost compares with the limit.
    pub cost: CostBand,
    /// The limit run_select enforces, in PostgreSQL's cost units.
    pub cost_limit: f64,
    /// The plan of the query, one node per line, indented by depth: node types, tables, indexes,
    /// conditions and sort keys. Row estimates and costs are left out on purpose.
    pub plan: String,
}

/// The planner's estimated cost of a query, relative to the limit, in four bands. Coarse on
/// purpose: precise costs move with other organisations' column statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostBand {
    /// Under 1% of the limit.
    Cheap,
    /// 1% to 10% of the limit.
    Moderate,
    /// 10% of the limit up to the limit.
    Expensive,
    /// Above the limit: run_select refuses it before it runs.
    OverTheLimit,
}

/// The caller's query, checked to be one plain query, with the planner's verdict on it.
#[derive(Debug)]
struct CheckedQuery<'a> {
    sql: &'a str,
    /// The root of the plan of the caller's query alone (not wrapped).
    plan: Value,
    /// The highest estimated total cost of any node of that plan.
    highest_cost: f64,
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
    /// and lock timeouts set and timestamps in UTC, in one round trip.
    ///
    /// Dropping the transaction rolls it back: sqlx queues the `ROLLBACK` and the pool flushes it
    /// when the connection is released, off the caller's path.
    pub async fn begin(&self, organization_id: Uuid) -> Result<ScopedTransaction, Error> {
        let timeout_ms = self.limits.statement_timeout.as_millis();
        // Fixed text: numbers, and a UUID (hex digits and dashes only). Several statements in one
        // simple-protocol message save round trips; no caller text ever goes through this path.
        let begin = format!(
            "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ;
             SET LOCAL statement_timeout = {timeout_ms};
             SET LOCAL lock_timeout = {lock_timeout_ms};
             SET LOCAL idle_in_transaction_session_timeout = {idle_ms};
             SET LOCAL TimeZone = 'UTC';
             SET LOCAL app.organization_id = '{organization_id}'",
            lock_timeout_ms = (timeout_ms / 2).max(100),
            idle_ms = timeout_ms.saturating_mul(4).max(10_000),
        );
        Ok(self.pool.begin_with(begin).await?)
    }

    /// Runs one read-only query for `organization_id`, refusing it first when it is not exactly
    /// one plain query or its estimated cost is over the limit. `max_rows` can only lower the
    /// configured cap.
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

        let mut transaction = self.begin(organization_id).await?;
        let checked = self.check_query(&mut transaction, sql).await?;
        if checked.highest_cost > self.limits.max_query_cost {
            return Err(Error::Refused(format!(
                "refused before running: the query's estimated cost is above the limit of {:.0}. The plan starts \
                 with: {}. Narrow it down: filter metric_samples by series_id and a ts range (its primary key), \
                 aggregate in SQL, avoid cross joins; explain_select shows the whole plan",
                self.limits.max_query_cost,
                node_line(&checked.plan)
            )));
        }

        let wrapped = wrap_query(checked.sql, max_rows, max_bytes);
        let mut rows = Vec::new();
        let mut columns = Vec::new();
        let mut bytes = 0usize;
        let mut truncation = None;
        {
            let mut stream = sqlx::query_scalar::<_, Vec<u8>>(&wrapped)
                .persistent(false)
                .fetch(&mut *transaction);
            while let Some(encoded) = stream
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
                if bytes + encoded.len() > max_bytes {
                    truncation = Some(format!(
                        "the result reached the limit of {max_bytes} bytes after {} rows; select fewer columns or rows",
                        rows.len()
                    ));
                    break;
                }
                bytes += encoded.len();
                let OrderedObject(fields) = serde_json::from_slice(&encoded).map_err(|error| {
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
        drop(transaction);
        Ok(SelectResult {
            columns,
            row_count: rows.len(),
            rows,
            truncated: truncation.is_some(),
            truncation,
            cost: self.cost_band(checked.highest_cost),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The plan of a query as `run_select` would run it, without running it: its shape, whether
    /// it is within the limit, and a cost band.
    pub async fn explain_select(
        &self,
        organization_id: Uuid,
        sql: &str,
    ) -> Result<PlanSummary, Error> {
        let sql = normalize_query(sql)?;
        let mut transaction = self.begin(organization_id).await?;
        let checked = self.check_query(&mut transaction, sql).await?;
        // The wrapped statement must parse too, and its root must be the wrapper's Limit; this
        // is what run_select would send.
        let wrapped = explain(
            &mut transaction,
            &wrap_query(
                checked.sql,
                self.limits.max_rows,
                self.limits.max_result_bytes,
            ),
            &self.limits,
        )
        .await?;
        drop(transaction);
        if node_type(&wrapped) != "Limit" {
            return Err(Error::Query(NOT_ONE_QUERY.to_owned()));
        }
        let mut text = String::new();
        render_plan(&checked.plan, 0, &mut text);
        Ok(PlanSummary {
            within_limit: checked.highest_cost <= self.limits.max_query_cost,
            cost: self.cost_band(checked.highest_cost),
            cost_limit: self.limits.max_query_cost,
            plan: text,
        })
    }

    /// Sends the caller's SQL alone (as `EXPLAIN`) and refuses it unless it is one plain query.
    async fn check_query<'a>(
        &self,
        transaction: &mut ScopedTransaction,
        sql: &'a str,
    ) -> Result<CheckedQuery<'a>, Error> {
        let plan = explain(transaction, sql, &self.limits).await?;
        if let Some(node) = find_node(&plan, &|node| WRITING_PLAN_NODES.contains(&node_type(node)))
        {
            return Err(Error::Query(format!(
                "{NOT_ONE_QUERY}; this one's plan has a {} node (data-modifying statements and row locks are refused)",
                node_type(node)
            )));
        }
        let highest_cost = highest_total_cost(&plan);
        Ok(CheckedQuery {
            sql,
            plan,
            highest_cost,
        })
    }

    fn cost_band(&self, cost: f64) -> CostBand {
        let limit = self.limits.max_query_cost;
        if cost > limit || cost.is_nan() {
            CostBand::OverTheLimit
        } else if cost > limit / 10.0 {
            CostBand::Expensive
        } else if cost > limit / 100.0 {
            CostBand::Moderate
        } else {
            CostBand::Cheap
        }
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
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::InvalidArgument(format!(
            "sql is longer than {MAX_SQL_BYTES} bytes"
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

/// The caller's query as a subquery whose rows come back as UTF-8 JSON, capped in rows and in
/// bytes per row (a row longer than `max_bytes` comes back cut at `max_bytes + 1` bytes and is
/// never kept). The newlines keep a trailing `--` comment from swallowing the suffix. Only text
/// that [`Reader::check_query`] accepted (it parses alone) is ever wrapped.
fn wrap_query(sql: &str, max_rows: usize, max_bytes: usize) -> String {
    format!(
        "SELECT substring(convert_to(row_to_json(q)::text, 'UTF8') FROM 1 FOR {bytes}) FROM (\n{sql}\n) AS q LIMIT {limit}",
        bytes = max_bytes + 1,
        limit = max_rows + 1,
    )
}

/// `EXPLAIN (FORMAT JSON) <statement>`, as the plan's root node. The extended protocol refuses
/// several statements in one message.
async fn explain(
    transaction: &mut ScopedTransaction,
    statement: &str,
    limits: &Limits,
) -> Result<Value, Error> {
    let explained: sqlx::types::Json<Value> =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {statement}"))
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

fn node_type(node: &Value) -> &str {
    node.get("Node Type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn children(node: &Value) -> impl Iterator<Item = &Value> {
    node.get("Plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The first node of the plan, depth first, for which `matches` holds.
fn find_node<'a>(node: &'a Value, matches: &dyn Fn(&Value) -> bool) -> Option<&'a Value> {
    if matches(node) {
        return Some(node);
    }
    children(node).find_map(|child| find_node(child, matches))
}

/// The highest estimated total cost of any node: a `Limit` scales its own cost down by the
/// fraction of rows it expects to read, the nodes below it do not. A node without a cost counts
/// as infinitely expensive (fail closed).
fn highest_total_cost(node: &Value) -> f64 {
    let own = node
        .get("Total Cost")
        .and_then(Value::as_f64)
        .unwrap_or(f64::INFINITY);
    children(node).map(highest_total_cost).fold(own, f64::max)
}

/// The plan, one node per line, indented by depth, without estimates.
fn render_plan(node: &Value, depth: usize, out: &mut String) {
    out.push_str(&"  ".repeat(depth));
    out.push_str(&node_line(node));
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
    for child in children(node) {
        render_plan(child, depth + 1, out);
    }
}

/// One line for a plan node, without estimates: `Index Scan on metric_samples using
/// metric_samples_pkey`.
fn node_line(node: &Value) -> String {
    let text = |key: &str| node.get(key).and_then(Value::as_str);
    let mut out = String::from(text("Node Type").unwrap_or("?"));
    if let Some(strategy) = text("Strategy").filter(|strategy| *strategy != "Plain") {
        let _ = write!(out, " ({strategy})");
    }
    if let Some(join) = text("Join Type").filter(|join| *join != "Inner") {
        let _ = write!(out, " ({join} join)");
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
    out
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
        // The cap counts bytes: 40,000 three-byte characters are 120,000 bytes.
        assert!(normalize_query(&format!("SELECT '{}'", "\u{20AC}".repeat(40_000))).is_err());
        let wrapped = wrap_query("SELECT 1 -- trailing comment", 10, 100);
        assert_eq!(
            wrapped,
            "SELECT substring(convert_to(row_to_json(q)::text, 'UTF8') FROM 1 FOR 101) FROM (\nSELECT 1 -- trailing comment\n) AS q LIMIT 11"
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
    fn the_cost_is_the_highest_of_any_node_and_the_plan_shows_no_estimates() {
        let plan = serde_json::json!({
            "Node Type": "Limit", "Startup Cost": 0.0, "Total Cost": 10.0, "Plan Rows": 11.0,
            "Plans": [{"Node Type": "Nested Loop", "Join Type": "Inner", "Total Cost": 1e9, "Plan Rows": 1e12,
                "Plans": [{"Node Type": "Seq Scan", "Relation Name": "alerts", "Alias": "a", "Total Cost": 5.0}]}]
        });
        assert_eq!(highest_total_cost(&plan), 1e9);
        assert_eq!(
            highest_total_cost(&serde_json::json!({"Node Type": "Result"})),
            f64::INFINITY
        );
        let mut text = String::new();
        render_plan(&plan, 0, &mut text);
        assert_eq!(text, "Limit\n  Nested Loop\n    Seq Scan on alerts a\n");
        assert!(find_node(&plan, &|node| node_type(node) == "Seq Scan").is_some());
        assert!(find_node(&plan, &|node| node_type(node) == "ModifyTable").is_none());
    }
}
