//! The webhook receiver of the tests: a real HTTP server on loopback that records every request
//! and answers as each test scripts it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The `type` of the validation handshake a new subscription is sent.
const VALIDATION_TYPE: &str = "platform.events.validatesubscription";

/// A latch that held requests wait on.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn wait(&self) {
        let mut open = self.0.subscribe();
        let _ = open.wait_for(|open| *open).await;
    }
}

/// How the receiver answers one request.
#[derive(Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    delay: Duration,
    gate: Option<Gate>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            gate: None,
        }
    }

    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Holds the request open until `gate` opens, then answers.
    pub fn after(mut self, gate: &Gate) -> Reply {
        self.gate = Some(gate.clone());
        self
    }

    /// Never answers within any test's time: a receiver that hangs (ten minutes is longer than
    /// every webhook timeout the tests set, and bounds the handler all the same).
    pub fn hang() -> Reply {
        Reply::ok().delay(Duration::from_secs(600))
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body as JSON (`Null` when it is not JSON).
    pub event: Value,
    /// 1 for the first request with this path and event id, 2 for the second, ...
    pub attempt: usize,
    /// The receiver's phase when the request arrived (tests that restart things set it).
    pub phase: u32,
    /// The status the receiver answered (or will answer, for a held request).
    pub status: u16,
    /// Whether the answer was sent: false while a request is held, and for good when the client
    /// went away before (which cancels the handler).
    pub answered: bool,
    pub at: Instant,
}

impl Hit {
    pub fn event_id(&self) -> &str {
        self.event["id"].as_str().unwrap_or("")
    }

    pub fn is_validation(&self) -> bool {
        self.event["type"] == VALIDATION_TYPE
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn webhook_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }
}

type Script = Arc<dyn Fn(&Hit) -> Reply + Send + Sync>;

struct Shared {
    hits: Mutex<Vec<Hit>>,
    script: Mutex<Script>,
    phase: AtomicU32,
    /// Requests being handled right now, per `webhook-id`.
    in_flight: Mutex<HashMap<String, usize>>,
    /// Event deliveries (not handshakes) being handled right now.
    deliveries_in_flight: AtomicUsize,
    /// `webhook-id`s that were ever in flight twice at the same time.
    overlaps: Mutex<Vec<String>>,
}

/// Counts a request as in flight until dropped (also when the client goes away and the handler
/// is cancelled).
struct InFlight {
    shared: Arc<Shared>,
    key: Option<String>,
    delivery: bool,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>, key: Option<String>, delivery: bool) -> InFlight {
        if let Some(key) = &key {
            let mut in_flight = shared.in_flight.lock().unwrap();
            let n = in_flight.entry(key.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                shared.overlaps.lock().unwrap().push(key.clone());
            }
        }
        if delivery {
            shared.deliveries_in_flight.fetch_add(1, Ordering::SeqCst);
        }
        InFlight {
            shared: shared.clone(),
            key,
            delivery,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            let mut in_flight = self.shared.in_flight.lock().unwrap();
            if let Some(n) = in_flight.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    in_flight.remove(key);
                }
            }
        }
        if self.delivery {
            self.shared
                .deliveries_in_flight
                .fetch_sub(1, Ordering::SeqCst);
        }
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut hit = Hit {
        path: uri.path().to_owned(),
        event: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
        body,
        attempt: 0,
        phase: shared.phase.load(Ordering::SeqCst),
        status: 0,
        answered: false,
        at: Instant::now(),
    };
    let _in_flight = InFlight::enter(&shared, key, !hit.is_validation());
    let script = shared.script.lock().unwrap().clone();
    let (reply, index) = {
        let mut hits = shared.hits.lock().unwrap();
        hit.attempt = 1 + hits
            .iter()
            .filter(|h| h.path == hit.path && h.event_id() == hit.event_id())
            .count();
        let reply = script(&hit);
        hit.status = reply.status;
        hits.push(hit);
        (reply, hits.len() - 1)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let Some(gate) = &reply.gate {
        gate.wait().await;
    }
    shared.hits.lock().unwrap()[index].answered = true;
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response.body(Body::empty()).expect("response")
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Receiver {
    /// A receiver on a free loopback port that answers 200 to everything.
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1").await
    }

    /// A receiver on a free port of `ip` (one that a server in another network namespace can
    /// reach); its `url`s name that address.
    pub async fn start_on(ip: &str) -> Receiver {
        let mut receiver = Receiver {
            addr: format!("{ip}:0").parse().expect("address"),
            shared: Arc::new(Shared {
                hits: Mutex::new(Vec::new()),
                script: Mutex::new(Arc::new(|_: &Hit| Reply::ok())),
                phase: AtomicU32::new(0),
                in_flight: Mutex::new(HashMap::new()),
                deliveries_in_flight: AtomicUsize::new(0),
                overlaps: Mutex::new(Vec::new()),
            }),
            running: None,
        };
        receiver.listen().await;
        receiver
    }

    /// Binds (again) to this receiver's address; the first time to a free port.
    async fn listen(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}; trying again", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind the receiver to {}: {e}", self.addr),
            }
        };
        self.addr = listener.local_addr().expect("local address");
        let app = Router::new()
            .fallback(receive)
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("receiver");
        });
        self.running = Some((stop, task));
    }

    /// Stops listening (connections are refused from now on) and closes open connections.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.listen().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn script(&self, script: impl Fn(&Hit) -> Reply + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Arc::new(script);
    }

    /// Answers validation handshakes with 200 at once, and event deliveries as `script` says.
    pub fn script_deliveries(&self, script: impl Fn(&Hit) -> Reply + Send + Sync + 'static) {
        self.script(move |hit| {
            if hit.is_validation() {
                Reply::ok()
            } else {
                script(hit)
            }
        });
    }

    /// Fails every event delivery with `status` until phase 1, then takes them (handshakes are
    /// always taken).
    pub fn fail_deliveries_until_phase_1(&self, status: u16) {
        self.script_deliveries(move |hit| {
            if hit.phase == 0 {
                Reply::status(status)
            } else {
                Reply::ok()
            }
        });
    }

    pub fn set_phase(&self, phase: u32) {
        self.shared.phase.store(phase, Ordering::SeqCst);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// Requests to `path`, validation handshakes included.
    pub fn hits_on(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    /// Event deliveries (not validation handshakes) to `path`.
    pub fn deliveries_on(&self, path: &str) -> Vec<Hit> {
        self.hits_on(path)
            .into_iter()
            .filter(|h| !h.is_validation())
            .collect()
    }

    /// The distinct event ids delivered to `path`.
    pub fn ids_on(&self, path: &str) -> BTreeSet<String> {
        self.deliveries_on(path)
            .iter()
            .map(|h| h.event_id().to_owned())
            .collect()
    }

    /// The distinct event ids delivered to `path` and answered with 2xx.
    pub fn accepted_on(&self, path: &str) -> BTreeSet<String> {
        self.deliveries_on(path)
            .iter()
            .filter(|h| (200..300).contains(&h.status))
            .map(|h| h.event_id().to_owned())
            .collect()
    }

    /// Waits (up to `PATIENCE`) for the answered delivery of `event` to `path`.
    pub async fn delivered(&self, path: &str, event: &str) -> Hit {
        super::eventually(&format!("{event} at {path}"), super::PATIENCE, async || {
            self.deliveries_on(path)
                .into_iter()
                .find(|h| h.event_id() == event && h.answered)
                .ok_or_else(|| format!("{:?}", self.ids_on(path)))
        })
        .await
    }

    /// Event deliveries being handled right now (held, delayed or hanging).
    pub fn deliveries_in_flight(&self) -> usize {
        self.shared.deliveries_in_flight.load(Ordering::SeqCst)
    }

    pub fn overlaps(&self) -> Vec<String> {
        self.shared.overlaps.lock().unwrap().clone()
    }
}
