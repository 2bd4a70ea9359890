//! `hendelse serve`: open the store, start the writer and the retention sweep, serve the API, and
//! shut down gracefully (in-flight publishes are committed before the process exits).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hendelse_auth::{
    Authorizer, DevKey, PdpAuthorizer, PdpSettings, Registry, ReloadingAuthorizer, TokenVerifier,
    TrustedIssuer,
};
use hendelse_push::{EndpointPolicy, Push, PushConfig, SubscriptionService, SubscriptionSettings};
use hendelse_store::{EventStore, Ingest, IngestConfig, PushStore};
use tokio::sync::watch;

use crate::app::{AppContext, AppState, router};
use crate::cli::ServeArgs;
use crate::events::EventService;
use crate::metrics::Metrics;

/// `hendelse serve`: binds `--listen`, then [`serve_on`].
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    serve_on(args, listener).await
}

/// Runs the whole node on a listener the caller bound (port 0 in tests), until SIGTERM or Ctrl-C.
pub async fn serve_on(args: ServeArgs, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    args.validate()?;
    let (telemetry, tracer) = crate::telemetry::Telemetry::start(&args)?;
    crate::logging::init(args.log_format, tracer);
    let registry = match &args.registry {
        Some(path) => Registry::load(path)?,
        None => {
            tracing::warn!(
                "no --registry given: only resource owners and parties themselves have access"
            );
            Registry::default()
        }
    };
    let (mut issuers, remote_keys) = match &args.trusted_issuers {
        Some(path) => {
            TrustedIssuer::load_all(path, &args.store.data.data_dir.join("jwks-cache")).await?
        }
        None => (Vec::new(), Vec::new()),
    };
    // URL issuers' keys, kept fresh in the background for the life of the node.
    let key_refreshers: Vec<tokio::task::JoinHandle<()>> = remote_keys
        .into_iter()
        .map(|remote| {
            let first = remote.first_refresh();
            tokio::spawn(remote.refresh_forever(first))
        })
        .collect();
    if !args.no_dev_tokens {
        let key = DevKey::load_or_create(&args.store.data.data_dir)?;
        issuers.push(TrustedIssuer::development(&key, args.audience.clone())?);
    }
    if issuers.is_empty() {
        anyhow::bail!(
            "no token issuer is trusted: give --trusted-issuers or allow development tokens"
        );
    }

    let secret_keys = crate::secret_keys::load(
        args.push.secret_key_file.as_deref(),
        args.store.database_url.is_some(),
        &args.store.data.data_dir,
    )?;

    let metrics = Metrics::install().context("installing the metrics recorder")?;
    let backend = args.store.open().await?;
    let store: Arc<dyn EventStore> = backend.clone();
    let replay_events: Arc<dyn EventStore> = backend.clone();
    let dialog_store: Arc<dyn hendelse_store::DialogStore> = backend.clone();
    let push_store: Arc<dyn PushStore> = backend;
    crate::secret_keys::reseal(push_store.as_ref(), &secret_keys).await?;
    let last_seq = store.last_seq().await?;
    let (ingest, writer) = Ingest::start(
        store.clone(),
        IngestConfig {
            queue_capacity: args.ingest_queue,
            ..IngestConfig::default()
        },
        last_seq,
    );
    let (tip_tx, tip) = watch::channel(last_seq);
    let tip_follower = tokio::spawn(follow_tip(store.clone(), ingest.committed(), tip_tx));
    let live = crate::live::LiveTail::default();
    let live_tail = tokio::spawn(live.clone().run(store.clone(), last_seq, tip.clone()));
    let retention = tokio::spawn(retention_sweep(
        store.clone(),
        args.retention_days,
        args.retention_interval,
    ));
    let history = tokio::spawn(crate::history::sweep(
        push_store.clone(),
        crate::history::Retention {
            delivered: args.push.delivered_retention,
            dead: args.push.dead_letter_retention,
            interval: Duration::from_secs(args.retention_interval),
        },
    ));

    let reloading = Arc::new(ReloadingAuthorizer::new(registry));
    let registry_watch = args
        .registry
        .clone()
        .map(|path| tokio::spawn(crate::registry_reload::watch(path, reloading.clone())));
    let authorizer: Arc<dyn Authorizer> = match &args.pdp_url {
        Some(url) => {
            tracing::info!(pdp = %url, "access is decided by an external PDP; the registry is the party register");
            Arc::new(
                PdpAuthorizer::new(
                    PdpSettings {
                        url: url.clone(),
                        headers: args.pdp_headers.clone(),
                        timeout: args.pdp_timeout,
                        cache_for: args.pdp_cache,
                    },
                    reloading,
                )
                .map_err(anyhow::Error::msg)?,
            )
        }
        None => reloading,
    };
    let endpoint_policy = EndpointPolicy {
        allow_http: args.push.allow_http_webhooks,
        allow_private: args.push.allow_private_webhooks,
    };
    let push = if args.push.no_push {
        tracing::info!("--no-push: this node neither dispatches nor delivers webhooks");
        None
    } else {
        let config = PushConfig {
            schedule: args.push.retry_schedule.clone(),
            timeout: Duration::from_secs(args.push.webhook_timeout),
            concurrency: args.push.push_concurrency,
            per_subscription: args.push.per_subscription(),
            policy: endpoint_policy,
            disable_after: args.push.disable_failing_after,
            spans: telemetry.attempt_spans(),
            ..PushConfig::default()
        };
        Some(
            Push::start(
                store.clone(),
                push_store.clone(),
                authorizer.clone(),
                tip.clone(),
                config,
                secret_keys.clone(),
            )
            .context("starting the webhook workers")?,
        )
    };

    let dialog_wake = Arc::new(tokio::sync::Notify::new());
    let dialog_forwarder =
        args.dialog
            .start_forwarder(dialog_store.clone(), ingest.clone(), dialog_wake.clone())?;
    let dialogs =
        hendelse_dialog::DialogService::new(dialog_store, authorizer.clone(), dialog_wake);
    // Live streams end when shutdown begins, or graceful shutdown would wait for them forever.
    let (stop_streams, stopping) = watch::channel(false);
    let state = AppState::new(AppContext {
        stopping,
        events: EventService::new(store.clone(), ingest.clone(), authorizer.clone()),
        store,
        ingest,
        verifier: Arc::new(TokenVerifier::new(issuers)),
        public_url: args.public_url.as_deref().map(Arc::from),
        subscriptions: SubscriptionService::new(
            push_store.clone(),
            replay_events,
            authorizer.clone(),
            SubscriptionSettings {
                policy: endpoint_policy,
                replay_max_events: args.push.replay_max_events,
                secret_overlap: args.push.secret_rotation_overlap,
                secret_keys,
            },
            push.as_ref().map(|p| p.wake.clone()),
        ),
        push: push_store,
        tip,
        live,
        metrics,
        dialogs,
    });
    let address = listener.local_addr()?;
    tracing::info!(%address, store = %args.store.describe(), "hendelse is listening");
    // Tests and scripts read this line to learn the port when listening on port 0.
    crate::logging::print_stdout(&format!("listening on http://{address}"));

    let served = crate::listen::serve(
        listener,
        router(state),
        args.send_timeout,
        shutdown_signal(stop_streams),
    );
    let mut writer = writer;
    tokio::select! {
        served = served => served?,
        // The writer ends only when every Ingest is dropped, after serving; a writer that ends
        // before is dead, and a node that cannot commit must not go on looking healthy: exit
        // non-zero so that the supervisor starts it again.
        ended = &mut writer => {
            anyhow::bail!("the group-commit writer stopped while serving: {ended:?}");
        }
    }
    retention.abort();
    for refresher in key_refreshers {
        refresher.abort();
    }
    if let Some(watch) = registry_watch {
        watch.abort();
    }
    history.abort();
    if let Some(forwarder) = dialog_forwarder {
        // Unforwarded outbox rows stay in the store for the next start. The forwarder holds an
        // Ingest clone: it must be gone before the writer can finish.
        forwarder.abort();
        let _ = forwarder.await;
    }
    tip_follower.abort();
    live_tail.abort();
    if let Some(push) = push {
        push.stop().await;
    }
    // Every Ingest clone is gone with the router, so the writer drains its queue and stops.
    writer.await.context("the writer task failed")?;
    telemetry.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal(stop_streams: watch::Sender<bool>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop_streams.send(true);
}

/// How often the tip is read from the store, to learn of other nodes' commits.
const TIP_POLL: Duration = Duration::from_millis(100);

/// Keeps `tip` at the highest committed position: at once for this node's commits, and within
/// [`TIP_POLL`] for other nodes' (one cheap read per node, however many streams follow it).
async fn follow_tip(
    store: Arc<dyn EventStore>,
    mut local: watch::Receiver<i64>,
    tip: watch::Sender<i64>,
) {
    let raise = |seq: i64| {
        tip.send_if_modified(|current| {
            let higher = seq > *current;
            if higher {
                *current = seq;
            }
            higher
        });
    };
    loop {
        tokio::select! {
            changed = local.changed() => {
                if changed.is_err() {
                    return;
                }
                let seq = *local.borrow_and_update();
                raise(seq);
            }
            _ = tokio::time::sleep(TIP_POLL) => match store.last_seq().await {
                Ok(seq) => raise(seq),
                Err(e) => tracing::debug!(error = %e, "cannot read the tip"),
            },
        }
    }
}

async fn retention_sweep(store: Arc<dyn EventStore>, days: f64, interval_seconds: u64) {
    let keep = chrono::Duration::milliseconds((days * 86_400_000.0) as i64);
    let mut tick = tokio::time::interval(Duration::from_secs(interval_seconds));
    loop {
        tick.tick().await;
        let cutoff = chrono::Utc::now() - keep;
        match store.delete_registered_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, %cutoff, "retention removed old events"),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; will try again"),
        }
    }
}
