//! `publish` and `ceiling`: the same stream of single CloudEvents (`application/cloudevents+json`,
//! `data` of the chosen size) from C kept-alive connections, against `hendelse serve` and against
//! the bare endpoint.

use hyper::Method;

use crate::events;
use crate::http::{self, Target};
use crate::machine::{CpuProbe, CpuUse};
use crate::report::{GroupCommits, LoadFigures};
use crate::server::{self, Instance, Setup};
use crate::stats::{percentiles, round1, round3};

#[derive(Clone)]
pub struct LoadParams {
    pub events: usize,
    pub concurrency: usize,
    pub size: usize,
    /// Events per request: 1 sends `application/cloudevents+json`, more a batch.
    pub batch: usize,
    /// Requests sent (and not measured) before the measured run.
    pub warmup: usize,
    pub run: String,
}

const PATH: &str = "/events/api/v1/events";

/// A token-sized `Authorization` header for the ceiling, so that both endpoints read the same
/// bytes (the ceiling does not check it).
fn dummy_token() -> String {
    "x".repeat(420)
}

pub async fn ceiling(params: &LoadParams, dir: &std::path::Path) -> anyhow::Result<LoadFigures> {
    let process = server::spawn_ceiling(dir)?;
    let target = Target::new(&process.url, Some(&dummy_token()))?;
    eprintln!(
        "ceiling: {} events over {} connections to the bare endpoint at {}",
        params.events, params.concurrency, process.url
    );
    let outcome = load(&target, params, Some(process.pid())).await;
    let rss = process.peak_rss();
    process.stop()?;
    figures(params, outcome?, rss.map(|b| b as f64 / 1048576.0))
}

pub async fn publish(setup: &Setup, params: &LoadParams) -> anyhow::Result<LoadFigures> {
    let instance = Instance::start(setup).await?;
    eprintln!(
        "publish: {} events over {} connections to {}",
        params.events, params.concurrency, instance.target.base_url
    );
    let pid = instance.process.as_ref().map(server::Process::pid);
    let outcome = load(&instance.target, params, pid).await;
    let rss = instance.peak_rss_mib();
    instance.stop().await?;
    figures(params, outcome?, rss)
}

/// The server's group-commit counters (`hendelse_ingest_*` on `/metrics`), when it has them.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestCounters {
    commits: f64,
    events: f64,
    seconds: f64,
}

impl IngestCounters {
    pub async fn read(target: &Target) -> Option<IngestCounters> {
        let reply = http::send_once(target, target.get("/metrics")).await.ok()?;
        if !reply.status.is_success() {
            return None;
        }
        let text = String::from_utf8_lossy(&reply.body);
        let value = |name: &str| {
            text.lines()
                .find(|l| l.split([' ', '{']).next() == Some(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        Some(IngestCounters {
            commits: value("hendelse_ingest_batch_events_count")?,
            events: value("hendelse_ingest_batch_events_sum")?,
            seconds: value("hendelse_ingest_commit_seconds_sum")?,
        })
    }

    /// What happened between `before` and `self`.
    pub fn since(self, before: IngestCounters) -> Option<GroupCommits> {
        let commits = self.commits - before.commits;
        (commits > 0.0).then(|| GroupCommits {
            commits: commits as u64,
            events_per_commit: round1((self.events - before.events) / commits),
            commit_ms_mean: round3(1000.0 * (self.seconds - before.seconds) / commits),
        })
    }
}

async fn load(
    target: &Target,
    params: &LoadParams,
    server_pid: Option<u32>,
) -> anyhow::Result<(http::Outcome, Option<CpuUse>, Option<GroupCommits>)> {
    let (size, batch) = (params.size, params.batch.max(1));
    if params.warmup > 0 {
        let (t, run) = (target.clone(), format!("{}w", params.run));
        http::run(
            target,
            params.concurrency,
            params.warmup.div_ceil(batch),
            move |i| request(&t, &run, i, size, batch),
            http::success,
        )
        .await?;
    }
    let (t, run) = (target.clone(), params.run.clone());
    let counters = IngestCounters::read(target).await;
    let probe = CpuProbe::start(server_pid);
    let outcome = http::run(
        target,
        params.concurrency,
        params.events.div_ceil(batch),
        move |i| request(&t, &run, i, size, batch),
        http::success,
    )
    .await?;
    let cpu = probe.and_then(|p| p.finish());
    let commits = match (counters, IngestCounters::read(target).await) {
        (Some(before), Some(after)) => after.since(before),
        _ => None,
    };
    Ok((outcome, cpu, commits))
}

/// Request `i`: event `i`, or events `i * batch ..` as one batch.
fn request(
    target: &Target,
    run: &str,
    i: usize,
    size: usize,
    batch: usize,
) -> hyper::Request<http::Body> {
    let (content_type, body) = body(run, i, size, batch);
    target.request(Method::POST, PATH, Some(content_type), body)
}

fn body(run: &str, i: usize, size: usize, batch: usize) -> (&'static str, String) {
    if batch <= 1 {
        return (
            events::STRUCTURED,
            events::generic(run, i as u64, None, size),
        );
    }
    let first = (i * batch) as u64;
    let events = (first..first + batch as u64).map(|n| events::generic(run, n, None, size));
    (events::BATCH, events::batch(events))
}

fn figures(
    params: &LoadParams,
    (outcome, cpu, group_commits): (http::Outcome, Option<CpuUse>, Option<GroupCommits>),
    rss_mib: Option<f64>,
) -> anyhow::Result<LoadFigures> {
    let batch = params.batch.max(1);
    let per_second = outcome.per_second() * batch as f64;
    Ok(LoadFigures {
        requests: params.events.div_ceil(batch),
        events_per_request: batch,
        concurrency: params.concurrency,
        request_bytes: body(&params.run, 0, params.size, batch).1.len(),
        duration_s: round3(outcome.elapsed.as_secs_f64()),
        per_second: round1(per_second),
        errors: outcome.errors,
        first_error: outcome.first_error.clone(),
        latency: percentiles(outcome.latencies_us),
        server_peak_rss_mib: rss_mib.map(round1),
        cpu,
        group_commits,
    })
}
