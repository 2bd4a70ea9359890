//! One structured-mode CloudEvent: the validator never panics, and what it accepts has the
//! attributes it promises (non-empty id, source and type, the text kept as given).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = hendelse_model::validate_event(text) {
        assert!(!event.id.is_empty() && !event.source.is_empty() && !event.event_type.is_empty());
        assert_eq!(event.json, text.trim());
        let value: serde_json::Value = serde_json::from_str(&event.json).expect("stored JSON");
        assert_eq!(value["specversion"], "1.0");
    }
});
