//! `query`: a store filled with app events of 10,000 parties, 20 types and 50 sources (through
//! batches), then pages of 50 for each filter shape, measured at N/10 events and again at N.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::events::{self, APPS, Attributes, PARTIES, SOURCES, TYPES, mix};
use crate::http::{self, Target};
use crate::machine::CpuProbe;
use crate::report::{QueryFigures, QueryStage, ShapeFigures};
use crate::server::{Instance, Setup};
use crate::stats::{percentiles, round1};

#[derive(Clone)]
pub struct QueryParams {
    pub events: u64,
    pub queries: usize,
    pub concurrency: usize,
    /// Most time spent measuring one shape at one store size.
    pub budget: std::time::Duration,
    /// Run `ANALYZE` on the store after each prefill.
    pub analyze: bool,
    pub size: usize,
    pub run: String,
}

/// Batch requests in flight during the prefill.
const PREFILL_CONNECTIONS: usize = 4;
const PAGE: u32 = 50;

pub const SHAPES: [&str; 7] = [
    "party",
    "unit",
    "person",
    "source wildcard",
    "type",
    "from/to",
    "after (deep)",
];

pub async fn run(setup: &Setup, params: &QueryParams) -> anyhow::Result<QueryFigures> {
    let instance = Instance::start(setup).await?;
    let result = stages(&instance, params).await;
    let rss = instance.peak_rss_mib();
    instance.stop().await?;
    let stages = result?;
    Ok(QueryFigures {
        page_size: PAGE,
        queries_per_shape: params.queries,
        concurrency: params.concurrency,
        parties: PARTIES,
        types: TYPES,
        sources: SOURCES,
        stages,
        server_peak_rss_mib: rss,
    })
}

async fn stages(instance: &Instance, params: &QueryParams) -> anyhow::Result<Vec<QueryStage>> {
    let mut sizes = vec![(params.events / 10).max(1), params.events.max(1)];
    sizes.dedup();
    let batch = events::batch_events(events::app_event(&params.run, 0, params.size).len());
    let mut filled = 0u64;
    let mut out = Vec::new();
    for n in sizes {
        // Fill in three parts, so that the middle part's registration times are known: the
        // from/to shape asks for exactly that window.
        let started = std::time::Instant::now();
        let added = n - filled;
        let middle = ((n * 45 / 100).max(filled), (n * 55 / 100).max(filled));
        fill(&instance.target, params, filled, middle.0, batch).await?;
        let from = Utc::now();
        fill(&instance.target, params, middle.0, middle.1, batch).await?;
        let to = Utc::now();
        fill(&instance.target, params, middle.1, n, batch).await?;
        let rate = added as f64 / started.elapsed().as_secs_f64().max(1e-9);
        eprintln!("query: {n} events stored ({rate:.0} events/s); measuring the shapes");
        filled = n;
        let analyzed = params.analyze && instance.analyze().await?;
        let window = Window { from, to };
        let mut shapes = Vec::new();
        let probe = CpuProbe::start(instance.process.as_ref().map(crate::server::Process::pid));
        for shape in SHAPES {
            shapes.push(measure(&instance.target, params, shape, n, &window).await?);
        }
        let cpu = probe.and_then(|p| p.finish());
        out.push(QueryStage {
            events: n,
            prefill_events_per_s: round1(rate),
            prefill_batch_events: batch,
            store_bytes: instance.store_bytes(),
            analyzed,
            cpu,
            shapes,
        });
    }
    Ok(out)
}

/// Publishes the query scenario's events `from..to` in batches.
async fn fill(
    target: &Target,
    params: &QueryParams,
    from: u64,
    to: u64,
    batch: usize,
) -> anyhow::Result<()> {
    if to <= from {
        return Ok(());
    }
    let (run, size) = (params.run.clone(), params.size);
    let outcome = http::publish_batches(
        target,
        PREFILL_CONNECTIONS,
        (to - from) as usize,
        batch,
        move |n| events::app_event(&run, from + n as u64, size),
    )
    .await?;
    if outcome.errors > 0 {
        anyhow::bail!(
            "prefill: {} batches failed (first: {})",
            outcome.errors,
            outcome.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// Registration times around the middle tenth of the log.
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

async fn measure(
    target: &Target,
    params: &QueryParams,
    shape: &'static str,
    n: u64,
    window: &Window,
) -> anyhow::Result<ShapeFigures> {
    let context = Context {
        run: params.run.clone(),
        n,
        from: window.from.to_rfc3339_opts(SecondsFormat::Micros, true),
        to: window.to.to_rfc3339_opts(SecondsFormat::Micros, true),
    };
    let salt = mix(shape.len() as u64 * 7919 + shape.as_bytes()[0] as u64);
    let (path, person) = context.request(shape, salt);
    let example = match person {
        Some(p) => format!("GET {path} (person: {p})"),
        None => format!("GET {path}"),
    };
    let t = target.clone();
    // A few unmeasured queries first, as a client that has been running would have.
    let warm = (params.queries / 10).clamp(1, 100);
    let make = move |i: usize| {
        let (path, person) = context.request(shape, salt ^ (i as u64 + 1));
        let request = t.get(&path);
        match person {
            Some(p) => http::with_header(request, "person", &p),
            None => request,
        }
    };
    let make = std::sync::Arc::new(make);
    let m = make.clone();
    let warm_budget = Some(params.budget / 10);
    http::run_for(
        target,
        params.concurrency,
        warm,
        warm_budget,
        move |i| m(i),
        rows,
    )
    .await?;
    let outcome = http::run_for(
        target,
        params.concurrency,
        params.queries,
        Some(params.budget),
        move |i| make(i + 1_000_000),
        rows,
    )
    .await?;
    if outcome.ok() < params.queries {
        eprintln!(
            "query: {shape} at {n} events: only {} of {} queries within the {} s budget",
            outcome.ok(),
            params.queries,
            params.budget.as_secs()
        );
    }
    Ok(ShapeFigures {
        shape,
        example,
        rows_per_page: round1(outcome.sum as f64 / outcome.ok().max(1) as f64),
        errors: outcome.errors,
        first_error: outcome.first_error.clone(),
        latency: percentiles(outcome.latencies_us),
    })
}

/// A page counts when it is a 200 with a JSON array; its value is the number of events.
fn rows(reply: &http::Reply) -> Result<u64, String> {
    if !reply.status.is_success() {
        return Err(String::from_utf8_lossy(&reply.body)
            .chars()
            .take(300)
            .collect());
    }
    serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&reply.body)
        .map(|page| page.len() as u64)
        .map_err(|e| format!("not a JSON array: {e}"))
}

struct Context {
    run: String,
    n: u64,
    from: String,
    to: String,
}

impl Context {
    /// The path and query (and `person` header) of one query of a shape; `seed` picks the party,
    /// app, type, source or position.
    fn request(&self, shape: &str, seed: u64) -> (String, Option<String>) {
        let r = mix(seed);
        let app = |x: u64| events::app_name(x % APPS);
        match shape {
            "party" => (
                format!(
                    "/events/api/v1/app/party?party={}&after=0",
                    events::party_id(r % PARTIES)
                ),
                None,
            ),
            "unit" => {
                let party = (r % (PARTIES / 2)) * 2 + 1;
                let org = events::organisation(party).expect("odd parties are organisations");
                (format!("/events/api/v1/app/party?unit={org}&after=0"), None)
            }
            "person" => {
                let party = (r % (PARTIES / 2)) * 2;
                let pid = events::person(party).expect("even parties are people");
                ("/events/api/v1/app/party?after=0".to_owned(), Some(pid))
            }
            "source wildcard" => {
                let source = r % SOURCES;
                let pattern = format!("{}%", events::source_of(source));
                (
                    format!(
                        "/events/api/v1/app/ttd/{}?after=0&source={}",
                        app(source),
                        encode(&pattern)
                    ),
                    None,
                )
            }
            "type" => (
                format!(
                    "/events/api/v1/app/ttd/{}?after=0&type={}",
                    app(r >> 32),
                    encode(&events::type_of(r % TYPES))
                ),
                None,
            ),
            "from/to" => (
                format!(
                    "/events/api/v1/app/ttd/{}?from={}&to={}",
                    app(r),
                    encode(&self.from),
                    encode(&self.to)
                ),
                None,
            ),
            "after (deep)" => {
                // An event between 80 % and 95 % of the log, and a page of its app after it.
                let low = self.n * 8 / 10;
                let span = (self.n * 95 / 100).saturating_sub(low).max(1);
                let m = low + r % span;
                (
                    format!(
                        "/events/api/v1/app/ttd/{}?after={}",
                        app(Attributes::of(m).app()),
                        encode(&events::query_id(&self.run, m))
                    ),
                    None,
                )
            }
            other => unreachable!("unknown shape {other}"),
        }
    }
}

/// Percent-encodes everything but the unreserved characters.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_names_something_that_exists() {
        let c = Context {
            run: "r".into(),
            n: 1000,
            from: "2026-01-01T00:00:00.000001Z".into(),
            to: "2026-01-01T00:00:01Z".into(),
        };
        for shape in SHAPES {
            for seed in 0..50 {
                let (path, person) = c.request(shape, seed);
                assert!(path.starts_with("/events/api/v1/app/"), "{path}");
                assert_eq!(person.is_some(), shape == "person");
            }
        }
        let (path, _) = c.request("source wildcard", 3);
        assert!(path.contains("&source=https%3A%2F%2Fttd.apps.altinn.no%2Fttd%2Fbench"));
        assert!(path.ends_with("%25"));
        let (path, _) = c.request("after (deep)", 3);
        let id: u64 = path.rsplit("-q").next().unwrap().parse().unwrap();
        assert!((800..950).contains(&id));
        assert!(path.contains(&format!("/ttd/bench{}?", Attributes::of(id).app())));
        assert_eq!(encode("a b:%/"), "a%20b%3A%25%2F");
    }
}
