//! What a scenario measured: report.json (the keys docs/operations.md
//! lists, plus the details), report.md (tables against the targets) and SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::plot::Plot;
use crate::sim::stats::Summary;

/// A design target ([`crate::targets`]) and what this run measured
/// against it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The target, in words (`<= 1500 ms`).
    pub target: String,
    /// The measured value, in words.
    pub measured: String,
    /// Whether the measurement meets the target.
    pub met: bool,
}

impl Target {
    /// `measured <= limit`, shown with `unit`; a missing value is not met.
    pub fn at_most(what: &str, measured: Option<f64>, limit: f64, unit: &str) -> Target {
        Target {
            what: what.to_owned(),
            target: format!("<= {} {unit}", fmt_num(limit)),
            measured: measured
                .map(|m| format!("{} {unit}", fmt_num(m)))
                .unwrap_or_else(|| "not measured".into()),
            met: measured.is_some_and(|m| m <= limit),
        }
    }

    /// `measured >= limit`, shown with `unit`; a missing value is not met.
    pub fn at_least(what: &str, measured: Option<f64>, limit: f64, unit: &str) -> Target {
        Target {
            what: what.to_owned(),
            target: format!(">= {} {unit}", fmt_num(limit)),
            measured: measured
                .map(|m| format!("{} {unit}", fmt_num(m)))
                .unwrap_or_else(|| "not measured".into()),
            met: measured.is_some_and(|m| m >= limit),
        }
    }
}

/// One session as its client heard it over the whole run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientStats {
    /// Session id.
    pub id: String,
    /// RTP packets received.
    pub packets: u64,
    /// Sequence numbers never received (between the first and the last).
    pub lost: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Duplicates whose bytes differ (two senders disagreeing): must be 0.
    pub mismatched_duplicates: u64,
    /// Packets older than one received before them.
    pub out_of_order: u64,
    /// Longest silence, ms.
    pub longest_gap_ms: f64,
    /// Distinct SSRCs heard (one stream: 1).
    pub ssrcs: usize,
    /// The nodes it heard from, in order of first packet.
    pub sources: Vec<String>,
    /// 100 ms intervals in which packets came from two nodes at once: a
    /// clean failover or transfer makes at most one per move, a doubly
    /// owned session many.
    pub two_source_bins: u64,
}

/// Everything a scenario run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Nodes (the largest N for `scale`).
    pub nodes: usize,
    /// The WAN matrix used, or null for a LAN.
    pub wan: Option<String>,
    /// Random loss on every link during the measured part.
    pub loss: f64,
    /// Sessions opened.
    pub sessions: usize,
    /// Seed of the emulator and the fault choices.
    pub seed: u64,
    /// Wall time of the run, s.
    pub duration_s: f64,
    /// Fault until every survivor marked the node dead, ms, over faults.
    pub detection_ms: Option<Summary>,
    /// Longest silence each affected client heard around a fault, ms.
    pub gap_ms: Option<Summary>,
    /// Fault until the client heard the session from the node it moved to
    /// (make-before-break transfer), ms.
    pub transfer_ms: Option<Summary>,
    /// Healthy nodes declared dead.
    pub false_positives: Option<u64>,
    /// Bytes each node sent per second (eth0 counters, Ethernet frames).
    pub bytes_per_node_per_s: Option<f64>,
    /// Sessions hosted by nobody or silent, 10 s after a fault or heal.
    pub sessions_lost: Option<usize>,
    /// Sessions hosted twice or heard from two nodes, 10 s after a fault or
    /// heal.
    pub double_owned: Option<usize>,
    /// Vivaldi's median relative RTT error against the emulated RTTs.
    pub vivaldi_median_rel_error: Option<f64>,
    /// CPU per node, percent of one core.
    pub cpu_pct: Option<Summary>,
    /// RSS per node, MB.
    pub rss_mb: Option<Summary>,
    /// The targets this scenario speaks to.
    pub targets: Vec<Target>,
    /// What happened when, in words.
    pub timeline: Vec<String>,
    /// Scenario-specific measurements.
    pub details: serde_json::Value,
    /// Every session as its client heard it over the whole run.
    pub clients: Vec<ClientStats>,
    /// Plots, written next to the report.
    #[serde(skip)]
    pub plots: Vec<(String, Plot)>,
}

impl Report {
    /// An empty report of `scenario`.
    pub fn new(scenario: &str, nodes: usize, wan: Option<String>, loss: f64, seed: u64) -> Report {
        Report {
            scenario: scenario.to_owned(),
            nodes,
            wan,
            loss,
            sessions: 0,
            seed,
            duration_s: 0.0,
            detection_ms: None,
            gap_ms: None,
            transfer_ms: None,
            false_positives: None,
            bytes_per_node_per_s: None,
            sessions_lost: None,
            double_owned: None,
            vivaldi_median_rel_error: None,
            cpu_pct: None,
            rss_mb: None,
            targets: Vec::new(),
            timeline: Vec::new(),
            details: serde_json::Value::Null,
            clients: Vec::new(),
            plots: Vec::new(),
        }
    }

    /// Whether every target was met.
    pub fn all_met(&self) -> bool {
        self.targets.iter().all(|t| t.met)
    }

    /// Writes report.json, report.md and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json + "\n")?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        for (file, plot) in &self.plots {
            plot.write(&dir.join(file))?;
        }
        Ok(())
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let net = self
            .wan
            .as_ref()
            .map(|w| format!("WAN matrix `{w}`"))
            .unwrap_or_else(|| "LAN (no added delay)".into());
        let _ = writeln!(
            md,
            "# testnet `{}`: {} nodes, {net}\n",
            self.scenario, self.nodes
        );
        let _ = writeln!(
            md,
            "Loss {}%, {} sessions, seed {}, {:.0} s wall time.\n",
            fmt_num(self.loss * 100.0),
            self.sessions,
            self.seed,
            self.duration_s
        );
        let _ = writeln!(md, "| measure | value |\n|---|---|");
        let summary = |s: &Option<Summary>, unit: &str| {
            s.map(|s| {
                format!(
                    "p50 {} / p99 {} / max {} {unit} ({} samples)",
                    opt(s.p50),
                    opt(s.p99),
                    opt(s.max),
                    s.samples
                )
            })
        };
        let rows: [(&str, Option<String>); 10] = [
            ("detection", summary(&self.detection_ms, "ms")),
            ("client gap", summary(&self.gap_ms, "ms")),
            ("transfer", summary(&self.transfer_ms, "ms")),
            (
                "false positives",
                self.false_positives.map(|v| v.to_string()),
            ),
            (
                "bytes per node per s",
                self.bytes_per_node_per_s.map(|v| format!("{v:.0}")),
            ),
            ("sessions lost", self.sessions_lost.map(|v| v.to_string())),
            ("doubly owned", self.double_owned.map(|v| v.to_string())),
            (
                "Vivaldi median relative error",
                self.vivaldi_median_rel_error
                    .map(|v| format!("{:.1}%", v * 100.0)),
            ),
            ("CPU per node", summary(&self.cpu_pct, "% of a core")),
            ("RSS per node", summary(&self.rss_mb, "MB")),
        ];
        for (what, value) in rows {
            if let Some(value) = value {
                let _ = writeln!(md, "| {what} | {value} |");
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(
                md,
                "\n## Targets\n\n| what | target | measured | met |\n|---|---|---|---|"
            );
            for t in &self.targets {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    t.what,
                    t.target,
                    t.measured,
                    if t.met { "yes" } else { "**no**" }
                );
            }
        }
        if !self.clients.is_empty() {
            let _ = writeln!(
                md,
                "\n## Clients (whole run)\n\n| session | packets | lost | duplicates (mismatched) | out of order | longest gap | SSRCs | heard from | 100 ms bins with two senders |\n|---|---|---|---|---|---|---|---|---|"
            );
            for c in &self.clients {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} ({}) | {} | {} ms | {} | {} | {} |",
                    c.id,
                    c.packets,
                    c.lost,
                    c.duplicates,
                    c.mismatched_duplicates,
                    c.out_of_order,
                    fmt_num(c.longest_gap_ms),
                    c.ssrcs,
                    c.sources.join(" "),
                    c.two_source_bins
                );
            }
        }
        if !self.plots.is_empty() {
            let _ = writeln!(md, "\n## Plots\n");
            for (file, plot) in &self.plots {
                let _ = writeln!(md, "![{}]({file})\n", plot.title);
            }
        }
        if !self.timeline.is_empty() {
            let _ = writeln!(md, "## Timeline\n");
            for line in &self.timeline {
                let _ = writeln!(md, "- {line}");
            }
        }
        md
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "-".into())
}

/// A number with at most one decimal, without trailing zeros.
pub fn fmt_num(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_and_missing_values_fail() {
        assert!(Target::at_most("gap", Some(1500.0), 1500.0, "ms").met);
        assert!(!Target::at_most("gap", Some(1500.1), 1500.0, "ms").met);
        let missing = Target::at_most("gap", None, 1500.0, "ms");
        assert!(!missing.met);
        assert_eq!(missing.measured, "not measured");
    }

    #[test]
    fn json_has_the_design_keys_and_markdown_the_targets() {
        let mut r = Report::new("kill", 4, Some("wan-rtt.csv".into()), 0.0, 7);
        r.detection_ms = Some(Summary::of(&[400.0, 600.0]));
        r.sessions_lost = Some(0);
        r.targets
            .push(Target::at_most("detection p99", Some(600.0), 1500.0, "ms"));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "detection_ms",
            "gap_ms",
            "false_positives",
            "bytes_per_node_per_s",
            "sessions_lost",
            "double_owned",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        assert_eq!(json["detection_ms"]["p99"], 600.0);
        let md = r.markdown();
        assert!(
            md.contains("| detection p99 | <= 1500 ms | 600 ms | yes |"),
            "{md}"
        );
        assert!(r.all_met());
    }
}
