//! Small self-contained SVG plots for scenario reports: line, point and step
//! series with dashed reference lines (targets) and dotted event markers.
//! Written by hand so a report needs no plotting crate and opens in any
//! browser or Markdown viewer.

use std::path::Path;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Straight segments between consecutive points. A skipped (non-finite)
    /// point leaves a gap rather than bridging it.
    Line,
    /// A dot per point.
    Points,
    /// Each y holds until the next x, then jumps: the shape of a CDF or of a
    /// counter sampled at events.
    Step,
}

/// One named series of (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub label: String,
    /// Drawn in order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// How the points are drawn.
    pub style: Style,
}

/// A horizontal reference line (a target), drawn dashed with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Shown next to the line and in the legend.
    pub label: String,
    /// Where the line is; always inside the y range.
    pub y: f64,
}

/// A vertical marker (e.g. "kill", "heal") at x, drawn dotted with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Shown at the top of the line.
    pub label: String,
    /// Where the line is; always inside the x range.
    pub x: f64,
}

/// A plot, built with [`Plot::new`] and the builder methods, rendered with
/// [`Plot::to_svg`] or [`Plot::write`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// Drawn above the plot.
    pub title: String,
    /// Drawn below the x axis.
    pub x_label: String,
    /// Drawn along the y axis.
    pub y_label: String,
    /// The data, drawn in order with colours from a fixed palette.
    pub series: Vec<Series>,
    /// Horizontal targets.
    pub references: Vec<Reference>,
    /// Vertical events.
    pub markers: Vec<Marker>,
    /// A log10 y axis; non-positive y values are skipped.
    pub log_y: bool,
    /// Include 0 in the y range (ignored when `log_y`).
    pub y_from_zero: bool,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_TOP: f64 = 36.0;
const MARGIN_BOTTOM: f64 = 44.0;
const MARGIN_RIGHT: f64 = 16.0;
const LEGEND_WIDTH: f64 = 150.0;
const LEGEND_ROW: f64 = 16.0;
const LEGEND_CHARS: usize = 20;
/// Tick intervals aimed for; the nice step makes it 3 to 7 in practice.
const TARGET_INTERVALS: f64 = 5.0;
/// Beyond this many ticks the step is wrong (precision loss): fall back.
const MAX_TICKS: f64 = 20.0;
const POINT_RADIUS: f64 = 2.5;
/// Tableau 10: distinct hues, readable on white.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
const REFERENCE_COLOUR: &str = "#555555";
const MARKER_COLOUR: &str = "#888888";
const GRID_COLOUR: &str = "#e6e6e6";
const TEXT_COLOUR: &str = "#222222";

impl Plot {
    /// An empty plot with a linear y axis that includes 0.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Plot {
        Plot {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            series: Vec::new(),
            references: Vec::new(),
            markers: Vec::new(),
            log_y: false,
            y_from_zero: true,
        }
    }

    /// Adds a series; it gets the next colour of the palette.
    #[must_use]
    pub fn series(mut self, label: &str, style: Style, points: Vec<(f64, f64)>) -> Plot {
        self.series.push(Series {
            label: label.to_string(),
            points,
            style,
        });
        self
    }

    /// Adds a dashed horizontal target line at `y`.
    #[must_use]
    pub fn reference(mut self, label: &str, y: f64) -> Plot {
        self.references.push(Reference {
            label: label.to_string(),
            y,
        });
        self
    }

    /// Adds a dotted vertical event marker at `x`.
    #[must_use]
    pub fn marker(mut self, label: &str, x: f64) -> Plot {
        self.markers.push(Marker {
            label: label.to_string(),
            x,
        });
        self
    }

    /// The plot as a complete SVG document (640x360). A plot without a
    /// single drawable point says "no data" instead of drawing axes.
    #[must_use]
    pub fn to_svg(&self) -> String {
        let legend = self.legend();
        let area = Area::new(!legend.is_empty());
        let mut out = String::with_capacity(8192);
        out.push_str(&format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" fill="{TEXT_COLOUR}">"#
        ));
        out.push('\n');
        out.push_str(&format!("<title>{}</title>\n", escape(&self.title)));
        out.push_str(&format!(
            r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
        ));
        out.push('\n');
        self.draw_labels(&mut out, &area);
        match self.axes() {
            Some((x_axis, y_axis)) => {
                draw_grid(&mut out, &area, &x_axis, &y_axis);
                draw_frame(&mut out, &area);
                self.draw_references(&mut out, &area, &y_axis);
                self.draw_markers(&mut out, &area, &x_axis);
                self.draw_series(&mut out, &area, &x_axis, &y_axis);
            }
            None => {
                draw_frame(&mut out, &area);
                out.push_str(&text(
                    (area.left + area.right) / 2.0,
                    (area.top + area.bottom) / 2.0,
                    "middle",
                    r##"font-size="14" fill="#888888""##,
                    "no data",
                ));
            }
        }
        draw_legend(&mut out, &area, &legend);
        out.push_str("</svg>\n");
        out
    }

    /// Writes [`Plot::to_svg`] to `path`, replacing any existing file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_svg())
    }

    /// `y` in axis space (log10 when `log_y`), or `None` if it cannot be
    /// drawn.
    fn axis_y(&self, y: f64) -> Option<f64> {
        if !y.is_finite() {
            None
        } else if self.log_y {
            (y > 0.0).then(|| y.log10())
        } else {
            Some(y)
        }
    }

    /// A data point in axis space, or `None` if it is skipped.
    fn axis_point(&self, (x, y): (f64, f64)) -> Option<(f64, f64)> {
        if x.is_finite() {
            self.axis_y(y).map(|y| (x, y))
        } else {
            None
        }
    }

    /// The x and y axes covering every drawable point, reference and
    /// marker; `None` when there is no drawable point.
    fn axes(&self) -> Option<(Axis, Axis)> {
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter_map(|&p| self.axis_point(p))
            .collect();
        let xs = points
            .iter()
            .map(|p| p.0)
            .chain(self.markers.iter().map(|m| m.x).filter(|x| x.is_finite()));
        let ys = points
            .iter()
            .map(|p| p.1)
            .chain(self.references.iter().filter_map(|r| self.axis_y(r.y)));
        let (x_lo, x_hi) = bounds(xs)?;
        let (y_lo, y_hi) = bounds(ys)?;
        let y_axis = if self.log_y {
            log_axis(y_lo, y_hi)
        } else if self.y_from_zero {
            linear_axis(y_lo.min(0.0), y_hi.max(0.0))
        } else {
            linear_axis(y_lo, y_hi)
        };
        Some((linear_axis(x_lo, x_hi), y_axis))
    }

    fn legend(&self) -> Vec<LegendEntry<'_>> {
        let series = self.series.iter().enumerate().map(|(i, s)| LegendEntry {
            label: &s.label,
            swatch: Swatch::Series(s.style, colour(i)),
        });
        let references = self.references.iter().map(|r| LegendEntry {
            label: &r.label,
            swatch: Swatch::Reference,
        });
        series.chain(references).collect()
    }

    fn draw_labels(&self, out: &mut String, area: &Area) {
        out.push_str(&text(
            WIDTH / 2.0,
            22.0,
            "middle",
            r#"font-size="15" font-weight="bold""#,
            &self.title,
        ));
        out.push_str(&text(
            (area.left + area.right) / 2.0,
            HEIGHT - 8.0,
            "middle",
            r#"font-size="12""#,
            &self.x_label,
        ));
        let middle = (area.top + area.bottom) / 2.0;
        out.push_str(&format!(
            "<text transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">{}</text>\n",
            num(middle),
            escape(&self.y_label)
        ));
    }

    fn draw_references(&self, out: &mut String, area: &Area, y_axis: &Axis) {
        for reference in &self.references {
            let Some(y) = self.axis_y(reference.y) else {
                continue;
            };
            let py = area.y(y_axis, y);
            out.push_str(&format!(
                "<line x1=\"{}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\" stroke=\"{REFERENCE_COLOUR}\" stroke-width=\"1.2\" stroke-dasharray=\"6 4\"/>\n",
                num(area.left),
                num(area.right),
                py = num(py),
            ));
            out.push_str(&text(
                area.right - 4.0,
                py - 4.0,
                "end",
                &format!(r#"font-size="10" fill="{REFERENCE_COLOUR}""#),
                &reference.label,
            ));
        }
    }

    fn draw_markers(&self, out: &mut String, area: &Area, x_axis: &Axis) {
        let finite = self.markers.iter().filter(|m| m.x.is_finite());
        for (i, marker) in finite.enumerate() {
            let px = area.x(x_axis, marker.x);
            out.push_str(&format!(
                "<line x1=\"{px}\" y1=\"{}\" x2=\"{px}\" y2=\"{}\" stroke=\"{MARKER_COLOUR}\" stroke-width=\"1.2\" stroke-dasharray=\"2 3\"/>\n",
                num(area.top),
                num(area.bottom),
                px = num(px),
            ));
            // Labels of nearby markers are staggered so they overlap less;
            // on the right half they hang left so they stay inside the plot.
            let y = area.top + 12.0 + (i % 3) as f64 * 12.0;
            let (x, anchor) = if px > (area.left + area.right) / 2.0 {
                (px - 3.0, "end")
            } else {
                (px + 3.0, "start")
            };
            out.push_str(&text(
                x,
                y,
                anchor,
                &format!(r#"font-size="10" fill="{MARKER_COLOUR}""#),
                &marker.label,
            ));
        }
    }

    fn draw_series(&self, out: &mut String, area: &Area, x_axis: &Axis, y_axis: &Axis) {
        for (i, series) in self.series.iter().enumerate() {
            let colour = colour(i);
            let pixels = series.points.iter().map(|&p| {
                self.axis_point(p)
                    .map(|(x, y)| (area.x(x_axis, x), area.y(y_axis, y)))
            });
            for run in runs(pixels) {
                if series.style == Style::Points || run.len() == 1 {
                    // An isolated point of a line would draw nothing.
                    for &(x, y) in &run {
                        out.push_str(&circle(i, x, y, colour));
                    }
                } else {
                    out.push_str(&format!(
                        "<path class=\"series s{i}\" d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.8\" stroke-linejoin=\"round\"/>\n",
                        path_data(series.style, &run)
                    ));
                }
            }
        }
    }
}

/// Empirical CDF of `values` as step points (x = value, y = fraction 0..1),
/// NaN ignored, sorted. Equal values give one point, at the fraction up to
/// and including them.
#[must_use]
pub fn cdf(values: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(sorted.len());
    for (i, &value) in sorted.iter().enumerate() {
        let fraction = (i + 1) as f64 / n;
        match points.last_mut() {
            Some(last) if last.0 == value => last.1 = fraction,
            _ => points.push((value, fraction)),
        }
    }
    points
}

/// The pixel rectangle the data is drawn in.
#[derive(Debug, Clone, Copy)]
struct Area {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Area {
    fn new(with_legend: bool) -> Area {
        let right_margin = if with_legend {
            LEGEND_WIDTH
        } else {
            MARGIN_RIGHT
        };
        Area {
            left: MARGIN_LEFT,
            right: WIDTH - right_margin,
            top: MARGIN_TOP,
            bottom: HEIGHT - MARGIN_BOTTOM,
        }
    }

    fn x(&self, axis: &Axis, value: f64) -> f64 {
        self.left + axis.fraction(value) * (self.right - self.left)
    }

    fn y(&self, axis: &Axis, value: f64) -> f64 {
        self.bottom - axis.fraction(value) * (self.bottom - self.top)
    }
}

/// A range in axis space (log10 for a log axis) and its labelled ticks.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// Where `value` lies between `lo` (0) and `hi` (1). Halves keep the
    /// arithmetic finite even for a range from `f64::MIN` to `f64::MAX`.
    fn fraction(&self, value: f64) -> f64 {
        let span = self.hi / 2.0 - self.lo / 2.0;
        if span > 0.0 {
            ((value / 2.0 - self.lo / 2.0) / span).clamp(0.0, 1.0)
        } else {
            0.5
        }
    }

    /// Just the ends, labelled with four significant digits: for ranges a
    /// nice step cannot describe.
    fn ends(lo: f64, hi: f64) -> Axis {
        let scientific = needs_scientific(lo.abs().max(hi.abs()));
        let label = |v: f64| fmt_number(v, exponent(v) - 3, scientific);
        Axis {
            lo,
            hi,
            ticks: vec![(lo, label(lo)), (hi, label(hi))],
        }
    }
}

/// The smallest and largest of `values`, which must be finite.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Widens an empty (or, relative to its magnitude, vanishing) range around
/// its centre so it can be scaled.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    let magnitude = lo.abs().max(hi.abs());
    if hi - lo > magnitude * 1e-9 {
        return (lo, hi);
    }
    let centre = lo / 2.0 + hi / 2.0;
    let pad = if centre == 0.0 {
        1.0
    } else {
        (centre.abs() * 0.1).max(f64::MIN_POSITIVE)
    };
    ((centre - pad).max(f64::MIN), (centre + pad).min(f64::MAX))
}

/// A linear axis from `lo` to `hi` (finite) extended to whole multiples of a
/// 1, 2 or 5 x 10^k step giving about five intervals.
fn linear_axis(lo: f64, hi: f64) -> Axis {
    let (lo, hi) = widen(lo, hi);
    let Some(step) = nice_step((hi / 2.0 - lo / 2.0) * 2.0 / TARGET_INTERVALS) else {
        return Axis::ends(lo, hi);
    };
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    let (axis_lo, axis_hi) = (first * step, last * step);
    let intervals = last - first;
    if !(axis_lo.is_finite() && axis_hi.is_finite() && (1.0..=MAX_TICKS).contains(&intervals)) {
        return Axis::ends(lo, hi);
    }
    // Multiplying whole numbers by the step (rather than adding steps)
    // keeps rounding error from accumulating.
    let scientific = needs_scientific(axis_lo.abs().max(axis_hi.abs()));
    let ticks = (0..=intervals as usize)
        .map(|i| {
            let value = (first + i as f64) * step;
            (value, fmt_number(value, exponent(step), scientific))
        })
        .collect();
    Axis {
        lo: axis_lo,
        hi: axis_hi,
        ticks,
    }
}

/// The smallest 1, 2 or 5 x 10^k that is at least `raw`.
fn nice_step(raw: f64) -> Option<f64> {
    if !(raw.is_finite() && raw > 0.0) {
        return None;
    }
    let base = 10f64.powf(raw.log10().floor());
    if !base.is_normal() {
        return None;
    }
    let fraction = raw / base;
    let nice = [1.0, 2.0, 5.0]
        .into_iter()
        .find(|&n| fraction <= n * (1.0 + 1e-9))
        .unwrap_or(10.0);
    let step = nice * base;
    step.is_normal().then_some(step)
}

/// A log axis for `lo..hi` given as log10 values: whole decades, ticks at
/// powers of ten (every n-th decade when there are many, the ends included).
fn log_axis(lo: f64, hi: f64) -> Axis {
    let (mut first, mut last) = (lo.floor(), hi.ceil());
    if last <= first {
        first -= 1.0;
        last += 1.0;
    }
    let stride = ((last - first) / 6.0).ceil().max(1.0);
    first = (first / stride).floor() * stride;
    last = (last / stride).ceil() * stride;
    let count = ((last - first) / stride).round() as usize;
    let plain = (-4.0..=5.0).contains(&first) && (-4.0..=5.0).contains(&last);
    let ticks = (0..=count)
        .map(|i| {
            let decade = first + i as f64 * stride;
            (decade, fmt_power(decade as i32, plain))
        })
        .collect();
    Axis {
        lo: first,
        hi: last,
        ticks,
    }
}

/// The decimal exponent of `value` (`floor(log10 |value|)`), 0 for 0.
fn exponent(value: f64) -> i32 {
    let e = value.abs().log10().floor();
    if e.is_finite() {
        e.clamp(-400.0, 400.0) as i32
    } else {
        0
    }
}

/// Whether an axis reaching `magnitude` labels its ticks `1.5e7` style:
/// plain decimals would be too long.
fn needs_scientific(magnitude: f64) -> bool {
    magnitude != 0.0 && !(-4..6).contains(&exponent(magnitude))
}

/// `value` written compactly down to the digit at 10^`last_digit`, as plain
/// decimals or `1.5e7` style, without trailing zeros. One axis uses one
/// style for all its labels.
fn fmt_number(value: f64, last_digit: i32, scientific: bool) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    let value_exp = exponent(value);
    let text = if !scientific {
        let decimals = (-last_digit).clamp(0, 17) as usize;
        trim_zeros(&format!("{value:.decimals$}")).to_string()
    } else {
        let precision = (value_exp - last_digit).clamp(0, 17) as usize;
        let full = format!("{value:.precision$e}");
        match full.split_once('e') {
            Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa)),
            None => full,
        }
    };
    if text == "-0" { "0".to_string() } else { text }
}

fn trim_zeros(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

/// 10^`exponent` as a tick label: `0.01` or `1000` when `plain` (for
/// exponents -4..=5), otherwise `1e9`.
fn fmt_power(exponent: i32, plain: bool) -> String {
    match exponent {
        0..=5 if plain => format!("1{}", "0".repeat(exponent as usize)),
        -4..=-1 if plain => format!("0.{}1", "0".repeat((-exponent - 1) as usize)),
        _ => format!("1e{exponent}"),
    }
}

fn draw_grid(out: &mut String, area: &Area, x_axis: &Axis, y_axis: &Axis) {
    for (value, label) in &x_axis.ticks {
        let px = num(area.x(x_axis, *value));
        out.push_str(&format!(
            "<line x1=\"{px}\" y1=\"{}\" x2=\"{px}\" y2=\"{}\" stroke=\"{GRID_COLOUR}\"/>\n",
            num(area.top),
            num(area.bottom + 4.0),
        ));
        out.push_str(&text(
            area.x(x_axis, *value),
            area.bottom + 16.0,
            "middle",
            "",
            label,
        ));
    }
    for (value, label) in &y_axis.ticks {
        let py = num(area.y(y_axis, *value));
        out.push_str(&format!(
            "<line x1=\"{}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\" stroke=\"{GRID_COLOUR}\"/>\n",
            num(area.left - 4.0),
            num(area.right),
        ));
        out.push_str(&text(
            area.left - 6.0,
            area.y(y_axis, *value) + 4.0,
            "end",
            "",
            label,
        ));
    }
}

fn draw_frame(out: &mut String, area: &Area) {
    out.push_str(&format!(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333333\"/>\n",
        num(area.left),
        num(area.top),
        num(area.right - area.left),
        num(area.bottom - area.top),
    ));
}

/// What a legend row shows before its label.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    Series(Style, &'static str),
    Reference,
}

#[derive(Debug, Clone, Copy)]
struct LegendEntry<'a> {
    label: &'a str,
    swatch: Swatch,
}

fn draw_legend(out: &mut String, area: &Area, entries: &[LegendEntry<'_>]) {
    if entries.is_empty() {
        return;
    }
    let x = area.right + 12.0;
    let rows = ((area.bottom - area.top) / LEGEND_ROW).floor().max(1.0) as usize;
    let shown = if entries.len() > rows {
        rows - 1
    } else {
        entries.len()
    };
    for (i, entry) in entries.iter().take(shown).enumerate() {
        let y = area.top + 8.0 + i as f64 * LEGEND_ROW;
        out.push_str(&swatch(entry.swatch, x, y));
        out.push_str(&text(
            x + 26.0,
            y + 4.0,
            "start",
            "",
            &truncate(entry.label, LEGEND_CHARS),
        ));
    }
    if shown < entries.len() {
        let y = area.top + 8.0 + shown as f64 * LEGEND_ROW;
        let more = format!("\u{2026} {} more", entries.len() - shown);
        out.push_str(&text(x + 26.0, y + 4.0, "start", "", &more));
    }
}

/// A 20 px wide sample of how an entry is drawn, centred vertically on `y`.
fn swatch(swatch: Swatch, x: f64, y: f64) -> String {
    match swatch {
        Swatch::Series(Style::Points, colour) => format!(
            "<circle cx=\"{}\" cy=\"{}\" r=\"{POINT_RADIUS}\" fill=\"{colour}\"/>\n",
            num(x + 10.0),
            num(y)
        ),
        Swatch::Series(Style::Step, colour) => format!(
            "<path d=\"M{} {} H{} V{} H{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.8\"/>\n",
            num(x),
            num(y + 4.0),
            num(x + 10.0),
            num(y - 4.0),
            num(x + 20.0)
        ),
        Swatch::Series(Style::Line, colour) => format!(
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"1.8\"/>\n",
            num(x),
            num(x + 20.0),
            y = num(y)
        ),
        Swatch::Reference => format!(
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{REFERENCE_COLOUR}\" stroke-width=\"1.2\" stroke-dasharray=\"6 4\"/>\n",
            num(x),
            num(x + 20.0),
            y = num(y)
        ),
    }
}

/// Splits a series at its skipped points into runs of drawable pixels.
fn runs(pixels: impl Iterator<Item = Option<(f64, f64)>>) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for pixel in pixels {
        match pixel {
            Some(p) => current.push(p),
            None if !current.is_empty() => runs.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// The `d` attribute of a path through `run` (at least one point).
fn path_data(style: Style, run: &[(f64, f64)]) -> String {
    let mut d = String::new();
    for (i, &(x, y)) in run.iter().enumerate() {
        let segment = match (i, style) {
            (0, _) => format!("M{} {}", num(x), num(y)),
            (_, Style::Step) => format!(" H{} V{}", num(x), num(y)),
            _ => format!(" L{} {}", num(x), num(y)),
        };
        d.push_str(&segment);
    }
    d
}

fn circle(series: usize, x: f64, y: f64, colour: &str) -> String {
    format!(
        "<circle class=\"series s{series}\" cx=\"{}\" cy=\"{}\" r=\"{POINT_RADIUS}\" fill=\"{colour}\"/>\n",
        num(x),
        num(y)
    )
}

/// A `<text>` element; `attributes` are trusted, `content` is escaped.
fn text(x: f64, y: f64, anchor: &str, attributes: &str, content: &str) -> String {
    format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" {attributes}>{}</text>\n",
        num(x),
        num(y),
        escape(content)
    )
}

fn colour(series: usize) -> &'static str {
    PALETTE[series % PALETTE.len()]
}

/// A pixel coordinate: a tenth of a pixel is finer than any screen.
fn num(value: f64) -> String {
    format!("{value:.1}")
}

/// `text` safe inside XML text or attribute values. Control characters XML
/// 1.0 forbids are dropped rather than making the document unreadable.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `label`, the last one an ellipsis if cut.
fn truncate(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        let kept: String = label.chars().take(max.saturating_sub(1)).collect();
        format!("{kept}\u{2026}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks what a browser's XML parser would reject: unbalanced or
    /// mismatched tags, a second root, raw `>` or a bare `&` in text.
    fn check_well_formed(svg: &str) -> Result<(), String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = svg;
        loop {
            let (content, tail) = match rest.find('<') {
                Some(start) => (&rest[..start], Some(&rest[start + 1..])),
                None => (rest, None),
            };
            check_text(content)?;
            if stack.is_empty() && !content.trim().is_empty() {
                return Err(format!("text outside the root: {content:?}"));
            }
            let Some(after) = tail else { break };
            let end = after.find('>').ok_or("unterminated tag")?;
            let tag = &after[..end];
            rest = &after[end + 1..];
            if tag.contains('<') {
                return Err(format!("'<' inside tag {tag:?}"));
            }
            check_text(tag)?;
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("close without open: {tag}"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else {
                let name = tag
                    .trim_end_matches('/')
                    .split_whitespace()
                    .next()
                    .ok_or("empty tag")?;
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    /// Every `&` starts a known entity; no raw `>` in text.
    fn check_text(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let entity = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"];
            if !entity.iter().any(|e| text[i..].starts_with(e)) {
                return Err(format!("bare '&' in {text:?}"));
            }
        }
        if text.contains('>') {
            return Err(format!("raw '>' in {text:?}"));
        }
        Ok(())
    }

    fn attribute(element: &str, name: &str) -> f64 {
        let key = format!(" {name}=\"");
        let start = element.find(&key).expect("attribute present") + key.len();
        let len = element[start..].find('"').expect("closing quote");
        element[start..start + len].parse().expect("a number")
    }

    /// The (cx, cy) of every data point drawn as a circle.
    fn data_circles(svg: &str) -> Vec<(f64, f64)> {
        svg.lines()
            .filter(|l| l.starts_with("<circle class=\"series"))
            .map(|l| (attribute(l, "cx"), attribute(l, "cy")))
            .collect()
    }

    fn assert_sane(plot: &Plot) -> String {
        let svg = plot.to_svg();
        check_well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        svg
    }

    fn labels(axis: &Axis) -> Vec<&str> {
        axis.ticks.iter().map(|(_, l)| l.as_str()).collect()
    }

    #[test]
    fn typical_plot_is_well_formed_and_has_legend() {
        let plot = Plot::new("Convergence", "time (s)", "nodes")
            .series(
                "alive",
                Style::Line,
                vec![(0.0, 1.0), (1.0, 5.0), (2.0, 9.0)],
            )
            .series("dead", Style::Step, vec![(0.0, 0.0), (1.5, 2.0)])
            .series("probes", Style::Points, vec![(0.5, 3.0)])
            .reference("target", 8.0)
            .marker("kill", 1.0)
            .marker("heal", 1.8);
        let svg = assert_sane(&plot);
        for label in ["alive", "dead", "probes", "target", "kill", "heal"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
        assert!(svg.contains("stroke-dasharray=\"6 4\""));
        assert!(svg.contains("stroke-dasharray=\"2 3\""));
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn empty_plot_says_no_data() {
        let svg = assert_sane(&Plot::new("t", "x", "y"));
        assert!(svg.contains(">no data</text>"));
        let only_nan = Plot::new("t", "x", "y").series("s", Style::Line, vec![(f64::NAN, 1.0)]);
        assert!(assert_sane(&only_nan).contains(">no data</text>"));
    }

    #[test]
    fn degenerate_inputs_do_not_break_the_document() {
        let plots = [
            Plot::new("one", "x", "y").series("s", Style::Line, vec![(3.0, 4.0)]),
            Plot::new("flat", "x", "y").series("s", Style::Line, vec![(1.0, 7.0); 5]),
            Plot::new("zero", "x", "y").series("s", Style::Step, vec![(0.0, 0.0); 3]),
            Plot::new("huge", "x", "y").series(
                "s",
                Style::Line,
                vec![(f64::MIN, f64::MIN), (f64::MAX, f64::MAX)],
            ),
            Plot::new("tiny", "x", "y").series(
                "s",
                Style::Points,
                vec![(0.0, 5e-324), (5e-324, 1e-320)],
            ),
            Plot::new("negative", "x", "y").series(
                "s",
                Style::Line,
                vec![(-5.0, -1e9), (-1.0, -2e9)],
            ),
            Plot::new("far", "x", "y").series(
                "s",
                Style::Line,
                vec![(1e15, 1.0), (1e15 + 1.0, 2.0)],
            ),
            Plot {
                log_y: true,
                ..Plot::new("log", "x", "y").series(
                    "s",
                    Style::Line,
                    vec![(0.0, 0.0), (1.0, -3.0), (2.0, 1e-300), (3.0, 1e300)],
                )
            },
            Plot {
                log_y: true,
                ..Plot::new("log flat", "x", "y")
                    .series("s", Style::Line, vec![(0.0, 100.0)])
                    .reference("negative target", -1.0)
            },
            Plot::new("refs only", "x", "y")
                .reference("r", 1.0)
                .marker("m", f64::INFINITY),
        ];
        for plot in &plots {
            assert_sane(plot);
        }
    }

    #[test]
    fn text_is_escaped() {
        let nasty = "a<b & \"c\" 'd'>\u{0}";
        let plot = Plot::new(nasty, nasty, nasty)
            .series(nasty, Style::Line, vec![(0.0, 1.0), (1.0, 2.0)])
            .reference(nasty, 1.5)
            .marker(nasty, 0.5);
        let svg = assert_sane(&plot);
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"));
        assert!(!svg.contains("a<b") && !svg.contains('\u{0}'));
        assert_eq!(escape("<&>\"'"), "&lt;&amp;&gt;&quot;&apos;");
    }

    #[test]
    fn non_finite_points_are_skipped() {
        let points = vec![
            (0.0, 1.0),
            (f64::NAN, 2.0),
            (2.0, f64::NAN),
            (3.0, f64::INFINITY),
            (f64::NEG_INFINITY, 4.0),
            (4.0, 5.0),
        ];
        let svg = assert_sane(&Plot::new("t", "x", "y").series("s", Style::Points, points.clone()));
        assert_eq!(data_circles(&svg).len(), 2);

        // A line leaves a gap where points were skipped.
        let line = vec![
            (0.0, 1.0),
            (1.0, 2.0),
            (2.0, f64::NAN),
            (3.0, 3.0),
            (4.0, 5.0),
        ];
        let svg = assert_sane(&Plot::new("t", "x", "y").series("s", Style::Line, line));
        let paths: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<path class"))
            .collect();
        assert_eq!(paths.len(), 2, "{svg}");
    }

    #[test]
    fn log_axis_skips_non_positive_values() {
        let plot = Plot {
            log_y: true,
            ..Plot::new("t", "x", "y").series(
                "s",
                Style::Points,
                vec![(0.0, 0.0), (1.0, -1.0), (2.0, 10.0), (3.0, 1000.0)],
            )
        };
        let svg = assert_sane(&plot);
        let circles = data_circles(&svg);
        assert_eq!(circles.len(), 2);
        let area = Area::new(true);
        // 10 and 1000 span exactly two decades: the bottom and top edges.
        assert!((circles[0].1 - area.bottom).abs() < 0.06, "{circles:?}");
        assert!((circles[1].1 - area.top).abs() < 0.06, "{circles:?}");
    }

    #[test]
    fn linear_ticks_are_nice_numbers() {
        let axis = linear_axis(0.0, 0.97);
        assert_eq!(labels(&axis), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!((axis.lo, axis.hi), (0.0, 1.0));
        for (value, expected) in axis.ticks.iter().zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]) {
            assert!((value.0 - expected).abs() < 1e-12);
        }

        assert_eq!(labels(&linear_axis(0.0, 0.3)), ["0", "0.1", "0.2", "0.3"]);
        assert_eq!(
            labels(&linear_axis(-7.0, 12.0)),
            ["-10", "-5", "0", "5", "10", "15"]
        );
        assert_eq!(
            labels(&linear_axis(0.0, 4e6)),
            ["0", "1e6", "2e6", "3e6", "4e6"]
        );
        assert_eq!(
            labels(&linear_axis(0.0, 2e6)),
            ["0", "5e5", "1e6", "1.5e6", "2e6"]
        );
        assert_eq!(
            labels(&linear_axis(0.0, 1.2e-5)),
            ["0", "5e-6", "1e-5", "1.5e-5"]
        );
        assert_eq!(
            labels(&linear_axis(95.0, 105.0)),
            ["94", "96", "98", "100", "102", "104", "106"]
        );
        for (lo, hi) in [
            (0.0, 1.0),
            (3.0, 3.5),
            (-1e6, 2e5),
            (0.001, 0.0013),
            (1.0, 1e4),
        ] {
            let axis = linear_axis(lo, hi);
            assert!(axis.lo <= lo && axis.hi >= hi, "{lo}..{hi}: {axis:?}");
            assert!((4..=8).contains(&axis.ticks.len()), "{lo}..{hi}: {axis:?}");
        }
    }

    #[test]
    fn numbers_are_formatted_compactly() {
        assert_eq!(fmt_number(0.1 + 0.2, -1, false), "0.3");
        assert_eq!(fmt_number(3.0 * 0.1, -1, false), "0.3");
        assert_eq!(fmt_number(-2.5, -1, false), "-2.5");
        assert_eq!(fmt_number(250_000.0, 4, false), "250000");
        assert_eq!(fmt_number(250_000.0, 4, true), "2.5e5");
        assert_eq!(fmt_number(1.25e9, 7, true), "1.25e9");
        assert_eq!(fmt_number(-0.0, 0, false), "0");
        assert_eq!(fmt_power(-3, true), "0.001");
        assert_eq!(fmt_power(0, true), "1");
        assert_eq!(fmt_power(4, true), "10000");
        assert_eq!(fmt_power(4, false), "1e4");
        assert_eq!(fmt_power(9, true), "1e9");
        assert_eq!(fmt_power(-7, true), "1e-7");
    }

    #[test]
    fn log_ticks_are_powers_of_ten() {
        let axis = log_axis(3f64.log10(), 2000f64.log10());
        assert_eq!(labels(&axis), ["1", "10", "100", "1000", "10000"]);
        assert_eq!((axis.lo, axis.hi), (0.0, 4.0));
        // A stride of two decades; the ends stay labelled, in one style.
        let strided = log_axis(3f64.log10(), 2e6f64.log10());
        assert_eq!(labels(&strided), ["1e0", "1e2", "1e4", "1e6", "1e8"]);
        assert_eq!((strided.lo, strided.hi), (0.0, 8.0));
        let wide = log_axis(-300.0, 300.0);
        assert!(wide.ticks.len() <= 8, "{wide:?}");
        assert!(
            wide.ticks
                .iter()
                .all(|(_, l)| l.starts_with("1e") || l == "1")
        );
    }

    #[test]
    fn points_map_inside_the_plot_area() {
        let plot = Plot::new("t", "x", "y").series(
            "s",
            Style::Points,
            vec![(0.0, 0.0), (5.0, 5.0), (10.0, 10.0)],
        );
        let svg = assert_sane(&plot);
        let area = Area::new(true);
        let circles = data_circles(&svg);
        let expected = [
            (area.left, area.bottom),
            (
                (area.left + area.right) / 2.0,
                (area.top + area.bottom) / 2.0,
            ),
            (area.right, area.top),
        ];
        assert_eq!(circles.len(), expected.len());
        for (got, want) in circles.iter().zip(expected) {
            assert!(
                (got.0 - want.0).abs() < 0.06 && (got.1 - want.1).abs() < 0.06,
                "{got:?} != {want:?}"
            );
        }

        // Wherever the data lies, it stays inside the area.
        let wild = Plot::new("t", "x", "y").series(
            "s",
            Style::Points,
            vec![(-1e12, 3.0), (7.0, -4e-3), (1e9, 1e300)],
        );
        for (x, y) in data_circles(&assert_sane(&wild)) {
            assert!((area.left..=area.right).contains(&x), "{x}");
            assert!((area.top..=area.bottom).contains(&y), "{y}");
        }
    }

    #[test]
    fn references_and_markers_extend_the_range() {
        let plot = Plot::new("t", "x", "y")
            .series("s", Style::Points, vec![(0.0, 0.0), (1.0, 1.0)])
            .reference("target", 10.0)
            .marker("late", 10.0);
        let svg = assert_sane(&plot);
        let area = Area::new(true);
        let (x, y) = data_circles(&svg)[1];
        assert!(x < (area.left + area.right) / 2.0 && y > (area.top + area.bottom) / 2.0);
    }

    #[test]
    fn cdf_is_sorted_fractions_without_nan() {
        assert_eq!(
            cdf(&[3.0, 1.0, 2.0]),
            vec![(1.0, 1.0 / 3.0), (2.0, 2.0 / 3.0), (3.0, 1.0)]
        );
        assert_eq!(
            cdf(&[f64::NAN, 2.0, f64::NAN, 1.0]),
            vec![(1.0, 0.5), (2.0, 1.0)]
        );
        assert_eq!(cdf(&[5.0, 5.0, 1.0, 5.0]), vec![(1.0, 0.25), (5.0, 1.0)]);
        assert!(cdf(&[]).is_empty());
        assert!(cdf(&[f64::NAN]).is_empty());
    }

    #[test]
    fn legend_is_cut_when_there_are_too_many_series() {
        let plot = (0..40).fold(Plot::new("t", "x", "y"), |plot, i| {
            plot.series(
                &format!("series {i}"),
                Style::Line,
                vec![(0.0, i as f64), (1.0, 1.0)],
            )
        });
        let svg = assert_sane(&plot);
        assert!(svg.contains("more</text>"));
        assert!(!svg.contains(">series 39</text>"));
    }

    #[test]
    fn write_puts_the_svg_in_the_file() {
        let plot = Plot::new("t", "x", "y").series("s", Style::Line, vec![(0.0, 1.0), (1.0, 2.0)]);
        let path = std::env::temp_dir().join(format!("baton-plot-test-{}.svg", std::process::id()));
        plot.write(&path).expect("temp dir is writable");
        let written = std::fs::read_to_string(&path).expect("just written");
        let _ = std::fs::remove_file(&path);
        assert_eq!(written, plot.to_svg());
    }
}
