//! The one query-string parser of every route: repeated keys, keys without regard to case, empty
//! values as absent, Altinn's parameter rules and error texts, and the `next` link.

use axum::http::HeaderMap;
use axum::http::header::HOST;
use chrono::{DateTime, NaiveDateTime, Utc};
use hendelse_model::Pattern;

use crate::problem::ApiError;

/// Beside `after` in a `next` link when the last event's id is shared with an earlier event of the
/// query (ids are unique per source only): the source of the event `after` means.
pub const AFTER_SOURCE: &str = "afterSource";

/// The decoded query string, keys compared case-insensitively as ASP.NET (and so Altinn) does.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let pairs = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Params { pairs }
    }

    /// The non-empty values of `name`: an empty value counts as absent.
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.pairs
            .iter()
            .filter(move |(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that may appear once.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.values(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "The '{name}' parameter may be given only once."
            )));
        }
        Ok(first)
    }

    /// Whether `name` is given with an empty value (`size=`): absent for a text, but no answer
    /// for a number or a boolean.
    pub fn given_empty(&self, name: &str) -> bool {
        self.pairs
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && v.is_empty())
    }

    /// A number or boolean parameter that may appear once: an empty value is refused as
    /// `invalid` says, not read as absent.
    pub fn one_value(&self, name: &str, invalid: &str) -> Result<Option<&str>, ApiError> {
        if self.given_empty(name) {
            return Err(ApiError::BadRequest(invalid.to_owned()));
        }
        self.one(name)
    }

    /// A parameter that may repeat (`type=a&type=b`), as patterns.
    pub fn all(&self, name: &str) -> Vec<Pattern> {
        self.values(name).map(Pattern::new).collect()
    }

    /// A parameter that may repeat, as texts.
    pub fn texts(&self, name: &str) -> Vec<String> {
        self.values(name).map(str::to_owned).collect()
    }

    /// The same query with `after` set to `after` (and [`AFTER_SOURCE`] to `after_source`, or
    /// removed), every value percent-encoded.
    pub fn with_after(&self, after: &str, after_source: Option<&str>) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        let cursor = |out: &mut form_urlencoded::Serializer<String>, key: &str| {
            out.append_pair(key, after);
            if let Some(source) = after_source {
                out.append_pair(AFTER_SOURCE, source);
            }
        };
        let mut replaced = false;
        for (k, v) in &self.pairs {
            if k.eq_ignore_ascii_case(AFTER_SOURCE) {
                continue;
            }
            if k.eq_ignore_ascii_case("after") {
                if !replaced {
                    cursor(&mut out, k);
                    replaced = true;
                }
            } else {
                out.append_pair(k, v);
            }
        }
        if !replaced {
            cursor(&mut out, "after");
        }
        out.finish()
    }
}

/// `size`: an integer. Whether it is clamped or rejected is each route's rule.
pub fn size(params: &Params) -> Result<Option<i64>, ApiError> {
    params
        .one_value("size", "The value '' is not valid for Size.")?
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("The value '{v}' is not valid for Size."))
            })
        })
        .transpose()
}

/// `from`/`to`: RFC 3339 with a time zone; seconds may be left out (`2023-02-16T18:00Z`).
pub fn instant(
    params: &Params,
    name: &str,
    label: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = params.one(name)? else {
        return Ok(None);
    };
    if let Some(t) = parse_instant(raw) {
        return Ok(Some(t));
    }
    Err(ApiError::BadRequest(if lacks_time_zone(raw) {
        format!(
            "The '{label}' parameter must specify timezone. E.g. 2022-07-07T11:00:53.3917Z for UTC"
        )
    } else {
        format!("The value '{raw}' is not valid for {label}.")
    }))
}

pub fn parse_instant(raw: &str) -> Option<DateTime<Utc>> {
    // An unencoded `+01:00` arrives as ` 01:00` after form decoding; put the plus back (a space
    // between date and time, as in `2022-02-14 07:22:19Z`, stays).
    let mut text: String = raw
        .trim()
        .char_indices()
        .map(|(i, c)| if c == ' ' && i > 10 { '+' } else { c })
        .collect();
    if text.len() >= 17
        && text.as_bytes()[13] == b':'
        && text.as_bytes()[16] != b':'
        && text.is_char_boundary(16)
    {
        text.insert_str(16, ":00");
    }
    DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A date and time that would be valid with a time zone.
fn lacks_time_zone(raw: &str) -> bool {
    let text = raw.trim();
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .any(|format| NaiveDateTime::parse_from_str(text, format).is_ok())
}

/// The absolute URL of this route, from `--public-url` or the request's `Host`.
pub fn base_url(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_accept_altinns_short_form_and_need_a_zone() {
        let t = parse_instant("2023-02-16T18:00Z").expect("short form");
        assert_eq!(t.to_rfc3339(), "2023-02-16T18:00:00+00:00");
        assert_eq!(parse_instant("2023-02-16T19:00 01:00"), Some(t));
        assert_eq!(
            parse_instant("2023-02-16 18:00:00Z"),
            Some(t),
            "Altinn's own examples put a space between date and time"
        );
        assert!(parse_instant("2023-02-16T18:00:00").is_none());
        assert!(parse_instant("yesterday").is_none());
        assert!(lacks_time_zone("2023-02-16T18:00:00"));
        assert!(lacks_time_zone("2023-02-16T18:00"));
        assert!(!lacks_time_zone("yesterday"));
    }

    #[test]
    fn next_keeps_other_parameters_and_encodes_them() {
        let p = Params::parse(Some("source=https%3A%2F%2Fx%2F%25&after=1&type=a&type=b"));
        assert_eq!(
            p.with_after("x y&z", None),
            "source=https%3A%2F%2Fx%2F%25&after=x+y%26z&type=a&type=b"
        );
        assert_eq!(
            Params::parse(Some("from=2023-01-01T00:00Z")).with_after("7", None),
            "from=2023-01-01T00%3A00Z&after=7"
        );
        let pinned = Params::parse(Some("after=1&afterSource=old&size=2"));
        assert_eq!(
            pinned.with_after("1", Some("https://x/a")),
            "after=1&afterSource=https%3A%2F%2Fx%2Fa&size=2"
        );
        assert_eq!(pinned.with_after("2", None), "after=2&size=2");
        assert!(Params::parse(Some("size=1&Size=2")).one("size").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Query strings that lean on what the parser must get right: separators, escapes,
        /// percent-encodings (also of non-UTF-8 bytes) and the parameters the routes read.
        fn query() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("&".to_owned()),
                Just("=".to_owned()),
                Just("%".to_owned()),
                Just("%FF".to_owned()),
                Just("%00".to_owned()),
                Just("%2".to_owned()),
                Just("+".to_owned()),
                Just("after".to_owned()),
                Just("size".to_owned()),
                Just("from".to_owned()),
                Just("type".to_owned()),
                Just("2023-02-16T18:00".to_owned()),
                "\\PC{0,6}",
                "[0-9:T+ Z.-]{0,20}",
            ];
            proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever arrives, parsing and reading every parameter answers without panicking,
            /// and `next` links are themselves valid query strings that read back the same.
            #[test]
            fn the_query_string_parser_never_panics(raw in query()) {
                let params = Params::parse(Some(&raw));
                for name in ["after", "size", "from", "to", "type", "source", "subject"] {
                    let _ = params.one(name);
                    let _ = params.all(name);
                }
                let _ = size(&params);
                let _ = instant(&params, "from", "From");
                let again = Params::parse(Some(&params.with_after("7", Some(&raw))));
                prop_assert_eq!(again.one("after").ok().flatten(), Some("7"));
                prop_assert_eq!(again.all("type"), params.all("type"));
            }

            #[test]
            fn instants_never_panic(raw in "\\PC{0,40}") {
                let _ = parse_instant(&raw);
                let _ = lacks_time_zone(&raw);
            }
        }
    }
}
