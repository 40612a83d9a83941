//! What roles that do not need personal data see: masked phone numbers, names and ID numbers.
//!
//! Pure functions over *opened* values (see [`crate::pii`]); call them just before a value leaves
//! for a role without access to personal data, and never store their output as a substitute for
//! the value. Each keeps just enough for a field officer to tell two households apart on a list
//! and to confirm a number with the person in front of them.
//!
//! ```
//! use cva_households::mask;
//!
//! assert_eq!(mask::msisdn("+22376123456"), "+223 •• •• 34 56");
//! assert_eq!(mask::name("Aminata Traoré"), "A•••• T••••");
//! assert_eq!(mask::id("ML1234567890"), "••••••890");
//! ```
//!
//! An empty value (nothing recorded) masks to an empty string for all three functions, so a
//! missing value is not mistaken for a hidden one. Input that does not look like the expected kind
//! of value is masked, never echoed.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

const BULLET: char = '•';
const BULLETS: &str = "•";
/// National significant numbers are taken to be this many trailing digits.
const NATIONAL_DIGITS: usize = 8;
const MAX_NAME_BULLETS: usize = 4;
const MAX_ID_BULLETS: usize = 6;
const ID_SHOWN: usize = 3;

/// Masks a phone number in E.164 form: `"+22376123456"` → `"+223 •• •• 34 56"`.
///
/// When there are more than 8 digits, the last 8 are the national number: the digits before them
/// (the country code) are kept, the first 4 national digits are masked and the last 4 shown, in
/// pairs. With 8 digits or fewer, all but the last 2 are masked (all of them with 2 or fewer).
/// Characters other than digits are dropped; the leading `+` is kept when present.
pub fn msisdn(e164: &str) -> String {
    let trimmed = e164.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    let digits: Vec<char> = trimmed.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::new();
    if trimmed.starts_with('+') {
        out.push('+');
    }
    if digits.is_empty() {
        out.push_str("••");
        return out;
    }

    let (country, national, shown) = if digits.len() > NATIONAL_DIGITS {
        let split = digits.len() - NATIONAL_DIGITS;
        (&digits[..split], &digits[split..], 4)
    } else {
        let shown = if digits.len() > 2 { 2 } else { 0 };
        (&digits[..0], &digits[..], shown)
    };
    out.extend(country);

    let masked = national.len() - shown;
    let mut cells = vec![BULLET; masked];
    cells.extend(&national[masked..]);
    // Pairs counted from the right, so the shown digits always sit in whole pairs.
    let first = cells.len() % 2;
    let groups = std::iter::once(&cells[..first])
        .filter(|g| !g.is_empty())
        .chain(cells[first..].chunks(2));
    for group in groups {
        if !out.is_empty() && !out.ends_with('+') {
            out.push(' ');
        }
        out.extend(group);
    }
    out
}

/// Masks a person's name: `"Aminata Traoré"` → `"A•••• T••••"`.
///
/// Each word keeps its first character (a character with its accents, not a byte) and the rest
/// becomes at most four `•`, so the length of a long name is not leaked. Words are re-joined with
/// single spaces.
pub fn name(full: &str) -> String {
    let composed: String = full.nfc().collect();
    composed
        .split_whitespace()
        .map(|word| {
            let mut chars = word.chars().peekable();
            let mut out = String::new();
            if let Some(first) = chars.next() {
                out.push(first);
            }
            // Combining marks that survive composition belong to the first letter.
            while let Some(mark) = chars.next_if(|&c| is_combining_mark(c)) {
                out.push(mark);
            }
            let rest = chars.filter(|&c| !is_combining_mark(c)).count();
            out.push_str(&BULLETS.repeat(rest.min(MAX_NAME_BULLETS)));
            out
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Masks an ID number: all but the last 3 characters become `•` (at most six):
/// `"ML1234567890"` → `"••••••890"`. Values of 3 characters or fewer become `"•••"`.
/// Surrounding whitespace is ignored.
pub fn id(value: &str) -> String {
    let chars: Vec<char> = value.trim().chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    if chars.len() <= ID_SHOWN {
        return "•••".to_owned();
    }
    let split = chars.len() - ID_SHOWN;
    let mut out = BULLETS.repeat(split.min(MAX_ID_BULLETS));
    out.extend(&chars[split..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msisdn_keeps_country_code_and_last_four() {
        assert_eq!(msisdn("+22376123456"), "+223 •• •• 34 56");
        assert_eq!(msisdn("+22670123456"), "+226 •• •• 34 56");
        assert_eq!(msisdn("+2250701234567"), "+22507 •• •• 45 67");
        assert_eq!(msisdn("+33612345678"), "+336 •• •• 56 78");
        assert_eq!(msisdn("+123456789"), "+1 •• •• 67 89");
        assert_eq!(msisdn(" +223 76 12 34 56 "), "+223 •• •• 34 56");
    }

    #[test]
    fn msisdn_short_numbers_show_last_two_at_most() {
        assert_eq!(msisdn("+12345678"), "+•• •• •• 78");
        assert_eq!(msisdn("+1234567"), "+• •• •• 67");
        assert_eq!(msisdn("12345"), "• •• 45");
        assert_eq!(msisdn("123"), "• 23");
        assert_eq!(msisdn("12"), "••");
        assert_eq!(msisdn("+7"), "+•");
    }

    #[test]
    fn msisdn_empty_and_garbage() {
        assert_eq!(msisdn(""), "");
        assert_eq!(msisdn("   "), "");
        assert_eq!(msisdn("+"), "+••");
        assert_eq!(msisdn("Aminata"), "••");
        assert!(!msisdn("not a number").contains("not"));
    }

    #[test]
    fn name_keeps_initials() {
        assert_eq!(name("Aminata Traoré"), "A•••• T••••");
        assert_eq!(name("Bâ"), "B•");
        assert_eq!(name("A"), "A");
        assert_eq!(name("  Oumar   Bâ  "), "O•••• B•");
        assert_eq!(name("Jean-Pierre Ndiaye"), "J•••• N••••");
        // Long names leak no more than four bullets' worth of length.
        assert_eq!(name("Abdoulkadiraminatoulaye"), "A••••");
    }

    #[test]
    fn name_accented_and_multibyte_initials() {
        assert_eq!(name("Élodie Ébène"), "É•••• É••••");
        assert_eq!(name("Ñusta"), "Ñ••••");
        // Decomposed É (E + combining acute) keeps its accent and counts as one letter.
        assert_eq!(name("E\u{301}lise"), "É••••");
        assert_eq!(name("Ba\u{302}"), "B•");
        assert_eq!(name("محمد الأمين"), "م••• ا••••");
        assert_eq!(name("李小龍"), "李••");
        assert_eq!(name("Ṭāhir"), "Ṭ••••");
        assert_eq!(name("😀x"), "😀•");
    }

    #[test]
    fn name_empty() {
        assert_eq!(name(""), "");
        assert_eq!(name(" \t\n "), "");
    }

    #[test]
    fn id_shows_last_three() {
        assert_eq!(id("ML1234567890"), "••••••890");
        assert_eq!(id("1234567"), "••••567");
        assert_eq!(id("1234"), "•234");
        assert_eq!(id("123"), "•••");
        assert_eq!(id("12"), "•••");
        assert_eq!(id("7"), "•••");
        assert_eq!(id(" ML1234567890 "), "••••••890");
        assert_eq!(id("ÉÈ12ü"), "••12ü");
        assert_eq!(id(""), "");
        assert_eq!(id("   "), "");
    }
}
