//! The query string as the routes decode it (`form_urlencoded`, keys compared ignoring ASCII
//! case), re-encoded the way `next` links are: never panics, and every pair reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        out.append_pair(k, v);
    }
    let encoded = out.finish();
    let again: Vec<(String, String)> = form_urlencoded::parse(encoded.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(pairs, again);
    for (_, v) in &pairs {
        let _ = hendelse_model::Pattern::new(v.clone()).matches(v);
    }
});
