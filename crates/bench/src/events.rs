//! The events the scenarios send: JSON text built directly (no serializer on the hot path), with a
//! `data` object of an exact size.

use std::time::{SystemTime, UNIX_EPOCH};

pub const RESOURCE: &str = "urn:altinn:resource:super-simple-service";
pub const STRUCTURED: &str = "application/cloudevents+json";
pub const BATCH: &str = "application/cloudevents-batch+json";
/// Most bytes in one publish request (the server's limit is 1 MiB); batches stay below this.
pub const MAX_BATCH_BYTES: usize = 900 * 1024;
pub const MAX_BATCH_EVENTS: usize = 1000;

/// The query scenario's population.
pub const PARTIES: u64 = 10_000;
pub const TYPES: u64 = 20;
pub const SOURCES: u64 = 50;
/// Sources belong to apps (`ttd/bench{app}`), `SOURCES / APPS` each.
pub const APPS: u64 = 5;

/// Microseconds since the Unix epoch (the clock the receiver compares with).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// `{"n":…,"sent_us":…,"pad":"xxx…"}`, padded to `size` bytes (or as short as it can be).
pub fn data(n: u64, sent_us: Option<u64>, size: usize) -> String {
    let mut out = String::with_capacity(size.max(48));
    out.push_str("{\"n\":");
    out.push_str(&n.to_string());
    if let Some(sent) = sent_us {
        out.push_str(",\"sent_us\":");
        out.push_str(&sent.to_string());
    }
    out.push_str(",\"pad\":\"");
    let pad = size.saturating_sub(out.len() + 2);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// A generic event of the resource ttd owns, about one of 10,000 parties.
pub fn generic(run: &str, n: u64, sent_us: Option<u64>, size: usize) -> String {
    about(run, n, 50_000_000 + n % PARTIES, sent_us, size)
}

/// A generic event about the party `party`.
pub fn about(run: &str, n: u64, party: u64, sent_us: Option<u64>, size: usize) -> String {
    format!(
        concat!(
            r#"{{"specversion":"1.0","id":"{run}-{n}","source":"https://bench.hendelse.example/publish","#,
            r#""type":"no.hendelse.bench.published","resource":"{resource}","subject":"/party/{party}","#,
            r#""time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","data":{data}}}"#
        ),
        run = run,
        n = n,
        resource = RESOURCE,
        party = party,
        data = data(n, sent_us, size),
    )
}

/// `[e1,e2,…]`
pub fn batch(events: impl Iterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, e) in events.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&e);
    }
    out.push(']');
    out
}

/// How many events of `event_bytes` fit in one batch request.
pub fn batch_events(event_bytes: usize) -> usize {
    (MAX_BATCH_BYTES / (event_bytes + 1)).clamp(1, MAX_BATCH_EVENTS)
}

/// A well-mixed 64-bit hash (SplitMix64), for reproducible pseudo-random choices.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The attributes of the query scenario's event number `n`: a function of `n` alone, so that
/// queries can name parties, sources and ids that exist without remembering anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    pub party: u64,
    pub event_type: u64,
    pub source: u64,
}

impl Attributes {
    pub fn of(n: u64) -> Attributes {
        let h = mix(n);
        Attributes {
            party: h % PARTIES,
            event_type: (h >> 20) % TYPES,
            source: (h >> 40) % SOURCES,
        }
    }

    pub fn app(&self) -> u64 {
        self.source % APPS
    }
}

pub fn party_id(party: u64) -> u64 {
    51_000_000 + party
}

/// Even parties are people, odd ones organisations.
pub fn person(party: u64) -> Option<String> {
    party
        .is_multiple_of(2)
        .then(|| format!("{}", 20_000_000_000 + party))
}

pub fn organisation(party: u64) -> Option<String> {
    (!party.is_multiple_of(2)).then(|| format!("{}", 900_000_000 + party))
}

pub fn app_name(app: u64) -> String {
    format!("bench{app}")
}

pub fn source_of(source: u64) -> String {
    format!(
        "https://ttd.apps.altinn.no/ttd/{}/src{source:02}",
        app_name(source % APPS)
    )
}

pub fn type_of(event_type: u64) -> String {
    format!("app.bench.type{event_type:02}")
}

pub fn query_id(run: &str, n: u64) -> String {
    format!("{run}-q{n}")
}

/// Event `n` of the query scenario: an app event of `ttd/bench{app}` (published through the
/// generic batch route, which ttd may use for its own apps' resources).
pub fn app_event(run: &str, n: u64, size: usize) -> String {
    let a = Attributes::of(n);
    let alternative = match (person(a.party), organisation(a.party)) {
        (Some(pid), _) => format!("/person/{pid}"),
        (_, Some(org)) => format!("/organisation/{org}"),
        _ => unreachable!("a party is a person or an organisation"),
    };
    format!(
        concat!(
            r#"{{"specversion":"1.0","id":"{id}","source":"{source}","type":"{event_type}","#,
            r#""resource":"urn:altinn:resource:app_ttd_{app}","subject":"/party/{party}","#,
            r#""alternativesubject":"{alternative}","time":"2026-01-01T00:00:00Z","data":{data}}}"#
        ),
        id = query_id(run, n),
        source = source_of(a.source),
        event_type = type_of(a.event_type),
        app = app_name(a.app()),
        party = party_id(a.party),
        alternative = alternative,
        data = data(n, None, size),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_requested_size_and_is_json() {
        for size in [64, 100, 1024, 4096] {
            let d = data(123_456, Some(now_us()), size);
            assert_eq!(d.len(), size);
            let v: serde_json::Value = serde_json::from_str(&d).unwrap();
            assert_eq!(v["n"], 123_456);
        }
        assert!(data(1, None, 0).len() < 20, "as short as it can be");
    }

    #[test]
    fn events_are_valid_json_with_the_expected_attributes() {
        let e: serde_json::Value = serde_json::from_str(&generic("r", 7, Some(1), 256)).unwrap();
        assert_eq!(e["resource"], RESOURCE);
        assert_eq!(e["data"]["sent_us"], 1);
        for n in 0..200 {
            let e: serde_json::Value = serde_json::from_str(&app_event("r", n, 128)).unwrap();
            let a = Attributes::of(n);
            assert_eq!(e["id"], query_id("r", n));
            assert_eq!(e["source"], source_of(a.source));
            assert!(
                e["source"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("/ttd/bench{}/", a.app()))
            );
            let alt = e["alternativesubject"].as_str().unwrap();
            assert!(alt.len() == "/person/".len() + 11 || alt.len() == "/organisation/".len() + 9);
        }
        let b: Vec<serde_json::Value> =
            serde_json::from_str(&batch((0..3).map(|n| app_event("r", n, 64)))).unwrap();
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn attributes_spread_over_the_population() {
        let mut parties = std::collections::HashSet::new();
        let mut types = std::collections::HashSet::new();
        let mut sources = std::collections::HashSet::new();
        for n in 0..100_000 {
            let a = Attributes::of(n);
            parties.insert(a.party);
            types.insert(a.event_type);
            sources.insert(a.source);
        }
        assert_eq!(parties.len() as u64, PARTIES);
        assert_eq!(types.len() as u64, TYPES);
        assert_eq!(sources.len() as u64, SOURCES);
        assert_eq!(batch_events(1400), 657);
        assert_eq!(batch_events(100), MAX_BATCH_EVENTS);
    }
}
