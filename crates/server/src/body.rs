//! JSON request bodies read into their types, with errors that name the field they are about
//! (`rateLimit: invalid type: string "x", expected a whole number`) as problem details with `errors`.

use hendelse_model::ValidationError;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// `body` as a `T`; `what` says what the body must be (`a subscription`).
pub fn json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut reader).map_err(|e| refused(e, what))?;
    reader
        .end()
        .map_err(|e| ApiError::BadRequest(format!("the body must be {what} as JSON: {e}")))?;
    Ok(value)
}

/// An already parsed JSON value as a `T`.
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| refused(e, what))
}

fn refused(e: serde_path_to_error::Error<serde_json::Error>, what: &str) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    // A body that is no JSON at all, or not an object where one is wanted, has no field to name.
    if path == "." || inner.is_syntax() || inner.is_eof() {
        return ApiError::BadRequest(format!("the body must be {what} as JSON: {inner}"));
    }
    ApiError::InvalidRequest(ValidationError::single(path, inner.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        rate_limit: Option<u32>,
    }

    #[test]
    fn errors_name_the_field() {
        let Err(ApiError::InvalidRequest(v)) = json::<Sample>(br#"{"rateLimit": "x"}"#, "a sample")
        else {
            panic!("a field error");
        };
        assert_eq!(v.errors[0].field, "rateLimit");
        assert!(matches!(
            json::<Sample>(b"{", "a sample"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            json::<Sample>(b"{} x", "a sample"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(json::<Sample>(br#"{"rateLimit": 5}"#, "a sample").is_ok());
    }
}
