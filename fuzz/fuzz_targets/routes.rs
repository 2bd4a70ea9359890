//! Every route of the API through HTTP: the input is a request in a plain text form (`METHOD
//! /path?query`, header lines, a blank line, the body), sent to a real server on loopback (SQLite
//! store in a temporary directory, push off). Whatever the input, the server never panics and
//! never answers 500, and every refusal is problem details.
//!
//! A header `x-fuzz-as: person` sends an end user's token instead of the org `ttd`'s, `none` sends
//! none; the server's answers to one input may depend on what earlier inputs stored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

#[path = "../src/server.rs"]
mod server;

/// Seeds that create what the other seeds name by id (subscription 1, the dialog), sent before
/// the first input: libFuzzer runs its seeds smallest first, which would put them last.
const SETUP: [&str; 2] = ["subscription_create", "dialog_create"];

fuzz_target!(|data: &[u8]| {
    static SET_UP: std::sync::Once = std::sync::Once::new();
    SET_UP.call_once(|| {
        for name in SETUP {
            let path = format!("{}/seeds/routes/{name}", env!("CARGO_MANIFEST_DIR"));
            let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            check(&seed);
        }
    });
    check(data);
});

fn check(data: &[u8]) {
    let Some(request) = Request::parse(data) else {
        return;
    };
    let node = server::node();
    let token = match request.as_who.as_deref() {
        Some("none") => None,
        Some("person") => Some(node.person_token.as_str()),
        _ => Some(node.org_token.as_str()),
    };
    let Ok(mut url) = reqwest::Url::parse(&format!("{}{}", node.base, request.path)) else {
        return;
    };
    if url.host_str() != Some("127.0.0.1") {
        return;
    }
    url.set_fragment(None);
    let answer = node.send(
        request.method,
        url.clone(),
        request.headers,
        request.body,
        token,
    );
    let Some((status, content_type)) = answer else {
        return;
    };
    if node.trace {
        eprintln!("{status} {url}");
    }
    assert!(
        status != 500,
        "{} {url} answered 500",
        String::from_utf8_lossy(data.split(|b| *b == b' ').next().unwrap_or_default())
    );
    // hyper answers 414 and 431 itself, before any route sees the request.
    if status >= 400 && status != 414 && status != 431 {
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{url} answered {status} without problem details"
        );
    }
}

struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    as_who: Option<String>,
}

impl Request {
    fn parse(data: &[u8]) -> Option<Request> {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&data[..at], data[at + 2..].to_vec()),
            None => (data, Vec::new()),
        };
        let mut lines = head.split(|b| *b == b'\n');
        let first = std::str::from_utf8(lines.next()?).ok()?;
        let (method, path) = first.split_once(' ')?;
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        if !path.starts_with('/') || method == Method::CONNECT {
            return None;
        }
        let mut headers = HeaderMap::new();
        let mut as_who = None;
        for line in lines {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let name = &line[..colon];
            let value = line[colon + 1..].trim_ascii();
            if name.eq_ignore_ascii_case(b"x-fuzz-as") {
                as_who = Some(String::from_utf8_lossy(value).into_owned());
                continue;
            }
            // The harness owns the framing and the credentials.
            if name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"host")
                || name.eq_ignore_ascii_case(b"connection")
                || name.eq_ignore_ascii_case(b"authorization")
            {
                continue;
            }
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                headers.append(name, value);
            }
        }
        Some(Request {
            method,
            path: path.to_owned(),
            headers,
            body,
            as_who,
        })
    }
}
