//! What the server answered to one request, read in full so that a test can look at it at leisure.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON, or the text as a JSON string when it is not JSON.
    pub body: Value,
}

impl Answer {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
    Answer {
        status,
        headers,
        text,
        body,
    }
}

/// Asserts RFC 7807 problem details with this status, as the server renders every error.
pub fn assert_problem(answer: &Answer, status: u16, context: &str) {
    assert_eq!(
        answer.status, status,
        "{context}: expected {status}, got {}: {}",
        answer.status, answer.text
    );
    assert!(
        answer
            .content_type()
            .starts_with("application/problem+json"),
        "{context}: problem details expected, got {:?}: {}",
        answer.content_type(),
        answer.text
    );
    assert_eq!(
        answer.body["status"],
        json!(status),
        "{context}: {}",
        answer.text
    );
    for field in ["title", "type", "traceId"] {
        assert!(
            answer.body[field].is_string(),
            "{context}: no {field}: {}",
            answer.text
        );
    }
}
