//! `hendelse tail`: the live stream of a query (`text/event-stream`), one event per line, that
//! reconnects with `Last-Event-ID` when the connection drops.
//!
//! The server-sent events format is a small line protocol, parsed here as the HTML standard
//! says: lines end with CRLF, LF or CR; `field: value` (one space after the colon is dropped);
//! `data` lines add up, a blank line ends a message, `id` is remembered across messages, `retry`
//! sets the reconnection delay, lines starting with `:` are comments (keep-alives).

use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::query::{Filter, Plan, Route, Target, plan};
use super::{Api, Connection, event_line, print_line, problem, root_cause, transport_error};

/// First wait before reconnecting (unless the server sent `retry:`), and the longest.
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub filter: Filter,
}

/// One message of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The last event id as of this message (`id:` persists until changed).
    pub id: Option<String>,
    /// `event:`; empty for the default type, `message`.
    pub event: String,
    pub data: String,
}

/// An incremental `text/event-stream` parser: feed it bytes as they come.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF first in the next one is part of that line end.
    after_cr: bool,
    /// Bytes seen so far (a byte order mark is skipped only at the very start).
    started: bool,
    data: String,
    has_data: bool,
    event: String,
    /// `id:` as last seen; it becomes the last event id when its message ends.
    id_buffer: Option<String>,
    /// The id to resume after: that of the last complete message.
    last_id: Option<String>,
    /// Reconnection delay the server asked for.
    pub retry: Option<Duration>,
}

impl SseParser {
    /// A parser for a new connection that goes on after `last_id`.
    pub fn resuming(last_id: Option<String>, retry: Option<Duration>) -> SseParser {
        SseParser {
            id_buffer: last_id.clone(),
            last_id,
            retry,
            ..SseParser::default()
        }
    }

    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Parses `chunk` and appends the messages it completes.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Message>) {
        if !self.started && !chunk.is_empty() {
            self.started = true;
            chunk = chunk.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(chunk);
        }
        for &byte in chunk {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.process(&String::from_utf8_lossy(&line), out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
    }

    fn process(&mut self, line: &str, out: &mut Vec<Message>) {
        if line.is_empty() {
            self.last_id = self.id_buffer.clone();
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                out.push(Message {
                    id: self.last_id.clone(),
                    event: std::mem::take(&mut self.event),
                    data,
                });
            }
            self.data.clear();
            self.has_data = false;
            self.event.clear();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => {
                self.id_buffer = Some(value.to_owned()).filter(|v| !v.is_empty());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().map(Duration::from_millis);
            }
            _ => {}
        }
    }
}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.connection)?;
    let plan = plan(&api, &args.target, &args.filter, Route::Stream, None)?;
    let out = std::io::stdout();
    follow(&api, &plan, None, |message| {
        print_line(&mut out.lock(), &event_line(&message.data))
    })
    .await
}

/// Reads the stream of `plan` and hands each event message to `sink` until the sink answers
/// `false`. A dropped connection is opened again with `Last-Event-ID`, after a wait that grows
/// while reconnecting fails; an error answer (other than 502–504) ends the tail, and so does a
/// failure to connect the first time.
pub async fn follow(
    api: &Api,
    plan: &Plan,
    last_id: Option<String>,
    mut sink: impl FnMut(&Message) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut parser = SseParser::resuming(last_id, None);
    let mut connected = false;
    let mut delay = FIRST_DELAY;
    let mut messages = Vec::new();
    loop {
        let mut request = api
            .open_request(plan.url.clone())
            .header(ACCEPT, "text/event-stream");
        for (name, value) in &plan.headers {
            request = request.header(*name, value);
        }
        if let Some(id) = parser.last_id() {
            request = request.header("Last-Event-ID", id);
        }
        let failure = match request.send().await {
            Err(e) => transport_error(&plan.url, &e),
            Ok(response) if !response.status().is_success() => {
                let status = response.status().as_u16();
                let error = problem(response).await;
                if !connected || !(502..=504).contains(&status) {
                    return Err(error);
                }
                error
            }
            Ok(mut response) => {
                let content_type = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if !content_type.starts_with("text/event-stream") {
                    return Err(anyhow!(
                        "{} answered {content_type:?}, not an event stream",
                        plan.url.path()
                    ));
                }
                connected = true;
                delay = FIRST_DELAY;
                // A message cut off by the drop is dropped with the connection.
                parser = SseParser::resuming(parser.last_id.take(), parser.retry);
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            parser.feed(&chunk, &mut messages);
                            for message in messages.drain(..) {
                                if (message.event.is_empty() || message.event == "message")
                                    && !sink(&message)?
                                {
                                    return Ok(());
                                }
                            }
                        }
                        Ok(None) => break anyhow!("the server closed the stream"),
                        Err(e) => break anyhow!("the stream broke off ({})", root_cause(&e)),
                    }
                }
            }
        };
        if !connected {
            return Err(failure);
        }
        let wait = parser.retry.unwrap_or(delay);
        eprintln!(
            "hendelse: {failure:#}; reconnecting in {:.1}s",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> (Vec<Message>, SseParser) {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out);
        }
        (out, parser)
    }

    fn msg(id: Option<&str>, event: &str, data: &str) -> Message {
        Message {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn messages_end_at_a_blank_line_with_any_line_ending() {
        let (out, parser) = parse_all(&[
            b"\xEF\xBB\xBF: keep-alive\n\nid: 1\ndata: {\"a\":1}\n\n",
            b"id:2\r\ndata:x\r\ndata: y\r\n\r\n",
            b"data: z\r",
            b"\n",
            b"\r\n",
            b"event: other\ndata: w\nretry: 2500\n\ndata\n\n",
        ]);
        assert_eq!(
            out,
            [
                msg(Some("1"), "", "{\"a\":1}"),
                msg(Some("2"), "", "x\ny"),
                msg(Some("2"), "", "z"),
                msg(Some("2"), "other", "w"),
                msg(Some("2"), "", ""),
            ]
        );
        assert_eq!(parser.retry, Some(Duration::from_millis(2500)));
        assert_eq!(parser.last_id(), Some("2"));
    }

    #[test]
    fn bytes_may_be_split_anywhere() {
        let text =
            "id: e-1\ndata: {\"name\":\"Æøå\"}\n\n: ping\n\nid: e-2\r\ndata: {\"n\":2}\r\n\r\n";
        let (whole, _) = parse_all(&[text.as_bytes()]);
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            let (parts, _) = parse_all(&[&bytes[..split], &bytes[split..]]);
            assert_eq!(parts, whole, "split at {split}");
        }
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].data, "{\"name\":\"Æøå\"}");
    }

    #[test]
    fn a_message_without_its_blank_line_is_not_complete() {
        // Its id is not the one to resume after either: the event never arrived.
        let (out, parser) = parse_all(&[b"id: 8\ndata: {}\n\nid: 9\ndata: {}\n"]);
        assert_eq!(out, [msg(Some("8"), "", "{}")]);
        assert_eq!(parser.last_id(), Some("8"));
    }

    /// A small SSE server: the first connection sends two events and drops; the second must
    /// carry `Last-Event-ID` of the second event and gets a third.
    #[tokio::test]
    async fn a_dropped_stream_resumes_after_the_last_event() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = requests.clone();
        let server = tokio::spawn(async move {
            // The first reply's last message is cut off by the drop: it must not count.
            let replies: [&[u8]; 2] = [
                b"retry: 10\n\nid: 1\ndata: {\"n\":1}\n\n: ping\n\nid: 2\ndata: {\"n\":\n",
                b"id: 2\ndata: {\"n\":2}\n\nid: 3\ndata: {\"n\":3}\n\n",
            ];
            for (i, reply) in replies.iter().enumerate() {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    head.extend_from_slice(&buf[..n]);
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let header = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                socket.write_all(header.as_bytes()).await.unwrap();
                socket.write_all(reply).await.unwrap();
                if i == 1 {
                    // Keep the second connection open: the sink stops the tail.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        });
        let api = Api::new(&Connection {
            url: format!("http://{addr}"),
            token: Some("secret".into()),
        })
        .unwrap();
        let plan = Plan {
            url: api.endpoint("/events/api/v1/events/stream"),
            headers: vec![("person", "07124912037".into())],
        };
        let mut got = Vec::new();
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            follow(&api, &plan, None, |m| {
                got.push((m.id.clone(), m.data.clone()));
                Ok(got.len() < 3)
            }),
        )
        .await;
        result.expect("bounded").expect("tail");
        assert_eq!(
            got,
            [
                (Some("1".into()), "{\"n\":1}".into()),
                (Some("2".into()), "{\"n\":2}".into()),
                (Some("3".into()), "{\"n\":3}".into()),
            ]
        );
        let requests = requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 2);
        let lower: Vec<String> = requests.iter().map(|r| r.to_ascii_lowercase()).collect();
        assert!(lower[0].contains("authorization: bearer secret"));
        assert!(lower[0].contains("accept: text/event-stream"));
        assert!(lower[0].contains("person: 07124912037"));
        assert!(!lower[0].contains("last-event-id"));
        assert!(lower[1].contains("last-event-id: 1\r\n"), "{}", requests[1]);
        server.abort();
    }

    #[tokio::test]
    async fn the_first_connection_failing_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let api = Api::new(&Connection {
            url: format!("http://{addr}"),
            token: Some("t".into()),
        })
        .unwrap();
        let plan = Plan {
            url: api.endpoint("/events/api/v1/events/stream"),
            headers: vec![],
        };
        let error = follow(&api, &plan, None, |_| Ok(true)).await.unwrap_err();
        assert!(
            error.to_string().starts_with("cannot reach http://"),
            "{error}"
        );
    }
}
