//! Duplicate detection between households (pure, no database).
//!
//! Build a [`DedupIndex`] from the households already enrolled in the programmes running the
//! same cycle, then feed it each new household: [`DedupIndex::add`] returns the [`Flag`]s between
//! the new household and everything already indexed, and indexes it.
//!
//! ```
//! use cva_households::dedup::{fold_name, Candidate, DedupIndex, FlagKind, Summary};
//!
//! let mut index = DedupIndex::default(); // Jaro-Winkler threshold 0.920
//! let c = |key, name: &str, nid: Option<&str>| Candidate {
//!     key,
//!     programme: "MPCA-2024".into(),
//!     commune: "ML050601".into(),
//!     size: 6,
//!     folded_name: fold_name(name),
//!     national_id_hash: nid.map(str::to_owned),
//!     biometric_hash: None,
//!     msisdn_hash: None,
//!     birth_year: None,
//!     sex: None,
//! };
//! assert!(index.add(c(1, "Aïssata TRAORÉ", Some("h1"))).is_empty());
//! let flags = index.add(c(2, "Traore Aissata", None));
//! assert_eq!(flags.len(), 1);
//! assert_eq!(flags[0].kind, FlagKind::SimilarName { score_permille: 1000 });
//! assert_eq!(Summary::from_flags(&flags).households_flagged, 2);
//! ```
//!
//! What is compared:
//! - **national ID** and **biometric reference**: exact match, on any two households, whatever
//!   their commune or programme;
//! - **MSISDN**: exact match (shared phones are common in families and among neighbours, but the
//!   pair still goes to adjudication);
//! - **head's name**: Jaro-Winkler similarity of the accent- and case-folded names ([`fold_name`]),
//!   also with their tokens sorted (so "Traoré Aminata" matches "Aminata Traoré"), only between
//!   households of the same commune p-code whose sizes differ by at most one.
//!
//! Exact matches work on opaque strings: the store passes keyed hashes (HMAC of the normalised
//! value), never plaintext. Only the folded name is plaintext, computed in memory by the store.
//! Which households go into one index (one programme, or all programmes of a cycle) is the
//! caller's choice; [`Candidate::programme`] is carried along for reporting only.
//!
//! Every flag, whatever its kind, blocks the household's entitlements until a person
//! adjudicates it ([`FlagKind::blocks_payment`]).

use std::collections::{HashMap, HashSet};

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Default similarity threshold for head names: Jaro-Winkler 0.920.
pub const DEFAULT_THRESHOLD_PERMILLE: u16 = 920;

/// Fold a name for fuzzy comparison: Unicode NFD, combining marks dropped, lower-cased, every
/// non-letter turned into a space, runs of spaces collapsed, trimmed. Token order is kept.
///
/// `"  Aïssata  TRAORÉ-Maïga "` → `"aissata traore maiga"`.
pub fn fold_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_space = false;
    for c in name.nfd().filter(|c| !is_combining_mark(*c)) {
        if c.is_alphabetic() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(c.to_lowercase());
        } else {
            pending_space = true;
        }
    }
    out
}

/// The folded name with its tokens sorted, or `None` when that is the name itself.
fn sorted_tokens(folded: &str) -> Option<String> {
    let mut tokens: Vec<&str> = folded.split(' ').collect();
    if tokens.windows(2).all(|w| w[0] <= w[1]) {
        return None;
    }
    tokens.sort_unstable();
    Some(tokens.join(" "))
}

/// One household as seen by the deduplication: its id, where it lives, its size, its folded
/// head name and the keyed hashes of its identifiers (`None` or empty when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The household's id in the store.
    pub key: i64,
    /// The programme the household is enrolled in (reporting only).
    pub programme: String,
    /// Commune p-code.
    pub commune: String,
    pub size: u16,
    /// [`fold_name`] of the head's name.
    pub folded_name: String,
    pub national_id_hash: Option<String>,
    pub biometric_hash: Option<String>,
    pub msisdn_hash: Option<String>,
    /// Head's year of birth and sex: when both households have them, a similar name only counts
    /// with the same sex and years at most [`BIRTH_YEAR_SLACK`] apart (common names otherwise
    /// flag half a commune).
    pub birth_year: Option<i32>,
    pub sex: Option<String>,
}

/// Largest difference in the head's year of birth for a similar-name flag.
pub const BIRTH_YEAR_SLACK: i32 = 2;

/// Why two households may be the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagKind {
    SameNationalId,
    SameBiometricRef,
    SharedPhone,
    /// Similar head names in the same commune with sizes within ±1; the Jaro-Winkler score in
    /// thousandths (rounded).
    SimilarName {
        score_permille: u16,
    },
}

impl FlagKind {
    /// `same_national_id`, `same_biometric_ref`, `shared_phone` or `similar_name`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FlagKind::SameNationalId => "same_national_id",
            FlagKind::SameBiometricRef => "same_biometric_ref",
            FlagKind::SharedPhone => "shared_phone",
            FlagKind::SimilarName { .. } => "similar_name",
        }
    }

    /// Whether a flag of this kind blocks the household's entitlements until it is adjudicated.
    /// It does for every kind: even a shared phone (common, and usually legitimate) must be
    /// looked at by a person before money goes to that wallet twice. Exact ID and biometric
    /// matches are the strong signals; the others are weaker but still block.
    pub fn blocks_payment(&self) -> bool {
        match self {
            FlagKind::SameNationalId
            | FlagKind::SameBiometricRef
            | FlagKind::SharedPhone
            | FlagKind::SimilarName { .. } => true,
        }
    }

    fn order(&self) -> u8 {
        match self {
            FlagKind::SameNationalId => 0,
            FlagKind::SameBiometricRef => 1,
            FlagKind::SharedPhone => 2,
            FlagKind::SimilarName { .. } => 3,
        }
    }
}

/// A possible duplicate: `a` was already in the index, `b` is the household just added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flag {
    /// The existing (earlier) household.
    pub a: i64,
    /// The new household.
    pub b: i64,
    pub kind: FlagKind,
}

/// Number of histogram buckets of a folded name: `a`..`z`, space, and 5 buckets shared by every
/// other letter.
const BUCKETS: usize = 32;

fn head(s: &str) -> [char; 4] {
    let mut head = ['\0'; 4];
    for (h, c) in head.iter_mut().zip(s.chars()) {
        *h = c;
    }
    head
}

/// Length of the common prefix (at most 4) of two non-empty names' heads.
fn common_prefix(a: &[char; 4], b: &[char; 4]) -> usize {
    a.iter()
        .zip(b)
        .take_while(|(x, y)| x == y && **x != '\0')
        .count()
}

/// A folded name ready for comparison.
#[derive(Debug)]
struct NameEntry {
    key: i64,
    birth_year: Option<i32>,
    /// Interned by the index (see `DedupIndex::sexes`): compared as integers in the hot loop.
    sex: Option<u32>,
    folded: Box<str>,
    /// Tokens sorted, when different from `folded`.
    sorted: Option<Box<str>>,
    /// Length in chars.
    len: u32,
    /// Character histogram (saturating); `None` if a count saturated, then no prefilter.
    hist: Option<[u8; BUCKETS]>,
    /// The first 4 chars of `folded` and of the sorted tokens (`'\0'` past the end).
    head: [char; 4],
    sorted_head: [char; 4],
}

impl NameEntry {
    fn new(key: i64, folded: &str) -> NameEntry {
        let mut hist = [0u8; BUCKETS];
        let mut saturated = false;
        let mut len = 0u32;
        for c in folded.chars() {
            len = len.saturating_add(1);
            let i = match c {
                'a'..='z' => c as usize - 'a' as usize,
                ' ' => 26,
                _ => 27 + (c as usize % 5),
            };
            if hist[i] == u8::MAX {
                saturated = true;
            } else {
                hist[i] += 1;
            }
        }
        let sorted = sorted_tokens(folded).map(String::into_boxed_str);
        NameEntry {
            birth_year: None,
            sex: None,
            key,
            head: head(folded),
            sorted_head: head(sorted.as_deref().unwrap_or(folded)),
            folded: folded.into(),
            sorted,
            len,
            hist: (!saturated).then_some(hist),
        }
    }

    fn sorted(&self) -> &str {
        self.sorted.as_deref().unwrap_or(&self.folded)
    }

    /// An upper bound of the Jaro-Winkler similarity of the two names, in either token order.
    /// Jaro matches pair equal characters, so their number `m` is at most the size of the
    /// multiset intersection of the characters (the same for both token orders); then
    /// `jaro ≤ (m/|a| + m/|b| + 1) / 3`. Winkler's bonus, `0.1 p (1 - jaro)`, grows with the
    /// common prefix `p` (at most 4) of the pair compared, so the larger `p` of the two token
    /// orders bounds it.
    /// Computes the prefix only when the bound without it reaches `floor`.
    fn upper_bound(&self, other: &NameEntry, floor: f64) -> f64 {
        let (Some(h1), Some(h2)) = (&self.hist, &other.hist) else {
            return 1.0;
        };
        let common: u32 = h1
            .iter()
            .zip(h2.iter())
            .map(|(x, y)| u32::from(*x.min(y)))
            .sum();
        if common == 0 {
            return 0.0;
        }
        let m = f64::from(common);
        let jaro = ((m / f64::from(self.len) + m / f64::from(other.len) + 1.0) / 3.0).min(1.0);
        let bound = jaro + 0.4 * (1.0 - jaro);
        if bound < floor {
            return bound;
        }
        let p = common_prefix(&self.head, &other.head)
            .max(common_prefix(&self.sorted_head, &other.sorted_head));
        jaro + 0.1 * p as f64 * (1.0 - jaro)
    }

    /// Similarity in thousandths: the better of the names as written and with tokens sorted.
    fn score_permille(&self, other: &NameEntry) -> u16 {
        if self.folded == other.folded || self.sorted() == other.sorted() {
            return 1000;
        }
        let mut score = jaro_winkler(&self.folded, &other.folded);
        if self.sorted.is_some() || other.sorted.is_some() {
            score = score.max(jaro_winkler(self.sorted(), other.sorted()));
        }
        // The score is in [0, 1]; the cast cannot overflow.
        (score * 1000.0).round().clamp(0.0, 1000.0) as u16
    }
}

/// Longest ASCII name compared without allocating.
const FAST_MAX: usize = 64;

/// [`strsim::jaro_winkler`], bit for bit, with a fast path for ASCII names (all folded Malian
/// names): byte indexing and flags on the stack instead of a heap allocation per call.
fn jaro_winkler(a: &str, b: &str) -> f64 {
    if !a.is_ascii() || !b.is_ascii() || a.len() > FAST_MAX || b.len() > FAST_MAX {
        return strsim::jaro_winkler(a, b);
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (a_len, b_len) = (a.len(), b.len());
    if a_len == 0 && b_len == 0 {
        return 1.0;
    } else if a_len == 0 || b_len == 0 {
        return 0.0;
    }
    let search_range = (a_len.max(b_len) / 2).saturating_sub(1);
    let mut a_flags = [false; FAST_MAX];
    let mut b_flags = [false; FAST_MAX];
    let mut matches = 0usize;
    for (i, &x) in a.iter().enumerate() {
        let lo = i.saturating_sub(search_range);
        let hi = b_len.min(i + search_range + 1);
        for j in lo..hi {
            if x == b[j] && !b_flags[j] {
                a_flags[i] = true;
                b_flags[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut j = 0;
    for (i, &x) in a.iter().enumerate() {
        if a_flags[i] {
            while !b_flags[j] {
                j += 1;
            }
            if x != b[j] {
                transpositions += 1;
            }
            j += 1;
        }
    }
    transpositions /= 2;
    let m = matches as f64;
    let sim =
        ((m / a_len as f64) + (m / b_len as f64) + ((matches - transpositions) as f64 / m)) / 3.0;
    if sim > 0.7 {
        let prefix = a.iter().take(4).zip(b).take_while(|(x, y)| x == y).count();
        sim + 0.1 * prefix as f64 * (1.0 - sim)
    } else {
        sim
    }
}

/// The households seen so far, indexed for duplicate detection.
#[derive(Debug)]
pub struct DedupIndex {
    threshold_permille: u16,
    /// Lowest score that can round to the threshold, with a little slack for the prefilter.
    prefilter_floor: f64,
    national_ids: HashMap<String, Vec<i64>>,
    biometrics: HashMap<String, Vec<i64>>,
    msisdns: HashMap<String, Vec<i64>>,
    /// commune → size → names.
    names: HashMap<String, HashMap<u16, Vec<NameEntry>>>,
    /// Each distinct sex value seen, numbered.
    sexes: HashMap<String, u32>,
    len: usize,
}

impl Default for DedupIndex {
    fn default() -> Self {
        DedupIndex::new(DEFAULT_THRESHOLD_PERMILLE)
    }
}

impl DedupIndex {
    /// An empty index; two names are similar when their score, in thousandths, is at least
    /// `threshold_permille` (default [`DEFAULT_THRESHOLD_PERMILLE`]).
    pub fn new(threshold_permille: u16) -> Self {
        DedupIndex {
            threshold_permille,
            prefilter_floor: (f64::from(threshold_permille) - 0.5) / 1000.0 - 1e-9,
            national_ids: HashMap::new(),
            biometrics: HashMap::new(),
            msisdns: HashMap::new(),
            names: HashMap::new(),
            sexes: HashMap::new(),
            len: 0,
        }
    }

    /// The similarity threshold in thousandths.
    pub fn threshold_permille(&self) -> u16 {
        self.threshold_permille
    }

    /// Flags between `c` and every household already in the index (at most one flag per pair
    /// and kind; ordered by kind then by the existing household's id), then indexes `c`.
    pub fn add(&mut self, c: Candidate) -> Vec<Flag> {
        let mut flags = Vec::new();
        let key = c.key;
        for (map, hash, kind) in [
            (
                &mut self.national_ids,
                c.national_id_hash,
                FlagKind::SameNationalId,
            ),
            (
                &mut self.biometrics,
                c.biometric_hash,
                FlagKind::SameBiometricRef,
            ),
            (&mut self.msisdns, c.msisdn_hash, FlagKind::SharedPhone),
        ] {
            let Some(hash) = hash.filter(|h| !h.is_empty()) else {
                continue;
            };
            let keys = map.entry(hash).or_default();
            let start = flags.len();
            flags.extend(
                keys.iter()
                    .filter(|a| **a != key)
                    .map(|&a| Flag { a, b: key, kind }),
            );
            flags[start..].sort_unstable_by_key(|f| f.a);
            flags.dedup();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }

        if !c.folded_name.is_empty() {
            let mut entry = NameEntry::new(key, &c.folded_name);
            entry.birth_year = c.birth_year;
            entry.sex = c.sex.map(|sex| {
                let next = self.sexes.len() as u32;
                *self.sexes.entry(sex).or_insert(next)
            });
            let by_size = self.names.entry(c.commune).or_default();
            let start = flags.len();
            let mut seen = HashSet::new();
            for size in [c.size.checked_sub(1), Some(c.size), c.size.checked_add(1)]
                .into_iter()
                .flatten()
            {
                let Some(bucket) = by_size.get(&size) else {
                    continue;
                };
                for other in bucket {
                    // Cheapest tests first: this loop runs once per pair in the buckets.
                    let other_person = matches!((entry.birth_year, other.birth_year),
                            (Some(x), Some(y)) if (x - y).abs() > BIRTH_YEAR_SLACK)
                        || matches!((entry.sex, other.sex), (Some(x), Some(y)) if x != y);
                    if other_person
                        || other.key == key
                        || entry.upper_bound(other, self.prefilter_floor) < self.prefilter_floor
                    {
                        continue;
                    }
                    let score_permille = entry.score_permille(other);
                    if score_permille >= self.threshold_permille && seen.insert(other.key) {
                        flags.push(Flag {
                            a: other.key,
                            b: key,
                            kind: FlagKind::SimilarName { score_permille },
                        });
                    }
                }
            }
            flags[start..].sort_unstable_by_key(|f| f.a);
            by_size.entry(c.size).or_default().push(entry);
        }

        debug_assert!(flags
            .windows(2)
            .all(|w| w[0].kind.order() <= w[1].kind.order()));
        self.len += 1;
        flags
    }

    /// Number of households added.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Counts of flags by kind, and of distinct households involved in at least one flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub same_national_id: usize,
    pub same_biometric_ref: usize,
    pub shared_phone: usize,
    pub similar_name: usize,
    pub households_flagged: usize,
}

impl Summary {
    pub fn from_flags(flags: &[Flag]) -> Summary {
        let mut s = Summary::default();
        let mut households = HashSet::new();
        for f in flags {
            match f.kind {
                FlagKind::SameNationalId => s.same_national_id += 1,
                FlagKind::SameBiometricRef => s.same_biometric_ref += 1,
                FlagKind::SharedPhone => s.shared_phone += 1,
                FlagKind::SimilarName { .. } => s.similar_name += 1,
            }
            households.insert(f.a);
            households.insert(f.b);
        }
        s.households_flagged = households.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(key: i64, commune: &str, size: u16, name: &str) -> Candidate {
        Candidate {
            key,
            programme: "P1".into(),
            commune: commune.into(),
            size,
            folded_name: fold_name(name),
            national_id_hash: None,
            biometric_hash: None,
            msisdn_hash: None,
            birth_year: None,
            sex: None,
        }
    }

    fn kinds(flags: &[Flag]) -> Vec<&'static str> {
        flags.iter().map(|f| f.kind.as_str()).collect()
    }

    #[test]
    fn folding() {
        assert_eq!(fold_name("Aïssata TRAORÉ"), "aissata traore");
        assert_eq!(
            fold_name("  Aïssata  TRAORÉ-Maïga "),
            "aissata traore maiga"
        );
        assert_eq!(fold_name("N'Diaye, Keïta 2"), "n diaye keita");
        assert_eq!(fold_name("Sékou Dembélé"), "sekou dembele");
        assert_eq!(fold_name(" - 12 "), "");
        assert_eq!(
            sorted_tokens("traore aminata").as_deref(),
            Some("aminata traore")
        );
        assert_eq!(sorted_tokens("aminata traore"), None);
    }

    #[test]
    fn accent_and_case_folded_names_are_similar() {
        let mut idx = DedupIndex::default();
        assert!(idx.add(cand(1, "ML050601", 5, "Aïssata TRAORÉ")).is_empty());
        let flags = idx.add(cand(2, "ML050601", 5, "Aissata Traore"));
        assert_eq!(
            flags,
            vec![Flag {
                a: 1,
                b: 2,
                kind: FlagKind::SimilarName {
                    score_permille: 1000
                }
            }]
        );
    }

    #[test]
    fn token_order_and_typos() {
        let mut idx = DedupIndex::default();
        idx.add(cand(1, "ML050601", 7, "Aminata Traoré"));
        let flags = idx.add(cand(2, "ML050601", 8, "TRAORE Aminata"));
        assert_eq!(kinds(&flags), ["similar_name"]);
        // A transposition in the family name, with the tokens swapped as well.
        let flags = idx.add(cand(3, "ML050601", 7, "Traroé Aminata"));
        assert_eq!(flags.iter().map(|f| f.a).collect::<Vec<_>>(), [1, 2]);
        let FlagKind::SimilarName { score_permille } = flags[0].kind else {
            panic!("{flags:?}")
        };
        assert!((920..1000).contains(&score_permille), "{score_permille}");
        // Unrelated name: no flag.
        assert!(idx
            .add(cand(4, "ML050601", 7, "Moussa Coulibaly"))
            .is_empty());
    }

    #[test]
    fn different_commune_or_size_gap_gives_no_fuzzy_flag() {
        let mut idx = DedupIndex::default();
        idx.add(cand(1, "ML050601", 6, "Fatoumata Diarra"));
        assert!(idx
            .add(cand(2, "ML050602", 6, "Fatoumata Diarra"))
            .is_empty());
        assert!(idx
            .add(cand(3, "ML050601", 8, "Fatoumata Diarra"))
            .is_empty());
        assert!(idx
            .add(cand(4, "ML050601", 4, "Fatoumata Diarra"))
            .is_empty());
        let flags = idx.add(cand(5, "ML050601", 7, "Fatoumata Diarra"));
        assert_eq!(flags.iter().map(|f| f.a).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(idx.len(), 5);
    }

    #[test]
    fn exact_ids_match_across_communes_and_programmes() {
        let mut idx = DedupIndex::default();
        let mut a = cand(1, "ML050601", 6, "Moussa Keïta");
        a.national_id_hash = Some("nid-h".into());
        a.biometric_hash = Some("bio-h".into());
        assert!(idx.add(a).is_empty());
        let mut b = cand(2, "ML070301", 2, "Boubacar Touré");
        b.programme = "P2".into();
        b.national_id_hash = Some("nid-h".into());
        assert_eq!(
            idx.add(b),
            vec![Flag {
                a: 1,
                b: 2,
                kind: FlagKind::SameNationalId
            }]
        );
        let mut c = cand(3, "ML100101", 12, "Seydou Maïga");
        c.biometric_hash = Some("bio-h".into());
        c.national_id_hash = Some("nid-h".into());
        assert_eq!(
            kinds(&idx.add(c)),
            ["same_national_id", "same_national_id", "same_biometric_ref"]
        );
        // Empty hashes are absent values, not a shared value.
        let mut d = cand(4, "ML100101", 1, "Hawa Dicko");
        d.national_id_hash = Some(String::new());
        let mut e = cand(5, "ML100102", 1, "Oumar Cissé");
        e.national_id_hash = Some(String::new());
        idx.add(d);
        assert!(idx.add(e).is_empty());
    }

    #[test]
    fn shared_phone_and_one_flag_per_kind() {
        let mut idx = DedupIndex::default();
        let mut a = cand(1, "ML060501", 4, "Kadiatou Sidibé");
        a.msisdn_hash = Some("m".into());
        a.national_id_hash = Some("n".into());
        idx.add(a.clone());
        let mut b = cand(2, "ML060501", 9, "Ibrahim Ag Mohamed");
        b.msisdn_hash = Some("m".into());
        assert_eq!(
            idx.add(b),
            vec![Flag {
                a: 1,
                b: 2,
                kind: FlagKind::SharedPhone
            }]
        );
        // The same household fed twice is not its own duplicate.
        assert_eq!(kinds(&idx.add(a)), ["shared_phone"]);
        let all = [
            Flag {
                a: 1,
                b: 2,
                kind: FlagKind::SharedPhone,
            },
            Flag {
                a: 1,
                b: 3,
                kind: FlagKind::SameNationalId,
            },
            Flag {
                a: 4,
                b: 5,
                kind: FlagKind::SimilarName {
                    score_permille: 950,
                },
            },
        ];
        assert_eq!(
            Summary::from_flags(&all),
            Summary {
                same_national_id: 1,
                same_biometric_ref: 0,
                shared_phone: 1,
                similar_name: 1,
                households_flagged: 5
            }
        );
        assert!(all.iter().all(|f| f.kind.blocks_payment()));
    }

    #[test]
    fn fast_jaro_winkler_equals_strsim() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let alphabet = b"aeioumnkt ";
        let mut pairs: Vec<(String, String)> = vec![
            ("".into(), "".into()),
            ("".into(), "a".into()),
            ("a".into(), "a".into()),
            ("martha".into(), "marhta".into()),
            ("dwayne".into(), "duane".into()),
            ("aminata traore".into(), "traore aminata".into()),
            ("aïssata".into(), "aissata".into()),
            ("x".repeat(70), "x".repeat(69)),
        ];
        for _ in 0..20_000 {
            let mut word = || {
                let n = rng.gen_range(0..20);
                (0..n)
                    .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
                    .collect::<String>()
            };
            let (a, b) = (word(), word());
            pairs.push((a, b));
        }
        for (a, b) in pairs {
            let (fast, slow) = (jaro_winkler(&a, &b), strsim::jaro_winkler(&a, &b));
            assert_eq!(fast.to_bits(), slow.to_bits(), "{a:?} {b:?}: {fast} {slow}");
        }
    }

    #[test]
    fn threshold_edge() {
        let (x, y) = ("mariam kone", "mariama konate");
        let permille = (strsim::jaro_winkler(x, y) * 1000.0).round() as u16;
        assert!((800..1000).contains(&permille), "{permille}");
        for (threshold, flagged) in [(permille, true), (permille + 1, false)] {
            let mut idx = DedupIndex::new(threshold);
            idx.add(cand(1, "ML0401", 3, x));
            let flags = idx.add(cand(2, "ML0401", 3, y));
            assert_eq!(!flags.is_empty(), flagged, "threshold {threshold}");
            if flagged {
                assert_eq!(
                    flags[0].kind,
                    FlagKind::SimilarName {
                        score_permille: permille
                    }
                );
            }
        }
    }

    #[test]
    fn prefilter_never_rejects_a_match() {
        let names = [
            "aminata traore",
            "traore aminata",
            "aminata traroe",
            "amintaa traore",
            "fatoumata diarra",
            "fatoumatta diara",
            "oumou sangare",
            "umu sangare",
            "ag mohamed ibrahim",
            "ibrahim ag mohamed",
            "mariam kone",
            "mariama konate",
            "hawa dicko",
            "awa dicko",
            "seydou maiga",
            "seydu maiga",
            "x",
            "xy",
            "aa",
            "ab",
        ];
        for a in names {
            for b in names {
                let (ea, eb) = (NameEntry::new(1, a), NameEntry::new(2, b));
                let bound = ea.upper_bound(&eb, 0.0);
                let score = f64::from(ea.score_permille(&eb)) / 1000.0;
                assert!(
                    bound + 0.0006 >= score,
                    "{a} / {b}: bound {bound} < {score}"
                );
            }
        }
    }

    /// `cargo test -p cva-households --release --lib dedup::tests::perf -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn perf_100k() {
        use rand::{Rng, SeedableRng};
        const SYL: &[&str] = &[
            "a", "ba", "bou", "ca", "di", "dia", "dou", "fa", "fou", "ha", "ka", "ke", "ki", "kou",
            "la", "ma", "me", "mi", "mou", "na", "ni", "o", "ou", "ra", "re", "sa", "se", "si",
            "sou", "ta", "te", "to", "tou", "ya", "za", "ga", "ge", "go", "mo", "ro",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let word = |rng: &mut rand_chacha::ChaCha8Rng| {
            let n = rng.gen_range(2..=4);
            (0..n)
                .map(|_| SYL[rng.gen_range(0..SYL.len())])
                .collect::<String>()
        };
        let candidates: Vec<Candidate> = (0..100_000i64)
            .map(|key| {
                let name = format!("{} {}", word(&mut rng), word(&mut rng));
                Candidate {
                    key,
                    programme: format!("P{}", key % 3),
                    commune: format!("ML05{:04}", rng.gen_range(0..40)),
                    size: rng.gen_range(1..=15),
                    folded_name: fold_name(&name),
                    national_id_hash: rng
                        .gen_bool(0.8)
                        .then(|| format!("{:014}", rng.gen_range(0..10_000_000u64))),
                    biometric_hash: rng
                        .gen_bool(0.6)
                        .then(|| format!("BRV-{:08}", rng.gen_range(0..10_000_000u64))),
                    msisdn_hash: Some(format!("7{:07}", rng.gen_range(0..3_000_000u32))),
                    birth_year: None,
                    sex: None,
                }
            })
            .collect();
        let started = std::time::Instant::now();
        let mut idx = DedupIndex::default();
        let mut flags = Vec::new();
        for c in candidates {
            flags.extend(idx.add(c));
        }
        let elapsed = started.elapsed();
        println!(
            "dedup: 100000 households in {elapsed:?}; {:?}",
            Summary::from_flags(&flags)
        );
    }
}
