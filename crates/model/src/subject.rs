//! Party subjects. App events name a party as `/party/{partyId}`; generic events use URNs, where
//! Dialogporten writes `identifier-no::` and Altinn `identifier-no:` for the same party.

pub const ORGANIZATION_URN: &str = "urn:altinn:organization:identifier-no:";
pub const PERSON_URN: &str = "urn:altinn:person:identifier-no:";

/// The key a subject is indexed and authorized under: the URN forms with `::` folded to `:`.
pub fn party_key(subject: &str) -> String {
    for prefix in [ORGANIZATION_URN, PERSON_URN] {
        if let Some(rest) = subject.strip_prefix(prefix) {
            return format!("{prefix}{}", rest.strip_prefix(':').unwrap_or(rest));
        }
    }
    subject.to_owned()
}

pub fn app_party_subject(party_id: i64) -> String {
    format!("/party/{party_id}")
}

pub fn organization_urn(orgno: &str) -> String {
    format!("{ORGANIZATION_URN}{orgno}")
}

pub fn person_urn(pid: &str) -> String {
    format!("{PERSON_URN}{pid}")
}

pub fn is_digits(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_dialogporten_double_colon() {
        assert_eq!(
            party_key("urn:altinn:organization:identifier-no::991825827"),
            "urn:altinn:organization:identifier-no:991825827"
        );
        assert_eq!(
            party_key("urn:altinn:person:identifier-no:07124912037"),
            person_urn("07124912037")
        );
        assert_eq!(party_key("/party/50002598"), "/party/50002598");
    }
}
