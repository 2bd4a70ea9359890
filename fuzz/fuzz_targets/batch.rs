//! A batch, split as the publish route splits it (an array of raw JSON values, each validated on
//! its own): never panics; an accepted batch re-validates event by event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) else {
        return;
    };
    let results: Vec<_> = items
        .iter()
        .map(|item| hendelse_model::validate_event(item.get()))
        .collect();
    for (item, result) in items.iter().zip(&results) {
        if let Ok(event) = result {
            assert_eq!(event.json, item.get().trim());
        }
    }
});
