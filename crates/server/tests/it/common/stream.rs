//! Live event streams (`text/event-stream`) read by the tests.

use std::time::Duration;

use super::client;

/// An open event stream, read message by message.
pub struct Stream {
    pub response: reqwest::Response,
    buffer: String,
}

/// One SSE message: its `id` and its `data` (lines joined).
#[derive(Debug)]
pub struct Message {
    pub id: Option<String>,
    pub data: String,
}

impl Stream {
    pub async fn open(url: &str, token: &str, last_event_id: Option<&str>) -> Stream {
        let mut request = client().get(url).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().expect("ascii");
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// The next message, skipping keep-alive comments; panics after 20 s without one.
    pub async fn next(&mut self) -> Message {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message {
                    id: None,
                    data: String::new(),
                };
                let mut saw_data = false;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        message.id = Some(id.trim_start().to_owned());
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if saw_data {
                            message.data.push('\n');
                        }
                        message
                            .data
                            .push_str(data.strip_prefix(' ').unwrap_or(data));
                        saw_data = true;
                    }
                }
                if saw_data {
                    return message;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("a message within 20 s")
                .expect("stream read")
                .expect("the stream ended");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("utf8"));
        }
    }
}
