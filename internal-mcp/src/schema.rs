//! Schema introspection, so a model can write correct SQL: the tables the reader may read, their
//! columns, types (with enum values), comments, keys and indexes, and how many rows the planner
//! expects for the caller's organisation (to the nearest power of ten). It runs on the reader
//! connection like everything else, so a table the reader cannot read does not exist as far as
//! these tools are concerned.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::Error;
use crate::reader::{Reader, ScopedTransaction};

/// One readable table, as `list_tables` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableSummary {
    pub name: String,
    /// What the table holds, from its COMMENT.
    pub comment: Option<String>,
    /// How many rows the caller's organisation has in it, as an order of magnitude (1, 10, 100,
    /// ...): the planner's estimate, rounded, because a precise estimate moves with the column
    /// statistics of every organisation's rows.
    pub estimated_rows: f64,
}

/// One table in detail, as `describe_table` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableDescription {
    pub name: String,
    pub comment: Option<String>,
    pub estimated_rows: f64,
    pub columns: Vec<ColumnDescription>,
    /// PRIMARY KEY, UNIQUE, FOREIGN KEY and CHECK constraints, as SQL.
    pub constraints: Vec<String>,
    /// Index definitions: filter and join on their leading columns to keep queries cheap.
    pub indexes: Vec<String>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct ColumnDescription {
    pub name: String,
    /// The SQL type, e.g. `timestamp with time zone`, `double precision`, `severity`.
    #[sqlx(rename = "data_type")]
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
    pub default: Option<String>,
    pub comment: Option<String>,
    /// For enum types: the allowed values, in order.
    pub enum_values: Option<Vec<String>>,
}

const READABLE_TABLES: &str = "
    SELECT c.relname::text AS name, obj_description(c.oid, 'pg_class') AS comment
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
       AND has_table_privilege(c.oid, 'SELECT')";

/// The tables the reader may read, with comments and the caller's row estimates.
pub async fn list_tables(
    reader: &Reader,
    organization_id: Uuid,
) -> Result<Vec<TableSummary>, Error> {
    let mut transaction = reader.begin(organization_id).await?;
    let tables: Vec<(String, Option<String>)> =
        sqlx::query_as(&format!("{READABLE_TABLES} ORDER BY c.relname"))
            .fetch_all(&mut *transaction)
            .await?;
    let mut summaries = Vec::with_capacity(tables.len());
    for (name, comment) in tables {
        let estimated_rows = estimate_rows(&mut transaction, &name).await?;
        summaries.push(TableSummary {
            name,
            comment,
            estimated_rows,
        });
    }
    transaction.rollback().await?;
    Ok(summaries)
}

/// One readable table in detail; any other name is "not found", whether or not it exists.
pub async fn describe_table(
    reader: &Reader,
    organization_id: Uuid,
    name: &str,
) -> Result<TableDescription, Error> {
    let mut transaction = reader.begin(organization_id).await?;
    let table: Option<(String, Option<String>)> =
        sqlx::query_as(&format!("{READABLE_TABLES} AND c.relname = $1"))
            .bind(name)
            .fetch_optional(&mut *transaction)
            .await?;
    let Some((name, comment)) = table else {
        let known: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT name FROM ({READABLE_TABLES}) t ORDER BY 1"
        ))
        .fetch_all(&mut *transaction)
        .await?;
        return Err(Error::NotFound(format!(
            "no readable table named {name:?}; the readable tables are: {}",
            known.join(", ")
        )));
    };
    let qualified = format!("public.{}", quote_identifier(&name));
    let columns: Vec<ColumnDescription> = sqlx::query_as(
        "SELECT a.attname::text AS name,
                format_type(a.atttypid, a.atttypmod) AS data_type,
                NOT a.attnotnull AS nullable,
                pg_get_expr(d.adbin, d.adrelid) AS default,
                col_description(a.attrelid, a.attnum) AS comment,
                (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                   FROM pg_catalog.pg_enum e WHERE e.enumtypid = a.atttypid) AS enum_values
           FROM pg_catalog.pg_attribute a
           LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
    )
    .bind(&qualified)
    .fetch_all(&mut *transaction)
    .await?;
    let constraints: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s %s', conname, pg_get_constraintdef(oid))
           FROM pg_catalog.pg_constraint WHERE conrelid = $1::regclass
          ORDER BY contype DESC, conname",
    )
    .bind(&qualified)
    .fetch_all(&mut *transaction)
    .await?;
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_catalog.pg_index WHERE indrelid = $1::regclass ORDER BY indexrelid",
    )
    .bind(&qualified)
    .fetch_all(&mut *transaction)
    .await?;
    let estimated_rows = estimate_rows(&mut transaction, &name).await?;
    transaction.rollback().await?;
    Ok(TableDescription {
        name,
        comment,
        estimated_rows,
        columns,
        constraints,
        indexes,
        note: "Rows of other organisations are invisible (row-level security); there is no need to filter by \
               organization_id, though joining on it keeps joins on the composite keys."
            .into(),
    })
}

/// The order of magnitude of the planner's row estimate for `SELECT * FROM table` as the caller
/// sees it (row-level security applied), which costs no scan.
async fn estimate_rows(transaction: &mut ScopedTransaction, table: &str) -> Result<f64, Error> {
    let plan: sqlx::types::Json<Value> = sqlx::query_scalar(&format!(
        "EXPLAIN (FORMAT JSON) SELECT * FROM public.{}",
        quote_identifier(table)
    ))
    .fetch_one(&mut **transaction)
    .await?;
    let estimate = plan
        .0
        .pointer("/0/Plan/Plan Rows")
        .and_then(Value::as_f64)
        .unwrap_or_default();
    Ok(order_of_magnitude(estimate))
}

/// The power of ten nearest to `rows` (on a log scale); 0 for fewer than one.
fn order_of_magnitude(rows: f64) -> f64 {
    if rows.is_nan() || rows < 1.0 {
        return 0.0;
    }
    10f64.powf(rows.log10().round())
}

/// `name` as a quoted SQL identifier. Names come from the catalog, but quoting costs nothing.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::order_of_magnitude;

    #[test]
    fn row_estimates_are_rounded_to_a_power_of_ten() {
        for (estimate, shown) in [
            (0.0, 0.0),
            (1.0, 1.0),
            (3.0, 1.0),
            (4.0, 10.0),
            (2_900.0, 1_000.0),
            (3_300.0, 10_000.0),
            (f64::NAN, 0.0),
        ] {
            assert_eq!(order_of_magnitude(estimate), shown, "{estimate}");
        }
    }
}
