//! The command-line client of Hendelse: `publish`, `query`, `tail` and `subscriptions` talk to a
//! running Hendelse (or any Altinn Events API) over HTTP, with the request and response shapes of
//! `hendelse-wire`. It knows nothing of the server's insides. Every failure becomes one line: the
//! problem details' `detail` for an error response, the root cause for a connection error.

pub mod publish;
pub mod query;
pub mod subscriptions;
pub mod tail;

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};

/// How long one ordinary request may take (the stream has no such limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Times a request answered 503/429 is sent again (publishing is idempotent and all or nothing).
const BUSY_RETRIES: u32 = 5;
/// Error bodies longer than this are cut in messages.
const MAX_ERROR_TEXT: usize = 300;

/// Where the API is and who is calling: shared by every client verb.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// Base URL of the Hendelse API.
    #[arg(
        long,
        env = "HENDELSE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Bearer token (required; `hendelse token` prints development tokens).
    #[arg(long, env = "HENDELSE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// An HTTP client bound to one API base URL and token.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Api {
    pub fn new(connection: &Connection) -> anyhow::Result<Api> {
        let base = Url::parse(connection.url.trim())
            .with_context(|| format!("--url {:?} is not a URL", connection.url))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            anyhow::bail!("--url must be an http:// or https:// URL (got {base})");
        }
        let token = connection.token.as_deref().unwrap_or("").trim().to_owned();
        if token.is_empty() {
            anyhow::bail!("a token is required: --token or HENDELSE_TOKEN");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("hendelse/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { http, base, token })
    }

    /// `path` (starting with `/`) under the base URL, which may itself have a path.
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_query(None);
        url.set_fragment(None);
        url
    }

    /// A request with the token and the ordinary timeout.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.token)
            .timeout(REQUEST_TIMEOUT)
    }

    /// A request without an overall timeout (for the live stream).
    pub fn open_request(&self, url: Url) -> RequestBuilder {
        self.http.get(url).bearer_auth(&self.token)
    }

    /// Sends a request; an error status becomes an error with the problem's detail. A 503 or 429
    /// is retried a few times after its `Retry-After` (the requests sent this way are safe to
    /// repeat).
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let mut request = request;
        let mut tries = 0;
        loop {
            let again = request.try_clone();
            let response = request_result(&self.base, request.send().await)?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            match again {
                Some(again) if busy(status) && tries < BUSY_RETRIES => {
                    tries += 1;
                    let wait = retry_after(response.headers());
                    drop(response);
                    tokio::time::sleep(wait).await;
                    request = again;
                }
                _ => return Err(problem(response).await),
            }
        }
    }
}

fn busy(status: StatusCode) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS
}

/// The wait a `Retry-After` (seconds) asks for, within reason; one second without one.
fn retry_after(headers: &HeaderMap) -> Duration {
    let seconds = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.clamp(1, 30))
}

/// A transport error as "cannot reach BASE: root cause" (reqwest's own text repeats the URL and
/// wraps the interesting part several layers down).
pub fn request_result(base: &Url, result: reqwest::Result<Response>) -> anyhow::Result<Response> {
    result.map_err(|e| transport_error(base, &e))
}

pub fn transport_error(base: &Url, error: &reqwest::Error) -> anyhow::Error {
    let origin = base.origin().ascii_serialization();
    if error.is_timeout() {
        return anyhow!("{origin} did not answer in time");
    }
    let reason = root_cause(error);
    if error.is_connect() || error.is_request() {
        anyhow!("cannot reach {origin}: {reason}")
    } else {
        anyhow!("reading the answer of {origin} failed: {reason}")
    }
}

/// The innermost cause of an error: the part that says what happened.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut root = error;
    while let Some(source) = root.source() {
        root = source;
    }
    root.to_string()
}

/// The error of a non-2xx response: "STATUS: detail" from problem details, else the status and
/// the start of the body.
pub async fn problem(response: Response) -> anyhow::Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow!("{}", problem_text(status, &text))
}

fn problem_text(status: StatusCode, body: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let detail = parsed.as_ref().and_then(|v| {
        ["detail", "title", "message"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|d| d.as_str()))
            .map(str::to_owned)
            .or_else(|| v.as_str().map(str::to_owned))
    });
    let detail = detail.unwrap_or_else(|| body.trim().to_owned());
    let detail = one_line(&detail);
    if detail.is_empty() {
        format!("{} {reason}", status.as_u16())
    } else {
        format!("{} {reason}: {detail}", status.as_u16())
    }
}

/// Line breaks become spaces and long text is cut, so a message stays one line.
fn one_line(text: &str) -> String {
    let flat: String = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if flat.chars().count() > MAX_ERROR_TEXT {
        let cut: String = flat.chars().take(MAX_ERROR_TEXT).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

pub async fn json_body(response: Response) -> anyhow::Result<serde_json::Value> {
    let url = response.url().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(&url, &e))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the answer of {} is not JSON: {}",
            url.path(),
            one_line(&String::from_utf8_lossy(&bytes))
        )
    })
}

/// Writes one line to stdout. A closed pipe (`| head`) is not an error: it returns `false`, and
/// the caller stops.
pub fn print_line(out: &mut impl Write, line: &str) -> anyhow::Result<bool> {
    let result = out
        .write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

/// An event's JSON on one line, otherwise byte for byte: a line break in JSON can only be
/// whitespace between tokens (inside strings it is escaped), so dropping it changes nothing.
pub fn event_line(json: &str) -> std::borrow::Cow<'_, str> {
    if json.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(json.replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(json.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_one_line_with_their_detail() {
        let body = r#"{"type":"x","title":"Bad Request","status":400,"detail":"the event is not valid: id: required\nsource: required"}"#;
        assert_eq!(
            problem_text(StatusCode::BAD_REQUEST, body),
            "400 Bad Request: the event is not valid: id: required source: required"
        );
        assert_eq!(
            problem_text(StatusCode::BAD_GATEWAY, "<html>\n<b>oops</b>\n</html>"),
            "502 Bad Gateway: <html> <b>oops</b> </html>"
        );
        assert_eq!(problem_text(StatusCode::NOT_FOUND, ""), "404 Not Found");
        let long = "x".repeat(1000);
        assert!(problem_text(StatusCode::BAD_REQUEST, &long).ends_with('…'));
    }

    #[test]
    fn endpoints_keep_the_base_path() {
        let api = |url: &str| {
            Api::new(&Connection {
                url: url.into(),
                token: Some("t".into()),
            })
            .unwrap()
        };
        assert_eq!(
            api("http://127.0.0.1:8080")
                .endpoint("/events/api/v1/events")
                .as_str(),
            "http://127.0.0.1:8080/events/api/v1/events"
        );
        assert_eq!(
            api("https://example.com/hendelse/")
                .endpoint("/events/api/v1/app")
                .as_str(),
            "https://example.com/hendelse/events/api/v1/app"
        );
        assert!(
            Api::new(&Connection {
                url: "ftp://x".into(),
                token: Some("t".into())
            })
            .is_err()
        );
    }

    #[test]
    fn event_lines_lose_only_line_breaks() {
        assert_eq!(
            event_line("{\"a\":\n  \"b\\n\"\r\n}"),
            "{\"a\":   \"b\\n\"  }"
        );
        assert_eq!(event_line("{\"a\":1}"), "{\"a\":1}");
    }
}
