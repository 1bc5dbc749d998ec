//! A small line chart of a tool's time series, drawn as inline SVG on the server: deterministic
//! (same input, same bytes), no script, every text escaped. Non-finite values are skipped.

use std::fmt::Write;

use crate::events::Chart;
use crate::web::markdown::escape;

const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 36.0;
/// Colours that stay apart for common colour blindness (Okabe–Ito).
const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

/// The chart as an `<svg>` element, or a short note when there is nothing to draw.
pub fn render(chart: &Chart) -> String {
    let points: Vec<(i64, f64)> = chart
        .series
        .iter()
        .flat_map(|series| &series.points)
        .filter(|point| point.value.is_finite())
        .map(|point| (point.at.timestamp_millis(), point.value))
        .collect();
    let title = escape(&chart.title);
    if points.is_empty() {
        return format!("<p class=\"chart-empty\">{title}: no data to draw.</p>");
    }
    let (first, last) = points
        .iter()
        .fold((i64::MAX, i64::MIN), |(low, high), (at, _)| {
            (low.min(*at), high.max(*at))
        });
    let (mut low, mut high) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(low, high), (_, value)| {
            (low.min(*value), high.max(*value))
        });
    low = low.min(0.0);
    if high <= low {
        high = low + 1.0;
    }
    let span = (last - first).max(1) as f64;
    let x = |at: i64| LEFT + (at - first) as f64 / span * (WIDTH - LEFT - RIGHT);
    let y = |value: f64| TOP + (high - value) / (high - low) * (HEIGHT - TOP - BOTTOM);
    let unit = chart
        .unit
        .as_deref()
        .map(|unit| format!(" {}", escape(unit)))
        .unwrap_or_default();

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\">"
    );
    let _ = write!(svg, "<title>{title}</title>");
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"14\" font-size=\"12\" fill=\"#222\">{title}</text>"
    );
    // Axes and their extremes.
    let (axis_bottom, axis_right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
    let _ = write!(
        svg,
        "<path d=\"M{LEFT} {TOP}V{axis_bottom}H{axis_right}\" fill=\"none\" stroke=\"#888\" stroke-width=\"1\"/>"
    );
    for value in [high, low] {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\" fill=\"#444\">{}{unit}</text>",
            LEFT - 4.0,
            number(y(value) + 3.0),
            number(value)
        );
    }
    for (at, anchor) in [(first, "start"), (last, "end")] {
        let label = chrono::DateTime::from_timestamp_millis(at)
            .map(|time| time.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"#444\">{label}</text>",
            number(x(at)),
            number(axis_bottom + 14.0)
        );
    }
    // One line per series, and its legend entry.
    let mut legend_x = LEFT;
    for (index, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|point| point.value.is_finite())
            .map(|point| {
                format!(
                    "{},{}",
                    number(x(point.at.timestamp_millis())),
                    number(y(point.value))
                )
            })
            .collect();
        if path.len() == 1 {
            let (cx, cy) = path[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"2.5\" fill=\"{colour}\"/>"
            );
        } else if !path.is_empty() {
            let _ = write!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"/>",
                path.join(" ")
            );
        }
        let label = escape(&series.label);
        let legend_y = HEIGHT - 6.0;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"3\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#222\">{label}</text>",
            number(legend_x),
            number(legend_y - 4.0),
            number(legend_x + 14.0),
            number(legend_y)
        );
        legend_x += 24.0 + 6.0 * series.label.chars().count().min(40) as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// A coordinate or value with at most two decimals and no trailing zeros.
fn number(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::events::{ChartPoint, ChartSeries};

    fn chart() -> Chart {
        let at = |minute: u32| Utc.with_ymd_and_hms(2025, 6, 12, 15, minute, 0).unwrap();
        Chart {
            title: "error rate <checkout>".into(),
            unit: Some("%".into()),
            series: vec![
                ChartSeries {
                    label: "checkout".into(),
                    points: vec![
                        ChartPoint {
                            at: at(0),
                            value: 0.5,
                        },
                        ChartPoint {
                            at: at(10),
                            value: 7.25,
                        },
                        ChartPoint {
                            at: at(20),
                            value: f64::NAN,
                        },
                        ChartPoint {
                            at: at(30),
                            value: 1.0,
                        },
                    ],
                },
                ChartSeries {
                    label: "payments".into(),
                    points: vec![ChartPoint {
                        at: at(15),
                        value: 2.0,
                    }],
                },
            ],
        }
    }

    #[test]
    fn the_chart_is_the_snapshot() {
        let expected = concat!(
            "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 480 180\" role=\"img\" aria-label=\"error rate &lt;checkout&gt;\">",
            "<title>error rate &lt;checkout&gt;</title>",
            "<text x=\"52\" y=\"14\" font-size=\"12\" fill=\"#222\">error rate &lt;checkout&gt;</text>",
            "<path d=\"M52 24V144H468\" fill=\"none\" stroke=\"#888\" stroke-width=\"1\"/>",
            "<text x=\"48\" y=\"27\" font-size=\"10\" text-anchor=\"end\" fill=\"#444\">7.25 %</text>",
            "<text x=\"48\" y=\"147\" font-size=\"10\" text-anchor=\"end\" fill=\"#444\">0 %</text>",
            "<text x=\"52\" y=\"158\" font-size=\"10\" text-anchor=\"start\" fill=\"#444\">2025-06-12 15:00 UTC</text>",
            "<text x=\"468\" y=\"158\" font-size=\"10\" text-anchor=\"end\" fill=\"#444\">2025-06-12 15:30 UTC</text>",
            "<polyline points=\"52,135.72 190.67,24 468,127.45\" fill=\"none\" stroke=\"#0072b2\" stroke-width=\"1.5\"/>",
            "<rect x=\"52\" y=\"170\" width=\"10\" height=\"3\" fill=\"#0072b2\"/><text x=\"66\" y=\"174\" font-size=\"10\" fill=\"#222\">checkout</text>",
            "<circle cx=\"260\" cy=\"110.9\" r=\"2.5\" fill=\"#d55e00\"/>",
            "<rect x=\"124\" y=\"170\" width=\"10\" height=\"3\" fill=\"#d55e00\"/><text x=\"138\" y=\"174\" font-size=\"10\" fill=\"#222\">payments</text>",
            "</svg>"
        );
        let rendered = render(&chart());
        assert_eq!(rendered, expected, "\n{rendered}\n");
        assert_eq!(
            render(&chart()),
            rendered,
            "the same input draws the same bytes"
        );
    }

    #[test]
    fn nothing_to_draw_is_said_in_words() {
        let mut empty = chart();
        for series in &mut empty.series {
            series.points.retain(|point| point.value.is_nan());
        }
        assert_eq!(
            render(&empty),
            "<p class=\"chart-empty\">error rate &lt;checkout&gt;: no data to draw.</p>"
        );
    }

    #[test]
    fn flat_series_and_hostile_labels_are_safe() {
        let mut flat = chart();
        flat.series[0].label = "<script>alert(1)</script>".into();
        for point in &mut flat.series[0].points {
            point.value = 0.0;
        }
        flat.series.truncate(1);
        let rendered = render(&flat);
        assert!(!rendered.contains("<script"), "{rendered}");
        assert!(
            !rendered.contains("NaN") && !rendered.contains("inf"),
            "{rendered}"
        );
    }
}
