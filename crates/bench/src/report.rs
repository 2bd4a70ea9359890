//! The report: every figure with the conditions it was measured under, as one table or as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::machine::CpuUse;
use crate::server::Backend;
use crate::stats::Percentiles;

#[derive(Debug, Serialize)]
pub struct Report {
    pub conditions: Conditions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<LoadFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushFigures>,
}

#[derive(Debug, Serialize)]
pub struct Conditions {
    pub backend: Backend,
    /// Bytes of each event's `data`.
    pub payload_bytes: usize,
    /// Connections of the publish and ceiling load.
    pub concurrency: usize,
    pub cores: usize,
    pub cpu_model: String,
    /// Profile the bench binary was built with.
    pub build_profile: &'static str,
    /// The server under test: the binary started, or the URL targeted.
    pub server: String,
    pub started_at: String,
    /// `/proc/loadavg` (1, 5 and 15 minutes) when the run started.
    pub load_average: String,
    /// Share of the CPU other processes used in the second before each scenario started.
    pub background_cpu_pct: BTreeMap<&'static str, f64>,
    /// Who decides access: the built-in registry or an external PDP (with its cache time).
    pub access: String,
    /// With an external PDP: the requests it answered, and the decisions they asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdp_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdp_decisions: Option<u64>,
}

/// One load run against an HTTP endpoint.
#[derive(Debug, Serialize)]
pub struct LoadFigures {
    pub requests: usize,
    pub events_per_request: usize,
    pub concurrency: usize,
    pub request_bytes: usize,
    pub duration_s: f64,
    pub per_second: f64,
    pub latency: Percentiles,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub server_peak_rss_mib: Option<f64>,
    /// CPU use during the measured run.
    pub cpu: Option<CpuUse>,
    /// The server's group commits during the measured run (from its `/metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_commits: Option<GroupCommits>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct GroupCommits {
    pub commits: u64,
    pub events_per_commit: f64,
    /// Mean time of the store's append (insert and durable commit) per group commit.
    pub commit_ms_mean: f64,
}

#[derive(Debug, Serialize)]
pub struct PublishFigures {
    #[serde(flatten)]
    pub load: LoadFigures,
    /// Events per second as a fraction of the ceiling measured in the same run.
    pub fraction_of_ceiling: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct QueryFigures {
    pub page_size: u32,
    pub queries_per_shape: usize,
    pub concurrency: usize,
    pub parties: u64,
    pub types: u64,
    pub sources: u64,
    pub stages: Vec<QueryStage>,
    pub server_peak_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct QueryStage {
    /// Events in the store while the shapes were measured.
    pub events: u64,
    /// Prefill rate of the events added for this stage.
    pub prefill_events_per_s: f64,
    pub prefill_batch_events: usize,
    /// SQLite file sizes (database and WAL), when known.
    pub store_bytes: Option<u64>,
    /// Whether `ANALYZE` ran on the store before the shapes were measured (`--analyze`).
    pub analyzed: bool,
    /// CPU use while the shapes were measured.
    pub cpu: Option<CpuUse>,
    pub shapes: Vec<ShapeFigures>,
}

#[derive(Debug, Serialize)]
pub struct ShapeFigures {
    pub shape: &'static str,
    /// One of the requests, as an example.
    pub example: String,
    pub rows_per_page: f64,
    pub latency: Percentiles,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PushFigures {
    /// `every` (each subscription gets every event) or `fanout` (each event matches one).
    pub shape: &'static str,
    pub subscriptions: usize,
    /// Throughput phase: events published at once (in batches), each delivered to every
    /// subscription.
    pub events: usize,
    /// Each subscription's `maxEventsPerBatch`; a delivery here is one event, batched or not.
    pub batch: u32,
    /// Each subscription's `rateLimit`, if it had one.
    pub rate_limit: Option<u32>,
    /// `--ingest-events`: single events accepted per second before the subscriptions existed,
    /// and while the throughput phase's backlog drained.
    pub ingest_alone_per_s: Option<f64>,
    pub ingest_during_backlog_per_s: Option<f64>,
    pub deliveries_expected: usize,
    pub deliveries: usize,
    pub duplicates: usize,
    /// From the first publish to the last delivery.
    pub duration_s: f64,
    pub deliveries_per_s: f64,
    /// Publish-to-webhook latency of the throughput phase (includes the time in the backlog).
    pub latency_under_load: Percentiles,
    /// Latency phase: single events published one at a time at a steady rate.
    pub paced_events: usize,
    pub paced_rate_per_s: f64,
    pub paced_deliveries: usize,
    pub latency: Percentiles,
    pub server_peak_rss_mib: Option<f64>,
    /// CPU use during the throughput phase.
    pub cpu: Option<CpuUse>,
}

/// The targets of issue #6, checked where they apply.
struct Row {
    scenario: &'static str,
    figure: String,
    value: String,
    target: String,
}

fn verdict(met: bool, target: &str) -> String {
    format!("{target} {}", if met { "(met)" } else { "(MISSED)" })
}

/// Page lengths within 10 % of each other.
fn comparable(a: f64, b: f64) -> bool {
    (a - b).abs() <= 0.1 * a.max(b)
}

fn ms(p: &Percentiles) -> String {
    format!("{:.2} / {:.2} / {:.2} ms", p.p50_ms, p.p99_ms, p.p99_9_ms)
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn cpu(c: &Option<CpuUse>) -> String {
    match c {
        Some(c) => format!(
            "{} / {:.2} / {:.2}",
            c.server_cores
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "n/a".into()),
            c.bench_cores,
            c.other_cores
        ),
        None => "n/a".into(),
    }
}

fn mib(x: Option<f64>) -> String {
    x.map(|m| format!("{m:.1} MiB"))
        .unwrap_or_else(|| "n/a".into())
}

impl Report {
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut row = |scenario, figure: &str, value: String, target: String| {
            rows.push(Row {
                scenario,
                figure: figure.to_owned(),
                value,
                target,
            })
        };
        let sqlite = self.conditions.backend == Backend::Sqlite;
        for (name, load) in [
            ("ceiling", self.ceiling.as_ref()),
            ("publish", self.publish.as_ref().map(|p| &p.load)),
        ] {
            let Some(load) = load else { continue };
            row(
                name,
                "requests, connections",
                format!(
                    "{} over {}{}",
                    thousands(load.requests as f64),
                    load.concurrency,
                    if load.events_per_request > 1 {
                        format!(", {} events each", load.events_per_request)
                    } else {
                        String::new()
                    }
                ),
                String::new(),
            );
            row(
                name,
                "duration",
                format!("{:.2} s", load.duration_s),
                String::new(),
            );
            row(name, "events/s", thousands(load.per_second), String::new());
            let p99_target = if name == "publish" && sqlite {
                verdict(load.latency.p99_ms < 20.0, "p99 < 20 ms")
            } else {
                String::new()
            };
            row(
                name,
                "latency p50 / p99 / p99.9",
                ms(&load.latency),
                p99_target,
            );
            let errors = match &load.first_error {
                Some(e) => format!("{} (first: {e})", load.errors),
                None => load.errors.to_string(),
            };
            row(name, "errors", errors, String::new());
            let rss_target = match (name, load.server_peak_rss_mib) {
                ("publish", Some(m)) if sqlite => verdict(m < 150.0, "< 150 MiB"),
                _ => String::new(),
            };
            row(
                name,
                "server peak RSS",
                mib(load.server_peak_rss_mib),
                rss_target,
            );
            row(
                name,
                "CPU cores: server / bench / others",
                cpu(&load.cpu),
                String::new(),
            );
            if let Some(g) = &load.group_commits {
                row(
                    name,
                    "group commits: count, events each, ms each",
                    format!(
                        "{} x {:.1} events, {:.2} ms",
                        thousands(g.commits as f64),
                        g.events_per_commit,
                        g.commit_ms_mean
                    ),
                    String::new(),
                );
            }
        }
        if let Some(p) = &self.publish
            && let Some(f) = p.fraction_of_ceiling
        {
            let (goal, label) = if sqlite {
                (0.5, ">= 50 %")
            } else {
                (0.25, ">= 25 %")
            };
            row(
                "publish",
                "fraction of ceiling",
                format!("{:.1} %", f * 100.0),
                verdict(f >= goal, label),
            );
        }
        if let Some(q) = &self.query {
            let first = q.stages.first();
            let last = q.stages.last();
            for stage in &q.stages {
                row(
                    "query",
                    &format!("prefill to {}", thousands(stage.events as f64)),
                    format!(
                        "{} events/s (batches of {}){}{}",
                        thousands(stage.prefill_events_per_s),
                        stage.prefill_batch_events,
                        if stage.analyzed { ", then ANALYZE" } else { "" },
                        stage
                            .store_bytes
                            .map(|b| format!(", store {:.0} MiB", b as f64 / 1048576.0))
                            .unwrap_or_default()
                    ),
                    String::new(),
                );
            }
            for stage in &q.stages {
                let is_last = q.stages.len() > 1 && std::ptr::eq(stage, last.expect("stages"));
                for shape in &stage.shapes {
                    let mut target = String::new();
                    if is_last {
                        let small =
                            first.and_then(|f| f.shapes.iter().find(|s| s.shape == shape.shape));
                        target = match small {
                            // The same page at both sizes: its cost must not grow with the store.
                            Some(s) if comparable(s.rows_per_page, shape.rows_per_page) => {
                                let ratio = shape.latency.p99_ms / s.latency.p99_ms.max(0.001);
                                verdict(
                                    shape.latency.p99_ms < 5.0 && ratio <= 1.2,
                                    &format!("p99 < 5 ms, {ratio:.2}x smaller store's (<= 1.2x)"),
                                )
                            }
                            // Pages of different lengths (few events per party in the smaller
                            // store) cannot be compared.
                            Some(s) => verdict(
                                shape.latency.p99_ms < 5.0,
                                &format!(
                                    "p99 < 5 ms (pages of {:.0} vs {:.0} rows: no ratio)",
                                    s.rows_per_page, shape.rows_per_page
                                ),
                            ),
                            None => verdict(shape.latency.p99_ms < 5.0, "p99 < 5 ms"),
                        };
                    }
                    let errors = if shape.errors > 0 {
                        format!(", {} errors", shape.errors)
                    } else {
                        String::new()
                    };
                    row(
                        "query",
                        &format!(
                            "{} @ {} ({:.1} rows, {} queries)",
                            shape.shape,
                            thousands(stage.events as f64),
                            shape.rows_per_page,
                            shape.latency.samples
                        ),
                        format!(
                            "{:.2} / {:.2} ms{errors}",
                            shape.latency.p50_ms, shape.latency.p99_ms
                        ),
                        target,
                    );
                }
            }
            for stage in &q.stages {
                row(
                    "query",
                    &format!(
                        "CPU cores @ {}: server / bench / others",
                        thousands(stage.events as f64)
                    ),
                    cpu(&stage.cpu),
                    String::new(),
                );
            }
            row(
                "query",
                "server peak RSS",
                mib(q.server_peak_rss_mib),
                String::new(),
            );
        }
        if let Some(p) = &self.push {
            row(
                "push",
                "subscriptions x events",
                format!(
                    "{} ({}{}) x {} = {} deliveries expected",
                    p.subscriptions,
                    p.shape,
                    if p.batch > 1 {
                        format!(", batches of {}", p.batch)
                    } else {
                        String::new()
                    },
                    thousands(p.events as f64),
                    thousands(p.deliveries_expected as f64)
                ),
                String::new(),
            );
            row(
                "push",
                "delivered (duplicates)",
                format!("{} ({})", thousands(p.deliveries as f64), p.duplicates),
                String::new(),
            );
            match p.rate_limit {
                None => row(
                    "push",
                    "deliveries/s",
                    thousands(p.deliveries_per_s),
                    verdict(p.deliveries_per_s >= 5000.0, ">= 5,000"),
                ),
                Some(limit) => {
                    // Each subscription's own rate, against its limit: never above, and within
                    // 5 % below.
                    let each = p.deliveries_per_s / p.subscriptions.max(1) as f64;
                    let limit = f64::from(limit);
                    row(
                        "push",
                        "deliveries/s per subscription (rateLimit)",
                        format!("{each:.2} ({limit})"),
                        verdict(
                            each <= limit * 1.001 && each >= limit * 0.95,
                            "within 5 % below the limit",
                        ),
                    )
                }
            }
            row(
                "push",
                "latency under load p50 / p99",
                format!(
                    "{:.1} / {:.1} ms",
                    p.latency_under_load.p50_ms, p.latency_under_load.p99_ms
                ),
                String::new(),
            );
            row(
                "push",
                &format!(
                    "publish-to-webhook p50 / p99 ({} events at {}/s)",
                    p.paced_events, p.paced_rate_per_s
                ),
                format!("{:.2} / {:.2} ms", p.latency.p50_ms, p.latency.p99_ms),
                verdict(p.latency.p50_ms < 20.0, "p50 < 20 ms"),
            );
            if let (Some(alone), Some(during)) =
                (p.ingest_alone_per_s, p.ingest_during_backlog_per_s)
            {
                let share = during / alone.max(1e-9);
                row(
                    "push",
                    "ingest alone / while the backlog drains",
                    format!(
                        "{} / {} events/s ({:.0} %)",
                        thousands(alone),
                        thousands(during),
                        share * 100.0
                    ),
                    verdict(share >= 0.8, ">= 80 %"),
                );
            }
            row(
                "push",
                "server peak RSS",
                mib(p.server_peak_rss_mib),
                String::new(),
            );
            row(
                "push",
                "CPU cores: server / bench / others",
                cpu(&p.cpu),
                String::new(),
            );
        }
        rows
    }

    /// The conditions, then one table of every figure.
    pub fn table(&self) -> String {
        let c = &self.conditions;
        let mut out = format!(
            "hendelse-bench {}: backend {}, payload {} B of data, concurrency {}, {} cores ({}), {} build\nserver: {}\naccess: {}{}\nload average at start: {}; other processes' CPU before each scenario: {}\n\n",
            c.started_at,
            c.backend.name(),
            c.payload_bytes,
            c.concurrency,
            c.cores,
            c.cpu_model,
            c.build_profile,
            c.server,
            c.access,
            match (c.pdp_requests, c.pdp_decisions) {
                (Some(r), Some(d)) => format!(" ({r} PDP requests for {d} decisions)"),
                _ => String::new(),
            },
            c.load_average,
            c.background_cpu_pct
                .iter()
                .map(|(k, v)| format!("{k} {v:.0} %"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let rows = self.rows();
        let header = Row {
            scenario: "scenario",
            figure: "figure".into(),
            value: "value".into(),
            target: "target".into(),
        };
        let width = |f: fn(&Row) -> usize| rows.iter().chain([&header]).map(f).max().unwrap_or(0);
        let w1 = width(|r| r.scenario.len());
        let w2 = width(|r| r.figure.chars().count());
        let w3 = width(|r| r.value.chars().count());
        for r in [&header].into_iter().chain(rows.iter()) {
            let line = format!(
                "{:<w1$}  {:<w2$}  {:<w3$}  {}",
                r.scenario, r.figure, r.value, r.target
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
