//! `hendelse query`: one of the query routes, following `next` to the end (or for ever with
//! `--follow`), one event per line on stdout.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hendelse_wire::paths;
use reqwest::{Method, Url};
use serde_json::value::RawValue;

use super::{Api, Connection, event_line, print_line};

/// Which events: one resource's, or the app events of one party. Shared with `tail`.
#[derive(Args, Debug, Clone)]
#[group(id = "target", required = true, multiple = false)]
pub struct Target {
    /// Generic events of this resource (`urn:altinn:resource:…`): /events/api/v1/events.
    #[arg(long, value_name = "URN")]
    pub resource: Option<String>,
    /// App events of this party id: /events/api/v1/app/party?party=N.
    #[arg(long, value_name = "N")]
    pub party: Option<String>,
    /// App events of the organisation with this number: /events/api/v1/app/party?unit=N.
    #[arg(long, value_name = "N")]
    pub unit: Option<String>,
    /// App events of the person with this national identity number (sent in the `person`
    /// header): /events/api/v1/app/party.
    #[arg(long, value_name = "PID")]
    pub person: Option<String>,
}

/// The query parameters. Shared with `tail`.
#[derive(Args, Debug, Clone)]
pub struct Filter {
    /// Start after the event with this id (`0`: from the beginning of the log).
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Events registered at or after this instant (`2024-05-01T12:00:00Z`).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Events registered at or before this instant.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Event source (`%` matches any run of characters); may be repeated.
    #[arg(long = "source", value_name = "PATTERN")]
    pub sources: Vec<String>,
    /// Event type (`%` matches any run of characters); may be repeated.
    #[arg(long = "type", value_name = "PATTERN")]
    pub types: Vec<String>,
    /// Subject (a party in any form: `/party/N`, an organisation or person URN).
    #[arg(long)]
    pub subject: Option<String>,
    /// Alternative subject (the `Altinn-AlternativeSubject` header; with --resource).
    #[arg(long, value_name = "SUBJECT", requires = "resource")]
    pub alternative_subject: Option<String>,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub target: Target,
    /// App events of one app, `ORG/APP`: /events/api/v1/app/{org}/{app}.
    #[arg(long, value_name = "ORG/APP", group = "target")]
    pub app: Option<String>,
    #[command(flatten)]
    pub filter: Filter,
    /// Events per page (the server's default is 50, its maximum 1000).
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// After the last page keep asking for new events until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Seconds between polls with --follow.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 1.0,
        requires = "follow"
    )]
    pub interval: f64,
}

/// A request of one of the query routes: its URL and headers.
pub struct Plan {
    pub url: Url,
    pub headers: Vec<(&'static str, String)>,
}

pub enum Route<'a> {
    /// The query routes.
    Query { app: Option<&'a str> },
    /// Their live streams (`…/stream`).
    Stream,
}

/// The URL and headers of a query (or stream) of `target` with `filter`. A query without a
/// starting point reads from the beginning of the log; a stream without one starts at its end.
pub fn plan(
    api: &Api,
    target: &Target,
    filter: &Filter,
    route: Route<'_>,
    size: Option<u32>,
) -> anyhow::Result<Plan> {
    let stream = matches!(route, Route::Stream);
    let suffix = if stream { paths::STREAM_SUFFIX } else { "" };
    let mut headers = Vec::new();
    let mut params: Vec<(&str, String)> = Vec::new();
    let generic = target.resource.is_some();
    let url = if let Some(resource) = &target.resource {
        params.push(("resource", resource.clone()));
        api.endpoint(&format!("{}{suffix}", paths::EVENTS))
    } else if let Route::Query { app: Some(app) } = route {
        let (org, name) = app
            .split_once('/')
            .filter(|(org, name)| !org.is_empty() && !name.is_empty() && !name.contains('/'))
            .with_context(|| format!("--app must be ORG/APP (got {app:?})"))?;
        let mut url = api.endpoint(paths::APP);
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the base URL cannot take a path"))?
            .push(org)
            .push(name);
        url
    } else {
        if let Some(party) = &target.party {
            params.push(("party", party.clone()));
        } else if let Some(unit) = &target.unit {
            params.push(("unit", unit.clone()));
        } else if let Some(person) = &target.person {
            headers.push(("person", person.clone()));
        } else {
            anyhow::bail!("say which events: --resource, --party, --unit, --person or --app");
        }
        api.endpoint(&format!("{}{suffix}", paths::APP_PARTY))
    };
    match (&filter.after, &filter.from) {
        (Some(after), _) => params.push(("after", after.clone())),
        // `/events` wants `after` even beside `from`; `/app` takes either.
        (None, Some(_)) if generic && !stream => params.push(("after", "0".into())),
        (None, Some(_)) => {}
        (None, None) if !stream => params.push(("after", "0".into())),
        (None, None) => {}
    }
    if let Some(from) = &filter.from {
        params.push(("from", from.clone()));
    }
    if let Some(to) = &filter.to {
        params.push(("to", to.clone()));
    }
    if let Some(subject) = &filter.subject {
        params.push(("subject", subject.clone()));
    }
    for source in &filter.sources {
        params.push(("source", source.clone()));
    }
    for kind in &filter.types {
        params.push(("type", kind.clone()));
    }
    if let Some(size) = size {
        params.push(("size", size.to_string()));
    }
    if let Some(alternative) = &filter.alternative_subject {
        headers.push(("Altinn-AlternativeSubject", alternative.clone()));
    }
    let mut url = url;
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    Ok(Plan { url, headers })
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.connection)?;
    if !(args.interval.is_finite() && args.interval >= 0.0) {
        anyhow::bail!("--interval must be a number of seconds");
    }
    let interval = Duration::from_secs_f64(args.interval);
    let Plan { mut url, headers } = plan(
        &api,
        &args.target,
        &args.filter,
        Route::Query {
            app: args.app.as_deref(),
        },
        args.size,
    )?;
    loop {
        let mut request = api.request(Method::GET, url.clone());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let response = api.send(request).await?;
        let next = response
            .headers()
            .get("next")
            .and_then(|v| v.to_str().ok())
            .map(|v| url.join(v.trim()))
            .transpose()
            .context("the server's `next` link is not a URL")?;
        let body = response
            .bytes()
            .await
            .map_err(|e| super::transport_error(&url, &e))?;
        let page: Vec<Box<RawValue>> = serde_json::from_slice(&body)
            .with_context(|| format!("the answer of {} is not a JSON array", url.path()))?;
        {
            let mut out = std::io::stdout().lock();
            for event in &page {
                if !print_line(&mut out, &event_line(event.get()))? {
                    return Ok(());
                }
            }
        }
        if page.is_empty() {
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(interval).await;
        }
        match next {
            Some(next) => url = next,
            // Without `next` there is no way on (an Altinn Events API always sends it).
            None if page.is_empty() => {}
            None => anyhow::bail!("the server sent a page without a `next` link"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connection;

    fn api() -> Api {
        Api::new(&Connection {
            url: "http://127.0.0.1:8080/".into(),
            token: Some("t".into()),
        })
        .unwrap()
    }

    fn target() -> Target {
        Target {
            resource: None,
            party: None,
            unit: None,
            person: None,
        }
    }

    fn filter() -> Filter {
        Filter {
            after: None,
            from: None,
            to: None,
            sources: vec![],
            types: vec![],
            subject: None,
            alternative_subject: None,
        }
    }

    #[test]
    fn queries_start_at_the_beginning_and_streams_at_the_end() {
        let resource = Target {
            resource: Some("urn:altinn:resource:x".into()),
            ..target()
        };
        let query = plan(
            &api(),
            &resource,
            &filter(),
            Route::Query { app: None },
            Some(10),
        );
        assert_eq!(
            query.unwrap().url.as_str(),
            "http://127.0.0.1:8080/events/api/v1/events?resource=urn%3Aaltinn%3Aresource%3Ax&after=0&size=10"
        );
        let stream = plan(&api(), &resource, &filter(), Route::Stream, None).unwrap();
        assert_eq!(
            stream.url.as_str(),
            "http://127.0.0.1:8080/events/api/v1/events/stream?resource=urn%3Aaltinn%3Aresource%3Ax"
        );
    }

    #[test]
    fn every_filter_reaches_the_request() {
        let person = Target {
            person: Some("07124912037".into()),
            ..target()
        };
        let f = Filter {
            from: Some("2024-01-01T00:00:00+01:00".into()),
            to: Some("2025-01-01T00:00Z".into()),
            sources: vec!["https://a/%".into(), "b".into()],
            types: vec!["t.1".into()],
            subject: Some("/party/1".into()),
            ..filter()
        };
        let p = plan(&api(), &person, &f, Route::Query { app: None }, None).unwrap();
        assert_eq!(
            p.url.as_str(),
            "http://127.0.0.1:8080/events/api/v1/app/party?from=2024-01-01T00%3A00%3A00%2B01%3A00&to=2025-01-01T00%3A00Z&subject=%2Fparty%2F1&source=https%3A%2F%2Fa%2F%25&source=b&type=t.1"
        );
        assert_eq!(p.headers, [("person", "07124912037".to_owned())]);
        let app = plan(
            &api(),
            &target(),
            &filter(),
            Route::Query {
                app: Some("ttd/my app"),
            },
            None,
        );
        assert_eq!(
            app.unwrap().url.as_str(),
            "http://127.0.0.1:8080/events/api/v1/app/ttd/my%20app?after=0"
        );
        assert!(
            plan(
                &api(),
                &target(),
                &filter(),
                Route::Query { app: Some("ttd") },
                None
            )
            .is_err()
        );
    }
}
