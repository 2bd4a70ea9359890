//! `hendelse publish`: events from the command line, a file or standard input, sent in batches.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{ArgGroup, Args};
use hendelse_wire::paths;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{Api, Connection, print_line};

/// The server takes request bodies up to 1 MiB; a batch stays a little below.
const MAX_BATCH_BYTES: usize = 1_000_000;
/// How long a batch waits for more input before it goes out partly filled (a slow pipe still
/// gets its events published promptly; a fast one fills whole batches).
const LINGER: Duration = Duration::from_millis(200);
/// Events read ahead of the requests.
const READ_AHEAD: usize = 8192;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["event", "file", "stdin", "dash"])))]
pub struct PublishArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// One event as JSON.
    #[arg(long, value_name = "JSON")]
    pub event: Option<String>,
    /// A JSON file: one event (an object), an array of events, or one event per line.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Read events from standard input, one JSON object per line.
    #[arg(long)]
    pub stdin: bool,
    /// `-` reads standard input, like --stdin.
    #[arg(value_name = "-", value_parser = dash)]
    pub dash: Option<String>,
    /// Events per request (at most 1 MB of JSON is sent at once whatever this says).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// App events: POST each to /events/api/v1/app (one per request) and print the new ids.
    #[arg(long)]
    pub app: bool,
    /// No progress bar and no summary line.
    #[arg(long, short)]
    pub quiet: bool,
}

fn dash(value: &str) -> Result<String, String> {
    if value == "-" {
        Ok(value.to_owned())
    } else {
        Err(
            "the only input argument is `-` (standard input); use --file FILE or --event JSON"
                .into(),
        )
    }
}

/// One event as read, with where it came from (for messages).
struct Item {
    json: Box<RawValue>,
}

type Feed = mpsc::Receiver<anyhow::Result<Item>>;

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.connection)?;
    let (feed, total) = open_input(&args)?;
    let started = Instant::now();
    let mut sender = Sender {
        api: &api,
        app: args.app,
        quiet: args.quiet,
        published: 0,
        requests: 0,
        bar: None,
        total,
        batch: args.batch as usize,
    };
    let result = sender.send_all(feed).await;
    if let Some(bar) = sender.bar.take() {
        bar.finish_and_clear();
    }
    result?;
    if !args.quiet {
        let seconds = started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "published {} in {}, {:.0} events/s",
            count(
                sender.published,
                if args.app { "app event" } else { "event" }
            ),
            count(sender.requests, "request"),
            sender.published as f64 / seconds
        );
    }
    Ok(())
}

fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Starts reading the input; the total when it is known in advance.
fn open_input(args: &PublishArgs) -> anyhow::Result<(Feed, Option<u64>)> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    if let Some(text) = &args.event {
        let json = parse_events(text).context("--event")?;
        let total = json.len() as u64;
        std::thread::spawn(move || feed_all(json, &tx));
        return Ok((rx, Some(total)));
    }
    if let Some(path) = &args.file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json = parse_events(&text).with_context(|| path.display().to_string())?;
        let total = json.len() as u64;
        std::thread::spawn(move || feed_all(json, &tx));
        return Ok((rx, Some(total)));
    }
    // Standard input: read on a thread of its own (it may block for as long as the writer likes).
    std::thread::spawn(move || read_lines(std::io::stdin().lock(), &tx));
    Ok((rx, None))
}

fn feed_all(events: Vec<Box<RawValue>>, tx: &mpsc::Sender<anyhow::Result<Item>>) {
    for json in events {
        if tx.blocking_send(Ok(Item { json })).is_err() {
            return;
        }
    }
}

/// JSON lines: one object per line, blank lines skipped.
fn read_lines(input: impl BufRead, tx: &mpsc::Sender<anyhow::Result<Item>>) {
    for (n, line) in input.lines().enumerate() {
        let item = match line {
            Err(e) => Err(anyhow!("reading standard input: {e}")),
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => one_object(line.trim())
                .map(|json| Item { json })
                .map_err(|e| anyhow!("standard input line {}: {e}", n + 1)),
        };
        let failed = item.is_err();
        if tx.blocking_send(item).is_err() || failed {
            return;
        }
    }
}

fn one_object(text: &str) -> Result<Box<RawValue>, String> {
    let json: Box<RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if json.get().starts_with('{') {
        Ok(json)
    } else {
        Err("an event must be a JSON object".into())
    }
}

/// The events of a text: an object, an array of objects, or several of those one after another
/// (JSON lines).
fn parse_events(text: &str) -> anyhow::Result<Vec<Box<RawValue>>> {
    let mut events = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Box<RawValue>>() {
        let value = value.map_err(|e| anyhow!("not JSON: {e}"))?;
        let raw = value.get();
        if raw.starts_with('{') {
            events.push(value);
        } else if raw.starts_with('[') {
            let items: Vec<Box<RawValue>> = serde_json::from_str(raw)?;
            for item in items {
                if !item.get().starts_with('{') {
                    anyhow::bail!(
                        "event {} is not a JSON object: {}",
                        events.len() + 1,
                        short(item.get())
                    );
                }
                events.push(item);
            }
        } else {
            anyhow::bail!(
                "event {} is not a JSON object: {}",
                events.len() + 1,
                short(raw)
            );
        }
    }
    if events.is_empty() {
        anyhow::bail!("no events in the input");
    }
    Ok(events)
}

fn short(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

struct Sender<'a> {
    api: &'a Api,
    app: bool,
    quiet: bool,
    published: u64,
    requests: u64,
    bar: Option<ProgressBar>,
    total: Option<u64>,
    batch: usize,
}

impl Sender<'_> {
    async fn send_all(&mut self, mut feed: Feed) -> anyhow::Result<()> {
        let batch_size = if self.app { 1 } else { self.batch };
        let mut carry: Option<Item> = None;
        loop {
            let (batch, input_error) = next_batch(&mut feed, &mut carry, batch_size).await;
            let batch_was_empty = batch.is_empty();
            if !batch.is_empty() {
                self.show_progress();
                let first = self.published + 1;
                let count = batch.len() as u64;
                if let Err(e) = self.send(batch).await {
                    // Nothing published yet: the reason alone says it all.
                    return Err(if self.published == 0 {
                        e
                    } else {
                        let range = if count == 1 {
                            format!("event {first}")
                        } else {
                            format!("events {first}-{}", first + count - 1)
                        };
                        e.context(format!(
                            "{range} not published ({} before {} were)",
                            self.published,
                            if count == 1 { "it" } else { "them" }
                        ))
                    });
                }
                self.published += count;
                if let Some(bar) = &self.bar {
                    bar.inc(count);
                }
            }
            if let Some(e) = input_error {
                return Err(if self.published == 0 {
                    e
                } else {
                    anyhow!("{e:#} ({} events before it were published)", self.published)
                });
            }
            if batch_was_empty {
                // `next_batch` comes back empty only at the end of the input.
                return Ok(());
            }
        }
    }

    /// A bar once the input is longer than one request (drawn only on a terminal).
    fn show_progress(&mut self) {
        if self.quiet || self.bar.is_some() {
            return;
        }
        let long = match self.total {
            Some(total) => total > self.batch as u64,
            None => self.requests > 0,
        };
        if !long {
            return;
        }
        let template = match self.total {
            Some(_) => "{wide_bar} {pos}/{len} events, {rate}, {eta} left",
            None => "{spinner} {pos} events, {rate}",
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} events/s", state.per_sec());
                },
            );
        let bar = ProgressBar::with_draw_target(self.total, ProgressDrawTarget::stderr())
            .with_style(style);
        bar.set_position(self.published);
        self.bar = Some(bar);
    }

    async fn send(&mut self, batch: Vec<Item>) -> anyhow::Result<()> {
        if self.app {
            for item in batch {
                let request = self
                    .api
                    .request(Method::POST, self.api.endpoint(paths::APP))
                    .header(CONTENT_TYPE, "application/json")
                    .body(item.json.get().to_owned());
                self.requests += 1;
                let response = self.api.send(request).await?;
                let answer = super::json_body(response).await?;
                let id = answer
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or(answer.to_string());
                let line = match &self.bar {
                    Some(bar) => bar.suspend(|| print_line(&mut std::io::stdout().lock(), &id)),
                    None => print_line(&mut std::io::stdout().lock(), &id),
                };
                line?;
            }
            return Ok(());
        }
        let (content_type, body) = if batch.len() == 1 {
            (
                "application/cloudevents+json",
                batch[0].json.get().to_owned(),
            )
        } else {
            ("application/cloudevents-batch+json", batch_body(&batch))
        };
        let request = self
            .api
            .request(Method::POST, self.api.endpoint(paths::EVENTS))
            .header(CONTENT_TYPE, content_type)
            .body(body);
        self.requests += 1;
        self.api.send(request).await?;
        Ok(())
    }
}

fn batch_body(batch: &[Item]) -> String {
    let mut body = String::with_capacity(batch_bytes(batch));
    body.push('[');
    for (i, item) in batch.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item.json.get());
    }
    body.push(']');
    body
}

fn batch_bytes(batch: &[Item]) -> usize {
    2 + batch.iter().map(|i| i.json.get().len() + 1).sum::<usize>()
}

/// The next batch: up to `size` events and `MAX_BATCH_BYTES`; it goes out early when the input
/// pauses for `LINGER`. An input error ends the batch and is returned beside it.
async fn next_batch(
    feed: &mut Feed,
    carry: &mut Option<Item>,
    size: usize,
) -> (Vec<Item>, Option<anyhow::Error>) {
    let mut batch = Vec::new();
    let mut bytes = 2;
    if let Some(item) = carry.take() {
        bytes += item.json.get().len() + 1;
        batch.push(item);
    }
    while batch.len() < size {
        let next = if batch.is_empty() {
            feed.recv().await
        } else {
            match feed.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout(LINGER, feed.recv()).await {
                        Ok(item) => item,
                        Err(_) => break,
                    }
                }
            }
        };
        match next {
            None => break,
            Some(Err(e)) => return (batch, Some(e)),
            Some(Ok(item)) => {
                let len = item.json.get().len() + 1;
                if !batch.is_empty() && bytes + len > MAX_BATCH_BYTES {
                    *carry = Some(item);
                    break;
                }
                bytes += len;
                batch.push(item);
            }
        }
    }
    (batch, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_holds_an_object_an_array_or_json_lines() {
        let raw = |v: Vec<Box<RawValue>>| v.iter().map(|r| r.get().to_owned()).collect::<Vec<_>>();
        assert_eq!(
            raw(parse_events(r#" {"id":"1"} "#).unwrap()),
            [r#"{"id":"1"}"#]
        );
        assert_eq!(
            raw(parse_events("[{\"id\":\"1\"},\n {\"id\": 2.50}]").unwrap()),
            [r#"{"id":"1"}"#, r#"{"id": 2.50}"#]
        );
        assert_eq!(
            raw(parse_events("{\"id\":\"1\"}\n{\"id\":\"2\"}\n").unwrap()).len(),
            2
        );
        assert!(
            parse_events("[1]")
                .unwrap_err()
                .to_string()
                .contains("event 1")
        );
        assert!(parse_events("{\"id\":").is_err());
        assert!(parse_events("  ").is_err());
    }

    #[tokio::test]
    async fn batches_respect_count_and_bytes_and_keep_every_event() {
        let (tx, mut rx) = mpsc::channel(READ_AHEAD);
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(300_000));
        std::thread::spawn(move || {
            let mut items = Vec::new();
            for i in 0..7 {
                items.push(RawValue::from_string(format!("{{\"n\":{i}}}")).unwrap());
            }
            for _ in 0..4 {
                items.push(RawValue::from_string(big.clone()).unwrap());
            }
            feed_all(items, &tx);
        });
        let mut carry = None;
        let mut sizes = Vec::new();
        loop {
            let (batch, error) = next_batch(&mut rx, &mut carry, 5).await;
            assert!(error.is_none());
            if batch.is_empty() {
                break;
            }
            assert!(batch_bytes(&batch) <= MAX_BATCH_BYTES);
            let body: serde_json::Value = serde_json::from_str(&batch_body(&batch)).unwrap();
            assert_eq!(body.as_array().unwrap().len(), batch.len());
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [5, 5, 1]);
    }

    #[test]
    fn standard_input_errors_name_the_line() {
        let (tx, mut rx) = mpsc::channel(16);
        read_lines(std::io::Cursor::new("{\"a\":1}\n\n[1]\n{\"b\":2}\n"), &tx);
        assert!(rx.try_recv().unwrap().is_ok());
        let e = rx.try_recv().unwrap().err().unwrap();
        assert_eq!(
            e.to_string(),
            "standard input line 3: an event must be a JSON object"
        );
        assert!(rx.try_recv().is_err());
    }
}
