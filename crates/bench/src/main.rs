//! `hendelse-bench`: starts `hendelse serve` on a temporary data directory (or targets `--url`),
//! drives it with a keep-alive load generator, and prints one table (or `--json`) of what it
//! measured with the conditions it measured under.

mod ceiling;
mod events;
mod http;
mod machine;
mod pdp;
mod publish;
mod push;
mod query;
mod report;
mod server;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use crate::report::{Conditions, Report};
use crate::server::{Backend, Setup};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PushShape {
    Every,
    Fanout,
}

#[derive(Parser)]
#[command(
    name = "hendelse-bench",
    version,
    about = "Benchmarks Hendelse: publish (against a bare ceiling endpoint), query and push",
    after_help = "Build both binaries first: cargo build --release -p hendelse -p hendelse-bench"
)]
struct Cli {
    /// Scenarios to run (`publish` also measures the ceiling, unless --no-ceiling).
    #[arg(value_enum, required = true)]
    scenarios: Vec<Scenario>,
    /// The store the started server uses.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// With --backend postgres: a database to use as it is. Without it every scenario gets a
    /// fresh database on --pg-admin-url's server, dropped afterwards.
    #[arg(long, env = "HENDELSE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// The PostgreSQL server (and a database to connect to) where fresh databases are created.
    #[arg(
        long,
        env = "HENDELSE_BENCH_PG_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_admin_url: String,
    /// Benchmark a running server instead of starting one (peak RSS is then not measured).
    #[arg(long)]
    url: Option<String>,
    /// With --url: a token of org ttd with "altinn:events.publish altinn:events.subscribe".
    #[arg(long, env = "HENDELSE_BENCH_TOKEN")]
    token: Option<String>,
    /// The hendelse binary (default: `hendelse` next to this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// publish/ceiling: events sent (each in its own request).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// publish/ceiling: events per request (more than 1 publishes batches,
    /// `application/cloudevents-batch+json`).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// publish/ceiling: concurrent kept-alive connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Bytes of each event's `data`.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// publish/ceiling: unmeasured requests before the measured run (default: 10 % of --events,
    /// at most 2,000).
    #[arg(long)]
    warmup: Option<usize>,
    /// Skip the ceiling measurement that `publish` makes.
    #[arg(long)]
    no_ceiling: bool,
    /// query: events in the store at the second measurement (the first is at a tenth of it).
    #[arg(long, default_value_t = 1_000_000)]
    query_events: u64,
    /// query: measured queries per shape and store size.
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
    /// query: most seconds spent measuring one shape at one store size (a slow shape then gets
    /// fewer samples than --queries; the report says how many).
    #[arg(long, default_value_t = 30)]
    shape_seconds: u64,
    /// query: run `ANALYZE` on the store after each prefill (as autovacuum, or a periodic
    /// `ANALYZE`, would in a long-running deployment); without it the planner works with the
    /// statistics the server itself left.
    #[arg(long)]
    analyze: bool,
    /// query: concurrent connections sending queries.
    #[arg(long, default_value_t = 1)]
    query_concurrency: usize,
    /// push: webhook subscriptions, each receiving every event (with `--push-shape fanout`: each
    /// event goes to exactly one of them).
    #[arg(long, default_value_t = 10)]
    subscriptions: usize,
    /// push: `every` (each subscription gets every event; one subscription is the backlog shape)
    /// or `fanout` (each subscription names one party; each event matches exactly one).
    #[arg(long, value_enum, default_value = "every")]
    push_shape: PushShape,
    /// push: events published at once for the throughput figure.
    #[arg(long, default_value_t = 2_000)]
    push_events: usize,
    /// push: single events published over 64 connections before the subscriptions exist and
    /// again while the backlog drains, for the ingest figure (0: skip).
    #[arg(long, default_value_t = 0)]
    ingest_events: usize,
    /// push: each subscription's `maxEventsPerBatch` (1: one event a POST).
    #[arg(long, default_value_t = 1)]
    push_batch: u32,
    /// push: each subscription's `rateLimit` (deliveries per second); the report then compares
    /// the rate reached with it.
    #[arg(long)]
    push_rate_limit: Option<u32>,
    /// push: single events published at a steady rate for the latency figure.
    #[arg(long, default_value_t = 200)]
    paced_events: usize,
    /// push: events per second of the latency phase.
    #[arg(long, default_value_t = 20.0)]
    paced_rate: f64,
    /// Decide access with an external PDP that the benchmark runs on loopback (it permits
    /// everything; its requests are counted) instead of the registry.
    #[arg(long)]
    pdp: bool,
    /// With --pdp: the server's `--pdp-cache` (`0s`: every page and delivery asks the PDP).
    #[arg(long, default_value = "60s")]
    pdp_cache: String,
    /// `--ingest-queue` of the started server (default: the server's).
    #[arg(long)]
    ingest_queue: Option<usize>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Keep the temporary directories (server logs, SQLite files) and databases.
    #[arg(long)]
    keep: bool,
    /// Before each scenario, wait up to this many seconds for the machine to be idle (other
    /// processes using under 10 % of the CPU over a second); the busy share found is reported.
    #[arg(long, default_value_t = 0)]
    wait_idle: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Publish,
    Ceiling,
    Query,
    Push,
    All,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(ceiling::CHILD_ARG) {
        return match ceiling::main(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ceiling server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hendelse-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hendelse-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let wants = |s: Scenario| cli.scenarios.contains(&s) || cli.scenarios.contains(&Scenario::All);
    let server_bin = match (&cli.server_bin, &cli.url) {
        (Some(bin), _) => bin.clone(),
        (None, Some(_)) => PathBuf::from("(not started: --url)"),
        (None, None) => server::default_server_bin()?,
    };
    let pdp = if cli.pdp {
        Some(pdp::start().await?)
    } else {
        None
    };
    let mut server_args = Vec::new();
    if let Some(pdp) = &pdp {
        server_args.extend([
            "--pdp-url".to_owned(),
            pdp.url.clone(),
            "--pdp-cache".to_owned(),
            cli.pdp_cache.clone(),
        ]);
    }
    let setup = Setup {
        server_args,
        server_bin: server_bin.clone(),
        backend: cli.backend,
        database_url: cli.database_url.clone(),
        pg_admin_url: cli.pg_admin_url.clone(),
        url: cli.url.clone(),
        token: cli.token.clone(),
        ingest_queue: cli.ingest_queue,
        keep: cli.keep,
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let conditions = Conditions {
        backend: cli.backend,
        payload_bytes: cli.size,
        concurrency: cli.concurrency,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model(),
        build_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        server: match &cli.url {
            Some(url) => format!("{url} (--url)"),
            None => server_bin.display().to_string(),
        },
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        background_cpu_pct: Default::default(),
        access: match &pdp {
            Some(_) => format!("external PDP on loopback, --pdp-cache {}", cli.pdp_cache),
            None => "built-in registry".to_owned(),
        },
        pdp_requests: None,
        pdp_decisions: None,
    };
    let mut report = Report {
        conditions,
        ceiling: None,
        publish: None,
        query: None,
        push: None,
    };
    let load = publish::LoadParams {
        events: cli.events,
        concurrency: cli.concurrency,
        size: cli.size,
        batch: cli.batch.max(1),
        warmup: cli.warmup.unwrap_or((cli.events / 10).min(2_000)),
        run: run_id.clone(),
    };
    let scratch = tempfile::Builder::new()
        .prefix("hendelse-bench-")
        .tempdir()?;
    let idle = |report: &mut Report, scenario: &'static str| {
        let busy = machine::wait_idle(cli.wait_idle);
        report.conditions.background_cpu_pct.insert(scenario, busy);
    };
    if wants(Scenario::Ceiling) || (wants(Scenario::Publish) && !cli.no_ceiling) {
        idle(&mut report, "ceiling");
        report.ceiling = Some(publish::ceiling(&load, scratch.path()).await?);
    }
    if wants(Scenario::Publish) {
        idle(&mut report, "publish");
        let figures = publish::publish(&setup, &load).await?;
        let fraction = report
            .ceiling
            .as_ref()
            .filter(|c| c.per_second > 0.0)
            .map(|c| stats::round3(figures.per_second / c.per_second));
        report.publish = Some(report::PublishFigures {
            load: figures,
            fraction_of_ceiling: fraction,
        });
    }
    if wants(Scenario::Query) {
        let params = query::QueryParams {
            events: cli.query_events,
            queries: cli.queries,
            concurrency: cli.query_concurrency.max(1),
            budget: std::time::Duration::from_secs(cli.shape_seconds.max(1)),
            analyze: cli.analyze,
            size: cli.size,
            run: run_id.clone(),
        };
        idle(&mut report, "query");
        report.query = Some(query::run(&setup, &params).await?);
    }
    if wants(Scenario::Push) {
        let params = push::PushParams {
            subscriptions: cli.subscriptions.max(1),
            fanout: matches!(cli.push_shape, PushShape::Fanout),
            events: cli.push_events,
            batch: cli.push_batch.max(1),
            rate_limit: cli.push_rate_limit,
            ingest_events: cli.ingest_events,
            paced_events: cli.paced_events,
            paced_rate: cli.paced_rate,
            size: cli.size,
            run: run_id,
        };
        idle(&mut report, "push");
        report.push = Some(push::run(&setup, &params).await?);
    }
    if let Some(pdp) = &pdp {
        use std::sync::atomic::Ordering;
        report.conditions.pdp_requests = Some(pdp.counts.requests.load(Ordering::Relaxed));
        report.conditions.pdp_decisions = Some(pdp.counts.decisions.load(Ordering::Relaxed));
    }
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &cli.json_out {
        std::fs::write(path, format!("{json}\n"))?;
    }
    if cli.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
