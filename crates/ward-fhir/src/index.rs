//! The normal form of FHIR string search values: case- and accent-insensitive (EN-4 blind
//! indexes hash this form, so it must never change without re-indexing).

/// Base letters for U+00C0..=U+00FF ("" = keep the character).
const LATIN1: [&str; 64] = [
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", // C0
    "d", "n", "o", "o", "o", "o", "o", "", "o", "u", "u", "u", "u", "y", "th", "ss", // D0
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", // E0
    "d", "n", "o", "o", "o", "o", "o", "", "o", "u", "u", "u", "u", "y", "th", "y", // F0
];

/// Base letters for Latin Extended-A, U+0100..=U+017F.
const LATIN_EXTENDED_A: [&str; 128] = [
    "a", "a", "a", "a", "a", "a", "c", "c", "c", "c", "c", "c", "c", "c", "d", "d", // 0100
    "d", "d", "e", "e", "e", "e", "e", "e", "e", "e", "e", "e", "g", "g", "g", "g", // 0110
    "g", "g", "g", "g", "h", "h", "h", "h", "i", "i", "i", "i", "i", "i", "i", "i", // 0120
    "i", "i", "ij", "ij", "j", "j", "k", "k", "k", "l", "l", "l", "l", "l", "l", "l", // 0130
    "l", "l", "l", "n", "n", "n", "n", "n", "n", "n", "n", "n", "o", "o", "o", "o", // 0140
    "o", "o", "oe", "oe", "r", "r", "r", "r", "r", "r", "s", "s", "s", "s", "s", "s", // 0150
    "s", "s", "t", "t", "t", "t", "t", "t", "u", "u", "u", "u", "u", "u", "u", "u", // 0160
    "u", "u", "u", "u", "w", "w", "y", "y", "y", "z", "z", "z", "z", "z", "z", "s", // 0170
];

fn fold(c: char) -> Option<&'static str> {
    let code = u32::from(c);
    let (table, first): (&[&str], u32) = match code {
        0xC0..=0xFF => (&LATIN1, 0xC0),
        0x100..=0x17F => (&LATIN_EXTENDED_A, 0x100),
        _ => return None,
    };
    let base = *table.get(usize::try_from(code.checked_sub(first)?).ok()?)?;
    (!base.is_empty()).then_some(base)
}

fn is_combining_mark(c: char) -> bool {
    matches!(u32::from(c), 0x0300..=0x036F)
}

/// Case- and accent-insensitive normal form for FHIR string search.
///
/// Accented Latin-1 and Latin Extended-A letters become their base letters (`É` → `e`,
/// `ß` → `ss`, `Ł` → `l`), combining diacritical marks are dropped (so decomposed input folds
/// the same way), everything is lowercased, and whitespace runs become one space, trimmed.
pub fn normalize_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if is_combining_mark(c) {
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        match fold(c) {
            Some(base) => out.push_str(base),
            None => out.extend(c.to_lowercase().filter(|l| !is_combining_mark(*l))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_text() {
        assert_eq!(normalize_text("  Émile  ZOLA "), "emile zola");
        assert_eq!(normalize_text("Ærøskøbing\tStraße"), "aeroskobing strasse");
        assert_eq!(normalize_text("Łódź Žižek Œuvre"), "lodz zizek oeuvre");
        // Decomposed input (e + U+0301) folds the same as precomposed.
        assert_eq!(normalize_text("E\u{301}mile"), "emile");
        assert_eq!(normalize_text("İstanbul"), "istanbul");
        assert_eq!(normalize_text("O'Brien-Smith"), "o'brien-smith");
        assert_eq!(normalize_text("Ωmega"), "ωmega");
        assert_eq!(normalize_text(" \n "), "");
        assert_eq!(normalize_text("a\u{a0}b"), "a b");
    }
}
