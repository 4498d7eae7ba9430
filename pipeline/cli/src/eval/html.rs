//! The HTML report of `eval`: the summary tables plus three plots (score
//! distributions, time to detect, precision/recall over the threshold) drawn
//! by plotters into SVG and inlined, so the report is one self-contained file
//! that can be archived or mailed: no scripts, no external resources.

use std::error::Error;
use std::fmt::Write as _;
use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::metrics::{quantile, CurvePoint, Quality, StyleQuality};
use super::report::{EvalReport, Levels};
use super::table::{minutes, FP_GAP, RECALL_GAP};

type PlotResult<T> = Result<T, Box<dyn Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const CAMPAIGN: RGBColor = RGBColor(200, 40, 40);
const BENIGN: RGBColor = RGBColor(35, 95, 190);
const ELEVATED: RGBColor = RGBColor(230, 140, 0);
const HIGH: RGBColor = RGBColor(125, 40, 165);
const CRITICAL: RGBColor = RGBColor(60, 60, 60);
const PRECISION: RGBColor = RGBColor(20, 140, 70);
const RECALL: RGBColor = RGBColor(35, 95, 190);
const STRIPE: RGBColor = RGBColor(243, 244, 247);
const MUTED: RGBColor = RGBColor(110, 115, 125);

const WIDTH: u32 = 1100;
/// Legends get a column of their own so they never hide data.
const LEGEND_W: u32 = 210;
const FONT: &str = "sans-serif";
/// plotters' SVG backend writes `font-size = size / 1.24`: 15 gives ~12px.
const LABEL: u32 = 15;
const TITLE: u32 = 22;

/// Dots drawn per group and side of the elevated threshold: groups have
/// thousands of accounts, and the SVG must stay small enough to open.
const MAX_DOTS: usize = 300;

/// Time-to-detect axis ticks, in minutes: readable durations on a log scale.
const TTD_TICKS: [f64; 21] = [
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 360.0, 720.0, 1440.0,
    2880.0, 4320.0, 7200.0, 10080.0, 20160.0, 43200.0,
];

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>distill-watch detection report</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: #1d1f24; margin: 24px auto; max-width: 1240px; padding: 0 16px; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #d8dbe2; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #d8dbe2; padding: 4px 9px; vertical-align: top; }
th { background: #f1f3f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
.scroll { overflow-x: auto; }
table.styles { font-size: .86em; }
table.styles th, table.styles td { padding: 3px 6px; }
table.info th { text-align: left; }
tr.gap td { background: #fde8e8; }
.gap-key { background: #fde8e8; border: 1px solid #f0b4b4; padding: 0 .4em; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .92em;
  word-break: break-all; }
figure { margin: 1.4em 0; }
figure svg { max-width: 100%; height: auto; border: 1px solid #e3e5ea; }
figcaption, .note { font-size: .9em; color: #454a55; max-width: 1100px; }
.error { color: #a01010; }
</style>
</head>
<body>
<h1>distill-watch detection report</h1>
"#;

/// Render the whole report as one HTML document.
pub fn render(report: &EvalReport) -> String {
    let q = &report.quality;
    let mut h = String::with_capacity(256 * 1024);
    h.push_str(HEAD);
    run_info(&mut h, report);
    levels(&mut h, &report.levels);
    styles_table(&mut h, q);
    populations_table(&mut h, q);
    overall(&mut h, q);

    h.push_str("<h2>Plots</h2>\n");
    figure(
        &mut h,
        &score_plot(q, &report.levels),
        &format!(
            "Each dot is one labelled account at its highest score over all its windows \
             (accounts never scored are at 0). Campaign styles in red, benign populations in \
             blue. Where a group has more than {MAX_DOTS} accounts on one side of the elevated \
             threshold, {MAX_DOTS} of them are drawn, evenly spaced by rank (lowest and highest \
             included); the box spans the quartiles of all the group's accounts and its bar is \
             the median."
        ),
    );
    figure(
        &mut h,
        &ttd_plot(q),
        &format!(
            "Time to detect of each flagged campaign account (log scale): from its first request \
             to the end of its first window at high (upper dots) or elevated (lower dots). Box: \
             quartiles and median; at most {MAX_DOTS} dots per style and level, evenly spaced by \
             rank."
        ),
    );
    figure(
        &mut h,
        &curve_plot(&q.curve, &report.levels),
        "Precision and recall if an account were flagged when its highest score reaches the \
         threshold. Precision is undefined (not drawn) where no account reaches it.",
    );
    tallies(
        &mut h,
        "Injected streaming faults",
        ("Fault", "Count"),
        &report.injected,
    );
    tallies(
        &mut h,
        "Worker counters",
        ("Counter", "Value"),
        &report.counters,
    );
    h.push_str("</body>\n</html>\n");
    h
}

fn run_info(h: &mut String, report: &EvalReport) {
    let r = &report.run;
    let opt = |v: Option<String>| v.map_or_else(|| "–".to_string(), |s| esc(&s));
    let versions = if r.model_versions.is_empty() {
        "–".to_string()
    } else {
        esc(&r.model_versions.join(", "))
    };
    let rows = [
        ("Command", format!("<code>{}</code>", esc(&r.command))),
        ("Scenario", opt(r.scenario.clone())),
        ("Seed", opt(r.seed.map(|s| s.to_string()))),
        ("Scale", opt(r.scale.map(|s| s.to_string()))),
        ("Span", opt(r.span_hours.map(|s| minutes(s * 60.0)))),
        ("Exchanges", opt(r.exchanges.map(fmt_count))),
        ("Scores topic", esc(&r.scores_topic)),
        ("Score records", fmt_count(r.scores as u64)),
        ("Accounts scored", fmt_count(r.accounts_scored as u64)),
        ("Model versions", versions),
        ("Elapsed", format!("{:.1} s", r.elapsed_s)),
    ];
    h.push_str("<h2>Run</h2>\n<table class=\"info\">\n");
    for (name, value) in rows {
        let _ = writeln!(h, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    h.push_str("</table>\n");
}

fn levels(h: &mut String, lv: &Levels) {
    let _ = writeln!(
        h,
        "<p>Level thresholds of the scoring model: elevated ≥ {:.2} · high ≥ {:.2} · \
         critical ≥ {:.2}. An account is <em>flagged</em> at a level when some window scored \
         it at that level or above.</p>",
        lv.elevated, lv.high, lv.critical
    );
}

fn styles_table(h: &mut String, q: &Quality) {
    let notes = q
        .styles
        .iter()
        .any(|s| s.high.impossible > 0 || s.elevated.impossible > 0);
    h.push_str(
        "<h2>Attack styles</h2>\n<div class=\"scroll\">\n<table class=\"styles\">\n<thead>\n\
         <tr><th rowspan=\"2\">Style</th>",
    );
    h.push_str("<th rowspan=\"2\" class=\"num\">Campaigns</th>");
    h.push_str("<th rowspan=\"2\" class=\"num\">Accounts</th>");
    h.push_str("<th colspan=\"5\">at high</th><th colspan=\"5\">at elevated</th>");
    if notes {
        h.push_str("<th rowspan=\"2\">Notes</th>");
    }
    h.push_str("</tr>\n<tr>");
    for _ in 0..2 {
        h.push_str(
            "<th class=\"num\">Flagged</th><th class=\"num\">Recall</th>\
             <th class=\"num\">Campaigns detected</th><th class=\"num\">TTD median</th>\
             <th class=\"num\">TTD p90</th>",
        );
    }
    h.push_str("</tr>\n</thead>\n<tbody>\n");
    if q.styles.is_empty() {
        let cols = if notes { 14 } else { 13 };
        let _ = writeln!(
            h,
            "<tr><td colspan=\"{cols}\">No campaign accounts in the ground truth.</td></tr>"
        );
    }
    for s in &q.styles {
        let class = if s.high.recall < RECALL_GAP {
            " class=\"gap\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr{class}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            esc(&s.style),
            fmt_count(s.campaigns as u64),
            fmt_count(s.accounts as u64)
        );
        for l in [&s.high, &s.elevated] {
            let _ = write!(
                h,
                "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}/{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td>",
                fmt_count(l.flagged as u64),
                fmt_ratio(l.recall),
                l.campaigns_detected,
                s.campaigns,
                fmt_opt_minutes(l.ttd_median_min),
                fmt_opt_minutes(l.ttd_p90_min)
            );
        }
        if notes {
            let mut parts = Vec::new();
            for (name, l) in [("high", &s.high), ("elevated", &s.elevated)] {
                if l.impossible > 0 {
                    parts.push(format!("{} impossible at {name}", l.impossible));
                }
            }
            let _ = write!(h, "<td>{}</td>", parts.join(", "));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n</div>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\"><span class=\"gap-key\">Marked rows</span>: recall at high below \
         {RECALL_GAP:.2}, known gaps. Recall counts accounts never scored as missed; a campaign \
         is detected when one of its accounts is flagged. TTD (time to detect): from the \
         account's first request to the end of its first flagged window, median and p90 over \
         flagged accounts.{}</p>",
        if notes {
            " <em>Impossible</em>: flagged by a window that ended at or before the account's \
             first request, so the truth or the scores are wrong; excluded from TTD."
        } else {
            ""
        }
    );
}

fn populations_table(h: &mut String, q: &Quality) {
    h.push_str(
        "<h2>Benign populations</h2>\n<table>\n<thead>\n<tr><th>Population</th>\
         <th class=\"num\">Accounts</th><th class=\"num\">Flagged at high</th>\
         <th class=\"num\">FP per 1,000 at high</th><th class=\"num\">Flagged at elevated</th>\
         <th class=\"num\">FP per 1,000 at elevated</th></tr>\n</thead>\n<tbody>\n",
    );
    if q.populations.is_empty() {
        h.push_str("<tr><td colspan=\"6\">No benign accounts in the ground truth.</td></tr>\n");
    }
    for p in &q.populations {
        let class = if p.fp_per_1000_high > FP_GAP {
            " class=\"gap\""
        } else {
            ""
        };
        let _ = writeln!(
            h,
            "<tr{class}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{:.2}</td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td></tr>",
            esc(&p.population),
            fmt_count(p.accounts as u64),
            fmt_count(p.flagged_high as u64),
            p.fp_per_1000_high,
            fmt_count(p.flagged_elevated as u64),
            p.fp_per_1000_elevated
        );
    }
    h.push_str("</tbody>\n</table>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\"><span class=\"gap-key\">Marked rows</span>: more than \
         {FP_GAP} false positive per 1,000 accounts at high.</p>"
    );
}

fn overall(h: &mut String, q: &Quality) {
    h.push_str(
        "<h2>Overall</h2>\n<table>\n<thead>\n<tr><th>Level</th><th class=\"num\">Precision</th>\
         <th class=\"num\">Recall</th><th class=\"num\">Flagged campaign accounts</th>\
         <th class=\"num\">Flagged benign accounts</th><th class=\"num\">Campaign accounts</th>\
         <th class=\"num\">Benign accounts</th></tr>\n</thead>\n<tbody>\n",
    );
    for (name, o) in [("high", &q.high), ("elevated", &q.elevated)] {
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            fmt_opt_ratio(o.precision),
            fmt_ratio(o.recall),
            fmt_count(o.true_positives as u64),
            fmt_count(o.false_positives as u64),
            fmt_count(o.campaign_accounts as u64),
            fmt_count(o.benign_accounts as u64)
        );
    }
    h.push_str("</tbody>\n</table>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\">Unlabelled: {} scored accounts are not in the ground truth ({} of \
         them flagged at high); they count in neither precision nor recall. Precision is \
         “–” when nothing was flagged.</p>",
        fmt_count(q.unlabelled.accounts as u64),
        fmt_count(q.unlabelled.flagged_high as u64)
    );
}

fn figure(h: &mut String, svg: &str, caption: &str) {
    let _ = writeln!(
        h,
        "<figure>\n{svg}<figcaption>{}</figcaption>\n</figure>",
        esc(caption)
    );
}

fn tallies(h: &mut String, title: &str, (what, value): (&str, &str), rows: &[(String, u64)]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<h2>{title}</h2>\n<table>\n<thead>\n<tr><th>{what}</th><th class=\"num\">{value}</th>\
         </tr>\n</thead>\n<tbody>"
    );
    for (name, n) in rows {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(name),
            fmt_count(*n)
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

// ---------------------------------------------------------------------------
// Plots

/// Draw one plot into an SVG string. A drawing error (none is expected: the
/// backend writes to memory) becomes a visible message instead of a panic,
/// so the rest of the report is still written.
fn plot_svg(size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> PlotResult<()>) -> String {
    let mut buf = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        Ok(()) => buf,
        Err(e) => format!(
            "<p class=\"error\">Plot failed: {}</p>\n",
            esc(&e.to_string())
        ),
    }
}

/// A white canvas with a title, split into the chart and the legend column.
fn frame<'a>(root: &Area<'a>, title: &str) -> PlotResult<(Area<'a>, Area<'a>)> {
    root.fill(&WHITE)?;
    let body = root.titled(title, (FONT, TITLE))?;
    Ok(body.split_horizontally((WIDTH - LEGEND_W) as i32))
}

enum Mark {
    Dot(RGBColor),
    Line(RGBColor),
    Threshold(RGBColor),
    Box,
}

fn legend(area: &Area<'_>, entries: &[(Mark, String)]) -> PlotResult<()> {
    let font = (FONT, LABEL)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let x = 8;
    for (i, (mark, text)) in entries.iter().enumerate() {
        let y = 24 + 24 * i as i32;
        match mark {
            Mark::Dot(c) => area.draw(&Circle::new((x + 10, y), 4, c.mix(0.75).filled()))?,
            Mark::Line(c) => area.draw(&PathElement::new(
                vec![(x, y), (x + 20, y)],
                c.stroke_width(3),
            ))?,
            Mark::Threshold(c) => {
                for (a, b) in [(-9, -3), (3, 9)] {
                    area.draw(&PathElement::new(
                        vec![(x + 10, y + a), (x + 10, y + b)],
                        c.stroke_width(2),
                    ))?;
                }
            }
            Mark::Box => {
                area.draw(&Rectangle::new(
                    [(x + 2, y - 7), (x + 18, y + 7)],
                    BLACK.stroke_width(1),
                ))?;
                area.draw(&PathElement::new(
                    vec![(x + 8, y - 7), (x + 8, y + 7)],
                    BLACK.stroke_width(2),
                ))?;
            }
        }
        area.draw(&Text::new(text.as_str(), (x + 28, y), font.clone()))?;
    }
    Ok(())
}

/// An f64 axis with ticks exactly where given. plotters' own
/// `with_key_points` loses the value formatter of f64 axes, so the label
/// formatters could not be set.
struct Ticks<R> {
    inner: R,
    ticks: Vec<f64>,
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticks<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

/// Rows of a categorical y axis: row `i` (0 at the top) is centred on
/// `rows - 1 - i`, with one tick per row for its label.
fn rows_axis(rows: usize) -> Ticks<RangedCoordf64> {
    Ticks {
        inner: (-0.5..rows as f64 - 0.5).into(),
        ticks: (0..rows).map(|i| i as f64).collect(),
    }
}

fn row_y(i: usize, rows: usize) -> f64 {
    (rows - 1 - i) as f64
}

fn row_label(labels: &[String], y: f64) -> String {
    let i = labels.len() as f64 - 1.0 - y.round();
    if i >= 0.0 && i < labels.len() as f64 {
        labels[i as usize].clone()
    } else {
        String::new()
    }
}

/// Width of the y label area: the naive font metrics plotters uses without
/// a font library over-estimate a little, which is the safe side.
fn label_area(labels: &[String]) -> u32 {
    let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    (chars as u32 * 7 + 50).clamp(90, 340)
}

fn short(name: &str) -> String {
    const MAX: usize = 36;
    if name.chars().count() <= MAX {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(MAX - 1).collect();
        s.push('…');
        s
    }
}

/// At most `MAX_DOTS` of the sorted values, evenly spaced by rank with the
/// lowest and highest included, so the dots keep the distribution's shape.
fn sample(sorted: &[f64]) -> Vec<f64> {
    let n = sorted.len();
    if n <= MAX_DOTS {
        return sorted.to_vec();
    }
    (0..MAX_DOTS)
        .map(|i| sorted[i * (n - 1) / (MAX_DOTS - 1)])
        .collect()
}

/// A deterministic offset in [-1, 1]: the same report always renders the
/// same SVG.
fn jitter(i: usize) -> f64 {
    let h = (i as u64 ^ 0x5851_f42d).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

fn sorted_finite(values: &[f64], keep: impl Fn(f64) -> bool) -> Vec<f64> {
    let mut v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| x.is_finite() && keep(*x))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

type BoxElements = (Rectangle<(f64, f64)>, PathElement<(f64, f64)>);

/// Quartile box and median bar of sorted values around row position `y`.
fn box_summary(sorted: &[f64], y: f64, half: f64) -> Option<BoxElements> {
    let (q1, med, q3) = (
        quantile(sorted, 0.25)?,
        quantile(sorted, 0.5)?,
        quantile(sorted, 0.75)?,
    );
    Some((
        Rectangle::new([(q1, y - half), (q3, y + half)], BLACK.stroke_width(1)),
        PathElement::new(
            vec![(med, y - half), (med, y + half)],
            BLACK.stroke_width(3),
        ),
    ))
}

/// Thresholds that fall on a 0..1 score axis; a model with odd levels must
/// not draw lines outside the plot.
fn on_axis<const N: usize>(lines: [(f64, RGBColor); N]) -> impl Iterator<Item = (f64, RGBColor)> {
    lines.into_iter().filter(|(t, _)| (0.0..=1.0).contains(t))
}

fn text_style(colour: &RGBColor, h: HPos) -> TextStyle<'static> {
    (FONT, LABEL)
        .into_font()
        .color(colour)
        .pos(Pos::new(h, VPos::Center))
}

fn score_plot(q: &Quality, lv: &Levels) -> String {
    // Campaign styles on top, benign populations below, each in report order.
    let groups: Vec<&(String, bool, Vec<f64>)> = q
        .max_scores
        .iter()
        .filter(|g| g.1)
        .chain(q.max_scores.iter().filter(|g| !g.1))
        .collect();
    let rows = groups.len().max(1);
    let labels: Vec<String> = groups
        .iter()
        .map(|(g, _, v)| format!("{} ({})", short(g), fmt_count(v.len() as u64)))
        .collect();
    // A floor on the height keeps the rotated axis title inside the plot.
    let height = 130 + 30 * rows.max(4) as u32;
    plot_svg((WIDTH, height), |root| {
        let (area, key) = frame(root, "Highest score per account, by group")?;
        let (x0, x1) = (-0.02, 1.02);
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(label_area(&labels))
            .build_cartesian_2d(x0..x1, rows_axis(rows))?;
        chart.draw_series((0..rows).filter(|i| i % 2 == 1).map(|i| {
            let y = row_y(i, rows);
            Rectangle::new([(x0, y - 0.5), (x1, y + 0.5)], STRIPE.filled())
        }))?;
        let row_name = |y: &f64| row_label(&labels, *y);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(11)
            .x_label_formatter(&|x| format!("{x:.1}"))
            .y_label_formatter(&row_name)
            .x_desc("highest score of the account over all its windows")
            .y_desc("group (accounts)")
            .label_style((FONT, LABEL))
            .axis_desc_style((FONT, LABEL))
            .light_line_style(TRANSPARENT)
            .draw()?;
        if groups.is_empty() {
            chart.draw_series(std::iter::once(Text::new(
                "no labelled accounts",
                (0.5, 0.0),
                text_style(&MUTED, HPos::Center),
            )))?;
        }
        for (i, (_, campaign, scores)) in groups.iter().enumerate() {
            let y = row_y(i, rows);
            let colour = if *campaign { CAMPAIGN } else { BENIGN };
            let sorted = sorted_finite(scores, |_| true);
            let split = sorted.partition_point(|s| *s < lv.elevated);
            let mut dots = sample(&sorted[..split]);
            dots.extend(sample(&sorted[split..]));
            chart.draw_series(dots.iter().enumerate().map(|(k, s)| {
                Circle::new(
                    (s.clamp(0.0, 1.0), y + 0.3 * jitter(k)),
                    3,
                    colour.mix(0.4).filled(),
                )
            }))?;
            if let Some((rect, median)) = box_summary(&sorted, y, 0.4) {
                chart.draw_series(std::iter::once(rect))?;
                chart.draw_series(std::iter::once(median))?;
            }
        }
        for (t, colour) in on_axis([(lv.elevated, ELEVATED), (lv.high, HIGH)]) {
            chart.draw_series(DashedLineSeries::new(
                vec![(t, -0.5), (t, rows as f64 - 0.5)],
                6,
                4,
                colour.stroke_width(2),
            ))?;
        }
        legend(
            &key,
            &[
                (Mark::Dot(CAMPAIGN), "campaign account".into()),
                (Mark::Dot(BENIGN), "benign account".into()),
                (Mark::Box, "quartiles, median".into()),
                (
                    Mark::Threshold(ELEVATED),
                    format!("elevated ≥ {:.2}", lv.elevated),
                ),
                (Mark::Threshold(HIGH), format!("high ≥ {:.2}", lv.high)),
            ],
        )
    })
}

/// Axis span of the time-to-detect plot: from the tick at or below the
/// fastest detection to the tick at or above the slowest (1m–24h when there
/// is none).
fn ttd_span(times: &[f64]) -> (f64, f64) {
    let last = TTD_TICKS.len() - 1;
    let (Some(min), Some(max)) = (
        times.iter().copied().reduce(f64::min),
        times.iter().copied().reduce(f64::max),
    ) else {
        return (1.0, 1440.0);
    };
    let mut lo = TTD_TICKS.iter().rposition(|t| *t <= min).unwrap_or(0);
    let mut hi = TTD_TICKS.iter().position(|t| *t >= max).unwrap_or(last);
    if hi <= lo {
        if lo < last {
            hi = lo + 1;
        } else {
            lo -= 1;
        }
    }
    (TTD_TICKS[lo], TTD_TICKS[hi].max(max))
}

fn ttd_plot(q: &Quality) -> String {
    let rows = q.styles.len().max(1);
    let times: Vec<f64> = q
        .styles
        .iter()
        .flat_map(|s| s.high.ttd_min.iter().chain(&s.elevated.ttd_min))
        .copied()
        .filter(|m| m.is_finite() && *m > 0.0)
        .collect();
    let (lo, hi) = ttd_span(&times);
    let ticks: Vec<f64> = TTD_TICKS
        .iter()
        .copied()
        .filter(|t| *t >= lo && *t <= hi)
        .collect();
    let (x0, x1) = (lo / 1.3, hi * 1.3);
    let labels: Vec<String> = q.styles.iter().map(|s| short(&s.style)).collect();
    let height = 130 + 50 * rows.max(2) as u32;
    plot_svg((WIDTH, height), |root| {
        let (area, key) = frame(root, "Time to detect per attack style")?;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(label_area(&labels))
            .build_cartesian_2d(
                Ticks {
                    inner: LogCoord::from((x0..x1).log_scale()),
                    ticks: ticks.clone(),
                },
                rows_axis(rows),
            )?;
        chart.draw_series((0..rows).filter(|i| i % 2 == 1).map(|i| {
            let y = row_y(i, rows);
            Rectangle::new([(x0, y - 0.5), (x1, y + 0.5)], STRIPE.filled())
        }))?;
        let row_name = |y: &f64| row_label(&labels, *y);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_label_formatter(&|m| minutes(*m))
            .y_label_formatter(&row_name)
            .x_desc("time from the account's first request to its first flagged window's end")
            .y_desc("attack style")
            .label_style((FONT, LABEL))
            .axis_desc_style((FONT, LABEL))
            .light_line_style(TRANSPARENT)
            .draw()?;
        if q.styles.is_empty() {
            chart.draw_series(std::iter::once(Text::new(
                "no campaign accounts",
                ((x0 * x1).sqrt(), 0.0),
                text_style(&MUTED, HPos::Center),
            )))?;
        }
        for (i, s) in q.styles.iter().enumerate() {
            let y = row_y(i, rows);
            let at: [(&StyleQuality, f64, RGBColor, &str); 2] = [
                (&s.high, 0.22, HIGH, "high"),
                (&s.elevated, -0.22, ELEVATED, "elevated"),
            ];
            for (l, dy, colour, name) in at {
                let yl = y + dy;
                let sorted = sorted_finite(&l.ttd_min, |m| m > 0.0);
                if sorted.is_empty() {
                    let why = if l.flagged == 0 {
                        format!("no account flagged at {name}")
                    } else {
                        format!("no valid time at {name}")
                    };
                    chart.draw_series(std::iter::once(Text::new(
                        why,
                        (x0 * 1.05, yl),
                        text_style(&MUTED, HPos::Left),
                    )))?;
                    continue;
                }
                chart.draw_series(sample(&sorted).iter().enumerate().map(|(k, m)| {
                    Circle::new(
                        (m.clamp(x0, x1), yl + 0.12 * jitter(k)),
                        3,
                        colour.mix(0.45).filled(),
                    )
                }))?;
                if let Some((rect, median)) = box_summary(&sorted, yl, 0.17) {
                    chart.draw_series(std::iter::once(rect))?;
                    chart.draw_series(std::iter::once(median))?;
                }
            }
        }
        legend(
            &key,
            &[
                (Mark::Dot(HIGH), "first flagged at high".into()),
                (Mark::Dot(ELEVATED), "first flagged at elevated".into()),
                (Mark::Box, "quartiles, median".into()),
            ],
        )
    })
}

fn curve_plot(curve: &[CurvePoint], lv: &Levels) -> String {
    plot_svg((WIDTH, 520), |root| {
        let (area, key) = frame(root, "Precision and recall over the score threshold")?;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..1.0, 0.0..1.04)?;
        chart
            .configure_mesh()
            .x_labels(11)
            .y_labels(11)
            .x_label_formatter(&|x| format!("{x:.1}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .x_desc("threshold on the account's highest score")
            .y_desc("precision, recall")
            .label_style((FONT, LABEL))
            .axis_desc_style((FONT, LABEL))
            .light_line_style(TRANSPARENT)
            .draw()?;
        for (t, colour) in on_axis([
            (lv.elevated, ELEVATED),
            (lv.high, HIGH),
            (lv.critical, CRITICAL),
        ]) {
            chart.draw_series(DashedLineSeries::new(
                vec![(t, 0.0), (t, 1.04)],
                6,
                4,
                colour.stroke_width(2),
            ))?;
        }
        if curve.is_empty() {
            chart.draw_series(std::iter::once(Text::new(
                "no labelled accounts",
                (0.5, 0.5),
                text_style(&MUTED, HPos::Center),
            )))?;
        }
        chart.draw_series(LineSeries::new(
            curve.iter().map(|p| (p.threshold, p.recall)),
            RECALL.stroke_width(3),
        ))?;
        // Precision is undefined where nothing is flagged: draw each defined
        // stretch on its own rather than bridging the gap.
        for stretch in curve.split(|p| p.precision.is_none()) {
            chart.draw_series(LineSeries::new(
                stretch
                    .iter()
                    .filter_map(|p| Some((p.threshold, p.precision?))),
                PRECISION.stroke_width(3),
            ))?;
        }
        legend(
            &key,
            &[
                (Mark::Line(PRECISION), "precision".into()),
                (Mark::Line(RECALL), "recall".into()),
                (
                    Mark::Threshold(ELEVATED),
                    format!("elevated ≥ {:.2}", lv.elevated),
                ),
                (Mark::Threshold(HIGH), format!("high ≥ {:.2}", lv.high)),
                (
                    Mark::Threshold(CRITICAL),
                    format!("critical ≥ {:.2}", lv.critical),
                ),
            ],
        )
    })
}

// ---------------------------------------------------------------------------
// Formatting

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn fmt_ratio(x: f64) -> String {
    format!("{x:.3}")
}

fn fmt_opt_ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), fmt_ratio)
}

fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_opt_minutes(m: Option<f64>) -> String {
    m.map_or_else(|| "–".to_string(), minutes)
}

#[cfg(test)]
mod tests {
    use super::super::metrics::{Overall, PopulationRow, StyleRow, Unlabelled};
    use super::super::report::RunInfo;
    use super::*;

    fn quality(
        flagged: usize,
        recall: f64,
        detected: usize,
        ttd: Vec<f64>,
        impossible: usize,
    ) -> StyleQuality {
        StyleQuality {
            flagged,
            recall,
            campaigns_detected: detected,
            campaigns_mostly_flagged: detected,
            ttd_median_min: quantile(&ttd, 0.5),
            ttd_p90_min: quantile(&ttd, 0.9),
            ttd_min: ttd,
            impossible,
        }
    }

    fn overall(tp: usize, fp: usize, precision: Option<f64>, recall: f64) -> Overall {
        Overall {
            campaign_accounts: 6,
            benign_accounts: 1_002,
            true_positives: tp,
            false_positives: fp,
            precision,
            recall,
        }
    }

    fn run() -> RunInfo {
        RunInfo {
            command: "distill-watch eval --seed 7 --name '<x>'".into(),
            scenario: Some("eval".into()),
            seed: Some(7),
            scale: Some(0.25),
            span_hours: Some(48.0),
            exchanges: Some(1_234_567),
            scores_topic: "risk-scores".into(),
            scores: 98_765,
            accounts_scored: 1_008,
            model_versions: vec!["rules-v3".into()],
            elapsed_s: 12.34,
        }
    }

    const LEVELS: Levels = Levels {
        elevated: 0.3,
        high: 0.6,
        critical: 0.8,
    };

    fn sample_report() -> EvalReport {
        let styles = vec![
            StyleRow {
                style: "hydra-card".into(),
                accounts: 4,
                campaigns: 2,
                rate_per_hour: Some(1.2),
                class: "low-and-slow".into(),
                high: quality(4, 1.0, 2, vec![45.0, 50.0, 120.0, 190.0], 0),
                elevated: quality(4, 1.0, 2, vec![20.0, 30.0, 40.0, 60.0], 0),
            },
            StyleRow {
                style: "<b>&x".into(),
                accounts: 2,
                campaigns: 1,
                rate_per_hour: Some(120.0),
                class: "high-rate".into(),
                high: quality(1, 0.5, 1, vec![], 1),
                elevated: quality(0, 0.0, 0, vec![], 0),
            },
        ];
        let populations = vec![
            PopulationRow {
                population: "chat".into(),
                accounts: 1_000,
                flagged_high: 2,
                fp_per_1000_high: 2.0,
                flagged_elevated: 9,
                fp_per_1000_elevated: 9.0,
            },
            PopulationRow {
                population: "ci-pipeline".into(),
                accounts: 2,
                flagged_high: 0,
                fp_per_1000_high: 0.0,
                flagged_elevated: 0,
                fp_per_1000_elevated: 0.0,
            },
        ];
        let chat: Vec<f64> = (0..1_000).map(|i| (i as f64 / 1_000.0).powi(6)).collect();
        let curve = (0..=100)
            .map(|i| {
                let t = i as f64 / 100.0;
                CurvePoint {
                    threshold: t,
                    precision: (t < 0.9).then_some(0.5 + t / 2.0),
                    recall: 1.0 - t,
                    flagged: 100 - i,
                }
            })
            .collect();
        EvalReport {
            run: run(),
            levels: LEVELS,
            quality: Quality {
                styles,
                populations,
                high: overall(5, 2, Some(5.0 / 7.0), 5.0 / 6.0),
                elevated: overall(4, 9, Some(4.0 / 13.0), 4.0 / 6.0),
                unlabelled: Unlabelled {
                    accounts: 3,
                    flagged_high: 1,
                },
                curve,
                max_scores: vec![
                    ("chat".into(), false, chat),
                    ("ci-pipeline".into(), false, vec![0.0, 0.1]),
                    ("<b>&x".into(), true, vec![0.65, 0.2]),
                    ("hydra-card".into(), true, vec![0.9, 0.7, 0.66, 0.95]),
                ],
            },
            injected: vec![("duplicate".into(), 42), ("late_response".into(), 7)],
            counters: vec![("records_in".into(), 1_500_000)],
            fault_checks: vec![],
        }
    }

    fn empty_report() -> EvalReport {
        EvalReport {
            run: RunInfo {
                command: String::new(),
                scenario: None,
                seed: None,
                scale: None,
                span_hours: None,
                exchanges: None,
                scores_topic: String::new(),
                scores: 0,
                accounts_scored: 0,
                model_versions: vec![],
                elapsed_s: 0.0,
            },
            levels: LEVELS,
            quality: Quality {
                styles: vec![],
                populations: vec![],
                high: overall(0, 0, None, 0.0),
                elevated: overall(0, 0, None, 0.0),
                unlabelled: Unlabelled {
                    accounts: 0,
                    flagged_high: 0,
                },
                curve: (0..=100)
                    .map(|i| CurvePoint {
                        threshold: i as f64 / 100.0,
                        precision: None,
                        recall: 0.0,
                        flagged: 0,
                    })
                    .collect(),
                max_scores: vec![],
            },
            injected: vec![],
            counters: vec![],
            fault_checks: vec![],
        }
    }

    #[test]
    fn the_report_is_one_document_with_three_plots_and_the_tables() {
        let html = render(&sample_report());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert!(html.contains("<title>distill-watch detection report</title>"));
        assert_eq!(html.matches("<svg").count(), 3, "three plots");
        assert!(!html.contains("Plot failed"));
        assert!(!html.contains("<script"));
        // Style row: campaigns detected k/n and TTD median/p90 as durations.
        assert!(html.contains("<td>hydra-card</td>"));
        assert!(html.contains(
            "<td class=\"num\">2/2</td><td class=\"num\">50m</td><td class=\"num\">3h10m</td>"
        ));
        // A style with nothing timed shows dashes and its impossible count.
        assert!(html.contains("<td class=\"num\">–</td>"));
        assert!(html.contains("1 impossible at high"));
        // The low-recall style and the noisy population are marked.
        assert!(html.contains("<tr class=\"gap\"><td>&lt;b&gt;&amp;x</td>"));
        assert!(html.contains("<tr class=\"gap\"><td>chat</td><td class=\"num\">1,000</td>"));
        assert!(html.contains("<tr><td>ci-pipeline</td>"));
        assert!(html.contains("<tr><td>hydra-card</td>"));
        // Overall precision and recall, run info, tallies.
        assert!(
            html.contains("<td>high</td><td class=\"num\">0.714</td><td class=\"num\">0.833</td>")
        );
        assert!(html.contains("1,234,567"));
        assert!(html.contains("<td>2d</td>"));
        assert!(html.contains("<td>late_response</td><td class=\"num\">7</td>"));
        assert!(html.contains("<td>records_in</td><td class=\"num\">1,500,000</td>"));
    }

    #[test]
    fn names_from_the_truth_are_escaped_everywhere() {
        let html = render(&sample_report());
        assert!(!html.contains("<b>&x"));
        assert!(!html.contains("'<x>'"));
        assert!(html.contains("&lt;b&gt;&amp;x"));
        assert!(html.contains("&#39;&lt;x&gt;&#39;"));
    }

    #[test]
    fn empty_inputs_render_without_panicking() {
        let html = render(&empty_report());
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(!html.contains("Plot failed"));
        assert!(html.contains("No campaign accounts in the ground truth."));
        assert!(html.contains("No benign accounts in the ground truth."));
        assert!(html.contains("<td>high</td><td class=\"num\">–</td>"));
        assert!(!html.contains("Injected streaming faults"));
        assert!(!html.contains("Worker counters"));
    }

    #[test]
    fn big_groups_are_subsampled() {
        let mut r = sample_report();
        let many: Vec<f64> = (0..20_000).map(|i| i as f64 / 20_000.0).collect();
        r.quality.max_scores = vec![("chat".into(), false, many)];
        let svg = score_plot(&r.quality, &r.levels);
        // Both sides of the elevated threshold, plus the legend's two dots.
        assert_eq!(svg.matches("<circle").count(), 2 * MAX_DOTS + 2);
        assert!(svg.len() < 200_000, "{} bytes", svg.len());
    }

    #[test]
    fn samples_keep_the_extremes() {
        let v: Vec<f64> = (0..1_000).map(f64::from).collect();
        let s = sample(&v);
        assert_eq!(s.len(), MAX_DOTS);
        assert_eq!((s[0], s[MAX_DOTS - 1]), (0.0, 999.0));
        assert_eq!(sample(&v[..5]), v[..5].to_vec());
        assert!(sample(&[]).is_empty());
    }

    #[test]
    fn durations_read_like_durations() {
        assert_eq!(minutes(0.5), "30s");
        assert_eq!(minutes(45.0), "45m");
        assert_eq!(minutes(60.0), "1h");
        assert_eq!(minutes(190.0), "3h10m");
        assert_eq!(minutes(47.0 * 60.0), "47h");
        assert_eq!(minutes(50.0 * 60.0 + 20.0), "2d2h");
        assert_eq!(minutes(2_880.0), "2d");
        assert_eq!(minutes(f64::NAN), "–");
        assert_eq!(fmt_opt_minutes(None), "–");
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1_000), "1,000");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
    }

    #[test]
    fn the_time_axis_spans_the_detections() {
        assert_eq!(ttd_span(&[]), (1.0, 1440.0));
        assert_eq!(ttd_span(&[12.0, 700.0]), (10.0, 720.0));
        assert_eq!(ttd_span(&[30.0]), (30.0, 60.0));
        assert_eq!(ttd_span(&[90_000.0]), (20160.0, 90_000.0));
    }
}
