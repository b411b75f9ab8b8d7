//! The SVG plot of a run: throughput per second (with the ceiling as a
//! dashed line) above, latency p50 / p99 / max per second (log scale) below.

use super::stats::SecondSummary;
use std::fmt::Write;

/// Width of the picture.
const WIDTH: f64 = 900.0;
/// Left margin (axis labels).
const LEFT: f64 = 80.0;
/// Right margin (legend).
const RIGHT: f64 = 130.0;
/// Top and height of the throughput panel.
const TOP_PANEL: (f64, f64) = (70.0, 180.0);
/// Top and height of the latency panel.
const LOW_PANEL: (f64, f64) = (310.0, 210.0);
/// Height of the picture.
const HEIGHT: f64 = 560.0;

/// Series colours: throughput, p50, p99, max.
const COLOURS: [&str; 4] = ["#2b6cb0", "#2f855a", "#dd6b20", "#c53030"];

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `ticks` ticks up to
/// `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// x of second `s` (1-based, at the end of that second).
fn x_of(s: f64, seconds: f64) -> f64 {
    LEFT + (s / seconds.max(1.0)) * (WIDTH - LEFT - RIGHT)
}

/// A polyline through `points`.
fn polyline(out: &mut String, points: &[(f64, f64)], colour: &str, dashed: bool) {
    let coords: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{} points="{}"/>"#,
        if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        },
        coords.join(" ")
    );
}

/// Axis line, grid line and label helpers.
fn hline(out: &mut String, y: f64, label: &str) {
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
        WIDTH - RIGHT,
        LEFT - 6.0,
        y + 4.0,
        escape(label)
    );
}

/// A legend entry at row `i`.
fn legend(out: &mut String, top: f64, i: usize, colour: &str, label: &str, dashed: bool) {
    let y = top + 10.0 + i as f64 * 18.0;
    let x = WIDTH - RIGHT + 14.0;
    let _ = writeln!(
        out,
        r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="2"{}/><text x="{:.1}" y="{:.1}">{}</text>"#,
        x + 22.0,
        if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        },
        x + 28.0,
        y + 4.0,
        escape(label)
    );
}

/// Draws the plot.
pub fn plot(title: &str, timeline: &[SecondSummary], ceiling: Option<f64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let seconds = timeline.len() as f64;
    // Throughput panel.
    let (top, height) = TOP_PANEL;
    let peak = timeline
        .iter()
        .map(|s| s.requests as f64)
        .fold(ceiling.unwrap_or(0.0), f64::max)
        .max(1.0);
    let step = nice_step(peak, 4.0);
    let y_max = (peak / step).ceil() * step;
    let y_of = |v: f64| top + height - v / y_max * height;
    let mut v = 0.0;
    while v <= y_max + step / 2.0 {
        hline(&mut out, y_of(v), &format!("{v:.0}"));
        v += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">requests per second</text>"#,
        top - 8.0
    );
    let points: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| (x_of(s.second as f64, seconds), y_of(s.requests as f64)))
        .collect();
    polyline(&mut out, &points, COLOURS[0], false);
    legend(&mut out, top, 0, COLOURS[0], "req/s", false);
    if let Some(c) = ceiling {
        polyline(
            &mut out,
            &[(LEFT, y_of(c)), (WIDTH - RIGHT, y_of(c))],
            "#718096",
            true,
        );
        legend(&mut out, top, 1, "#718096", "health/live", true);
    }
    // Latency panel, log scale.
    let (top, height) = LOW_PANEL;
    let values = timeline
        .iter()
        .flat_map(|s| [s.p50_ms, s.p99_ms, s.max_ms])
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_exp, hi_exp) = if lo <= hi {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (-1.0, 1.0)
    };
    let y_of = |v: f64| {
        let e = v.max(10f64.powf(lo_exp)).log10();
        top + height - (e - lo_exp) / (hi_exp - lo_exp) * height
    };
    let mut e = lo_exp;
    while e <= hi_exp + 0.5 {
        let v = 10f64.powf(e);
        let label = if v >= 1.0 {
            format!("{v:.0} ms")
        } else {
            format!("{v} ms")
        };
        hline(&mut out, y_of(v), &label);
        e += 1.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">latency per second (log scale)</text>"#,
        top - 8.0
    );
    type Pick = fn(&SecondSummary) -> f64;
    let series: [(&str, Pick, &str); 3] = [
        ("p50", |s| s.p50_ms, COLOURS[1]),
        ("p99", |s| s.p99_ms, COLOURS[2]),
        ("max", |s| s.max_ms, COLOURS[3]),
    ];
    for (i, (name, pick, colour)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = timeline
            .iter()
            .filter(|s| s.requests > 0)
            .map(|s| (x_of(s.second as f64, seconds), y_of(pick(s))))
            .collect();
        polyline(&mut out, &points, colour, false);
        legend(&mut out, top, i, colour, name, false);
    }
    // x axis.
    let axis_y = top + height;
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#333"/>"##,
        WIDTH - RIGHT
    );
    let step = nice_step(seconds.max(1.0), 10.0).max(1.0);
    let mut s = 0.0;
    while s <= seconds + 0.01 {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s:.0}</text>"#,
            x_of(s, seconds),
            axis_y + 16.0
        );
        s += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        axis_y + 34.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_nice() {
        for (max, ticks, step) in [
            (100.0, 4.0, 50.0),
            (7.0, 10.0, 1.0),
            (48_000.0, 4.0, 20_000.0),
        ] {
            assert!((nice_step(max, ticks) - step).abs() < 1e-9, "{max}/{ticks}");
        }
    }

    #[test]
    fn plots_an_empty_and_a_short_run() {
        assert!(plot("empty", &[], None).ends_with("</svg>\n"));
        let timeline = [SecondSummary {
            second: 1,
            requests: 1000,
            errors: 0,
            p50_ms: 0.5,
            p99_ms: 2.0,
            max_ms: 9.0,
        }];
        let svg = plot("one <second>", &timeline, Some(2000.0));
        assert!(svg.contains("one &lt;second&gt;"));
        assert!(svg.contains("polyline"));
    }
}
