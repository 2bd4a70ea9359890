//! `hendelse subscriptions`: manage webhook subscriptions; prints the API's JSON.

use clap::{Args, Subcommand};
use hendelse_wire::paths::SUBSCRIPTIONS as BASE;
use hendelse_wire::subscriptions::{
    DELIVERY_STATES, ReplayRequest, SubscriptionPatch, SubscriptionRequest,
};
use reqwest::Method;

use super::{Api, Connection, json_body, print_line};

#[derive(Args, Debug)]
pub struct SubscriptionsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// The caller's subscriptions.
    List,
    /// One subscription.
    Get { id: i64 },
    /// Create a subscription; the server then validates the endpoint with a handshake event.
    Create(CreateArgs),
    /// Delete a subscription.
    Delete { id: i64 },
    /// Recent deliveries of a subscription with every attempt.
    Deliveries {
        id: i64,
        /// Only deliveries in this state.
        #[arg(long, value_parser = DELIVERY_STATES)]
        state: Option<String>,
    },
    /// Queue a subscription's dead letters again.
    Redrive { id: i64 },
    /// Queue the stored events of a window again (after an outage of the receiver's own).
    Replay(ReplayArgs),
    /// Enable a subscription that was disabled (its endpoint failed for too long, or is gone).
    Enable { id: i64 },
    /// Change a subscription's endpoint (validated again first) and/or secret (the previous one
    /// signs beside it for a while).
    Update(UpdateArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["endpoint", "secret", "no_secret", "rate_limit", "no_rate_limit"])))]
pub struct UpdateArgs {
    pub id: i64,
    /// The new endpoint.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The new Standard Webhooks signing secret (`whsec_` + base64).
    #[arg(
        long,
        env = "HENDELSE_WEBHOOK_SECRET",
        hide_env_values = true,
        conflicts_with = "no_secret"
    )]
    pub secret: Option<String>,
    /// Sign no more.
    #[arg(long)]
    pub no_secret: bool,
    /// At most N deliveries per second.
    #[arg(long, value_name = "N", conflicts_with = "no_rate_limit")]
    pub rate_limit: Option<u32>,
    /// No rate limit.
    #[arg(long)]
    pub no_rate_limit: bool,
}

impl UpdateArgs {
    fn body(&self) -> SubscriptionPatch {
        SubscriptionPatch {
            end_point: self.endpoint.clone(),
            secret: if self.no_secret {
                Some(None)
            } else {
                self.secret.clone().map(Some)
            },
            rate_limit: if self.no_rate_limit {
                Some(None)
            } else {
                self.rate_limit.map(Some)
            },
        }
    }
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("start").required(true).args(["from", "after"])))]
pub struct ReplayArgs {
    pub id: i64,
    /// Events registered at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Events registered after the event with this id.
    #[arg(long, value_name = "EVENT_ID")]
    pub after: Option<String>,
    /// Events registered at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Idempotency-Key: the same key again is the same replay (default: a new key, which this
    /// command's own retries reuse).
    #[arg(long)]
    pub key: Option<String>,
}

impl ReplayArgs {
    fn body(&self) -> ReplayRequest {
        ReplayRequest {
            from: self.from.clone(),
            after: self.after.clone(),
            to: self.to.clone(),
        }
    }

    fn key(&self) -> String {
        self.key.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            format!("cli-{}-{}", std::process::id(), now.as_nanos())
        })
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Where to POST the events (https, unless the server allows http).
    #[arg(long, value_name = "URL")]
    pub endpoint: String,
    /// The resource (`urn:altinn:resource:…`); may be left out when --source names an app.
    #[arg(long, value_name = "URN")]
    pub resource: Option<String>,
    /// Only events with this source (`%` wildcards).
    #[arg(long, value_name = "PATTERN")]
    pub source: Option<String>,
    /// Only events about this party (`/party/N`, an organisation or person URN).
    #[arg(long)]
    pub subject: Option<String>,
    /// Only events with this alternative subject (exact).
    #[arg(long, value_name = "SUBJECT")]
    pub alternative_subject: Option<String>,
    /// Only events of this type (`%` wildcards).
    #[arg(long = "type", value_name = "PATTERN")]
    pub kind: Option<String>,
    /// With an organisation --subject: also its subunits.
    #[arg(long)]
    pub include_subunits: bool,
    /// Standard Webhooks signing secret (`whsec_` + base64).
    #[arg(long, env = "HENDELSE_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Deliver up to N events in one POST (application/cloudevents-batch+json).
    #[arg(long, value_name = "N")]
    pub max_events_per_batch: Option<u32>,
    /// How long a batch that is not full waits for more events, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_wait_ms: Option<u32>,
    /// At most N deliveries per second.
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
}

impl CreateArgs {
    fn body(&self) -> SubscriptionRequest {
        SubscriptionRequest {
            end_point: Some(self.endpoint.clone()),
            resource_filter: self.resource.clone(),
            source_filter: self.source.clone(),
            subject_filter: self.subject.clone(),
            alternative_subject_filter: self.alternative_subject.clone(),
            type_filter: self.kind.clone(),
            include_subunits: self.include_subunits,
            secret: self.secret.clone(),
            max_events_per_batch: self.max_events_per_batch,
            max_wait_ms: self.max_wait_ms,
            rate_limit: self.rate_limit,
        }
    }
}

pub async fn run(args: SubscriptionsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.connection)?;
    let one = |id: i64, rest: &str| api.endpoint(&format!("{BASE}/{id}{rest}"));
    let request = match &args.action {
        Action::List => api.request(Method::GET, api.endpoint(BASE)),
        Action::Get { id } => api.request(Method::GET, one(*id, "")),
        Action::Create(create) => api
            .request(Method::POST, api.endpoint(BASE))
            .json(&create.body()),
        Action::Delete { id } => api.request(Method::DELETE, one(*id, "")),
        Action::Deliveries { id, state } => {
            let mut url = one(*id, "/deliveries");
            if let Some(state) = state {
                url.query_pairs_mut().append_pair("state", state);
            }
            api.request(Method::GET, url)
        }
        Action::Redrive { id } => api.request(Method::POST, one(*id, "/redrive")),
        Action::Enable { id } => api.request(Method::POST, one(*id, "/enable")),
        Action::Update(update) => api
            .request(Method::PATCH, one(update.id, ""))
            .json(&update.body()),
        Action::Replay(replay) => api
            .request(Method::POST, one(replay.id, "/replay"))
            .header("idempotency-key", replay.key())
            .json(&replay.body()),
    };
    let response = api.send(request).await?;
    let text = if response.content_length() == Some(0) {
        String::new()
    } else {
        let body = json_body(response).await?;
        serde_json::to_string_pretty(&body)?
    };
    if !text.is_empty() {
        print_line(&mut std::io::stdout().lock(), &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sends_only_what_was_given() {
        let args = CreateArgs {
            endpoint: "https://hooks.example.com/x".into(),
            resource: Some("urn:altinn:resource:r".into()),
            source: None,
            subject: Some("/party/1".into()),
            alternative_subject: None,
            kind: Some("a.%".into()),
            include_subunits: true,
            secret: None,
            max_events_per_batch: None,
            max_wait_ms: None,
            rate_limit: None,
        };
        assert_eq!(
            serde_json::to_string(&args.body()).expect("json"),
            r#"{"endPoint":"https://hooks.example.com/x","resourceFilter":"urn:altinn:resource:r","subjectFilter":"/party/1","typeFilter":"a.%","includeSubunits":true}"#
        );
    }
}
