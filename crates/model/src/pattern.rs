//! The `%` wildcard of Altinn's `source`/`type` filters: `%` matches any run of characters, every
//! other character (including `_` and `\`) matches itself, and matching ignores case.

/// A filter value with `%` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn has_wildcard(&self) -> bool {
        self.0.contains('%')
    }

    /// The pattern for SQL `LIKE … ESCAPE '\'`: `_` and `\` escaped so that they match literally.
    pub fn to_like(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 4);
        for c in self.0.chars() {
            if c == '_' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// Matches `text` in memory, with the same semantics as the SQL form.
    pub fn matches(&self, text: &str) -> bool {
        // Character by character, as ILIKE folds: `str::to_lowercase` depends on the context
        // (a final `Σ` becomes `ς`), so a pattern cut at `%` would fold differently from the text.
        let pattern: Vec<char> = self.0.chars().flat_map(char::to_lowercase).collect();
        let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
        // Classic greedy wildcard matching with backtracking to the last `%`.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() && pattern[p] == '%' {
                star = Some((p, t));
                p += 1;
            } else if p < pattern.len() && pattern[p] == text[t] {
                p += 1;
                t += 1;
            } else if let Some((sp, st)) = star {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|&c| c == '%')
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn escapes_like_metacharacters() {
        assert_eq!(Pattern::new(r"a_b\c%").to_like(), r"a\_b\\c%");
    }

    #[test]
    fn matches_like_sql_does() {
        let p = Pattern::new("https://ttd.apps.%/ttd/app_1/%");
        assert!(p.matches("https://TTD.apps.altinn.no/ttd/app_1/instances/1"));
        assert!(!p.matches("https://ttd.apps.altinn.no/ttd/appX1/instances/1"));
        assert!(Pattern::new("%").matches(""));
        assert!(Pattern::new("a%b%c").matches("axxbyyc"));
        assert!(!Pattern::new("a%b%c").matches("axxbyy"));
        assert!(Pattern::new("exact").matches("EXACT"));
    }

    /// Found by `fuzz/` (target `pattern`): a final sigma folded to `ς` in the text but `σ` in
    /// the pattern, where `%` stood beside it.
    #[test]
    fn case_folding_does_not_depend_on_the_neighbours() {
        assert!(Pattern::new("%e%Σ`%").matches("eΣ`"));
        assert!(Pattern::new("%σ").matches("ΑΣ"));
    }
}
