//! The `%` wildcard: `matches` never panics, a pattern without `%` matches exactly its own text
//! (ignoring case, character by character), and `to_like` escapes exactly `_` and `\` (unescaping gives the pattern back).
#![no_main]

use hendelse_model::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, ""));
    let p = Pattern::new(pattern);
    let _ = p.matches(subject);
    assert!(p.matches(&pattern.replace('%', "")));
    if !p.has_wildcard() {
        let fold = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<String>();
        assert_eq!(p.matches(subject), fold(pattern) == fold(subject));
    }
    let like = p.to_like();
    let mut unescaped = String::new();
    let mut chars = like.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let next = chars.next().expect("an escape is followed by a character");
            assert!(next == '_' || next == '\\', "only _ and \\ are escaped");
            unescaped.push(next);
        } else {
            assert_ne!(c, '_', "an unescaped _ would be a LIKE wildcard");
            unescaped.push(c);
        }
    }
    assert_eq!(unescaped, pattern);
});
