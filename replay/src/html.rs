//! The replay report as one self-contained HTML page (`omniroute replay --html FILE`): the same
//! document as the terminal table ([`crate::render`]) plus inline SVG charts drawn with
//! plotters: request latency recorded vs simulated, cost and served share per provider, and the
//! spread over seeds. Nothing is loaded from elsewhere (no script, stylesheet, font or image
//! link), so the file can be mailed, archived or opened offline. Every piece of text from the
//! report is escaped (targets and messages come from configs and logs, not from us).
//!
//! plotters is built without a font feature: it then estimates text sizes itself, and its SVG
//! backend writes labels as `<text>` elements the browser lays out, so drawing needs no system
//! font (CI machines may have none).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::render::{Block, Table, Unit, bucket_labels, document, target_rows};
use crate::report::{LatencyHistogram, ReplayReport, Spread, SpreadRow};

const FONT: &str = "sans-serif";
const WIDTH: u32 = 860;
const RECORDED: RGBColor = RGBColor(140, 140, 140);
const SIMULATED: RGBColor = RGBColor(31, 119, 180);
const BAND: RGBColor = RGBColor(200, 220, 240);

/// The page; `Err` only when a chart cannot be drawn.
pub fn html(report: &ReplayReport) -> Result<String, String> {
    let doc = document(report);
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>omniroute replay: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&report.plan.description)
    );
    // The header (plan, filter, requests, message) first, then the charts, then the details:
    // the charts are what a page is opened for.
    let split = doc
        .iter()
        .position(|b| matches!(b, Block::Title(2, _)))
        .unwrap_or(doc.len());
    let (header, details) = doc.split_at(split);
    for b in header {
        block(&mut o, b);
    }
    // A report that compared nothing (its message says why) has nothing to chart.
    if !(report.message.is_some() && report.requests == 0) {
        o.push_str("<h2>charts</h2>\n");
        figure(
            &mut o,
            "Request latency: how many requests fell in each latency bucket, recorded and \
             simulated.",
            &latency_chart(&report.latency_histogram)?,
        );
        figure(
            &mut o,
            "Per provider: share of the requests served, and everything spent on it (failed \
             attempts included), recorded and simulated.",
            &provider_chart(report)?,
        );
        if let Some(s) = &report.spread {
            figure(
                &mut o,
                "Spread over seeds: each run's difference simulated - recorded (dots), its \
                 p5..p95 band and median; what the outcome estimates' randomness alone moves.",
                &spread_chart(s)?,
            );
        }
    }
    for b in details {
        block(&mut o, b);
    }
    o.push_str("</body>\n</html>\n");
    Ok(o)
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:960px;margin:2em auto;\
padding:0 1em;color:#222;line-height:1.4}\
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}dd{margin:0}\
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.25em .7em;border-bottom:1px solid #eee;\
text-align:left;vertical-align:top}th{border-bottom:2px solid #ccc}td.num,th.num{text-align:right;\
font-variant-numeric:tabular-nums;white-space:nowrap}\
.note{background:#fff6dd;border-left:4px solid #e0a800;padding:.5em .8em}\
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}\
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}svg{max-width:100%;height:auto}";

/// Text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Escaped text with `backtick` spans (commands in the report's wording) as `<code>`.
fn inline(s: &str) -> String {
    let mut o = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(o, "<code>{}</code>", escape(part));
        } else {
            o.push_str(&escape(part));
        }
    }
    o
}

fn block(o: &mut String, b: &Block) {
    match b {
        Block::Title(level, t) => {
            let h = (*level).clamp(1, 6);
            let _ = writeln!(o, "<h{h}>{}</h{h}>", escape(t));
        }
        Block::Fields(f) => {
            o.push_str("<dl>\n");
            for (k, v) in f {
                let _ = writeln!(o, "<dt>{}</dt><dd>{}</dd>", escape(k), inline(v));
            }
            o.push_str("</dl>\n");
        }
        Block::Text(t) => {
            let _ = writeln!(o, "<p>{}</p>", inline(t));
        }
        Block::Note(t) => {
            let _ = writeln!(o, "<p class=\"note\">{}</p>", inline(t));
        }
        Block::Table(t) => table(o, t),
    }
}

fn table(o: &mut String, t: &Table) {
    let class = |i: usize| {
        if t.right.get(i).copied().unwrap_or(false) {
            " class=\"num\""
        } else {
            ""
        }
    };
    o.push_str("<table>\n<thead><tr>");
    for (i, h) in t.head.iter().enumerate() {
        let _ = write!(o, "<th{}>{}</th>", class(i), escape(h));
    }
    o.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        o.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let _ = write!(o, "<td{}>{}</td>", class(i), escape(c));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody>\n</table>\n");
}

fn figure(o: &mut String, caption: &str, svg: &str) {
    let _ = write!(
        o,
        "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
        escape(caption)
    );
}

// ---- charts -------------------------------------------------------------------------------

fn err(e: impl std::fmt::Display) -> String {
    format!("cannot draw a chart: {e}")
}

/// The upper end of an axis that shows `max` (never an empty range, which plotters cannot map),
/// with room above the bars for the legend.
fn top(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * 1.3
    } else {
        1.0
    }
}

/// The label of bar group `x` (an index) from `labels`, or nothing between groups.
fn group_label(labels: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    labels.get(i as usize).cloned().unwrap_or_default()
}

/// Grouped bars (recorded beside simulated) of `values[i] = (recorded, simulated)` on `area`.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    labels: &[String],
    values: &[(f64, f64)],
    y_label: &dyn Fn(&f64) -> String,
) -> Result<(), String> {
    let n = labels.len().max(1);
    let max = values
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top(max))
        .map_err(err)?;
    let x_label = |x: &f64| group_label(labels, *x);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(0)
        .x_labels(n)
        .x_label_formatter(&x_label)
        .y_label_formatter(y_label)
        .y_desc(y_desc)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .draw()
        .map_err(err)?;
    let finite = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
    chart
        .draw_series(values.iter().enumerate().map(|(i, (rec, _))| {
            let x = i as f64;
            Rectangle::new([(x - 0.4, 0.0), (x, finite(*rec))], RECORDED.filled())
        }))
        .map_err(err)?
        .label("recorded")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], RECORDED.filled()));
    chart
        .draw_series(values.iter().enumerate().map(|(i, (_, sim))| {
            let x = i as f64;
            Rectangle::new([(x, 0.0), (x + 0.4, finite(*sim))], SIMULATED.filled())
        }))
        .map_err(err)?
        .label("simulated")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], SIMULATED.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()
        .map_err(err)?;
    if values.is_empty() {
        no_data(area, "no data")?;
    }
    Ok(())
}

/// `what` in the middle of `area` (a chart with nothing to draw).
fn no_data(area: &DrawingArea<SVGBackend<'_>, Shift>, what: &str) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let grey = BLACK.mix(0.6);
    let style = TextStyle::from((FONT, 16).into_font())
        .color(&grey)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(
        what.to_string(),
        (w as i32 / 2, h as i32 / 2),
        style,
    ))
    .map_err(err)
}

/// Draws with `draw` on a `WIDTH` x `height` SVG and returns the SVG text.
fn svg(
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(s)
}

/// Latency buckets, recorded vs simulated.
fn latency_chart(h: &LatencyHistogram) -> Result<String, String> {
    // Axis labels are the buckets' upper bounds alone (the axis says "ms"), so they fit.
    let labels: Vec<String> = bucket_labels(h)
        .iter()
        .map(|l| {
            l.trim_start_matches("<= ")
                .trim_end_matches(" ms")
                .to_string()
        })
        .collect();
    let values: Vec<(f64, f64)> = (0..labels.len())
        .map(|i| {
            let get = |v: &[u64]| v.get(i).copied().unwrap_or(0) as f64;
            (get(&h.recorded), get(&h.simulated))
        })
        .collect();
    // Buckets empty on both sides at either end are left out (the bounds reach 60 s; most
    // traffic uses a few of them). Labels are upper bounds, so the rest still read right.
    let used = |v: &(f64, f64)| v.0 > 0.0 || v.1 > 0.0;
    let first = values.iter().position(used).unwrap_or(0);
    let last = values
        .iter()
        .rposition(used)
        .map_or(values.len(), |i| i + 1);
    let labels = labels.get(first..last).unwrap_or_default();
    let values = values.get(first..last).unwrap_or_default();
    svg(360, |root| {
        bars(
            root,
            "request latency (bucket upper bound, ms)",
            "requests",
            labels,
            values,
            &|v| format!("{v:.0}"),
        )
    })
}

/// Served share and cost per provider, recorded vs simulated.
fn provider_chart(r: &ReplayReport) -> Result<String, String> {
    // provider -> (recorded share, simulated share, recorded $, simulated $); a BTreeMap so the
    // order (and so the bytes) is the same every time.
    let mut by: BTreeMap<&str, [f64; 4]> = BTreeMap::new();
    for t in target_rows(r) {
        let e = by.entry(t.provider).or_default();
        if let Some(s) = t.recorded {
            e[0] += s.share * 100.0;
            e[2] += s.cost_micros as f64 / 1e6;
        }
        if let Some(s) = t.simulated {
            e[1] += s.share * 100.0;
            e[3] += s.cost_micros as f64 / 1e6;
        }
    }
    let labels: Vec<String> = by.keys().map(|p| short(p)).collect();
    let shares: Vec<(f64, f64)> = by.values().map(|v| (v[0], v[1])).collect();
    let costs: Vec<(f64, f64)> = by.values().map(|v| (v[2], v[3])).collect();
    svg(380, |root| {
        let (left, right) = root.split_horizontally(WIDTH / 2);
        bars(
            &left,
            "served share per provider",
            "% of requests",
            &labels,
            &shares,
            &|v| format!("{v:.0}%"),
        )?;
        let cost_label = axis_label(costs.iter().map(|c| c.0.max(c.1)).fold(0.0, f64::max));
        bars(&right, "cost per provider", "$", &labels, &costs, &|v| {
            format!("${}", cost_label(v))
        })
    })
}

/// Tick labels for an axis spanning `span`: as many decimals as ticks about a fifth of it apart
/// need (plotters' default prints every tick of a micro-dollar axis as 0.0).
fn axis_label(span: f64) -> impl Fn(&f64) -> String {
    let step = span / 5.0;
    let decimals = if step.is_finite() && step > 0.0 {
        (-step.log10()).ceil().clamp(0.0, 10.0) as usize
    } else {
        1
    };
    move |v: &f64| {
        // A tick at zero is 0, not -0.00.
        let v = if v.abs() < step * 1e-6 { 0.0 } else { *v };
        format!("{v:.decimals$}")
    }
}

/// At most 14 characters, so provider names fit under their bars.
fn short(s: &str) -> String {
    if s.chars().count() <= 14 {
        s.to_string()
    } else {
        let head: String = s.chars().take(13).collect();
        format!("{head}…")
    }
}

/// One panel per metric: each seed's difference as a dot, the p5..p95 band, the median line
/// and zero.
fn spread_chart(s: &Spread) -> Result<String, String> {
    const PANEL: u32 = 150;
    const NOTE: u32 = 30;
    // A metric that came out the same under every seed has nothing to show but a line at its
    // value; those are named in one line instead of a panel each.
    let (moving, flat): (Vec<&SpreadRow>, Vec<&SpreadRow>) = s
        .rows
        .iter()
        .partition(|r| r.values.iter().any(|v| *v != r.p50) || r.p5 != r.p95);
    let height = PANEL * moving.len().max(1) as u32 + if flat.is_empty() { 0 } else { NOTE };
    svg(height, |root| {
        let root = if flat.is_empty() {
            root.clone()
        } else {
            let (top, bottom) = root.split_vertically(height - NOTE);
            let names: Vec<String> = flat
                .iter()
                .map(|r| format!("{} {}", r.metric, Unit::of_metric(&r.metric).delta(r.p50)))
                .collect();
            let grey = BLACK.mix(0.7);
            let style = TextStyle::from((FONT, 13).into_font()).color(&grey);
            bottom
                .draw(&Text::new(
                    format!("the same under every seed: {}", names.join(", ")),
                    (12, 8),
                    style,
                ))
                .map_err(err)?;
            top
        };
        if moving.is_empty() {
            let what = if flat.is_empty() {
                "no data"
            } else {
                "no metric moved between seeds"
            };
            return no_data(&root, what);
        }
        let panels = root.split_evenly((moving.len(), 1));
        for (row, area) in moving.iter().zip(panels.iter()) {
            let u = Unit::of_metric(&row.metric);
            let v: Vec<f64> = row
                .values
                .iter()
                .map(|x| u.scale(*x))
                .filter(|x| x.is_finite())
                .collect();
            let (p5, p50, p95) = (u.scale(row.p5), u.scale(row.p50), u.scale(row.p95));
            let (lo, hi) = v
                .iter()
                .chain([p5, p95, 0.0].iter())
                .filter(|x| x.is_finite())
                .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
            let pad = ((hi - lo) * 0.15).max(1e-9);
            let (lo, hi) = if hi > lo {
                (lo - pad, hi + pad)
            } else {
                (lo - 1.0, lo + 1.0)
            };
            let n = v.len().max(1) as f64;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{}: simulated - recorded ({})", row.metric, u.axis()),
                    (FONT, 14),
                )
                .margin(8)
                .x_label_area_size(24)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5f64..(n - 0.5), lo..hi)
                .map_err(err)?;
            let seeds = &s.seeds;
            let x_label = |x: &f64| {
                let i = x.round();
                if (x - i).abs() > 1e-6 || i < 0.0 {
                    return String::new();
                }
                seeds
                    .get(i as usize)
                    .map(|s| format!("seed {s}"))
                    .unwrap_or_default()
            };
            let y_label = axis_label(hi - lo);
            chart
                .configure_mesh()
                .disable_x_mesh()
                .max_light_lines(0)
                .x_labels(v.len().clamp(1, 10))
                .y_labels(5)
                .x_label_formatter(&x_label)
                .y_label_formatter(&y_label)
                .label_style((FONT, 11))
                .draw()
                .map_err(err)?;
            let (x0, x1) = (-0.5, n - 0.5);
            if p5.is_finite() && p95.is_finite() {
                chart
                    .draw_series([Rectangle::new([(x0, p5), (x1, p95)], BAND.filled())])
                    .map_err(err)?;
            }
            chart
                .draw_series([PathElement::new(vec![(x0, 0.0), (x1, 0.0)], BLACK.mix(0.5))])
                .map_err(err)?;
            if p50.is_finite() {
                chart
                    .draw_series([PathElement::new(
                        vec![(x0, p50), (x1, p50)],
                        SIMULATED.stroke_width(2),
                    )])
                    .map_err(err)?;
            }
            chart
                .draw_series(
                    v.iter()
                        .enumerate()
                        .map(|(i, y)| Circle::new((i as f64, *y), 3, SIMULATED.filled())),
                )
                .map_err(err)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::report::{Share, SpreadRow};

    fn report() -> ReplayReport {
        let mut r = ReplayReport {
            requests: 10,
            filter: "all recorded requests".into(),
            ..ReplayReport::default()
        };
        r.plan.description = "strategy <cost> & \"more\"".into();
        r.recorded.shares = vec![Share {
            target: "a/fast".into(),
            provider: "a".into(),
            served: 10,
            share: 1.0,
            cost_micros: 1200,
        }];
        r.simulated.shares = vec![Share {
            target: "b/<script>".into(),
            provider: "b".into(),
            served: 10,
            share: 1.0,
            cost_micros: 900,
        }];
        r.latency_histogram = LatencyHistogram {
            bounds_ms: vec![100.0, 250.0, 500.0],
            recorded: vec![2, 5, 2, 1],
            simulated: vec![4, 4, 1, 1],
        };
        r.spread = Some(Spread {
            runs: 3,
            seeds: vec![0, 1, 2],
            rows: vec![
                SpreadRow {
                    metric: "success_rate".into(),
                    p5: -0.01,
                    p50: 0.0,
                    p95: 0.02,
                    values: vec![-0.01, 0.0, 0.02],
                },
                SpreadRow {
                    metric: "cost_micros".into(),
                    p5: -300.0,
                    p50: -250.0,
                    p95: -200.0,
                    values: vec![-300.0, -250.0, -200.0],
                },
            ],
        });
        r
    }

    #[test]
    fn one_svg_per_chart_and_nothing_loaded_from_elsewhere() {
        let page = html(&report()).unwrap();
        assert_eq!(page.matches("<svg").count(), 3, "{page}");
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        for bad in ["src=", "href=", "<script", "<link", "@import", "url("] {
            assert!(!page.contains(bad), "{bad} in the page");
        }
        // The SVG namespace is the only address, and it is no reference.
        let addresses = page.matches("http://").count() + page.matches("https://").count();
        assert_eq!(
            addresses,
            page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        // Labels are text the browser lays out (no font was needed to draw them).
        assert!(page.contains("<text") && page.contains("served share per provider"));
    }

    #[test]
    fn text_from_the_report_is_escaped() {
        let page = html(&report()).unwrap();
        assert!(!page.contains("b/<script>") && page.contains("b/&lt;script&gt;"));
        assert!(page.contains("strategy &lt;cost&gt; &amp; &quot;more&quot;"));
    }

    #[test]
    fn without_spread_two_charts_and_empty_reports_still_draw() {
        let mut r = report();
        r.spread = None;
        assert_eq!(html(&r).unwrap().matches("<svg").count(), 2);
        let empty = html(&ReplayReport::default()).unwrap();
        assert_eq!(empty.matches("<svg").count(), 2);
        assert!(empty.contains("no data"));
    }

    #[test]
    fn a_report_that_compared_nothing_shows_its_message_and_no_chart() {
        let r = ReplayReport {
            message: Some("the filter matched no request".into()),
            ..ReplayReport::default()
        };
        let page = html(&r).unwrap();
        assert!(page.contains("the filter matched no request"));
        assert!(!page.contains("<svg"));
    }

    /// The packages `root` depends on, transitively, as the workspace's Cargo.lock resolves
    /// them (every target and every enabled feature, so a superset of what is built here).
    fn locked_deps(root: &str) -> std::collections::BTreeSet<String> {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for block in lock.split("[[package]]").skip(1) {
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .map(|n| n.trim_end_matches('"').to_string())
                .unwrap();
            let list = block
                .split("dependencies = [")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .unwrap_or("");
            let names = list
                .lines()
                .filter_map(|l| l.trim().trim_end_matches(',').strip_prefix('"'))
                .map(|d| {
                    d.trim_end_matches('"')
                        .split(' ')
                        .next()
                        .unwrap()
                        .to_string()
                });
            deps.entry(name).or_default().extend(names);
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![root.to_string()];
        while let Some(p) = todo.pop() {
            if seen.insert(p.clone()) {
                todo.extend(deps.get(&p).cloned().unwrap_or_default());
            }
        }
        seen
    }

    #[test]
    fn the_charts_need_no_font_library() {
        // Drawing never looks for a font: plotters is built without `ttf` (font-kit, which
        // reads the system's fonts through fontconfig) and without `ab_glyph`. A machine with
        // no font at all draws the same page.
        let deps = locked_deps("omniroute-replay");
        // The walk reaches plotters' own dependencies (it reads the lock right).
        assert!(
            deps.contains("plotters-svg") && deps.contains("num-traits"),
            "{deps:?}"
        );
        for font in [
            "font-kit",
            "ttf-parser",
            "ab_glyph",
            "yeslogic-fontconfig-sys",
            "servo-fontconfig",
            "freetype-sys",
        ] {
            assert!(!deps.contains(font), "{font} is in replay's tree");
        }
    }

    #[test]
    fn pages_are_deterministic() {
        assert_eq!(html(&report()).unwrap(), html(&report()).unwrap());
    }
}
