//! The command line: `serve`, `token` and `migrate`; the client verbs live in `hendelse_client`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hendelse_auth::{DevKey, TokenRequest};

#[derive(Parser)]
#[command(
    name = "hendelse",
    version,
    about = "CloudEvents platform compatible with Altinn Events",
    args_override_self = true
)]
pub struct Cli {
    /// Settings from a TOML file (keys are the long flags); flags and environment variables win.
    #[arg(long, env = "HENDELSE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the API (and the background workers).
    Serve(ServeArgs),
    /// Print a development token signed with the data directory's key.
    Token(TokenArgs),
    /// Create or upgrade the store's schema, then exit.
    Migrate(StoreArgs),
    /// Publish events given as JSON, from a file, or as JSON lines on standard input.
    Publish(hendelse_client::publish::PublishArgs),
    /// Read events of a query, following `next` to the end (or on, with --follow).
    Query(hendelse_client::query::QueryArgs),
    /// Print events as they are published (the live stream); reconnects where it left off.
    Tail(hendelse_client::tail::TailArgs),
    /// A local webhook endpoint that prints the events it receives (for trying subscriptions).
    Receive(crate::receive::ReceiveArgs),
    /// List, create, delete and inspect webhook subscriptions.
    Subscriptions(hendelse_client::subscriptions::SubscriptionsArgs),
}

#[derive(Args, Clone)]
pub struct DataDirArgs {
    /// Directory of the embedded store and the development signing key.
    #[arg(long, env = "HENDELSE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Args, Clone)]
pub struct StoreArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// PostgreSQL instead of the embedded SQLite store: `postgres://user@host:5432/db`. Several
    /// nodes may share one database.
    #[arg(long, env = "HENDELSE_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// Where the events are kept, without any password, for messages and logs.
    pub fn describe(&self) -> String {
        match &self.database_url {
            Some(url) => redact_credentials(url),
            None => self.data.data_dir.join("events.db").display().to_string(),
        }
    }

    pub async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn hendelse_store::Store>> {
        hendelse_store::open(self.database_url.as_deref(), &self.data.data_dir)
            .await
            .with_context(|| format!("opening the store {}", self.describe()))
    }
}

/// `scheme://user:secret@host/db` without the user information.
fn redact_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => "(unparsable database URL)".to_owned(),
    }
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "HENDELSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Registry of parties, resources and access rules (JSON); without it nobody has access rules.
    #[arg(long, env = "HENDELSE_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// Production token issuers: a JSON array of {issuer, jwks, algorithms, audience}.
    #[arg(long, env = "HENDELSE_TRUSTED_ISSUERS")]
    pub trusted_issuers: Option<PathBuf>,
    /// Decide access with this external PDP (the XACML 3.0 JSON profile, as Altinn
    /// Authorization's `…/authorization/api/v1/decision`) instead of the registry's rules; the
    /// registry stays the party register.
    #[arg(long, env = "HENDELSE_PDP_URL")]
    pub pdp_url: Option<String>,
    /// A header sent with every PDP request, `Name: value` (repeat for more; for instance
    /// `Ocp-Apim-Subscription-Key: …`).
    #[arg(long = "pdp-header", env = "HENDELSE_PDP_HEADERS", value_delimiter = '\n', value_parser = header_pair)]
    pub pdp_headers: Vec<(String, String)>,
    /// A PDP request that takes longer fails closed (503 on the API, deliveries wait).
    #[arg(long, env = "HENDELSE_PDP_TIMEOUT", default_value = "2s", value_parser = period)]
    pub pdp_timeout: std::time::Duration,
    /// How long a PDP decision is reused (per subject, action and event attributes).
    #[arg(long, env = "HENDELSE_PDP_CACHE", default_value = "60s", value_parser = period)]
    pub pdp_cache: std::time::Duration,
    /// How long a write to a client may wait for the client to read: a connection whose client
    /// takes nothing for this long (a live stream nobody reads) is closed.
    #[arg(long, env = "HENDELSE_SEND_TIMEOUT", default_value = "30s", value_parser = period)]
    pub send_timeout: std::time::Duration,
    /// Do not trust the development signing key of the data directory.
    #[arg(long, env = "HENDELSE_NO_DEV_TOKENS")]
    pub no_dev_tokens: bool,
    /// Required `aud` of development tokens.
    #[arg(long, env = "HENDELSE_AUDIENCE")]
    pub audience: Option<String>,
    /// Public base URL used in `next` links (default: from the request's Host header).
    #[arg(long, env = "HENDELSE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Delete events registered longer ago than this many days.
    #[arg(long, env = "HENDELSE_RETENTION_DAYS", default_value_t = 90.0, value_parser = positive_days)]
    pub retention_days: f64,
    /// How often the retention sweep runs, in seconds.
    #[arg(long, env = "HENDELSE_RETENTION_INTERVAL", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval: u64,
    /// Publish requests that may wait for a commit before new ones get 503.
    #[arg(long, env = "HENDELSE_INGEST_QUEUE", default_value_t = 4096, value_parser = at_least_one)]
    pub ingest_queue: usize,
    /// Log format.
    #[arg(long, env = "HENDELSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Export spans (requests, webhook attempts) over OTLP/HTTP to this collector, e.g.
    /// `http://localhost:4318` (`/v1/traces` is added). Off when not given.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The OTLP/HTTP encoding: `http/protobuf` or `http/json`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::Protobuf)]
    pub otlp_protocol: OtlpProtocol,
    #[command(flatten)]
    pub push: PushArgs,
    #[command(flatten)]
    pub dialog: crate::dialog_settings::DialogArgs,
}

#[derive(Args, Clone)]
pub struct PushArgs {
    /// Run this node without the dispatcher and the delivery workers (the API still manages
    /// subscriptions; other nodes deliver).
    #[arg(long, env = "HENDELSE_NO_PUSH")]
    pub no_push: bool,
    /// Accept webhook endpoints with plain http (default: https only).
    #[arg(long, env = "HENDELSE_ALLOW_HTTP_WEBHOOKS")]
    pub allow_http_webhooks: bool,
    /// Accept webhook endpoints on loopback, private and link-local addresses.
    #[arg(long, env = "HENDELSE_ALLOW_PRIVATE_WEBHOOKS")]
    pub allow_private_webhooks: bool,
    /// Waits between delivery attempts; after the last, a delivery is dead-lettered.
    #[arg(
        long,
        env = "HENDELSE_RETRY_SCHEDULE",
        default_value = "10s,30s,1m,5m,10m,30m,1h,3h,6h,12h,12h"
    )]
    pub retry_schedule: hendelse_push::RetrySchedule,
    /// Seconds a webhook may take to answer.
    #[arg(long, env = "HENDELSE_WEBHOOK_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout: u64,
    /// Webhook requests in flight at once on this node.
    #[arg(long, env = "HENDELSE_PUSH_CONCURRENCY", default_value_t = 32, value_parser = at_least_one)]
    pub push_concurrency: usize,
    /// Webhook requests of one subscription in flight at once on this node, so that one slow
    /// endpoint cannot hold every slot (default: a quarter of --push-concurrency).
    #[arg(long, env = "HENDELSE_PUSH_PER_SUBSCRIPTION", value_parser = at_least_one)]
    pub push_per_subscription: Option<usize>,
    /// The most deliveries one replay (`POST …/subscriptions/{id}/replay`) queues; a larger
    /// window is refused with where to cut it.
    #[arg(long, env = "HENDELSE_REPLAY_MAX_EVENTS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub replay_max_events: u32,
    /// A subscription whose endpoint has failed without a success for this long is disabled,
    /// and its owner told (`platform.events.subscription.disabled`); `ms`, `s`, `m`, `h` or `d`.
    #[arg(long, env = "HENDELSE_DISABLE_FAILING_AFTER", default_value = "5d", value_parser = period)]
    pub disable_failing_after: std::time::Duration,
    /// Delivered deliveries and their attempts are deleted this long after they were delivered.
    #[arg(long, env = "HENDELSE_DELIVERED_RETENTION", default_value = "30d", value_parser = period)]
    pub delivered_retention: std::time::Duration,
    /// Dead letters and their attempts are deleted this long after they died.
    #[arg(long, env = "HENDELSE_DEAD_LETTER_RETENTION", default_value = "90d", value_parser = period)]
    pub dead_letter_retention: std::time::Duration,
    /// How long a subscription's replaced secret keeps signing beside the new one.
    #[arg(long, env = "HENDELSE_SECRET_ROTATION_OVERLAP", default_value = "24h", value_parser = period)]
    pub secret_rotation_overlap: std::time::Duration,
    /// Keys that seal webhook secrets in the store: one base64 key (32 bytes) per line, the one
    /// that seals first, older ones after it to open what they sealed (default: the keys in
    /// HENDELSE_SECRET_KEY, comma-separated; else, on the embedded store, `secret-keys` in the
    /// data directory, made on first start).
    #[arg(long, env = "HENDELSE_SECRET_KEY_FILE", value_name = "PATH")]
    pub secret_key_file: Option<PathBuf>,
}

impl PushArgs {
    /// `--push-per-subscription`, or its default.
    pub fn per_subscription(&self) -> usize {
        self.push_per_subscription
            .unwrap_or((self.push_concurrency / 4).max(1))
    }
}

impl ServeArgs {
    /// Checks what clap cannot see in one value alone, before anything is opened or touched, so
    /// that a wrong setting stops the start with one line instead of after the store migrated.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.public_url {
            absolute_http_url("--public-url", url)?;
        }
        if let Some(url) = &self.pdp_url {
            absolute_http_url("--pdp-url", url)?;
        }
        if let Some(url) = &self.otlp_endpoint {
            absolute_http_url("--otlp-endpoint", url)?;
            if !cfg!(feature = "otel") {
                anyhow::bail!(
                    "--otlp-endpoint needs a server built with the `otel` feature (a default one)"
                );
            }
        }
        if let Some(n) = self.push.push_per_subscription
            && n > self.push.push_concurrency
        {
            anyhow::bail!(
                "--push-per-subscription ({n}) cannot exceed --push-concurrency ({})",
                self.push.push_concurrency
            );
        }
        self.dialog.validate()
    }
}

/// `value` parsed as an absolute `http` or `https` URL, or a one-line reason naming `flag`.
pub fn absolute_http_url(flag: &str, value: &str) -> anyhow::Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(value.trim())
        .with_context(|| format!("{flag} '{}' is not an absolute URL", value.trim()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("{flag} must be an http or https URL");
    }
    Ok(parsed)
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{value}' is not a whole number of at least 1")),
    }
}

/// A positive period such as `5d`, `12h`, `30m`, `10s` or `500ms`.
/// `Name: value`, as a header.
fn header_pair(value: &str) -> Result<(String, String), String> {
    let (name, text) = value
        .split_once(':')
        .ok_or_else(|| format!("'{value}' is not a header such as 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("'{name}' is not a header name"));
    }
    Ok((name.to_owned(), text.trim().to_owned()))
}

fn period(value: &str) -> Result<std::time::Duration, String> {
    let text = value.trim();
    let error = || format!("'{value}' is not a period such as 5d, 12h, 30m, 10s or 500ms");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| error())?;
    let period = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        "d" => std::time::Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(error()),
    };
    if period.is_zero() {
        return Err(error());
    }
    Ok(period)
}

fn positive_days(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(days) if days.is_finite() && days > 0.0 => Ok(days),
        _ => Err(format!("'{value}' is not a positive number of days")),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The OTLP/HTTP encodings, named as `OTEL_EXPORTER_OTLP_PROTOCOL` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "http/protobuf")]
    Protobuf,
    #[value(name = "http/json")]
    Json,
}

#[derive(Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub store: DataDirArgs,
    /// Org code (`urn:altinn:org`), for an org token.
    #[arg(long)]
    pub org: Option<String>,
    /// Organisation number (`urn:altinn:orgNumber`).
    #[arg(long)]
    pub org_number: Option<String>,
    /// National identity number (`pid`), for an end-user token.
    #[arg(long)]
    pub pid: Option<String>,
    /// The end user's party id (`urn:altinn:partyid`).
    #[arg(long)]
    pub party_id: Option<i64>,
    /// The end user's user id (`urn:altinn:userid`).
    #[arg(long)]
    pub user_id: Option<i64>,
    /// Space-separated scopes.
    #[arg(long)]
    pub scope: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
    pub ttl: i64,
    /// Audience (`aud`).
    #[arg(long)]
    pub audience: Option<String>,
    /// `nbf` this many seconds from now (default 5 s ago); a future one makes a token that is
    /// not valid yet.
    #[arg(long, allow_negative_numbers = true)]
    pub not_before: Option<i64>,
    /// The authentication level (`urn:altinn:authlevel`, 0–4).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub auth_level: Option<u8>,
    /// An Altinn system user's id (a UUID), for a system user token (with --system-user-org).
    #[arg(long, requires = "system_user_org")]
    pub system_user: Option<String>,
    /// The organisation number of the system user's owner.
    #[arg(long, requires = "system_user")]
    pub system_user_org: Option<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => crate::serve::serve(args).await,
        Command::Token(args) => token(args),
        Command::Migrate(args) => {
            // Opening applies pending migrations (under an advisory lock on PostgreSQL).
            drop(args.open().await?);
            println!("the store {} is up to date", args.describe());
            Ok(())
        }
        Command::Publish(args) => hendelse_client::publish::run(args).await,
        Command::Query(args) => hendelse_client::query::run(args).await,
        Command::Tail(args) => hendelse_client::tail::run(args).await,
        Command::Receive(args) => crate::receive::run(args).await,
        Command::Subscriptions(args) => hendelse_client::subscriptions::run(args).await,
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    if args.org.is_none()
        && args.org_number.is_none()
        && args.pid.is_none()
        && args.system_user.is_none()
    {
        anyhow::bail!(
            "say whom the token is for: --org (and/or --org-number), --pid or --system-user"
        );
    }
    if let Some(id) = &args.system_user {
        if uuid::Uuid::parse_str(id).is_err() {
            anyhow::bail!("--system-user must be a UUID");
        }
        if args.pid.is_some() {
            anyhow::bail!("a token is either for a system user or a person (--pid), not both");
        }
    }
    if let Some(orgno) = &args.system_user_org
        && !hendelse_model::subject::is_digits(orgno, 9)
    {
        anyhow::bail!("--system-user-org must be an organisation number (9 digits)");
    }
    if args.pid.is_some() && (args.org.is_some() || args.org_number.is_some()) {
        anyhow::bail!(
            "a token is either for an org (--org/--org-number) or a person (--pid), not both"
        );
    }
    if let Some(pid) = &args.pid
        && !hendelse_model::subject::is_digits(pid, 11)
    {
        anyhow::bail!("--pid must be 11 digits");
    }
    let key = DevKey::load_or_create(&args.store.data_dir)?;
    let token = key.mint(&TokenRequest {
        org: args.org,
        org_number: args.org_number,
        pid: args.pid,
        user_id: args.user_id,
        party_id: args.party_id,
        scope: args.scope,
        ttl_seconds: args.ttl,
        audience: args.audience,
        not_before_seconds: args.not_before,
        system_user: args.system_user.zip(args.system_user_org),
        auth_level: args.auth_level,
    })?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact_credentials;

    #[test]
    fn database_urls_lose_their_credentials() {
        assert_eq!(
            redact_credentials("postgres://app:s3cret@db.example:5432/events"),
            "postgres://***@db.example:5432/events"
        );
        assert_eq!(
            redact_credentials("postgres://127.0.0.1/events?user=x"),
            "postgres://127.0.0.1/events?user=x"
        );
        assert_eq!(
            redact_credentials("postgres:x:y@z"),
            "(unparsable database URL)"
        );
    }
}
