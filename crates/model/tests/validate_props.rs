//! Property tests of the CloudEvent validator: it never panics, and for generated attribute maps it
//! accepts exactly the events a reference check (written independently below) says are valid.

use hendelse_model::cloudevent::{validate_event, validate_map};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// One attribute value and whether the reference says it is acceptable for that attribute.
type Candidate = (Value, bool);

/// Present with probability `presence`; a present value is valid 19 times in 20, so that whole
/// events come out valid often enough for both verdicts to be exercised.
fn pick(
    presence: f64,
    valid: &[Value],
    invalid: &[Value],
) -> impl Strategy<Value = Option<Candidate>> + use<> {
    let valid: Vec<Candidate> = valid.iter().cloned().map(|v| (v, true)).collect();
    let invalid: Vec<Candidate> = invalid.iter().cloned().map(|v| (v, false)).collect();
    proptest::option::weighted(
        presence,
        prop_oneof![
            19 => proptest::sample::select(valid),
            1 => proptest::sample::select(invalid),
        ],
    )
}

fn required(valid: &[Value]) -> impl Strategy<Value = Option<Candidate>> + use<> {
    // Absent or null means "missing", which the reference treats as invalid for required ones.
    let invalid = [
        Value::Null,
        json!(""),
        json!(1),
        json!(true),
        json!([]),
        json!({}),
    ];
    pick(0.97, valid, &invalid).prop_map(|c| Some(c.unwrap_or((Value::Null, false))))
}

fn optional(
    valid: &[Value],
    invalid: &[Value],
) -> impl Strategy<Value = Option<Candidate>> + use<> {
    let mut valid = valid.to_vec();
    valid.push(Value::Null);
    let mut invalid = invalid.to_vec();
    invalid.extend([
        json!(""),
        json!(7),
        json!(false),
        json!(["x"]),
        json!({"a": 1}),
    ]);
    pick(0.6, &valid, &invalid)
}

/// Extension attributes: (name, value, valid).
fn extension() -> impl Strategy<Value = (String, Value, bool)> {
    let name = prop_oneof![
        "x[a-z0-9]{0,6}".prop_map(|n| (n, true)),
        "x[a-z0-9]{0,3}[A-Z_.-][a-z]{0,2}".prop_map(|n| (n, false)),
    ];
    let value = prop_oneof![
        any::<String>().prop_map(|s| (json!(s), true)),
        any::<bool>().prop_map(|b| (json!(b), true)),
        any::<i32>().prop_map(|i| (json!(i), true)),
        Just((Value::Null, true)),
        (i64::from(i32::MAX) + 1..i64::MAX).prop_map(|i| (json!(i), false)),
        Just((json!(1.5), false)),
        Just((json!([1]), false)),
        Just((json!({"a": "b"}), false)),
    ];
    (name, value).prop_map(|((n, nv), (v, vv))| (n, v, nv && vv))
}

#[derive(Debug, Clone)]
struct Generated {
    map: Map<String, Value>,
    valid: bool,
}

fn attribute_map() -> impl Strategy<Value = Generated> {
    let core = (
        required(&[json!("1.0")]),
        required(&[json!("e-1"), json!("a b/c%_\\"), json!("\u{0}x")]),
        required(&[
            json!("https://example.com/x"),
            json!("urn:altinn:resource:x"),
            json!("/relative/path"),
        ]),
        required(&[json!("no.example.created"), json!("t")]),
        optional(
            &[
                json!("urn:altinn:person:identifier-no:07124912037"),
                json!("s"),
            ],
            &[],
        ),
        optional(
            &[
                json!("2018-04-05T17:31:00Z"),
                json!("2018-04-05T17:31:00.123+02:00"),
            ],
            &[
                json!("2018-04-05T18:31Z"),
                json!("yesterday"),
                json!("2018-13-05T17:31:00Z"),
            ],
        ),
        optional(
            &[
                json!("application/json"),
                json!("text/plain; charset=utf-8"),
            ],
            &[json!("json"), json!("a b/c")],
        ),
        optional(
            &[json!("https://example.com/schema")],
            &[json!("/relative"), json!("not a uri")],
        ),
    );
    let payload = (
        proptest::option::of(prop_oneof![
            Just(Value::Null),
            Just(json!({"hello": "world"})),
            Just(json!("text")),
            Just(json!(42)),
        ]),
        pick(
            0.3,
            &[json!("aGVsbG8="), json!(""), Value::Null],
            &[json!("not base64!"), json!(7), json!(["aGVsbG8="])],
        ),
        optional(&[json!("urn:altinn:resource:super-simple-service")], &[]),
        proptest::collection::vec(extension(), 0..4),
    );
    (core, payload).prop_map(
        |(
            (specversion, id, source, kind, subject, time, content_type, schema),
            (data, data_base64, resource, extensions),
        )| {
            let mut map = Map::new();
            let mut valid = true;
            for (name, candidate) in [
                ("specversion", specversion),
                ("id", id),
                ("source", source),
                ("type", kind),
                ("subject", subject),
                ("time", time),
                ("datacontenttype", content_type),
                ("dataschema", schema),
                ("data_base64", data_base64.clone()),
                ("resource", resource),
            ] {
                if let Some((value, ok)) = candidate {
                    valid &= ok;
                    map.insert(name.to_owned(), value);
                }
            }
            let has_data = data.as_ref().is_some_and(|d| !d.is_null());
            if let Some(d) = data {
                map.insert("data".into(), d);
            }
            let has_base64 = data_base64.is_some_and(|(v, _)| !v.is_null());
            if has_data && has_base64 {
                valid = false;
            }
            // A repeated name keeps the last value, so the last verdict decides.
            let mut verdicts = std::collections::HashMap::new();
            for (name, value, ok) in extensions {
                verdicts.insert(name.clone(), ok);
                map.insert(name, value);
            }
            valid &= verdicts.values().all(|ok| *ok);
            Generated { map, valid }
        },
    )
}

/// Arbitrary JSON, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("source".to_owned()),
                    Just("specversion".to_owned()),
                    Just("type".to_owned()),
                    Just("time".to_owned()),
                    Just("data_base64".to_owned()),
                    "\\PC{0,8}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn accepts_exactly_what_the_reference_accepts(generated in attribute_map()) {
        let json = Value::Object(generated.map.clone()).to_string();
        let verdict = validate_map(&generated.map, json.clone());
        prop_assert_eq!(
            verdict.is_ok(),
            generated.valid,
            "{} -> {:?}",
            json,
            verdict.as_ref().err()
        );
        // The JSON form reaches the same verdict, and a rejection names at least one field.
        let text_verdict = validate_event(&json);
        prop_assert_eq!(text_verdict.is_ok(), generated.valid);
        if let Err(e) = text_verdict {
            prop_assert!(!e.errors.is_empty());
        }
    }

    #[test]
    fn never_panics_on_arbitrary_json(value in any_json()) {
        let text = value.to_string();
        let _ = validate_event(&text);
        if let Value::Object(map) = &value {
            let _ = validate_map(map, text);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text(text in "\\PC{0,64}") {
        let _ = validate_event(&text);
    }
}

/// The generator itself: a fair share of generated events must be valid, or the property proves little.
#[test]
fn the_generator_makes_valid_and_invalid_events() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = attribute_map();
    let valid = (0..400)
        .filter(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("tree")
                .current()
                .valid
        })
        .count();
    assert!(
        (40..360).contains(&valid),
        "{valid} of 400 generated events are valid"
    );
}
