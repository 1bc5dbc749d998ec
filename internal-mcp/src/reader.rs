//! Read-only SQL on the reader connection: the layered defences, in the order a query meets them.
//!
//! 1. The caller's SQL must stand on its own as exactly one statement before anything is built
//!    around it: it is parsed alone (the extended query protocol's Parse, never planned or run),
//!    which refuses several statements and text that does not parse (an unbalanced `)`, an open
//!    comment or string). Text that parses alone has balanced parentheses, quotes and comments, so
//!    once it is wrapped it can only be the wrapper's subquery: it cannot close the wrapper and
//!    append a branch, and a statement that is no query (`SET`, `DECLARE`, `COPY`) fails to parse
//!    there.
//! 2. It is wrapped as `SELECT NULL, NULL, substring(convert_to(row_to_json(q)::text, 'UTF8') FOR
//!    N + 1) FROM (<sql>) AS q LIMIT <max_rows + 1>`: each row crosses the wire as at most N + 1
//!    *bytes* (not characters).
//! 3. The wrapped statement is checked and run inside PostgreSQL, by `internal_mcp_guarded_query`
//!    (demo-backend's migration 0005), in the caller's rights: its plan must have the wrapper's
//!    `Limit` at its root and no node that writes or locks rows, and the highest estimated total
//!    cost of any node under that root must be under the limit (a `Limit` scales its own cost down
//!    by the fraction of rows it expects to read; the nodes below it are what tells a
//!    lazily-yielding huge join from a cheap query). What the planner and the executor produce
//!    stays in the database unless it is bounded: a plan larger than `max_plan_bytes` is refused,
//!    and every error is cut to 1,000 characters, so a constant folded to 300 MB and quoted in a
//!    plan or an error message never reaches internal-mcp's memory. The function refuses to run
//!    when called from a query, so the model's SQL cannot use it to run SQL held in a string.
//! 4. It runs as `internal_mcp_reader`, which may only SELECT the product's tables and cannot call
//!    the functions the migrations took away ([`crate::hardening`] lists them).
//! 5. In a read-only transaction of its own, on a connection that starts with the statement and
//!    lock timeouts ([`session_settings`]): the guard function refuses a transaction that is not
//!    read-only, and sets `app.organization_id` for that transaction only (row-level security shows
//!    only that organisation's rows). The function is handed the organisation by internal-mcp; the
//!    model's SQL cannot call it (3.) nor set the organisation (SET is no query, `set_config` is
//!    revoked).
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
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Executor as _, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::config::Limits;
use crate::error::Error;
use crate::text::beginning_within;

/// The longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 100_000;

/// The largest plan (EXPLAIN's JSON) that may leave the database, in bytes. A plan quotes the
/// query's constants, folded: a 100 kB query's plan is well under it, one that folds
/// `repeat('x', 300000000)` into a filter is refused in the database.
const MAX_PLAN_BYTES: i32 = 1024 * 1024;

/// The longest PostgreSQL message passed on to the caller, in bytes.
const MAX_MESSAGE_BYTES: usize = 2000;

/// The SQLSTATE `internal_mcp_guarded_query` raises when the estimated cost is over the limit;
/// its message names the plan's top node.
const OVER_THE_COST_LIMIT: &str = "IM001";

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

    /// Fails unless a reader connection runs with [`session_settings`]: a connection pooler or
    /// a server that ignores start-up options would leave the timeouts unset.
    pub async fn check_session_settings(&self) -> Result<(), Error> {
        let expected = session_settings(&self.limits);
        let names: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
        // pg_settings holds each value in its base unit (milliseconds for the timeouts), as sent.
        let actual: Vec<(String, String)> =
            sqlx::query_as("SELECT name, setting FROM pg_settings WHERE name = ANY($1)")
                .bind(&names)
                .fetch_all(&self.pool)
                .await
                .map_err(|error| {
                    Error::Startup(format!("cannot read the reader's settings: {error}"))
                })?;
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|(name, value)| {
                let found = actual.iter().find(|(actual, _)| actual == name);
                match found {
                    Some((_, setting)) if setting == value => None,
                    Some((_, setting)) => Some(format!("{name} is {setting:?}, not {value:?}")),
                    None => Some(format!("{name} is unknown to the server")),
                }
            })
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(Error::Startup(format!(
                "the reader's connections do not run with internal-mcp's settings (does something on the way drop start-up options?): {}",
                wrong.join("; ")
            )))
        }
    }

    /// Starts a read-only transaction that sees only `organization_id`'s rows, in one round trip.
    /// The timeouts and the rest of [`session_settings`] come with the connection.
    ///
    /// Dropping the transaction rolls it back: sqlx queues the `ROLLBACK` and the pool flushes it
    /// when the connection is released, off the caller's path.
    pub async fn begin(&self, organization_id: Uuid) -> Result<ScopedTransaction, Error> {
        // Fixed text and a UUID (hex digits and dashes only). Two statements in one
        // simple-protocol message save a round trip; no caller text ever goes through this path.
        let begin = format!(
            "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ;
             SET LOCAL app.organization_id = '{organization_id}'"
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

        // No BEGIN: the guard function sets the organisation and checks that its statement's
        // transaction is read-only (the connection's default), so the query costs one round trip
        // after the parse (and none for the parse of a text this connection parsed before).
        let mut connection = self.pool.acquire().await?;
        parse_alone(&mut connection, sql, &self.limits).await?;
        let wrapped = wrap_query(sql, max_rows, max_bytes);
        let mut rows = Vec::new();
        let mut columns = Vec::new();
        let mut bytes = 0usize;
        let mut truncation = None;
        let mut highest_cost = f64::INFINITY;
        {
            // The first row carries the plan's highest cost and no data; the query's rows follow.
            let mut stream = sqlx::query_as::<_, (Option<f64>, Option<Vec<u8>>)>(
                "SELECT highest_cost, encoded FROM public.internal_mcp_guarded_query($1, $2, $3, $4, true)",
            )
            .bind(organization_id)
            .bind(&wrapped)
            .bind(self.limits.max_query_cost)
            .bind(MAX_PLAN_BYTES)
            .fetch(&mut *connection);
            while let Some((cost, encoded)) = stream
                .try_next()
                .await
                .map_err(|error| self.refusal(error))?
            {
                let Some(encoded) = encoded else {
                    highest_cost = cost.unwrap_or(f64::INFINITY);
                    continue;
                };
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
        drop(connection);
        Ok(SelectResult {
            columns,
            row_count: rows.len(),
            rows,
            truncated: truncation.is_some(),
            truncation,
            cost: self.cost_band(highest_cost),
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
        let mut connection = self.pool.acquire().await?;
        parse_alone(&mut connection, sql, &self.limits).await?;
        // The plan of the statement run_select would send, checked in the database as it would be.
        let (highest_cost, plan): (f64, sqlx::types::Json<Value>) = sqlx::query_as(
            "SELECT highest_cost, plan FROM public.internal_mcp_guarded_query($1, $2, $3, $4, false)",
        )
        .bind(organization_id)
        .bind(wrap_query(
            sql,
            self.limits.max_rows,
            self.limits.max_result_bytes,
        ))
        .bind(self.limits.max_query_cost)
        .bind(MAX_PLAN_BYTES)
        .fetch_one(&mut *connection)
        .await
        .map_err(|error| self.failure(error))?;
        drop(connection);
        let mut text = String::new();
        render_plan(callers_plan(&plan.0), 0, &mut text);
        Ok(PlanSummary {
            within_limit: highest_cost <= self.limits.max_query_cost,
            cost: self.cost_band(highest_cost),
            cost_limit: self.limits.max_query_cost,
            plan: text,
        })
    }

    /// A failure of `internal_mcp_guarded_query`: the cost check's refusal, or any other failure.
    fn refusal(&self, error: sqlx::Error) -> Error {
        if let sqlx::Error::Database(database_error) = &error
            && database_error.code().as_deref() == Some(OVER_THE_COST_LIMIT)
        {
            return Error::Refused(format!(
                "refused before running: the query's estimated cost is above the limit of {:.0}. The plan starts \
                 with: {}. Narrow it down: filter metric_samples by series_id and a ts range (its primary key), \
                 aggregate in SQL, avoid cross joins; explain_select shows the whole plan",
                self.limits.max_query_cost,
                capped(database_error.message(), 200)
            ));
        }
        self.failure(error)
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

/// The settings every reader connection starts with (sent as start-up options, so they cost no
/// round trip), in the names and base units `pg_settings` shows:
///
/// - the statement and lock timeouts, and a bound on a transaction left idle;
/// - read-only, repeatable-read transactions by default, so a statement run on its own (as
///   `run_select`'s is) is read-only without a `BEGIN`;
/// - timestamps in UTC;
/// - no JIT compilation: a query under the cost limit runs for at most seconds, and compiling it
///   costs tens of milliseconds (about 22 ms measured on a group-by over six hours of one
///   organisation's samples that ran in 200 ms) that such a query rarely earns back.
pub fn session_settings(limits: &Limits) -> Vec<(&'static str, String)> {
    let timeout_ms = limits.statement_timeout.as_millis();
    vec![
        ("statement_timeout", timeout_ms.to_string()),
        ("lock_timeout", (timeout_ms / 2).max(100).to_string()),
        (
            "idle_in_transaction_session_timeout",
            timeout_ms.saturating_mul(4).max(10_000).to_string(),
        ),
        ("default_transaction_read_only", "on".to_owned()),
        (
            "default_transaction_isolation",
            "repeatable read".to_owned(),
        ),
        ("TimeZone", "UTC".to_owned()),
        ("jit", "off".to_owned()),
    ]
}

/// `options` with [`session_settings`] added to the start-up options of every connection.
pub fn with_session_settings(options: PgConnectOptions, limits: &Limits) -> PgConnectOptions {
    // PostgreSQL splits start-up options at spaces; a backslash keeps one in a value.
    options.options(
        session_settings(limits)
            .into_iter()
            .map(|(name, value)| (name, value.replace('\\', "\\\\").replace(' ', "\\ "))),
    )
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
    // PostgreSQL quotes values in messages; internal_mcp_guarded_query cuts them in the database.
    let message = capped(database_error.message(), MAX_MESSAGE_BYTES);
    let advice = match code.as_str() {
        "57014" => format!(
            "The query ran longer than the statement timeout of {} ms and PostgreSQL cancelled it. Narrow it \
             (filter metric_samples by series_id and a ts range) or aggregate more.",
            limits.statement_timeout.as_millis()
        ),
        "42501" => {
            "internal-mcp's reader role may only read the product's tables (see list_tables); \
                    credentials, administrative and file functions are out of its reach."
                .to_owned()
        }
        "25006" => "Only reads are allowed: queries run in a read-only transaction.".to_owned(),
        "42601" => format!("{NOT_ONE_QUERY}."),
        "0A000" => {
            "run_select takes one read-only query; data-modifying statements are not accepted."
                .to_owned()
        }
        "42P01" | "42703" | "42883" => {
            "Check names and types with list_tables and describe_table.".to_owned()
        }
        "55P03" => "A lock could not be taken in time; try again.".to_owned(),
        "53100" | "53200" | "53400" | "54000" => {
            "The query needs more memory or temporary space than allowed; narrow it.".to_owned()
        }
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

/// The caller's query as a subquery whose rows come back as UTF-8 JSON (after empty cost and plan
/// columns: the shape of `internal_mcp_guarded_query`'s rows), capped in rows and in
/// bytes per row (a row longer than `max_bytes` comes back cut at `max_bytes + 1` bytes and is
/// never kept). The newlines keep a trailing `--` comment from swallowing the suffix. Only text
/// that [`parse_alone`] accepted is ever wrapped.
fn wrap_query(sql: &str, max_rows: usize, max_bytes: usize) -> String {
    format!(
        "SELECT NULL::float8, NULL::jsonb, substring(convert_to(row_to_json(q)::text, 'UTF8') FROM 1 FOR {bytes}) FROM (\n{sql}\n) AS q LIMIT {limit}",
        bytes = max_bytes + 1,
        limit = max_rows + 1,
    )
}

/// Parses the caller's text alone, as exactly one statement, without planning or running it: the
/// extended query protocol's Parse refuses several statements and text that does not parse, and
/// no constant is folded, so nothing the text computes reaches this side. (sqlx keeps the parsed
/// statement in the connection's bounded statement cache; it is never executed.)
async fn parse_alone(
    connection: &mut PgConnection,
    sql: &str,
    limits: &Limits,
) -> Result<(), Error> {
    connection
        .prepare(sql)
        .await
        .map(drop)
        .map_err(|error| explain_query_error(error, limits))
}

/// The caller's own plan inside the wrapper's: under the `Limit` root, and under the subquery
/// scan of `q` when PostgreSQL did not flatten the subquery.
fn callers_plan(explained: &Value) -> &Value {
    let root = explained.pointer("/0/Plan").unwrap_or(explained);
    let Some(under_limit) = children(root).next() else {
        return root;
    };
    let is_wrapper_scan = node_type(under_limit) == "Subquery Scan"
        && under_limit.get("Alias").and_then(Value::as_str) == Some("q");
    match children(under_limit).next() {
        Some(query) if is_wrapper_scan => query,
        _ => under_limit,
    }
}

/// `text` cut to at most `max_bytes` bytes on a character boundary, marked when cut.
fn capped(text: &str, max_bytes: usize) -> String {
    match beginning_within(text, max_bytes) {
        None => text.to_owned(),
        Some(beginning) => format!("{beginning}…"),
    }
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
            "SELECT NULL::float8, NULL::jsonb, substring(convert_to(row_to_json(q)::text, 'UTF8') FROM 1 FOR 101) FROM (\nSELECT 1 -- trailing comment\n) AS q LIMIT 11"
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
    fn the_plan_shown_is_the_callers_without_estimates() {
        let nested_loop = serde_json::json!({
            "Node Type": "Nested Loop", "Join Type": "Inner", "Total Cost": 1e9, "Plan Rows": 1e12,
            "Plans": [{"Node Type": "Seq Scan", "Relation Name": "alerts", "Alias": "a", "Total Cost": 5.0}]
        });
        let flattened = serde_json::json!([{"Plan": {"Node Type": "Limit", "Total Cost": 10.0, "Plans": [nested_loop]}}]);
        let wrapped = serde_json::json!([{"Plan": {"Node Type": "Limit", "Plans": [
            {"Node Type": "Subquery Scan", "Alias": "q", "Plans": [nested_loop]}]}}]);
        for explained in [flattened, wrapped] {
            let mut text = String::new();
            render_plan(callers_plan(&explained), 0, &mut text);
            assert_eq!(text, "Nested Loop\n  Seq Scan on alerts a\n");
        }
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        assert_eq!(capped("abc", 3), "abc");
        assert_eq!(capped("\u{20AC}\u{20AC}", 4), "\u{20AC}…");
    }
}
