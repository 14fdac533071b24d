//! A streaming digest of one backend's answer to one statement.
//!
//! The proxy feeds the backend message bodies it relays (RowDescription,
//! DataRow, CommandComplete, ErrorResponse) into a [`ResultDigest`] and gets
//! a [`ResultSummary`] at the end. Memory is bounded whatever the result
//! size: rows are folded into two 64-bit digests as they pass, and only the
//! first `max_row_hashes` row hashes and the first `max_sample_rows` decoded
//! rows (within `max_sample_bytes`) are kept, for reporting which rows differ.
//!
//! Two digests are kept because row order only matters when the statement
//! has ORDER BY: an ordered one (a sequential fold of row hashes) and a
//! multiset one (wrapping sum and xor of mixed row hashes, which any
//! permutation of the same rows leaves unchanged).
//!
//! Columns are compared by position, not by name: the mirror target may have
//! renamed a column. Ignored columns are named in the config, resolved to
//! positions from the primary's RowDescription
//! ([`ResultDigest::ignore_positions`]), and the mirror's digest is built with
//! those positions ([`DigestOptions::with_positions`]).
//!
//! Floats: with a tolerance above zero, float4, float8 and numeric values are
//! hashed as a quantized number rather than as bytes; see [`quantize`].
//!
//! The value hash is not the persisted stable hash of `pgshift-rules`: it only
//! has to agree between the two digests of one comparison inside one process,
//! so it is built for speed (16 bytes per step, a folded 64x64→128-bit
//! multiply as in wyhash). It is not keyed, so someone who controls the data
//! on both databases could craft a collision; that only hides a difference
//! they created themselves.

use pgshift_rules::hash::fmix64;
use std::sync::Arc;

use pgshift_protocol::backend::{self, DataRow, ErrorFields, FieldDescription};
use pgshift_rules::CompareSettings;
use serde::{Serialize, Serializer};

/// `float4`.
pub const FLOAT4_OID: u32 = 700;
/// `float8`.
pub const FLOAT8_OID: u32 = 701;
/// `numeric`.
pub const NUMERIC_OID: u32 = 1700;

/// Sample values longer than this many bytes are cut, with `…` appended.
const MAX_SAMPLE_VALUE_BYTES: usize = 256;
/// Error messages and command tags longer than this are cut.
const MAX_TEXT_BYTES: usize = 1024;

/// Which result columns take no part in value comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IgnoreColumns {
    #[default]
    None,
    /// Column names as the config lists them (already normalised like SQL
    /// identifiers), matched exactly against RowDescription names.
    Names(Arc<[String]>),
    /// Zero-based positions, e.g. those resolved from the primary's names.
    Positions(Arc<[usize]>),
}

impl IgnoreColumns {
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.is_empty() {
            IgnoreColumns::None
        } else {
            IgnoreColumns::Names(names.into())
        }
    }

    pub fn positions(positions: impl IntoIterator<Item = usize>) -> Self {
        let mut p: Vec<usize> = positions.into_iter().collect();
        p.sort_unstable();
        p.dedup();
        IgnoreColumns::Positions(p.into())
    }

    /// The ignored positions among `fields`, ascending.
    fn resolve(&self, fields: &[FieldDescription<'_>]) -> Vec<usize> {
        match self {
            IgnoreColumns::None => Vec::new(),
            IgnoreColumns::Names(names) => fields
                .iter()
                .enumerate()
                .filter(|(_, f)| names.iter().any(|n| n.as_bytes() == f.name))
                .map(|(i, _)| i)
                .collect(),
            IgnoreColumns::Positions(p) => {
                p.iter().copied().filter(|&i| i < fields.len()).collect()
            }
        }
    }

    /// Positions known before any RowDescription.
    fn known_positions(&self) -> Vec<usize> {
        match self {
            IgnoreColumns::Positions(p) => p.to_vec(),
            _ => Vec::new(),
        }
    }
}

/// How one statement's results are digested. Cheap to clone.
#[derive(Clone, Debug, PartialEq)]
pub struct DigestOptions {
    /// Row order matters (the statement has ORDER BY).
    pub ordered: bool,
    /// 0 compares float and numeric values exactly, byte for byte.
    pub float_tolerance: f64,
    pub ignore: IgnoreColumns,
    pub max_sample_rows: usize,
    pub max_sample_bytes: usize,
    pub max_row_hashes: usize,
    /// Positions to ignore when ignoring by name and no RowDescription
    /// comes: an extended-protocol Execute is described in an earlier
    /// batch (Parse, Describe, Sync), whose names resolved these.
    pub learned_ignore: Option<Arc<[usize]>>,
}

impl Default for DigestOptions {
    fn default() -> Self {
        DigestOptions {
            ordered: false,
            float_tolerance: 0.0,
            ignore: IgnoreColumns::None,
            max_sample_rows: 20,
            max_sample_bytes: 16 * 1024,
            max_row_hashes: 1000,
            learned_ignore: None,
        }
    }
}

impl DigestOptions {
    /// The options a `compare:` section gives, with the default bounds.
    /// Build once per config; set `ordered` per statement.
    pub fn from_settings(settings: &CompareSettings) -> Self {
        DigestOptions {
            float_tolerance: settings.float_tolerance,
            ignore: IgnoreColumns::names(settings.ignore_columns.iter().cloned()),
            ..DigestOptions::default()
        }
    }

    /// The same options with `ordered` set.
    pub fn ordered(&self, ordered: bool) -> Self {
        DigestOptions {
            ordered,
            ..self.clone()
        }
    }

    /// The same options, with the positions an earlier description of the
    /// statement resolved its ignored names to.
    pub fn learned(self, positions: Option<Arc<[usize]>>) -> Self {
        DigestOptions {
            learned_ignore: positions,
            ..self
        }
    }

    /// The same options, ignoring exactly these positions: for the mirror's
    /// digest, from the primary's [`ResultDigest::ignore_positions`].
    pub fn with_positions(&self, positions: &[usize]) -> Self {
        DigestOptions {
            ignore: IgnoreColumns::positions(positions.iter().copied()),
            ..self.clone()
        }
    }
}

/// One column as a RowDescription announced it. Columns compare by
/// position, so the name is not kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnInfo {
    pub type_oid: u32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// An ErrorResponse's code and message (cut to 1 KiB).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendError {
    /// Empty if the backend sent none.
    pub sqlstate: String,
    pub message: String,
}

/// The multiset digest: equal for any order of the same rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub struct MultisetDigest {
    #[serde(serialize_with = "hex_u64")]
    pub sum: u64,
    #[serde(serialize_with = "hex_u64")]
    pub xor: u64,
}

/// One kept row, decoded for people: text values as UTF-8 (lossy), binary
/// values as `\x` hex, NULL as `None`; long values cut with `…`.
pub type SampleRow = Vec<Option<String>>;

/// The first rows of a result as they arrived (DataRow bodies), decoded
/// only for a mismatch report. The primary's rows are digested on the
/// client's path, where decoding each kept row into strings cost more
/// than hashing it, for reports that most results never need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    bytes: Vec<u8>,
    /// Where each row ends in `bytes`.
    ends: Vec<usize>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn row(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        self.bytes.get(start..end)
    }

    fn push(&mut self, row: &[u8]) {
        self.bytes.extend_from_slice(row);
        self.ends.push(self.bytes.len());
    }
}

/// What one backend answered, reduced to what comparison needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResultSummary {
    /// `None` when no RowDescription was seen.
    pub columns: Option<Vec<ColumnInfo>>,
    /// Positions excluded from row hashes, ascending.
    pub ignored: Vec<usize>,
    pub ordered: bool,
    /// RowDescriptions seen; more than one when a simple query held several
    /// row-returning statements.
    pub result_sets: u32,
    pub rows: u64,
    /// DataRow body bytes seen.
    pub row_bytes: u64,
    #[serde(serialize_with = "hex_u64")]
    pub ordered_digest: u64,
    pub multiset_digest: MultisetDigest,
    /// The first `max_row_hashes` row hashes, in arrival order.
    #[serde(skip)]
    pub row_hashes: Vec<u64>,
    /// The first rows; row `i` is sample `i`, see [`Self::sample`].
    #[serde(skip)]
    pub samples: Samples,
    /// Sampling stopped early because `max_sample_bytes` was reached.
    pub samples_truncated: bool,
    pub tag: Option<String>,
    pub error: Option<BackendError>,
    /// The first malformed message, if any: the digests are then unreliable.
    pub malformed: Option<String>,
}

impl ResultSummary {
    /// Every row's hash was kept, so exact row differences can be computed.
    pub fn all_row_hashes_kept(&self) -> bool {
        self.row_hashes.len() as u64 == self.rows
    }

    /// Row `i`, decoded for people, when it was sampled.
    pub fn sample(&self, i: usize) -> Option<SampleRow> {
        // Kept only once it parsed whole.
        let row = DataRow::parse(self.samples.row(i)?).ok()?;
        let values = row.columns().enumerate().map(|(c, v)| {
            v.ok()
                .flatten()
                .map(|v| sample_text(v, self.column_format(c)))
        });
        Some(values.collect())
    }

    /// Every sampled row, decoded.
    pub fn sample_rows(&self) -> Vec<SampleRow> {
        (0..self.samples.len())
            .filter_map(|i| self.sample(i))
            .collect()
    }

    fn column_format(&self, i: usize) -> i16 {
        self.columns
            .as_ref()
            .and_then(|c| c.get(i))
            .map_or(0, |c| c.format)
    }
}

/// How one column's values are hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColumnHash {
    Ignored,
    Exact,
    FloatText,
    Float4Binary,
    Float8Binary,
    NumericBinary,
}

/// Builds a [`ResultSummary`] from one backend's messages.
#[derive(Debug)]
pub struct ResultDigest {
    opts: DigestOptions,
    columns: Option<Vec<ColumnInfo>>,
    plan: Vec<ColumnHash>,
    ignored: Vec<usize>,
    result_sets: u32,
    rows: u64,
    row_bytes: u64,
    ordered_digest: u64,
    multiset: MultisetDigest,
    row_hashes: Vec<u64>,
    samples: Samples,
    samples_truncated: bool,
    tag: Option<String>,
    error: Option<BackendError>,
    malformed: Option<String>,
}

impl ResultDigest {
    pub fn new(opts: &DigestOptions) -> Self {
        ResultDigest {
            opts: opts.clone(),
            columns: None,
            plan: Vec::new(),
            ignored: match (&opts.ignore, &opts.learned_ignore) {
                (IgnoreColumns::Names(_), Some(learned)) => learned.to_vec(),
                (ignore, _) => ignore.known_positions(),
            },
            result_sets: 0,
            rows: 0,
            row_bytes: 0,
            ordered_digest: ORDERED_SEED,
            multiset: MultisetDigest::default(),
            row_hashes: Vec::with_capacity(opts.max_row_hashes.min(64)),
            samples: Samples::default(),
            samples_truncated: false,
            tag: None,
            error: None,
            malformed: None,
        }
    }

    /// Ignored positions as resolved so far (after the RowDescription, the
    /// ones to hand to the other side's digest).
    pub fn ignore_positions(&self) -> Vec<usize> {
        self.ignored.clone()
    }

    /// Whether a RowDescription named this result's columns.
    pub fn described(&self) -> bool {
        self.result_sets > 0
    }

    pub fn row_description(&mut self, body: &[u8]) {
        let fields = match backend::row_description(body) {
            Ok(f) => f,
            Err(e) => return self.note_malformed(e),
        };
        self.result_sets += 1;
        if self.result_sets > 1 {
            // A boundary between result sets, so rows cannot move across it
            // unnoticed in the ordered digest.
            self.ordered_digest = mix_ordered(self.ordered_digest, RESULT_SET_BOUNDARY);
        }
        self.ignored = self.opts.ignore.resolve(&fields);
        let tolerant = self.opts.float_tolerance > 0.0;
        self.plan = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if self.ignored.binary_search(&i).is_ok() {
                    return ColumnHash::Ignored;
                }
                match (tolerant, f.type_oid, f.format) {
                    (false, _, _) => ColumnHash::Exact,
                    (true, FLOAT4_OID | FLOAT8_OID | NUMERIC_OID, 0) => ColumnHash::FloatText,
                    (true, FLOAT4_OID, 1) => ColumnHash::Float4Binary,
                    (true, FLOAT8_OID, 1) => ColumnHash::Float8Binary,
                    (true, NUMERIC_OID, 1) => ColumnHash::NumericBinary,
                    _ => ColumnHash::Exact,
                }
            })
            .collect();
        self.columns = Some(
            fields
                .iter()
                .map(|f| ColumnInfo {
                    type_oid: f.type_oid,
                    format: f.format,
                })
                .collect(),
        );
    }

    pub fn data_row(&mut self, body: &[u8]) {
        let row = match DataRow::parse(body) {
            Ok(r) => r,
            Err(e) => return self.note_malformed(e),
        };
        let index = self.rows;
        self.rows += 1;
        self.row_bytes += body.len() as u64;

        let mut row_hash = ROW_SEED ^ (row.len() as u64);
        for (i, value) in row.columns().enumerate() {
            let value = match value {
                Ok(v) => v,
                Err(e) => return self.note_malformed(e),
            };
            let how = self.column_hash(i);
            if how != ColumnHash::Ignored {
                row_hash = fmix64(
                    row_hash.rotate_left(23) ^ hash_value(value, how, self.opts.float_tolerance),
                );
            }
        }
        let row_hash = fmix64(row_hash);

        self.ordered_digest = mix_ordered(self.ordered_digest, row_hash);
        let mixed = fmix64(row_hash ^ MULTISET_SEED);
        self.multiset.sum = self.multiset.sum.wrapping_add(mixed);
        self.multiset.xor ^= mixed;
        if (index as usize) < self.opts.max_row_hashes {
            self.row_hashes.push(row_hash);
        }
        if self.wants_sample() {
            self.keep_sample(body);
        }
    }

    pub fn command_complete(&mut self, body: &[u8]) {
        match backend::command_complete(body) {
            Ok(tag) => self.tag = Some(bounded_text(tag)),
            Err(e) => self.note_malformed(e),
        }
    }

    pub fn error(&mut self, body: &[u8]) {
        let fields = ErrorFields::new(body);
        self.error = Some(BackendError {
            sqlstate: fields.sqlstate().map(bounded_text).unwrap_or_default(),
            message: fields.message().map(bounded_text).unwrap_or_default(),
        });
    }

    pub fn finish(self) -> ResultSummary {
        ResultSummary {
            columns: self.columns,
            ignored: self.ignored,
            ordered: self.opts.ordered,
            result_sets: self.result_sets,
            rows: self.rows,
            row_bytes: self.row_bytes,
            ordered_digest: self.ordered_digest,
            multiset_digest: self.multiset,
            row_hashes: self.row_hashes,
            samples: self.samples,
            samples_truncated: self.samples_truncated,
            tag: self.tag,
            error: self.error,
            malformed: self.malformed,
        }
    }

    fn column_hash(&self, i: usize) -> ColumnHash {
        match self.plan.get(i) {
            Some(h) => *h,
            // A DataRow without (or wider than) its RowDescription: only
            // positional ignores can apply, and values compare exactly.
            None if self.ignored.binary_search(&i).is_ok() => ColumnHash::Ignored,
            None => ColumnHash::Exact,
        }
    }

    fn wants_sample(&self) -> bool {
        !self.samples_truncated && self.samples.len() < self.opts.max_sample_rows
    }

    /// `max_sample_bytes` bounds the rows' bytes as they arrived.
    fn keep_sample(&mut self, row: &[u8]) {
        if self.samples.bytes.len() + row.len() > self.opts.max_sample_bytes {
            self.samples_truncated = true;
        } else {
            self.samples.push(row);
        }
    }

    fn note_malformed(&mut self, e: impl std::fmt::Display) {
        if self.malformed.is_none() {
            self.malformed = Some(e.to_string());
        }
    }
}

fn bounded_text(bytes: &[u8]) -> String {
    let kept = &bytes[..bytes.len().min(MAX_TEXT_BYTES)];
    // Tags and messages are nearly always valid UTF-8, which this checks
    // faster than lossy decoding walks it.
    let mut s = match std::str::from_utf8(kept) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(kept).into_owned(),
    };
    if bytes.len() > MAX_TEXT_BYTES {
        s.push('…');
    }
    s
}

fn sample_text(value: &[u8], format: i16) -> String {
    let cut = value.len() > MAX_SAMPLE_VALUE_BYTES;
    let mut s = if format == 1 {
        let shown = &value[..value.len().min(MAX_SAMPLE_VALUE_BYTES / 2)];
        let mut s = String::with_capacity(2 + 2 * shown.len() + 3);
        s.push_str("\\x");
        for b in shown {
            s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('?'));
            s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('?'));
        }
        s
    } else {
        let mut s =
            String::from_utf8_lossy(&value[..value.len().min(MAX_SAMPLE_VALUE_BYTES)]).into_owned();
        if cut {
            // Drop a character split by the cut, which lossy decoding shows as U+FFFD.
            while s.ends_with('\u{fffd}') {
                s.pop();
            }
        }
        s
    };
    if cut || (format == 1 && value.len() > MAX_SAMPLE_VALUE_BYTES / 2) {
        s.push('…');
    }
    s
}

fn hex_u64<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:016x}"))
}

// ---- hashing -------------------------------------------------------------

const ROW_SEED: u64 = 0x243f_6a88_85a3_08d3;
const ORDERED_SEED: u64 = 0x1319_8a2e_0370_7344;
const MULTISET_SEED: u64 = 0xa409_3822_299f_31d0;
const RESULT_SET_BOUNDARY: u64 = 0x082e_fa98_ec4e_6c89;
const NULL_HASH: u64 = 0x4528_21e6_38d0_1377;
const BYTES_SEED: u64 = 0xbe54_66cf_34e9_0c6c;
const FLOAT_SEED: u64 = 0xc0ac_29b7_c97c_50dd;
const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;
const K2: u64 = 0x8ebc_6af0_9c88_c6e3;

fn hash_value(value: Option<&[u8]>, how: ColumnHash, tolerance: f64) -> u64 {
    let Some(bytes) = value else {
        return NULL_HASH;
    };
    let number = match how {
        ColumnHash::Ignored | ColumnHash::Exact => None,
        ColumnHash::FloatText => parse_text_number(bytes),
        ColumnHash::Float4Binary => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| f64::from(f32::from_be_bytes(b))),
        ColumnHash::Float8Binary => <[u8; 8]>::try_from(bytes).ok().map(f64::from_be_bytes),
        ColumnHash::NumericBinary => numeric_binary_to_f64(bytes),
    };
    match number.and_then(|x| quantize(x, tolerance)) {
        Some((scale, q)) => folded_mul(FLOAT_SEED ^ (scale as u64), K1 ^ (q as u64)),
        None => hash_bytes(bytes),
    }
}

/// Folded 64x64→128-bit multiply (wyhash's `mum`).
#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn read_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// Hashes a column value's bytes, 16 bytes per step, with the length mixed
/// in first so that zero padding of the tail is unambiguous.
fn hash_bytes(bytes: &[u8]) -> u64 {
    let len = bytes.len() as u64;
    let mut h = BYTES_SEED ^ len.wrapping_mul(K0);
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        let a = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
        let b = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
        h = folded_mul(a ^ K0 ^ h, b ^ K1);
    }
    let tail = chunks.remainder();
    let (a, b) = if tail.len() > 8 {
        (read_u64(&tail[..8]), read_u64(&tail[8..]))
    } else {
        (read_u64(tail), 0)
    };
    folded_mul(a ^ K2 ^ h, b ^ K1 ^ len)
}

#[inline(always)]
fn mix_ordered(h: u64, row_hash: u64) -> u64 {
    fmix64(h.rotate_left(29) ^ row_hash)
}

// ---- float tolerance ---------------------------------------------------------

/// Quantizes `x` so that values within `tolerance` of each other usually get
/// the same key, returning `(scale, step count)`; `None` when the tolerance
/// is off or finer than `x` can resolve (the caller then hashes bytes).
///
/// The grid step is `tolerance` for `|x| < 2` and `tolerance · 2^e` for
/// `2^e <= |x| < 2^(e+1)`: absolute near zero (so `0` and `1e-17` agree),
/// relative for large values (so a sum of a million rows accumulated in a
/// different order still agrees). The step is a power-of-two multiple of the
/// tolerance, so scaling is exact.
///
/// The caveat of any quantization: two values closer than the step can
/// still fall either side of a rounding boundary (or of a power of two) and
/// differ; the chance is about their distance over the step. Values more
/// than one step apart never share a key. All NaNs share a key, as Postgres
/// treats NaN as equal to itself; infinities keep their sign.
pub fn quantize(x: f64, tolerance: f64) -> Option<(i32, i64)> {
    if tolerance.is_nan() || tolerance <= 0.0 {
        return None;
    }
    if x.is_nan() {
        return Some((i32::MAX, 0));
    }
    if x.is_infinite() {
        return Some((i32::MAX, if x > 0.0 { 1 } else { -1 }));
    }
    let a = x.abs();
    let e = if a >= 2.0 {
        ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023
    } else {
        0
    };
    let step = tolerance * f64::powi(2.0, e);
    let q = (x / step).round();
    // Beyond 2^62 steps the tolerance is below what x can resolve.
    if !q.is_finite() || q.abs() >= 4.611_686_018_427_388e18 {
        return None;
    }
    Some((e, q as i64))
}

/// Parses a text float or numeric: `1.5`, `-2e-5`, `NaN`, `Infinity`. A
/// number too large for f64 (numeric allows 10^131072) is not parsed, so it
/// falls back to exact bytes rather than collapsing into infinity.
fn parse_text_number(bytes: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let x: f64 = s.trim().parse().ok()?;
    if x.is_infinite()
        && !s
            .trim()
            .trim_start_matches(['+', '-'])
            .eq_ignore_ascii_case("infinity")
    {
        return None;
    }
    Some(x)
}

/// Decodes numeric's binary form (ndigits, weight, sign, dscale, then base
/// 10000 digits) to the nearest f64, or `None` when it is malformed or out of
/// f64 range.
fn numeric_binary_to_f64(b: &[u8]) -> Option<f64> {
    let be16 = |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])) };
    let ndigits = usize::from(be16(0)?);
    let weight = be16(2)? as i16;
    let sign = be16(4)?;
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xc000 => return Some(f64::NAN),
        0xd000 => return Some(f64::INFINITY),
        0xf000 => return Some(f64::NEG_INFINITY),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    // Horner over the digits, then one scaling, to round only twice.
    let mut mantissa = 0.0f64;
    for i in 0..ndigits {
        mantissa = mantissa * 10_000.0 + f64::from(be16(8 + 2 * i)?);
    }
    let exponent = 4 * (i32::from(weight) + 1 - ndigits as i32);
    let x = mantissa * 10f64.powi(exponent);
    if !x.is_finite() {
        return None;
    }
    Some(if sign == 0x4000 { -x } else { x })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn null_and_empty_string_hash_differently() {
        assert_ne!(
            hash_value(None, ColumnHash::Exact, 0.0),
            hash_value(Some(b""), ColumnHash::Exact, 0.0)
        );
        let a = summarize(&opts(), &[text_col("v", 25)], &[vec![None]]);
        let b = summarize(&opts(), &[text_col("v", 25)], &[vec![Some("")]]);
        assert_ne!(a.multiset_digest, b.multiset_digest);
        assert_ne!(a.ordered_digest, b.ordered_digest);
        assert_eq!(a.sample_rows(), vec![vec![None]]);
        assert_eq!(b.sample_rows(), vec![vec![Some(String::new())]]);
    }

    #[test]
    fn column_boundaries_matter() {
        let cols = [text_col("a", 25), text_col("b", 25)];
        let a = summarize(&opts(), &cols, &[vec![Some("ab"), Some("c")]]);
        let b = summarize(&opts(), &cols, &[vec![Some("a"), Some("bc")]]);
        assert_ne!(a.multiset_digest, b.multiset_digest);
        let c = summarize(&opts(), &cols, &[vec![Some("c"), Some("ab")]]);
        assert_ne!(a.multiset_digest, c.multiset_digest);
    }

    #[test]
    fn hash_bytes_covers_every_length_and_byte() {
        let data: Vec<u8> = (0..64u8).collect();
        let mut seen = std::collections::HashSet::new();
        for len in 0..=64 {
            assert!(seen.insert(hash_bytes(&data[..len])), "length {len}");
        }
        for i in 0..40 {
            let mut d = data[..40].to_vec();
            d[i] ^= 1;
            assert!(seen.insert(hash_bytes(&d)), "byte {i}");
        }
    }

    #[test]
    fn quantize_tolerates_and_separates() {
        let k = |x| quantize(x, 1e-9);
        assert_eq!(k(1.0000000001), k(1.0));
        assert_ne!(k(1.1), k(1.0));
        assert_eq!(k(0.0), k(1e-17));
        assert_eq!(k(-0.0), k(0.0));
        // Relative above 2: summation-order noise on a large sum agrees.
        assert_eq!(k(123_456_789.123_456_7), k(123_456_789.123_456_8));
        assert_ne!(k(123_456_789.0), k(123_456_790.0));
        assert_eq!(k(f64::NAN), k(-f64::NAN));
        assert_ne!(k(f64::INFINITY), k(f64::NEG_INFINITY));
        assert_eq!(quantize(1.0, 0.0), None);
        assert_eq!(quantize(1e300, 1e-30), None);
    }

    #[test]
    fn text_numbers_parse_like_postgres_prints_them() {
        assert_eq!(parse_text_number(b"1.5"), Some(1.5));
        assert_eq!(parse_text_number(b"-2e-05"), Some(-2e-5));
        assert_eq!(parse_text_number(b"Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_text_number(b"-Infinity"), Some(f64::NEG_INFINITY));
        assert!(parse_text_number(b"NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_text_number(b"1e400"), None);
        assert_eq!(parse_text_number(b"abc"), None);
    }

    #[test]
    fn numeric_binary_decodes() {
        // 12345.678 = digits [1, 2345, 6780], weight 1, dscale 3.
        let mut b = vec![0, 3, 0, 1, 0, 0, 0, 3];
        for d in [1u16, 2345, 6780] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        let x = numeric_binary_to_f64(&b).unwrap();
        assert!((x - 12345.678).abs() < 1e-9, "{x}");
        b[4] = 0x40;
        assert!((numeric_binary_to_f64(&b).unwrap() + 12345.678).abs() < 1e-9);
        assert!(numeric_binary_to_f64(&[0, 0, 0, 0, 0xc0, 0, 0, 0])
            .unwrap()
            .is_nan());
        assert_eq!(numeric_binary_to_f64(&[0, 0, 0, 0, 0, 0, 0, 0]), Some(0.0));
        assert_eq!(numeric_binary_to_f64(&[0, 2, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn binary_samples_are_hex_and_long_values_cut() {
        assert_eq!(sample_text(&[0xde, 0xad], 1), "\\xdead");
        let long = "é".repeat(200);
        let s = sample_text(long.as_bytes(), 0);
        assert!(s.ends_with('…') && s.len() <= MAX_SAMPLE_VALUE_BYTES + 3);
        assert!(!s.contains('\u{fffd}'));
    }

    #[test]
    fn ignored_names_resolve_to_positions() {
        let o = DigestOptions {
            ignore: IgnoreColumns::names(["updated_at"]),
            ..opts()
        };
        let mut d = ResultDigest::new(&o);
        d.row_description(&row_description_body(&[
            text_col("id", 23),
            text_col("updated_at", 1184),
        ]));
        assert_eq!(d.ignore_positions(), vec![1]);
        let m = ResultDigest::new(&o.with_positions(&d.ignore_positions()));
        assert_eq!(m.ignore_positions(), vec![1]);
    }

    #[test]
    fn malformed_rows_are_noted_not_panicked_on() {
        let mut d = ResultDigest::new(&opts());
        d.data_row(b"\x00\x02\x00\x00\x00\x09a");
        d.data_row(b"\x00");
        d.row_description(b"\x00\x01");
        let s = d.finish();
        assert!(s.malformed.is_some());
    }

    #[test]
    fn errors_and_tags_are_recorded() {
        let mut d = ResultDigest::new(&opts());
        d.command_complete(b"SELECT 3\0");
        d.error(&error_body("42P01", "relation \"x\" does not exist"));
        let s = d.finish();
        assert_eq!(s.tag.as_deref(), Some("SELECT 3"));
        let e = s.error.unwrap();
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("42P01", "relation \"x\" does not exist")
        );
    }

    #[test]
    fn a_million_rows_stay_within_bounds() {
        let o = opts();
        let mut d = ResultDigest::new(&o);
        d.row_description(&row_description_body(&[
            text_col("id", 23),
            text_col("name", 25),
        ]));
        let mut body = Vec::new();
        for i in 0..1_000_000u32 {
            body.clear();
            let id = i.to_string();
            let name = format!("user-{i:08}-{}", "x".repeat(200));
            data_row_into(&mut body, &[Some(id.as_bytes()), Some(name.as_bytes())]);
            d.data_row(&body);
        }
        d.command_complete(b"SELECT 1000000\0");
        let s = d.finish();
        assert_eq!(s.rows, 1_000_000);
        assert_eq!(s.row_hashes.len(), o.max_row_hashes);
        assert!(s.samples.len() <= o.max_sample_rows);
        let sampled: usize = s
            .sample_rows()
            .iter()
            .flatten()
            .flatten()
            .map(String::len)
            .sum();
        assert!(sampled > 0 && sampled <= o.max_sample_bytes);
        assert!(s.row_hashes.capacity() <= 2 * o.max_row_hashes);
        assert!(!s.all_row_hashes_kept());
    }

    #[test]
    fn sample_bytes_cap_stops_sampling() {
        let o = DigestOptions {
            max_sample_bytes: 1000,
            ..opts()
        };
        let rows: Vec<Vec<Option<String>>> = (0..20).map(|_| vec![Some("y".repeat(300))]).collect();
        let s = summarize(&o, &[text_col("v", 25)], &borrowed(&rows));
        assert!(s.samples_truncated);
        assert!(!s.samples.is_empty() && s.samples.len() < 20);
        assert_eq!(s.row_hashes.len(), 20);
    }
}
