//! Deterministic, realistic fixture data: households of the Mali crisis response as a
//! KoboToolbox CSV export, with planted duplicates, a file of bad rows, cash-for-work attendance
//! and shelter milestones.
//!
//! ```no_run
//! let manifest = cva_households::fixtures::generate(3000, 42, std::path::Path::new("fixtures"))?;
//! assert_eq!(manifest.households, 3000);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `cva fixtures generate --households N --seed S --out DIR` calls [`generate`], which writes
//! into `DIR` (created if needed):
//!
//! | file | content |
//! |---|---|
//! | `households.csv` | `N` submissions in the Kobo layout [`KOBO_HEADER`], with planted duplicates |
//! | `households-bad.csv` | the same layout: one row per broken rule, good rows in between |
//! | `households-bad.expected.csv` | `row,column,reason_contains` for each bad row (header = row 1) |
//! | `attendance.csv` | cash-for-work: `household_id,worker,date,site,present` |
//! | `milestones.csv` | shelter: `household_id,milestone,reported_on` |
//! | `manifest.json` | [`Manifest`]: counts and the planted duplicate pairs, by `_uuid` |
//!
//! The same seed gives byte-identical files (ChaCha8, one stream per file). `household_id` in
//! the attendance and milestone files is the household's `_uuid`. Planted duplicates, per 1000
//! households (at least one of each kind when N ≥ 8): 10 same national ID (name re-spelled),
//! 5 same biometric reference, 15 shared phones (different households), 10 similar names in the
//! same commune with sizes within ±1 and a different or no ID. Other identifiers are unique;
//! common names may of course still collide by chance, as they do in the field.
//!
//! P-codes are OCHA-style (`MLrr` region, `MLrrcc` cercle, `MLrrccmm` commune) and illustrative.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The header of a KoboToolbox CSV export of the enrolment form, in order.
pub const KOBO_HEADER: [&str; 20] = [
    "start",
    "end",
    "today",
    "enumerator",
    "consent",
    "household/head_name",
    "household/head_sex",
    "household/head_birth_year",
    "household/size",
    "household/displacement_status",
    "location/region",
    "location/cercle",
    "location/commune",
    "contact/msisdn",
    "identity/national_id",
    "identity/biometric_ref",
    "_id",
    "_uuid",
    "_submission_time",
    "_index",
];

const C_ENUMERATOR: usize = 3;
const C_CONSENT: usize = 4;
const C_NAME: usize = 5;
const C_SEX: usize = 6;
const C_BIRTH_YEAR: usize = 7;
const C_SIZE: usize = 8;
const C_STATUS: usize = 9;
const C_CERCLE: usize = 11;
const C_COMMUNE: usize = 12;
const C_MSISDN: usize = 13;
const C_NATIONAL_ID: usize = 14;
const C_UUID: usize = 17;
const C_SUBMISSION_TIME: usize = 18;

/// The regions of Mali and their p-codes.
pub const REGIONS: [(&str, &str); 10] = [
    ("ML01", "Kayes"),
    ("ML02", "Koulikoro"),
    ("ML03", "Sikasso"),
    ("ML04", "Ségou"),
    ("ML05", "Mopti"),
    ("ML06", "Tombouctou"),
    ("ML07", "Gao"),
    ("ML08", "Kidal"),
    ("ML09", "Bamako"),
    ("ML10", "Ménaka"),
];

#[derive(Debug)]
struct Commune {
    region: &'static str,
    cercle: &'static str,
    commune: &'static str,
    /// Main town, used in cash-for-work site names.
    town: &'static str,
    weight: u32,
}

const fn commune(
    region: &'static str,
    cercle: &'static str,
    commune: &'static str,
    town: &'static str,
    weight: u32,
) -> Commune {
    Commune {
        region,
        cercle,
        commune,
        town,
        weight,
    }
}

/// Households are concentrated in the central and northern regions hosting most displaced people.
const COMMUNES: &[Commune] = &[
    // Mopti: cercles Bandiagara ML0501, Douentza ML0504, Mopti ML0506.
    commune("ML05", "ML0501", "ML050101", "Bandiagara", 6),
    commune("ML05", "ML0504", "ML050401", "Douentza", 6),
    commune("ML05", "ML0504", "ML050402", "Boni", 3),
    commune("ML05", "ML0506", "ML050601", "Sévaré", 8),
    commune("ML05", "ML0506", "ML050602", "Socoura", 4),
    // Tombouctou: cercles Diré ML0601, Goundam ML0602, Tombouctou ML0605.
    commune("ML06", "ML0601", "ML060101", "Diré", 3),
    commune("ML06", "ML0602", "ML060201", "Goundam", 4),
    commune("ML06", "ML0605", "ML060501", "Tombouctou", 7),
    commune("ML06", "ML0605", "ML060502", "Alafia", 3),
    // Gao: cercles Ansongo ML0701, Bourem ML0702, Gao ML0703.
    commune("ML07", "ML0701", "ML070101", "Ansongo", 4),
    commune("ML07", "ML0702", "ML070201", "Bourem", 3),
    commune("ML07", "ML0703", "ML070301", "Gao", 8),
    commune("ML07", "ML0703", "ML070302", "Sony", 3),
    // Ménaka: cercle Ménaka ML1001.
    commune("ML10", "ML1001", "ML100101", "Ménaka", 6),
    commune("ML10", "ML1001", "ML100102", "Anderamboukane", 3),
    commune("ML10", "ML1001", "ML100103", "Inékar", 2),
    // Ségou: cercles Macina ML0403, Niono ML0404, Ségou ML0406.
    commune("ML04", "ML0403", "ML040301", "Macina", 3),
    commune("ML04", "ML0404", "ML040401", "Niono", 4),
    commune("ML04", "ML0406", "ML040601", "Ségou", 4),
    commune("ML04", "ML0406", "ML040602", "Pelengana", 2),
    // A few elsewhere.
    commune("ML01", "ML0101", "ML010101", "Kayes", 1),
    commune("ML02", "ML0203", "ML020301", "Kati", 1),
    commune("ML03", "ML0306", "ML030601", "Sikasso", 1),
    commune("ML08", "ML0801", "ML080101", "Kidal", 1),
    commune("ML09", "ML0901", "ML090101", "Bamako", 1),
];

#[rustfmt::skip]
const FEMALE: &[&str] = &[
    "Aminata", "Fatoumata", "Oumou", "Mariam", "Kadiatou", "Aïssata", "Hawa", "Kadidia",
    "Assétou", "Djénéba", "Rokia", "Salimata", "Bintou", "Fanta", "Maïmouna", "Safiatou", "Awa",
    "Ramata", "Aïcha", "Nana", "Fadimata", "Sitan", "Korotoumou", "Mama", "Tenin",
    "Adiaratou", "Aminatou", "Assitan", "Binta", "Coumba", "Diaba", "Fatimata", "Habibatou",
    "Kadidiatou", "Massitan", "Nassira", "Penda", "Saran", "Sata", "Sirantou", "Tacko", "Zeinabou",
    "Mariétou", "Lalla", "Hadizatou", "Aïssa", "Mintou", "Nènè", "Djélika", "Ténimba", "Wassa",
];
#[rustfmt::skip]
const MALE: &[&str] = &[
    "Moussa", "Mamadou", "Ibrahim", "Boubacar", "Seydou", "Oumar", "Modibo", "Adama", "Bakary",
    "Souleymane", "Amadou", "Issa", "Hamidou", "Sékou", "Abdoulaye", "Youssouf", "Drissa",
    "Lassana", "Alassane", "Hamadoun", "Mahamane", "Almoustapha", "Ousmane", "Mohamed", "Siaka",
    "Aboubacar", "Ahmadou", "Alhousseini", "Baba", "Bréhima", "Cheick", "Daouda", "Fousseyni",
    "Hamadi", "Harouna", "Idrissa", "Karim", "Lamine", "Madou", "Mahamadou", "Mamoutou", "Nouhoum",
    "Salif", "Samba", "Sidi", "Soumaïla", "Tiémoko", "Yacouba", "Zoumana", "Boureima", "Moctar",
];
#[rustfmt::skip]
const FAMILY: &[&str] = &[
    "Traoré", "Coulibaly", "Diarra", "Keïta", "Konaté", "Sangaré", "Cissé", "Touré", "Maïga",
    "Dicko", "Diallo", "Sidibé", "Kanté", "Dembélé", "Ag Mohamed", "Ould Ahmed", "Doumbia",
    "Togo", "Guindo", "Dolo", "Kassogué", "Ongoïba", "Tembély", "Haïdara", "Sissoko", "Bah",
    "Barry", "Samaké", "Koné", "Ag Intalla", "Cissoko", "Diakité", "Tangara", "Kouyaté", "Sow",
    "Bagayoko", "Berthé", "Camara", "Dao", "Fofana", "Goïta", "Kamissoko", "Koïta", "Mariko",
    "Niaré", "Ouattara", "Poudiougou", "Sacko", "Sanogo", "Sylla", "Tall", "Tapily", "Thiam",
    "Timbiné", "Yattara", "Dramé", "Fané", "Ballo", "Boré", "Karembé", "Kodio", "Ag Alhassane",
    "Walet Ibrahim", "Ould Sidi", "Arama", "Sagara", "Dégoga", "Ag Assarid", "Ould Mohamed",
];

/// Orange Mali and Moov Africa Malitel operator prefixes (first two digits of 8).
const ORANGE: &[u8] = &[70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 82, 83, 84, 89];
const MOOV: &[u8] = &[
    60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99,
];

const CFW_ACTIVITIES: &[&str] = &[
    "water point",
    "latrines",
    "drainage canal",
    "road rehabilitation",
    "market clean-up",
];

/// 2024-02-01T00:00:00Z: enrolment runs over the 60 days from there.
const ENROLMENT_START: i64 = 1_706_745_600;
/// 2024-03-01T00:00:00Z.
const MARCH_1: i64 = 1_709_251_200;
const DAY: i64 = 86_400;

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Data rows in `households.csv`.
    pub households: usize,
    pub seed: u64,
    pub planted: Planted,
    /// Bad rows in `households-bad.csv` (= rows of `households-bad.expected.csv`).
    pub bad_rows: usize,
}

/// Planted duplicate pairs, as `[earlier _uuid, later _uuid]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planted {
    pub same_national_id: Vec<[String; 2]>,
    pub same_biometric_ref: Vec<[String; 2]>,
    pub shared_phone: Vec<[String; 2]>,
    pub similar_name: Vec<[String; 2]>,
}

/// Write the fixture files for `households` households into `out_dir` (see the module doc).
pub fn generate(households: usize, seed: u64, out_dir: &Path) -> io::Result<Manifest> {
    fs::create_dir_all(out_dir)?;
    let rng = |stream: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        rng
    };

    let mut gen = Generator::new(rng(0));
    let mut rows: Vec<Row> = (0..households).map(|_| gen.row()).collect();
    gen.assign_times(&mut rows, ENROLMENT_START);
    let planted = gen.plant(&mut rows);
    let mut w = csv_writer(&out_dir.join("households.csv"))?;
    w.write_record(KOBO_HEADER)?;
    for (i, row) in rows.iter().enumerate() {
        w.write_record(row.record(i))?;
    }
    w.flush()?;

    let bad_rows = write_bad(rng(1), out_dir)?;
    write_attendance(rng(2), &rows, out_dir)?;
    write_milestones(rng(3), &rows, out_dir)?;

    let manifest = Manifest {
        households,
        seed,
        planted,
        bad_rows,
    };
    let mut json = serde_json::to_string_pretty(&manifest)?;
    json.push('\n');
    fs::write(out_dir.join("manifest.json"), json)?;
    Ok(manifest)
}

fn csv_writer(path: &Path) -> io::Result<csv::Writer<fs::File>> {
    Ok(csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_path(path)?)
}

/// One generated submission.
#[derive(Debug, Clone)]
struct Row {
    start: i64,
    start_ms: u32,
    end: i64,
    end_ms: u32,
    submitted: i64,
    enumerator: u8,
    first: &'static str,
    family: &'static str,
    head_name: String,
    female: bool,
    birth_year: i32,
    size: u16,
    status: &'static str,
    geo: usize,
    /// The 8-digit national number, and how it was typed.
    phone: Option<String>,
    msisdn: String,
    national_id: Option<String>,
    biometric: Option<String>,
    uuid: String,
}

impl Row {
    fn record(&self, index: usize) -> Vec<String> {
        let geo = &COMMUNES[self.geo];
        vec![
            kobo_time(self.start, self.start_ms),
            kobo_time(self.end, self.end_ms),
            fmt_time(self.start, "%Y-%m-%d"),
            format!("enum-{:02}", self.enumerator),
            "yes".to_owned(),
            self.head_name.clone(),
            if self.female { "female" } else { "male" }.to_owned(),
            self.birth_year.to_string(),
            self.size.to_string(),
            self.status.to_owned(),
            geo.region.to_owned(),
            geo.cercle.to_owned(),
            geo.commune.to_owned(),
            self.msisdn.clone(),
            self.national_id.clone().unwrap_or_default(),
            self.biometric.clone().unwrap_or_default(),
            (41_000_001 + index).to_string(),
            self.uuid.clone(),
            fmt_time(self.submitted, "%Y-%m-%dT%H:%M:%S"),
            (index + 1).to_string(),
        ]
    }
}

fn fmt_time(secs: i64, format: &str) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format(format)
        .to_string()
}

/// Kobo's `start`/`end`: `2024-03-01T10:02:11.123+00:00` (Mali is on UTC).
fn kobo_time(secs: i64, ms: u32) -> String {
    DateTime::<Utc>::from_timestamp(secs, ms * 1_000_000)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string()
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// The name as written in the form: "Aminata Traoré", or "TRAORÉ Aminata".
fn render_name(first: &str, family: &str, family_first: bool) -> String {
    if family_first {
        format!("{} {first}", family.to_uppercase())
    } else {
        format!("{first} {family}")
    }
}

fn strip_accents(s: &str) -> String {
    s.nfd().filter(|c| !is_combining_mark(*c)).collect()
}

/// How an enumerator may re-type the same head's name: accents dropped (and case changed),
/// tokens swapped, two letters swapped, a letter dropped or doubled.
fn misspell(rng: &mut ChaCha8Rng, first: &str, family: &str) -> String {
    let family_first = rng.gen_bool(0.15);
    match rng.gen_range(0..5) {
        0 => {
            let s = strip_accents(&render_name(first, family, family_first));
            if rng.gen_bool(0.5) {
                s.to_uppercase()
            } else {
                s.to_lowercase()
            }
        }
        1 => render_name(first, family, !family_first),
        kind => {
            let (mut f, mut g) = (first.to_owned(), family.to_owned());
            let target = if f.chars().count() >= g.chars().count() {
                &mut f
            } else {
                &mut g
            };
            let mut chars: Vec<char> = target.chars().collect();
            let n = chars.len();
            if n >= 4 {
                let j = rng.gen_range(1..n - 1);
                match kind {
                    2 if chars[j] != chars[j + 1] && chars[j + 1] != ' ' && chars[j] != ' ' => {
                        chars.swap(j, j + 1)
                    }
                    4 => chars.insert(j, chars[j]),
                    _ => {
                        chars.remove(j);
                    }
                }
                *target = chars.into_iter().collect();
            }
            render_name(&f, &g, family_first)
        }
    }
}

fn msisdn_text(rng: &mut ChaCha8Rng, d: &str) -> String {
    let p = |i: usize| &d[i..i + 2];
    match rng.gen_range(0..100) {
        0..=34 => format!("+223 {} {} {} {}", p(0), p(2), p(4), p(6)),
        35..=49 => format!("00223{d}"),
        50..=64 => format!("{}.{}.{}.{}", p(0), p(2), p(4), p(6)),
        65..=89 => d.to_owned(),
        _ => format!("+223{d}"),
    }
}

#[derive(Debug)]
struct Generator {
    rng: ChaCha8Rng,
    phones: HashSet<String>,
    national_ids: HashSet<String>,
    biometrics: HashSet<String>,
    weight_total: u32,
}

impl Generator {
    fn new(rng: ChaCha8Rng) -> Generator {
        Generator {
            rng,
            phones: HashSet::new(),
            national_ids: HashSet::new(),
            biometrics: HashSet::new(),
            weight_total: COMMUNES.iter().map(|c| c.weight).sum(),
        }
    }

    fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.gen_range(0..10u8)))
            .collect()
    }

    fn fresh_phone(&mut self) -> String {
        loop {
            let prefix = if self.rng.gen_bool(0.6) {
                *pick(&mut self.rng, ORANGE)
            } else {
                *pick(&mut self.rng, MOOV)
            };
            let d = format!("{prefix}{}", self.digits(6));
            if self.phones.insert(d.clone()) {
                return d;
            }
        }
    }

    /// NINA-like: 14 digits and a check letter.
    fn fresh_national_id(&mut self) -> String {
        loop {
            let letter = char::from(b'A' + self.rng.gen_range(0..26u8));
            let id = format!("{}{letter}", self.digits(14));
            if self.national_ids.insert(id.clone()) {
                return id;
            }
        }
    }

    fn fresh_biometric(&mut self) -> String {
        loop {
            let id = format!("BRV-{}", self.digits(8));
            if self.biometrics.insert(id.clone()) {
                return id;
            }
        }
    }

    fn geo(&mut self) -> usize {
        let mut x = self.rng.gen_range(0..self.weight_total);
        for (i, c) in COMMUNES.iter().enumerate() {
            if x < c.weight {
                return i;
            }
            x -= c.weight;
        }
        0
    }

    /// A household with fresh identifiers; times are assigned afterwards.
    fn row(&mut self) -> Row {
        let female = self.rng.gen_bool(0.55);
        let first = *pick(&mut self.rng, if female { FEMALE } else { MALE });
        let family = *pick(&mut self.rng, FAMILY);
        let head_name = render_name(first, family, self.rng.gen_bool(0.15));
        // Triangular over 1945..=2006, peaking in the mid-1970s.
        let birth_year = 1945 + self.rng.gen_range(0..=30) + self.rng.gen_range(0..=31);
        // 1 + Binomial(14, 0.4): 1..=15, mean 6.6.
        let size = 1 + (0..14).filter(|_| self.rng.gen_bool(0.4)).count() as u16;
        let status = match self.rng.gen_range(0..100) {
            0..=54 => "idp",
            55..=89 => "host",
            _ => "returnee",
        };
        let geo = self.geo();
        let phone = self.rng.gen_bool(0.93).then(|| self.fresh_phone());
        let msisdn = match &phone {
            Some(d) => msisdn_text(&mut self.rng, d),
            None => String::new(),
        };
        let national_id = self.rng.gen_bool(0.8).then(|| self.fresh_national_id());
        let biometric = self.rng.gen_bool(0.6).then(|| self.fresh_biometric());
        let enumerator = self.rng.gen_range(1..=20);
        let uuid = self.uuid();
        Row {
            start: 0,
            start_ms: 0,
            end: 0,
            end_ms: 0,
            submitted: 0,
            enumerator,
            first,
            family,
            head_name,
            female,
            birth_year,
            size,
            status,
            geo,
            phone,
            msisdn,
            national_id,
            biometric,
            uuid,
        }
    }

    /// Submission times over 60 days from `from`, in working hours, increasing with the row.
    fn assign_times(&mut self, rows: &mut [Row], from: i64) {
        let mut times: Vec<i64> = (0..rows.len())
            .map(|_| {
                from + self.rng.gen_range(0..60) * DAY + self.rng.gen_range(8 * 3600..18 * 3600)
            })
            .collect();
        times.sort_unstable();
        for (row, submitted) in rows.iter_mut().zip(times) {
            row.submitted = submitted;
            row.end = submitted - self.rng.gen_range(0..=3600);
            row.end_ms = self.rng.gen_range(0..1000);
            row.start = row.end - self.rng.gen_range(480..=2400);
            row.start_ms = self.rng.gen_range(0..1000);
        }
    }

    /// Turn some rows into duplicates of earlier rows.
    fn plant(&mut self, rows: &mut [Row]) -> Planted {
        let n = rows.len();
        let per_mille = |k: usize| (n * k / 1000).max(1);
        let counts = [per_mille(10), per_mille(5), per_mille(15), per_mille(10)];
        let mut planted = Planted::default();
        if n < 2 * counts.iter().sum::<usize>() {
            return planted;
        }
        let mut indices: Vec<usize> = (0..n).collect();
        let (chosen, _) = indices.partial_shuffle(&mut self.rng, 2 * counts.iter().sum::<usize>());
        let mut pairs = chosen
            .chunks_exact(2)
            .map(|p| (p[0].min(p[1]), p[0].max(p[1])))
            .collect::<Vec<_>>()
            .into_iter();
        for (kind, count) in counts.into_iter().enumerate() {
            let mut kind_pairs: Vec<(usize, usize)> = pairs.by_ref().take(count).collect();
            kind_pairs.sort_unstable_by_key(|p| p.1);
            for (a, b) in kind_pairs {
                let ra = rows[a].clone();
                match kind {
                    0 => {
                        let id = match ra.national_id {
                            Some(id) => id,
                            None => {
                                let id = self.fresh_national_id();
                                rows[a].national_id = Some(id.clone());
                                id
                            }
                        };
                        let rb = &mut rows[b];
                        rb.national_id = Some(id);
                        rb.head_name = misspell(&mut self.rng, ra.first, ra.family);
                        rb.female = ra.female;
                        rb.birth_year = ra.birth_year;
                        if self.rng.gen_bool(0.5) {
                            rb.geo = ra.geo;
                        }
                    }
                    1 => {
                        let bio = match ra.biometric {
                            Some(bio) => bio,
                            None => {
                                let bio = self.fresh_biometric();
                                rows[a].biometric = Some(bio.clone());
                                bio
                            }
                        };
                        let rb = &mut rows[b];
                        rb.biometric = Some(bio);
                        rb.national_id = None;
                        rb.head_name = if self.rng.gen_bool(0.5) {
                            ra.head_name.clone()
                        } else {
                            misspell(&mut self.rng, ra.first, ra.family)
                        };
                        rb.female = ra.female;
                        rb.birth_year = ra.birth_year;
                    }
                    2 => {
                        let phone = match ra.phone {
                            Some(phone) => phone,
                            None => {
                                let phone = self.fresh_phone();
                                rows[a].msisdn = msisdn_text(&mut self.rng, &phone);
                                rows[a].phone = Some(phone.clone());
                                phone
                            }
                        };
                        let rb = &mut rows[b];
                        rb.msisdn = msisdn_text(&mut self.rng, &phone);
                        rb.phone = Some(phone);
                    }
                    _ => {
                        let rb = &mut rows[b];
                        rb.head_name = misspell(&mut self.rng, ra.first, ra.family);
                        rb.female = ra.female;
                        rb.birth_year =
                            (ra.birth_year + self.rng.gen_range(-1..=1)).clamp(1945, 2006);
                        rb.geo = ra.geo;
                        rb.size =
                            (i32::from(ra.size) + self.rng.gen_range(-1..=1)).clamp(1, 15) as u16;
                    }
                }
                let pair = [rows[a].uuid.clone(), rows[b].uuid.clone()];
                match kind {
                    0 => planted.same_national_id.push(pair),
                    1 => planted.same_biometric_ref.push(pair),
                    2 => planted.shared_phone.push(pair),
                    _ => planted.similar_name.push(pair),
                }
            }
        }
        planted
    }
}

/// The rules broken in `households-bad.csv`: column, keyword of the reason, bad value (`None`:
/// computed).
const BAD: &[(usize, &str, Option<&str>)] = &[
    (C_UUID, "uuid", Some("")),
    (C_UUID, "uuid", Some("4a9c1e2b-7d3f-4e8a-b5c6-zz1234567890")),
    (C_UUID, "uuid", None), // repeats the first row's
    (C_SUBMISSION_TIME, "time", Some("2024-02-30T25:61:00")),
    (C_ENUMERATOR, "enumerator", Some("")),
    (C_CONSENT, "consent", Some("no")),
    (C_NAME, "name", Some("")),
    (C_SEX, "sex", Some("unknown")),
    (C_BIRTH_YEAR, "year", Some("2031")),
    (C_BIRTH_YEAR, "year", Some("nineteen eighty")),
    (C_SIZE, "size", Some("0")),
    (C_SIZE, "size", Some("60")),
    (C_STATUS, "status", Some("refugee")),
    (C_COMMUNE, "p-code", Some("ML05-0601")),
    (C_COMMUNE, "inside", None), // a commune of another cercle
    (C_MSISDN, "msisdn", Some("+223 76 AB 34 56")),
    (C_MSISDN, "msisdn", Some("+223 76 12 34 5")),
    (C_MSISDN, "msisdn", Some("+223 55 12 34 56")),
    (C_NATIONAL_ID, "national", None), // a '#' inside
];

fn write_bad(rng: ChaCha8Rng, out_dir: &Path) -> io::Result<usize> {
    let mut gen = Generator::new(rng);
    let total = 2 + BAD.len() + BAD.len() / 2;
    let mut rows: Vec<Row> = (0..total).map(|_| gen.row()).collect();
    gen.assign_times(&mut rows, MARCH_1);
    let mut w = csv_writer(&out_dir.join("households-bad.csv"))?;
    let mut expected = csv_writer(&out_dir.join("households-bad.expected.csv"))?;
    w.write_record(KOBO_HEADER)?;
    expected.write_record(["row", "column", "reason_contains"])?;
    let first_uuid = rows[0].uuid.clone();
    let mut bad = BAD.iter();
    for (i, row) in rows.iter().enumerate() {
        let mut record = row.record(i);
        // Two good rows, then bad rows with a good one after every second.
        let is_bad = i >= 2 && (i - 2) % 3 != 2;
        if let Some(&(column, reason, value)) = is_bad.then(|| bad.next()).flatten() {
            record[column] = match (column, value) {
                (_, Some(v)) => v.to_owned(),
                (C_UUID, None) => first_uuid.clone(),
                (C_COMMUNE, None) => {
                    let cercle = &record[C_CERCLE];
                    COMMUNES
                        .iter()
                        .find(|c| !c.commune.starts_with(cercle.as_str()))
                        .map(|c| c.commune.to_owned())
                        .unwrap_or_default()
                }
                _ => {
                    let mut id: Vec<char> = row
                        .national_id
                        .clone()
                        .unwrap_or_else(|| gen.fresh_national_id())
                        .chars()
                        .collect();
                    id[6] = '#';
                    id.into_iter().collect()
                }
            };
            expected.write_record([&(i + 2).to_string(), KOBO_HEADER[column], reason])?;
        }
        w.write_record(&record)?;
    }
    w.flush()?;
    expected.flush()?;
    Ok(BAD.len())
}

fn write_attendance(mut rng: ChaCha8Rng, rows: &[Row], out_dir: &Path) -> io::Result<()> {
    let mut w = csv_writer(&out_dir.join("attendance.csv"))?;
    w.write_record(["household_id", "worker", "date", "site", "present"])?;
    for row in rows {
        if !rng.gen_bool(0.2) {
            continue;
        }
        let site = format!(
            "{} {} {}",
            pick(&mut rng, CFW_ACTIVITIES),
            COMMUNES[row.geo].town,
            rng.gen_range(1..=5)
        );
        let workers = rng.gen_range(1..=3);
        let mut names: Vec<String> = Vec::new();
        for w_i in 0..workers {
            let first = if w_i == 0 && row.size == 1 {
                row.first
            } else {
                let pool = if rng.gen_bool(0.5) { FEMALE } else { MALE };
                *pick(&mut rng, pool)
            };
            let name = format!("{first} {}", row.family);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        // Workers are numbered within the household: their names stay out of the sheet.
        for (number, _) in names.iter().enumerate() {
            let worker = (number + 1).to_string();
            let mut days: Vec<i64> = (0..31).collect();
            let count = rng.gen_range(3..=8);
            let (days, _) = days.partial_shuffle(&mut rng, count);
            days.sort_unstable();
            for day in days.iter() {
                let present = if rng.gen_bool(0.9) { "yes" } else { "no" };
                w.write_record([
                    row.uuid.as_str(),
                    &worker,
                    &fmt_time(MARCH_1 + day * DAY, "%Y-%m-%d"),
                    &site,
                    present,
                ])?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

fn write_milestones(mut rng: ChaCha8Rng, rows: &[Row], out_dir: &Path) -> io::Result<()> {
    let mut w = csv_writer(&out_dir.join("milestones.csv"))?;
    w.write_record(["household_id", "milestone", "reported_on"])?;
    for row in rows {
        if !rng.gen_bool(0.1) {
            continue;
        }
        let reached = rng.gen_range(1..=3);
        let mut day = rng.gen_range(0..31);
        for milestone in ["foundation", "walls", "roof"].into_iter().take(reached) {
            w.write_record([
                row.uuid.as_str(),
                milestone,
                &fmt_time(MARCH_1 + day * DAY, "%Y-%m-%d"),
            ])?;
            day += rng.gen_range(7..=21);
        }
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::dedup::{fold_name, Candidate, DedupIndex, FlagKind};

    const FILES: [&str; 6] = [
        "households.csv",
        "households-bad.csv",
        "households-bad.expected.csv",
        "attendance.csv",
        "milestones.csv",
        "manifest.json",
    ];

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "cva-fixtures-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn read(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
        let mut r = csv::Reader::from_path(path).unwrap();
        let header = r.headers().unwrap().iter().map(str::to_owned).collect();
        let rows = r
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        (header, rows)
    }

    fn by_uuid(rows: &[Vec<String>]) -> HashMap<&str, &Vec<String>> {
        rows.iter().map(|r| (r[C_UUID].as_str(), r)).collect()
    }

    fn phone_digits(s: &str) -> String {
        let d: String = s.chars().filter(char::is_ascii_digit).collect();
        d[d.len().saturating_sub(8)..].to_owned()
    }

    #[test]
    fn same_seed_same_bytes() {
        let (d1, d2, d3) = (TempDir::new(), TempDir::new(), TempDir::new());
        let m1 = generate(300, 42, &d1.0).unwrap();
        let m2 = generate(300, 42, &d2.0).unwrap();
        assert_eq!(m1, m2);
        for f in FILES {
            assert_eq!(
                fs::read(d1.0.join(f)).unwrap(),
                fs::read(d2.0.join(f)).unwrap(),
                "{f}"
            );
        }
        generate(300, 43, &d3.0).unwrap();
        assert_ne!(
            fs::read(d1.0.join("households.csv")).unwrap(),
            fs::read(d3.0.join("households.csv")).unwrap()
        );
    }

    #[test]
    fn headers_are_exact() {
        let d = TempDir::new();
        generate(60, 1, &d.0).unwrap();
        let first_line = |f: &str| {
            fs::read_to_string(d.0.join(f))
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_owned()
        };
        let kobo = "start,end,today,enumerator,consent,household/head_name,household/head_sex,household/head_birth_year,household/size,household/displacement_status,location/region,location/cercle,location/commune,contact/msisdn,identity/national_id,identity/biometric_ref,_id,_uuid,_submission_time,_index";
        assert_eq!(first_line("households.csv"), kobo);
        assert_eq!(first_line("households-bad.csv"), kobo);
        assert_eq!(
            first_line("households-bad.expected.csv"),
            "row,column,reason_contains"
        );
        assert_eq!(
            first_line("attendance.csv"),
            "household_id,worker,date,site,present"
        );
        assert_eq!(
            first_line("milestones.csv"),
            "household_id,milestone,reported_on"
        );
    }

    #[test]
    fn manifest_matches_files_and_rows_look_right() {
        let d = TempDir::new();
        let m = generate(1000, 7, &d.0).unwrap();
        let json: Manifest =
            serde_json::from_str(&fs::read_to_string(d.0.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(json, m);
        let (_, rows) = read(&d.0.join("households.csv"));
        assert_eq!(rows.len(), m.households);
        let (_, expected) = read(&d.0.join("households-bad.expected.csv"));
        assert_eq!(expected.len(), m.bad_rows);
        assert_eq!(
            [
                m.planted.same_national_id.len(),
                m.planted.same_biometric_ref.len(),
                m.planted.shared_phone.len(),
                m.planted.similar_name.len()
            ],
            [10, 5, 15, 10]
        );

        let uuids = by_uuid(&rows);
        assert_eq!(uuids.len(), rows.len(), "unique _uuid");
        let mut statuses = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r[16], (41_000_001 + i).to_string());
            assert_eq!(r[19], (i + 1).to_string());
            assert!(uuid::Uuid::parse_str(&r[C_UUID]).is_ok());
            assert!(r[C_COMMUNE].starts_with(&r[C_CERCLE]) && r[C_CERCLE].starts_with(&r[10]));
            let size: u16 = r[C_SIZE].parse().unwrap();
            assert!((1..=15).contains(&size));
            let year: i32 = r[C_BIRTH_YEAR].parse().unwrap();
            assert!((1945..=2006).contains(&year), "{year}");
            if !r[C_NATIONAL_ID].is_empty() {
                assert_eq!(r[C_NATIONAL_ID].len(), 15);
            }
            if !r[C_MSISDN].is_empty() {
                let prefix: u8 = phone_digits(&r[C_MSISDN])[..2].parse().unwrap();
                assert!(
                    ORANGE.contains(&prefix) || MOOV.contains(&prefix),
                    "{}",
                    r[C_MSISDN]
                );
            }
            assert!(r[0] < r[1] && r[1][..19] <= r[C_SUBMISSION_TIME][..]);
            assert!(i == 0 || rows[i - 1][C_SUBMISSION_TIME] <= r[C_SUBMISSION_TIME]);
            *statuses.entry(r[C_STATUS].clone()).or_insert(0) += 1;
        }
        assert!((450..650).contains(&statuses["idp"]), "{statuses:?}");

        for [a, b] in &m.planted.same_national_id {
            let (ra, rb) = (uuids[a.as_str()], uuids[b.as_str()]);
            assert!(!ra[C_NATIONAL_ID].is_empty());
            assert_eq!(ra[C_NATIONAL_ID], rb[C_NATIONAL_ID]);
        }
        for [a, b] in &m.planted.same_biometric_ref {
            let (ra, rb) = (uuids[a.as_str()], uuids[b.as_str()]);
            assert!(ra[15].starts_with("BRV-") && ra[15].len() == 12);
            assert_eq!(ra[15], rb[15]);
        }
        for [a, b] in &m.planted.shared_phone {
            let (ra, rb) = (uuids[a.as_str()], uuids[b.as_str()]);
            assert_eq!(phone_digits(&ra[C_MSISDN]), phone_digits(&rb[C_MSISDN]));
        }
        for [a, b] in &m.planted.similar_name {
            let (ra, rb) = (uuids[a.as_str()], uuids[b.as_str()]);
            assert_eq!(ra[C_COMMUNE], rb[C_COMMUNE]);
            let (sa, sb): (i32, i32) = (ra[C_SIZE].parse().unwrap(), rb[C_SIZE].parse().unwrap());
            assert!((sa - sb).abs() <= 1);
            assert!(rb[C_NATIONAL_ID].is_empty() || rb[C_NATIONAL_ID] != ra[C_NATIONAL_ID]);
        }

        // Attendance and milestones refer to real households.
        let (_, attendance) = read(&d.0.join("attendance.csv"));
        let households: HashSet<&str> = attendance.iter().map(|r| r[0].as_str()).collect();
        assert!(
            (120..280).contains(&households.len()),
            "{}",
            households.len()
        );
        assert!(attendance.iter().all(|r| uuids.contains_key(r[0].as_str())
            && r[2].starts_with("2024-03-")
            && (r[4] == "yes" || r[4] == "no")));
        let (_, milestones) = read(&d.0.join("milestones.csv"));
        assert!(!milestones.is_empty());
        assert!(milestones.iter().all(|r| uuids.contains_key(r[0].as_str())
            && ["foundation", "walls", "roof"].contains(&r[1].as_str())));
    }

    #[test]
    fn small_n_has_every_planted_kind() {
        let d = TempDir::new();
        let m = generate(50, 3, &d.0).unwrap();
        assert!(!m.planted.same_national_id.is_empty());
        assert!(!m.planted.same_biometric_ref.is_empty());
        assert!(!m.planted.shared_phone.is_empty());
        assert!(!m.planted.similar_name.is_empty());
        assert_eq!(read(&d.0.join("households.csv")).1.len(), 50);
    }

    #[test]
    fn every_bad_class_is_listed() {
        let d = TempDir::new();
        let m = generate(50, 5, &d.0).unwrap();
        let (header, rows) = read(&d.0.join("households-bad.csv"));
        let (_, expected) = read(&d.0.join("households-bad.expected.csv"));
        assert_eq!(expected.len(), BAD.len());
        assert_eq!(m.bad_rows, BAD.len());
        assert!(rows.len() > expected.len(), "good rows in between");
        let mut classes = HashSet::new();
        for e in &expected {
            let row: usize = e[0].parse().unwrap();
            let col = header.iter().position(|h| *h == e[1]).unwrap();
            let value = &rows[row - 2][col];
            classes.insert((e[1].clone(), e[2].clone(), value.clone()));
        }
        assert_eq!(classes.len(), BAD.len(), "{classes:?}");
        let reasons: HashSet<&str> = expected.iter().map(|e| e[2].as_str()).collect();
        for r in [
            "uuid",
            "time",
            "enumerator",
            "consent",
            "name",
            "sex",
            "year",
            "size",
            "status",
            "p-code",
            "inside",
            "msisdn",
            "national",
        ] {
            assert!(reasons.contains(r), "{r}");
        }
        // The repeated uuid repeats an earlier row; the '#' is there.
        let uuids: Vec<&str> = rows.iter().map(|r| r[C_UUID].as_str()).collect();
        assert!(uuids
            .iter()
            .enumerate()
            .any(|(i, u)| uuids[..i].contains(u)));
        assert!(rows
            .iter()
            .any(|r| r[C_NATIONAL_ID].contains('#') && r[C_NATIONAL_ID].len() == 15));
    }

    #[test]
    fn dedup_catches_planted_duplicates() {
        let d = TempDir::new();
        let m = generate(3000, 11, &d.0).unwrap();
        let (_, rows) = read(&d.0.join("households.csv"));
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut index = DedupIndex::default();
        let mut flagged: HashMap<(String, String), Vec<&'static str>> = HashMap::new();
        let mut all = Vec::new();
        for (key, r) in rows.iter().enumerate() {
            let flags = index.add(Candidate {
                key: key as i64,
                programme: "MPCA".into(),
                commune: r[C_COMMUNE].clone(),
                size: r[C_SIZE].parse().unwrap(),
                folded_name: fold_name(&r[C_NAME]),
                national_id_hash: opt(&r[C_NATIONAL_ID]),
                biometric_hash: opt(&r[15]),
                msisdn_hash: opt(&r[C_MSISDN]).map(|s| phone_digits(&s)),
                birth_year: r[C_BIRTH_YEAR].parse().ok(),
                sex: opt(&r[C_SEX]),
            });
            for f in &flags {
                let pair = (rows[f.a as usize][C_UUID].clone(), r[C_UUID].clone());
                flagged.entry(pair).or_default().push(f.kind.as_str());
            }
            all.extend(flags);
        }
        let caught = |pairs: &[[String; 2]], kind: &str| {
            pairs
                .iter()
                .filter(|[a, b]| {
                    flagged
                        .get(&(a.clone(), b.clone()))
                        .is_some_and(|k| k.contains(&kind))
                })
                .count()
        };
        let p = &m.planted;
        assert_eq!(
            caught(&p.same_national_id, "same_national_id"),
            p.same_national_id.len()
        );
        assert_eq!(
            caught(&p.same_biometric_ref, "same_biometric_ref"),
            p.same_biometric_ref.len()
        );
        assert_eq!(
            caught(&p.shared_phone, "shared_phone"),
            p.shared_phone.len()
        );
        let similar = caught(&p.similar_name, "similar_name");
        let summary = crate::dedup::Summary::from_flags(&all);
        println!(
            "planted similar_name pairs caught: {similar}/{}; all flags: {summary:?}",
            p.similar_name.len()
        );
        assert!(similar * 100 >= p.similar_name.len() * 80);
        // Exact kinds only where planted: identifiers are otherwise unique.
        assert_eq!(summary.same_national_id, p.same_national_id.len());
        assert_eq!(summary.same_biometric_ref, p.same_biometric_ref.len());
        assert_eq!(summary.shared_phone, p.shared_phone.len());
        assert!(all
            .iter()
            .all(|f| f.kind != FlagKind::SameNationalId || f.a < f.b));
    }

    /// `cargo test -p cva-households --release --lib fixtures::tests::dedup_perf -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn dedup_perf_on_100k_fixture_households() {
        let d = TempDir::new();
        let started = std::time::Instant::now();
        generate(100_000, 1, &d.0).unwrap();
        let generated = started.elapsed();
        let (_, rows) = read(&d.0.join("households.csv"));
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let candidates: Vec<Candidate> = rows
            .iter()
            .enumerate()
            .map(|(key, r)| Candidate {
                key: key as i64,
                programme: "MPCA".into(),
                commune: r[C_COMMUNE].clone(),
                size: r[C_SIZE].parse().unwrap(),
                folded_name: fold_name(&r[C_NAME]),
                national_id_hash: opt(&r[C_NATIONAL_ID]),
                biometric_hash: opt(&r[15]),
                msisdn_hash: opt(&r[C_MSISDN]).map(|s| phone_digits(&s)),
                birth_year: r[C_BIRTH_YEAR].parse().ok(),
                sex: opt(&r[C_SEX]),
            })
            .collect();
        let started = std::time::Instant::now();
        let mut index = DedupIndex::default();
        let mut flags = Vec::new();
        for c in candidates {
            flags.extend(index.add(c));
        }
        println!(
            "generate: {generated:?}; dedup of 100000 fixture households: {:?}; {:?}",
            started.elapsed(),
            crate::dedup::Summary::from_flags(&flags)
        );
    }
}
