//! What a tool call leaves behind: the trace row (`ToolCallOutcome`: status, duration, rows,
//! bytes, the truncated flag, the SQL, a chart of any time series), the text the model reads
//! (capped, with a pointer to `host__read_result`), and the full result kept for paging.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::events::{CallStatus, Chart, ChartPoint, ChartSeries, ToolCallOutcome};
use crate::mcp::{ToolOutcome, cap_text};

/// The most series one chart draws.
const MAX_SERIES: usize = 4;

/// What a finished call gives the trace and the model.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub outcome: ToolCallOutcome,
    /// The text the model reads.
    pub for_model: String,
    /// The whole result, kept so the model can page through it.
    pub full_text: String,
}

/// The trace and the model's view of an MCP result. `secrets` are withheld wherever they appear.
pub(crate) fn record_result(
    call_id: &str,
    tool: &str,
    arguments: &Value,
    result: &ToolOutcome,
    max_chars: usize,
    secrets: &[&str],
) -> Recorded {
    // The client capped `text`; the structured content is whole (its text copy is the same JSON).
    let full_text = match (&result.structured, result.truncated) {
        (Some(structured), true) => structured.to_string(),
        _ => result.text.clone(),
    };
    let full_text = withhold(&full_text, secrets);
    let (text, cut_here) = cap_text(&full_text, max_chars);
    let server_truncated = result
        .structured
        .as_ref()
        .and_then(|structured| structured.get("truncated"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let status = if result.is_error {
        CallStatus::ToolError
    } else {
        CallStatus::Ok
    };
    let for_model = model_view(call_id, &text, cut_here, full_text.chars().count());
    Recorded {
        outcome: ToolCallOutcome {
            status,
            text,
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            truncated: cut_here || server_truncated || result.truncated,
            rows: result.structured.as_ref().and_then(row_count),
            bytes: full_text.len() as u64,
            sql: sql_of(tool, arguments),
            chart: result
                .structured
                .as_ref()
                .filter(|_| !result.is_error)
                .and_then(|structured| chart_of(tool, structured)),
        },
        for_model,
        full_text,
    }
}

/// A call the host did not make, or that did not complete: the message is both trace and result.
pub(crate) fn record_without_result(
    status: CallStatus,
    tool: &str,
    arguments: &Value,
    message: &str,
    duration_ms: u64,
) -> Recorded {
    Recorded {
        outcome: ToolCallOutcome {
            status,
            text: message.to_owned(),
            duration_ms,
            truncated: false,
            rows: None,
            bytes: message.len() as u64,
            sql: sql_of(tool, arguments),
            chart: None,
        },
        for_model: message.to_owned(),
        full_text: message.to_owned(),
    }
}

/// The text the model reads for a result: what fits, and how to read on when it was cut.
pub(crate) fn model_view(call_id: &str, text: &str, cut: bool, full_chars: usize) -> String {
    if !cut {
        return text.to_owned();
    }
    let shown = text.chars().count();
    format!(
        "{text}\n[The result was cut: {shown} of {full_chars} characters shown. To read on, call \
         host__read_result with call_id \"{call_id}\" and offset {shown}.]"
    )
}

/// `text` with every secret replaced, so a server that still puts a token in its content cannot
/// hand it to the model or the log.
pub(crate) fn withhold(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|secret| secret.len() >= 8)
        .fold(text.to_owned(), |text, secret| {
            text.replace(secret, "[withheld by the host]")
        })
}

fn row_count(structured: &Value) -> Option<u64> {
    if let Some(count) = structured.get("row_count").and_then(Value::as_u64) {
        return Some(count);
    }
    [
        "rows",
        "windows",
        "suspects",
        "rules",
        "worst_hours",
        "records",
        "tables",
    ]
    .iter()
    .find_map(|key| structured.get(*key).and_then(Value::as_array))
    .map(|items| items.len() as u64)
}

/// The SQL a tool ran, when it takes SQL as an argument.
fn sql_of(tool: &str, arguments: &Value) -> Option<String> {
    if !matches!(tool, "run_select" | "explain_select") {
        return None;
    }
    arguments
        .get("sql")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A chart of the time series in a result: `run_select` rows with a timestamp column and numeric
/// columns, or the first list of objects with a timestamp and numbers (such as `slo_burn`'s
/// hours). Fewer than two points draw nothing.
pub(crate) fn chart_of(tool: &str, structured: &Value) -> Option<Chart> {
    if let (Some(Value::Array(columns)), Some(Value::Array(rows))) =
        (structured.get("columns"), structured.get("rows"))
    {
        let names: Vec<String> = columns
            .iter()
            .map(|column| column.as_str().unwrap_or_default().to_owned())
            .collect();
        let records: Vec<Map<String, Value>> = rows
            .iter()
            .filter_map(Value::as_array)
            .map(|row| names.iter().cloned().zip(row.iter().cloned()).collect())
            .collect();
        return chart_of_records(tool, &records);
    }
    let object = structured.as_object()?;
    object.iter().find_map(|(key, value)| {
        let records: Vec<Map<String, Value>> = value
            .as_array()?
            .iter()
            .filter_map(|item| item.as_object().cloned())
            .collect();
        chart_of_records(&format!("{tool}: {key}"), &records)
    })
}

fn chart_of_records(title: &str, records: &[Map<String, Value>]) -> Option<Chart> {
    let first = records.first()?;
    let time_key = first
        .iter()
        .find(|(_, value)| value.as_str().and_then(parse_time).is_some())
        .map(|(key, _)| key.clone())?;
    let numeric_keys: Vec<String> = first
        .iter()
        .filter(|(key, value)| **key != time_key && value.is_number())
        .map(|(key, _)| key.clone())
        .take(MAX_SERIES)
        .collect();
    let series: Vec<ChartSeries> = numeric_keys
        .into_iter()
        .map(|key| {
            let mut points: Vec<ChartPoint> = records
                .iter()
                .filter_map(|record| {
                    let at = record.get(&time_key)?.as_str().and_then(parse_time)?;
                    let value = record.get(&key)?.as_f64()?;
                    Some(ChartPoint { at, value })
                })
                .collect();
            points.sort_by_key(|point| point.at);
            ChartSeries { label: key, points }
        })
        .filter(|series| series.points.len() >= 2)
        .collect();
    if series.is_empty() {
        return None;
    }
    Some(Chart {
        title: title.to_owned(),
        unit: None,
        series,
    })
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn select_rows_with_a_time_column_become_a_chart() {
        let structured = json!({
            "columns": ["minute", "error_rate", "service"],
            "rows": [["2025-06-12T15:02:00Z", 0.5, "a"], ["2025-06-12T15:01:00Z", 0.25, "a"]],
            "row_count": 2, "truncated": false
        });
        let chart = chart_of("run_select", &structured).expect("a chart");
        assert_eq!(chart.series.len(), 1);
        assert_eq!(chart.series[0].label, "error_rate");
        let values: Vec<f64> = chart.series[0]
            .points
            .iter()
            .map(|point| point.value)
            .collect();
        assert_eq!(values, [0.25, 0.5], "points are in time order");
        assert!(chart_of("run_select", &json!({"columns": ["n"], "rows": [[1], [2]]})).is_none());
    }

    #[test]
    fn lists_of_timed_objects_become_a_chart() {
        let structured = json!({
            "service": "checkout-api",
            "worst_hours": [
                {"hour": "2025-06-12T14:00:00Z", "burn_rate": 9.0, "requests": 100.0},
                {"hour": "2025-06-12T13:00:00Z", "burn_rate": 3.0, "requests": 90.0}
            ]
        });
        let chart = chart_of("slo_burn", &structured).expect("a chart");
        assert_eq!(chart.title, "slo_burn: worst_hours");
        assert_eq!(chart.series.len(), 2);
    }

    #[test]
    fn long_results_are_cut_with_a_pointer_and_secrets_are_withheld() {
        let view = model_view("call-1", "abc", true, 10);
        assert!(view.contains("call_id \"call-1\" and offset 3"), "{view}");
        assert_eq!(model_view("call-1", "abc", false, 3), "abc");
        assert_eq!(
            withhold("token imc_secret123 here", &["imc_secret123"]),
            "token [withheld by the host] here"
        );
    }
}
