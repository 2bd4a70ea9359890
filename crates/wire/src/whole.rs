//! Whole numbers as JSON Schema counts them: `780` and `780.0` alike. Generated clients and
//! schema-driven tools may send either for an `integer`; both mean the same number.

use serde::de::{Deserialize, Deserializer, Error, Unexpected};
use serde_json::{Number, Value};

/// The number as an `i64` when it is whole (and within the range a float holds exactly).
pub fn as_whole(n: &Number) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
            .map(|f| f as i64)
    })
}

fn convert<'de, D, T>(n: Number) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    as_whole(&n)
        .and_then(|i| T::try_from(i).ok())
        .ok_or_else(|| {
            D::Error::invalid_value(
                Unexpected::Other(&n.to_string()),
                &"a whole number within range",
            )
        })
}

/// `#[serde(default, deserialize_with = "whole::option")]` for an `Option` of an integer type.
pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let expected = &"a whole number";
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => convert::<D, T>(n).map(Some),
        Some(Value::String(s)) => Err(D::Error::invalid_type(Unexpected::Str(&s), expected)),
        Some(Value::Bool(b)) => Err(D::Error::invalid_type(Unexpected::Bool(b), expected)),
        Some(Value::Array(_)) => Err(D::Error::invalid_type(Unexpected::Seq, expected)),
        Some(Value::Object(_)) => Err(D::Error::invalid_type(Unexpected::Map, expected)),
    }
}

/// As [`option`], for a field whose `null` means something (`Some(None)`) beside its absence.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    option(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::option")]
        n: Option<u32>,
    }

    fn n(json: &str) -> Result<Option<u32>, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_are_whole_numbers() {
        assert_eq!(n(r#"{"n": 780}"#), Ok(Some(780)));
        assert_eq!(n(r#"{"n": 780.0}"#), Ok(Some(780)));
        assert_eq!(n(r#"{"n": null}"#), Ok(None));
        assert_eq!(n("{}"), Ok(None));
        assert!(n(r#"{"n": 1.5}"#).unwrap_err().contains("whole number"));
        assert!(n(r#"{"n": -1}"#).is_err(), "out of range for u32");
        assert!(
            n(r#"{"n": "7"}"#)
                .unwrap_err()
                .contains("expected a whole number")
        );
    }
}
