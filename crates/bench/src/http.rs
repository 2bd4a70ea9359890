//! The load generator: one hyper HTTP/1.1 connection per simulated client, kept alive for the
//! whole run, with no pool or middleware in between, so that the client costs as little CPU as
//! possible on a machine it shares with the server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

pub type Body = Full<Bytes>;

/// Where requests go, and as whom.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub base_url: String,
    host: HeaderValue,
    bearer: Option<HeaderValue>,
}

impl Target {
    /// `http://host:port` (a trailing slash is allowed; https is not supported).
    pub fn new(url: &str, token: Option<&str>) -> anyhow::Result<Target> {
        let rest = url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .with_context(|| format!("only http:// URLs can be benchmarked (got {url})"))?;
        if rest.contains('/') {
            bail!("give the server's base URL without a path (got {url})");
        }
        let authority = if rest.contains(':') {
            rest.to_owned()
        } else {
            format!("{rest}:80")
        };
        let addr = authority
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to no address"))?;
        let bearer = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {}", t.trim())))
            .transpose()
            .context("the token is not a valid header value")?;
        Ok(Target {
            addr,
            base_url: format!("http://{rest}"),
            host: HeaderValue::from_str(rest).context("host header")?,
            bearer,
        })
    }

    /// A request to `path_and_query` with `Host` and, when there is a token, `Authorization`.
    pub fn request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&'static str>,
        body: impl Into<Bytes>,
    ) -> Request<Body> {
        let mut request = Request::new(Full::new(body.into()));
        *request.method_mut() = method;
        *request.uri_mut() = path_and_query.parse().unwrap_or_default();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        if let Some(bearer) = &self.bearer {
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        request
    }

    pub fn get(&self, path_and_query: &str) -> Request<Body> {
        self.request(Method::GET, path_and_query, None, Bytes::new())
    }
}

/// Adds a header to a request (for the `person` header of party queries).
pub fn with_header(mut request: Request<Body>, name: &'static str, value: &str) -> Request<Body> {
    if let Ok(value) = HeaderValue::from_str(value) {
        request
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    request
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// One kept-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Body>,
}

impl Conn {
    pub async fn open(target: &Target) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.base_url))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    /// Sends one request and reads the whole response.
    pub async fn send(&mut self, request: Request<Body>) -> anyhow::Result<Reply> {
        self.sender.ready().await.context("connection closed")?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            body,
        })
    }
}

/// Sends one request on a fresh connection (set-up steps, not measured).
pub async fn send_once(target: &Target, request: Request<Body>) -> anyhow::Result<Reply> {
    Conn::open(target).await?.send(request).await
}

/// What a load run measured.
pub struct Outcome {
    /// Latency of every request that got an acceptable answer, in microseconds.
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the moment every connection was open to the last answer.
    pub elapsed: Duration,
    /// The sum of what `check` returned for the acceptable answers (rows, events…).
    pub sum: u64,
}

impl Outcome {
    pub fn ok(&self) -> usize {
        self.latencies_us.len()
    }

    pub fn per_second(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends `total` requests, `make(i)` for i in 0..total, over `connections` kept-alive connections
/// (each sends its next request as soon as the previous answer is read). `check` decides whether
/// an answer counts (and what it contributes to [`Outcome::sum`]); anything else is an error. A
/// broken connection is counted as an error and replaced.
pub async fn run<M, C>(
    target: &Target,
    connections: usize,
    total: usize,
    make: M,
    check: C,
) -> anyhow::Result<Outcome>
where
    M: Fn(usize) -> Request<Body> + Send + Sync + 'static,
    C: Fn(&Reply) -> Result<u64, String> + Send + Sync + 'static,
{
    run_for(target, connections, total, None, make, check).await
}

/// Publishes events `0..total` (`event(n)` builds event `n`) as batches of `batch` over
/// `connections` connections; a batch that is not accepted counts as an error of the outcome.
pub async fn publish_batches<E>(
    target: &Target,
    connections: usize,
    total: usize,
    batch: usize,
    event: E,
) -> anyhow::Result<Outcome>
where
    E: Fn(usize) -> String + Send + Sync + 'static,
{
    let batch = batch.max(1);
    let t = target.clone();
    run(
        target,
        connections,
        total.div_ceil(batch),
        move |b| {
            let first = b * batch;
            let body = crate::events::batch((first..(first + batch).min(total)).map(&event));
            t.request(
                Method::POST,
                "/events/api/v1/events",
                Some(crate::events::BATCH),
                body,
            )
        },
        success,
    )
    .await
}

/// [`run`], but no request is started once `budget` has passed since the start (so a slow
/// endpoint yields fewer samples instead of an endless run).
pub async fn run_for<M, C>(
    target: &Target,
    connections: usize,
    total: usize,
    budget: Option<Duration>,
    make: M,
    check: C,
) -> anyhow::Result<Outcome>
where
    M: Fn(usize) -> Request<Body> + Send + Sync + 'static,
    C: Fn(&Reply) -> Result<u64, String> + Send + Sync + 'static,
{
    let connections = connections.clamp(1, total.max(1));
    let make = Arc::new(make);
    let check = Arc::new(check);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(connections + 1));
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = Conn::open(target).await?;
        let (target, make, check, next, start) = (
            target.clone(),
            make.clone(),
            check.clone(),
            next.clone(),
            start.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total / connections + 1);
            let mut errors = 0u64;
            let mut first_error = None;
            let mut sum = 0u64;
            start.wait().await;
            let deadline = budget.map(|b| Instant::now() + b);
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let request = make(i);
                let sent = Instant::now();
                let verdict = match conn.send(request).await {
                    Ok(reply) => check(&reply).map_err(|e| format!("{}: {e}", reply.status)),
                    Err(e) => {
                        let message = format!("{e:#}");
                        match Conn::open(&target).await {
                            Ok(fresh) => conn = fresh,
                            Err(e) => {
                                return (latencies, errors + 1, Some(format!("{e:#}")), sum);
                            }
                        }
                        Err(message)
                    }
                };
                match verdict {
                    Ok(value) => {
                        let us = sent.elapsed().as_micros();
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                        sum += value;
                    }
                    Err(message) => {
                        errors += 1;
                        first_error.get_or_insert(message);
                    }
                }
            }
            (latencies, errors, first_error, sum)
        }));
    }
    start.wait().await;
    let began = Instant::now();
    let mut outcome = Outcome {
        latencies_us: Vec::with_capacity(total),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        sum: 0,
    };
    for worker in workers {
        let (latencies, errors, first_error, sum) = worker.await?;
        outcome.latencies_us.extend(latencies);
        outcome.errors += errors;
        outcome.sum += sum;
        if outcome.first_error.is_none() {
            outcome.first_error = first_error;
        }
    }
    outcome.elapsed = began.elapsed();
    Ok(outcome)
}

/// The usual check: any 2xx counts as one.
pub fn success(reply: &Reply) -> Result<u64, String> {
    if reply.status.is_success() {
        Ok(1)
    } else {
        Err(String::from_utf8_lossy(&reply.body)
            .chars()
            .take(300)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_need_a_plain_http_base_url() {
        let t = Target::new("http://127.0.0.1:8080/", Some("abc")).unwrap();
        assert_eq!(t.base_url, "http://127.0.0.1:8080");
        assert_eq!(t.addr.port(), 8080);
        let r = t.get("/x?y=1");
        assert_eq!(r.headers()[HOST], "127.0.0.1:8080");
        assert_eq!(r.headers()[AUTHORIZATION], "Bearer abc");
        assert_eq!(r.uri().path_and_query().unwrap().as_str(), "/x?y=1");
        assert!(Target::new("https://127.0.0.1:8080", None).is_err());
        assert!(Target::new("http://127.0.0.1:8080/events", None).is_err());
    }
}
