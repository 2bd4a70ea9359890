//! Binary content mode: `ce-` header values percent-decoded per the HTTP binding, then validated
//! as an attribute map. Never panics; a decoded value that is valid UTF-8 survives unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let mut map = Map::new();
    map.insert("specversion".into(), Value::String("1.0".into()));
    for (i, raw) in data.split(|b| *b == b'\n').enumerate() {
        let name = ["id", "source", "type", "subject", "time", "resource", "x"][i % 7];
        let Ok(text) = percent_encoding::percent_decode(raw).decode_utf8() else {
            continue;
        };
        map.insert(name.to_owned(), Value::String(text.into_owned()));
    }
    let json = Value::Object(map.clone()).to_string();
    if let Ok(event) = hendelse_model::cloudevent::validate_map(&map, json) {
        assert_eq!(Some(&Value::String(event.id)), map.get("id"));
    }
});
