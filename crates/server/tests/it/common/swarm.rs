//! Concurrent publishers: each sends its own events one at a time and waits for every answer, so
//! that what each had acknowledged (and in which order) is known exactly, also when the server is
//! killed or stopped under it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{EVENTS, RESOURCE, Server, client, generic_event, get, page_ids, post_event};

/// What a publisher does after an answer other than 200.
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    /// Goes on with its next event.
    Next,
    /// Goes on with its next event after a short pause, as a client told to back off would.
    BackOff,
    Stop,
}

/// What one publisher saw.
#[derive(Debug, Default)]
pub struct Published {
    /// Its event ids answered 200, in the order it sent them.
    pub acknowledged: Vec<String>,
    /// Answers other than 200.
    pub refused: usize,
    /// Whether it ended on a connection error: the server went away under it, so the event it
    /// was sending then may or may not be stored.
    pub cut_off: bool,
}

pub struct Swarm {
    tasks: Vec<JoinHandle<Published>>,
    /// Acknowledgements so far, over all publishers.
    acknowledged: Arc<AtomicUsize>,
}

impl Swarm {
    /// `publishers` publishers; publisher `p` sends up to `events` generic events with ids
    /// `{prefix}{p}-{i:06}` (so one publisher's ids sort in its order), the `i`-th to
    /// `nodes[(p + i) % nodes.len()]`. After an answer other than 200 it does what `on_refusal`
    /// says (which may assert on the answer); a connection error ends it.
    pub fn start(
        nodes: &[&Server],
        token: &str,
        publishers: usize,
        events: usize,
        prefix: &str,
        on_refusal: fn(&str, &reqwest::Response) -> Refusal,
    ) -> Swarm {
        let urls: Vec<String> = nodes.iter().map(|node| node.url.clone()).collect();
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let tasks = (0..publishers)
            .map(|p| {
                let (urls, token, prefix) = (urls.clone(), token.to_owned(), prefix.to_owned());
                let counter = Arc::clone(&acknowledged);
                tokio::spawn(async move {
                    let http = client();
                    let mut published = Published::default();
                    for i in 0..events {
                        let id = format!("{prefix}{p}-{i:06}");
                        let url = &urls[(p + i) % urls.len()];
                        let response =
                            match post_event(&http, url, &token, &generic_event(&id)).await {
                                Ok(response) => response,
                                Err(_) => {
                                    published.cut_off = true;
                                    break;
                                }
                            };
                        if response.status() == 200 {
                            published.acknowledged.push(id);
                            counter.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        published.refused += 1;
                        match on_refusal(&id, &response) {
                            Refusal::Next => {}
                            Refusal::BackOff => tokio::time::sleep(Duration::from_millis(20)).await,
                            Refusal::Stop => break,
                        }
                    }
                    published
                })
            })
            .collect();
        Swarm {
            tasks,
            acknowledged,
        }
    }

    /// Waits until the publishers together have `n` acknowledgements (panics after `limit`): a
    /// test that cuts the server at a random moment of a running load first waits for the load
    /// to run, which on a busy machine can take longer than the random delay itself.
    pub async fn wait_for_acknowledged(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.acknowledged.load(Ordering::Relaxed) < n {
            assert!(
                start.elapsed() < limit,
                "fewer than {n} publishes acknowledged in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Acknowledgements so far, over all publishers.
    pub fn acknowledged_so_far(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// For publishers whose every publish must succeed.
    pub fn must_succeed(id: &str, response: &reqwest::Response) -> Refusal {
        panic!("publish {id}: {}", response.status())
    }

    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// Waits for every publisher; what each saw, in publisher order.
    pub async fn join(self) -> Vec<Published> {
        let mut all = Vec::new();
        for task in self.tasks {
            all.push(task.await.expect("publisher"));
        }
        all
    }
}

/// Every id acknowledged to any of the publishers.
pub fn acknowledged(published: &[Published]) -> HashSet<String> {
    published
        .iter()
        .flat_map(|p| p.acknowledged.iter().cloned())
        .collect()
}

/// `publishers` publishers, spread over `nodes`, each publishing `events` events while a reader
/// follows `next` (pages of `page_size`) on each node in turn. Asserts that the reader saw every
/// acknowledged event exactly once, and each publisher's events in the order they were
/// acknowledged (each waited for every acknowledgement before it sent on); returns the ids read.
pub async fn assert_cursor_never_skips(
    nodes: &[&Server],
    token: &str,
    publishers: usize,
    events: usize,
    page_size: usize,
) -> Vec<String> {
    let swarm = Swarm::start(nodes, token, publishers, events, "p", Swarm::must_succeed);
    let mut path_and_query = format!("{EVENTS}?resource={RESOURCE}&after=0&size={page_size}");
    let mut seen = Vec::new();
    for round in 0.. {
        assert!(round < 100_000, "the reader did not catch up");
        let all_done = swarm.is_finished();
        let (status, next, body) =
            get(&nodes[round % nodes.len()].at(&path_and_query), token).await;
        assert_eq!(status, 200, "{body}");
        let page = page_ids(&body);
        let next = next.expect("next");
        let at = next.find("/events/api").expect("next is a URL of this API");
        path_and_query = next[at..].to_owned();
        if page.is_empty() && all_done {
            break;
        }
        seen.extend(page);
    }
    let acknowledged = acknowledged(&swarm.join().await);
    assert_eq!(acknowledged.len(), publishers * events);

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "the reader saw an event twice");
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !unique.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "the reader skipped {} events, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let mut last: HashMap<&str, &str> = HashMap::new();
    for id in &seen {
        let (publisher, n) = id.rsplit_once('-').expect("id shape");
        if let Some(previous) = last.insert(publisher, n) {
            assert!(previous < n, "{publisher}: {n} read after {previous}");
        }
    }
    seen
}
