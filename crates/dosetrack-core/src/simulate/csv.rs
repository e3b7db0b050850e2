//! The CSV table of `dosetrack simulate`, written without `format!` per
//! field: a day at 1-s steps is 86,400 rows, and formatting them through
//! `core::fmt` (exact decimal expansion of every float, chrono for every
//! time) took most of the command's time. The output is byte for byte what
//! the `format!` version gave (`{:.4}`, [`format_rfc3339`], the trimmed
//! minutes); the tests compare the two.
//!
//! * Floats with 4 decimals ([`push_fixed4`]): `x · 10⁴` rounded to an
//!   integer, written with its sign; when that product lies within its own
//!   rounding error of a rounding boundary (or the value is large, not
//!   finite), the exact `{:.4}` decides instead.
//! * Times ([`Rfc3339Writer`]): the civil date of the day number (Howard
//!   Hinnant's `civil_from_days`, once per day written), for years
//!   1970–9999; other times go through [`format_rfc3339`].
//! * Rows ([`RowWriter`]): the four fields of a row are written in place
//!   (at the end of the output chunk, or into one small array), digits two
//!   at a time from a table; a row any of whose fields needs the exact path
//!   is written field by field through the functions above.

use crate::pk::Sample;
use crate::vocab::{format_rfc3339, TimeMs};

/// Largest |x| written by the fast path: `|x| · 10⁴` stays below 1e15
/// (< 2⁵³), where the product is off the exact value by at most half an
/// ulp of 1e15, 0.0625; subtracting its floor is exact.
const FAST_LIMIT: f64 = 1e11;

/// Three times the relative error of one product (2⁻⁵³): the scaled
/// value's distance to a rounding boundary must exceed `scaled ·
/// HALF_MARGIN` for the fast path to decide.
const HALF_MARGIN: f64 = 1.5 * f64::EPSILON;

/// `"00"`, `"01"`, … `"99"`: digits are written two at a time.
const PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// The longest row the fast path writes: a time with milliseconds (24
/// bytes), three numbers below [`FAST_LIMIT`] with a sign and four decimals
/// (17 each), three commas and the newline (79), with room to spare.
pub(crate) const ROW_MAX: usize = 96;

/// A row (or a field) being written.
pub(crate) type Row = [u8; ROW_MAX];

/// `|x| · 10⁴` rounded to an integer, when the fast path can tell (see the
/// module docs); `None` when only the exact `{:.4}` can.
#[inline(always)]
fn units4(x: f64) -> Option<u64> {
    let a = x.abs();
    if a.is_nan() || a >= FAST_LIMIT {
        return None;
    }
    let scaled = a * 10_000.0;
    // Truncation is the floor here (non-negative); `scaled` < 1e15 < 2⁵³,
    // so both conversions and the subtraction are exact (through i64: one
    // instruction each way on x86-64, where u64 takes several).
    let whole = scaled as i64;
    let frac = scaled - whole as f64;
    // The product is within scaled · 2⁻⁵³ of the exact x · 10⁴; closer
    // than that to a half, only the exact expansion can tell the side.
    if (frac - 0.5).abs() <= scaled * HALF_MARGIN + f64::MIN_POSITIVE {
        return None;
    }
    Some(whole.unsigned_abs() + u64::from(frac > 0.5))
}

/// The four decimal digits of `n` < 10⁴ (leading zeros kept) as ASCII,
/// the first digit in the lowest byte.
#[inline(always)]
fn digits4(n: u32) -> u32 {
    let (hi, lo) = (PAIRS[(n / 100) as usize], PAIRS[(n % 100) as usize]);
    u32::from_le_bytes([hi[0], hi[1], lo[0], lo[1]])
}

/// Write `n` in decimal at `row[at..]`; returns the end. `n` < 10¹¹ (the
/// integer part of a value below [`FAST_LIMIT`]): at most 11 digits. Below
/// 10⁴ (nearly every value) without a branch on the number of digits: four
/// digits shifted past the leading zeros, four bytes written, the end
/// moved by the length (what lies past it is overwritten next).
#[inline(always)]
fn put_uint(row: &mut Row, at: usize, n: u64) -> usize {
    if n < 10_000 {
        let len = 1 + usize::from(n >= 10) + usize::from(n >= 100) + usize::from(n >= 1000);
        let digits = digits4(n as u32) >> (8 * (4 - len));
        row[at..at + 4].copy_from_slice(&digits.to_le_bytes());
        return at + len;
    }
    let mut len = 1;
    let mut m = n;
    while m >= 10 {
        m /= 10;
        len += 1;
    }
    let end = at + len;
    let mut i = end;
    let mut n = n;
    while n >= 100 {
        let p = PAIRS[(n % 100) as usize];
        i -= 2;
        row[i] = p[0];
        row[i + 1] = p[1];
        n /= 100;
    }
    if n >= 10 {
        let p = PAIRS[n as usize];
        row[i - 2] = p[0];
        row[i - 1] = p[1];
    } else {
        row[i - 1] = b'0' + n as u8;
    }
    end
}

/// Write the sign (if negative) and the integer part of `units / 10⁴`.
#[inline(always)]
fn put_sign_and_integer(row: &mut Row, at: usize, negative: bool, units: u64) -> usize {
    row[at] = b'-';
    put_uint(row, at + usize::from(negative), units / 10_000)
}

/// Write `x` as `format!("{x:.4}")` would, at `row[at..]`; returns the
/// end, or `None` (nothing meaningful written) when the fast path cannot
/// tell.
#[inline(always)]
fn put_fixed4(row: &mut Row, at: usize, x: f64) -> Option<usize> {
    let units = units4(x)?;
    let at = put_sign_and_integer(row, at, x.is_sign_negative(), units);
    row[at] = b'.';
    let d = digits4((units % 10_000) as u32);
    row[at + 1..at + 5].copy_from_slice(&d.to_le_bytes());
    Some(at + 5)
}

/// [`put_fixed4`] with trailing zeros (and a trailing point) removed.
#[inline(always)]
fn put_trimmed4(row: &mut Row, at: usize, x: f64) -> Option<usize> {
    let units = units4(x)?;
    let at = put_sign_and_integer(row, at, x.is_sign_negative(), units);
    let d = (units % 10_000) as u32;
    row[at] = b'.';
    row[at + 1..at + 5].copy_from_slice(&digits4(d).to_le_bytes());
    // The point and 4 digits less the trailing zeros; nothing when all are.
    let zeros = usize::from(d.is_multiple_of(10))
        + usize::from(d.is_multiple_of(100))
        + usize::from(d.is_multiple_of(1000));
    let len = if d == 0 { 0 } else { 5 - zeros };
    Some(at + len)
}

/// Append `x` as `format!("{x:.4}")` would.
pub(crate) fn push_fixed4(out: &mut Vec<u8>, x: f64) {
    let mut row = [0u8; ROW_MAX];
    match put_fixed4(&mut row, 0, x) {
        Some(end) => out.extend_from_slice(&row[..end]),
        None => out.extend_from_slice(format!("{x:.4}").as_bytes()),
    }
}

/// Append `x` with at most 4 decimals, trailing zeros (and a trailing
/// point) removed: `1.5000` → `1.5`, `2.0000` → `2`.
pub(crate) fn push_trimmed4(out: &mut Vec<u8>, x: f64) {
    let mut row = [0u8; ROW_MAX];
    if let Some(end) = put_trimmed4(&mut row, 0, x) {
        out.extend_from_slice(&row[..end]);
        return;
    }
    let start = out.len();
    out.extend_from_slice(format!("{x:.4}").as_bytes());
    if out[start..].contains(&b'.') {
        while out.last() == Some(&b'0') {
            out.pop();
        }
        if out.last() == Some(&b'.') {
            out.pop();
        }
    }
}

/// Two decimal digits (`n` < 100).
fn two(n: i64) -> [u8; 2] {
    PAIRS[n as usize]
}

/// 1970-01-01 … 9999-12-31T23:59:59.999Z in Unix ms.
const FAST_TIMES: std::ops::Range<TimeMs> = 0..253_402_300_800_000;

/// Append `t` as [`format_rfc3339`] would.
#[cfg(test)]
pub(crate) fn push_rfc3339(out: &mut Vec<u8>, t: TimeMs) {
    Rfc3339Writer::new().push(out, t);
}

/// Writes times as [`format_rfc3339`] would, keeping the date of the last
/// day written (a table's rows share it).
pub(crate) struct Rfc3339Writer {
    day: i64,
    /// `YYYY-MM-DDT` of `day`.
    date: [u8; 11],
}

impl Rfc3339Writer {
    pub(crate) fn new() -> Self {
        Rfc3339Writer {
            day: i64::MIN,
            date: [0; 11],
        }
    }

    /// Append `t`.
    pub(crate) fn push(&mut self, out: &mut Vec<u8>, t: TimeMs) {
        let mut row = [0u8; ROW_MAX];
        match self.put(&mut row, 0, t) {
            Some(end) => out.extend_from_slice(&row[..end]),
            None => out.extend_from_slice(format_rfc3339(t).as_bytes()),
        }
    }

    /// Write `t` at `row[at..]`; returns the end, or `None` for a time
    /// outside 1970–9999 (then [`format_rfc3339`] writes it).
    #[inline]
    fn put(&mut self, row: &mut Row, at: usize, t: TimeMs) -> Option<usize> {
        if !FAST_TIMES.contains(&t) {
            return None;
        }
        let day = t.div_euclid(86_400_000);
        if day != self.day {
            let (y, m, d) = civil_from_days(day);
            // In range: y 1970..=9999.
            let (y1, y2) = (two(y / 100), two(y % 100));
            let (mo, da) = (two(m), two(d));
            self.date = [
                y1[0], y1[1], y2[0], y2[1], b'-', mo[0], mo[1], b'-', da[0], da[1], b'T',
            ];
            self.day = day;
        }
        let ms_of_day = t.rem_euclid(86_400_000);
        let secs = ms_of_day / 1000;
        let ms = ms_of_day % 1000;
        let (hh, mi, ss) = (two(secs / 3600), two(secs / 60 % 60), two(secs % 60));
        row[at..at + 11].copy_from_slice(&self.date);
        row[at + 11..at + 19]
            .copy_from_slice(&[hh[0], hh[1], b':', mi[0], mi[1], b':', ss[0], ss[1]]);
        let mut end = at + 19;
        if ms != 0 {
            let (a, b) = (ms / 100, PAIRS[(ms % 100) as usize]);
            row[end..end + 4].copy_from_slice(&[b'.', b'0' + a as u8, b[0], b[1]]);
            end += 4;
        }
        row[end] = b'Z';
        Some(end + 1)
    }
}

/// Writes the rows of the CSV table: `time,t_min,cp_ng_per_ml,ce_ng_per_ml`.
pub(crate) struct RowWriter {
    times: Rfc3339Writer,
    /// `t_min` counts from here.
    from_ms: TimeMs,
}

impl RowWriter {
    pub(crate) fn new(from_ms: TimeMs) -> Self {
        RowWriter {
            times: Rfc3339Writer::new(),
            from_ms,
        }
    }

    /// Append the row of `s`, newline included.
    pub(crate) fn push(&mut self, out: &mut Vec<u8>, s: &Sample) {
        let t_min = (s.t_ms - self.from_ms) as f64 / 60_000.0;
        let mut row = [0; ROW_MAX];
        if let Some(end) = self.fast_row(&mut row, s, t_min) {
            out.extend_from_slice(&row[..end]);
            return;
        }
        self.times.push(out, s.t_ms);
        out.push(b',');
        push_trimmed4(out, t_min);
        out.push(b',');
        push_fixed4(out, s.cp_ng_per_ml);
        out.push(b',');
        push_fixed4(out, s.ce_ng_per_ml);
        out.push(b'\n');
    }

    /// Write the row of `s` (newline included) at the start of `row`;
    /// returns its length, or `None` if a field needs the exact path (then
    /// [`Self::push`] writes it).
    #[inline]
    pub(crate) fn put(&mut self, row: &mut Row, s: &Sample) -> Option<usize> {
        let t_min = (s.t_ms - self.from_ms) as f64 / 60_000.0;
        self.fast_row(row, s, t_min)
    }

    #[inline(always)]
    fn fast_row(&mut self, row: &mut Row, s: &Sample, t_min: f64) -> Option<usize> {
        let mut at = self.times.put(row, 0, s.t_ms)?;
        row[at] = b',';
        at = put_trimmed4(row, at + 1, t_min)?;
        row[at] = b',';
        at = put_fixed4(row, at + 1, s.cp_ng_per_ml)?;
        row[at] = b',';
        at = put_fixed4(row, at + 1, s.ce_ng_per_ml)?;
        row[at] = b'\n';
        Some(at + 1)
    }
}

/// The proleptic Gregorian (year, month, day) of a day number (days since
/// 1970-01-01); Howard Hinnant, "chrono-Compatible Low-Level Date
/// Algorithms".
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_fixed4(x: f64) -> String {
        format!("{x:.4}")
    }

    fn old_trimmed4(x: f64) -> String {
        let s = format!("{x:.4}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    }

    fn fixed4(x: f64) -> String {
        let mut s = Vec::new();
        push_fixed4(&mut s, x);
        String::from_utf8(s).unwrap()
    }

    fn trimmed4(x: f64) -> String {
        let mut s = Vec::new();
        push_trimmed4(&mut s, x);
        String::from_utf8(s).unwrap()
    }

    fn rfc3339(t: TimeMs) -> String {
        let mut s = Vec::new();
        push_rfc3339(&mut s, t);
        String::from_utf8(s).unwrap()
    }

    use crate::test_rng::Rng;

    #[test]
    fn fixed4_matches_format_on_chosen_values() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.00005,
            0.00015,
            0.00025,
            0.49995,
            0.5,
            1.23445,
            1.23455,
            9.99995,
            99_999.999_95,
            0.03125,
            -0.03125,
            -1e-12,
            1e-300,
            4535.1474,
            4_414.432_449_999,
            1e10 + 0.5,
            99_999_999_999.0,
            1e11,
            1e11 + 1.0,
            -2.5e15,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for x in values {
            assert_eq!(fixed4(x), old_fixed4(x), "{x:e}");
            assert_eq!(trimmed4(x), old_trimmed4(x), "{x:e}");
        }
    }

    #[test]
    fn fixed4_matches_format_on_a_million_values() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..1_000_000u32 {
            // Every magnitude from 1e-8 to 1e12, and values on or near a
            // decimal boundary (k/20000 ± a few ulps).
            let x = match i % 3 {
                0 => 10f64.powf(rng.unit() * 20.0 - 8.0),
                1 => {
                    let k = (rng.next() % 2_000_000_000) as f64;
                    let b = k / 20_000.0;
                    let ulps = (rng.next() % 7) as i64 - 3;
                    f64::from_bits((b.to_bits() as i64 + ulps) as u64)
                }
                _ => rng.unit() * 1000.0,
            };
            let x = if rng.next().is_multiple_of(4) { -x } else { x };
            assert_eq!(fixed4(x), old_fixed4(x), "{x:e}");
            assert_eq!(trimmed4(x), old_trimmed4(x), "{x:e}");
        }
    }

    /// A row as the `format!` version wrote it.
    fn old_row(from_ms: TimeMs, s: &Sample) -> String {
        let t_min = (s.t_ms - from_ms) as f64 / 60_000.0;
        format!(
            "{},{},{:.4},{:.4}\n",
            format_rfc3339(s.t_ms),
            old_trimmed4(t_min),
            s.cp_ng_per_ml,
            s.ce_ng_per_ml
        )
    }

    #[test]
    fn rows_match_format_fast_and_exact_paths() {
        let mut rng = Rng(0x5851_f42d_4c95_7f2d);
        let odd = [
            f64::NAN,
            f64::INFINITY,
            -0.0,
            1e11,
            -2.5e15,
            0.00005,
            1.23455,
            f64::MAX,
        ];
        let from_ms = 1_795_737_600_000;
        let mut w = RowWriter::new(from_ms);
        let mut t = from_ms - 86_400_000;
        for i in 0..300_000u32 {
            t += (rng.next() % 5_000) as i64;
            // Now and then a time the fast path does not write.
            let t_ms = match i % 10_007 {
                0 => -62_135_596_800_000,
                1 => 253_402_300_800_000 + 1_000,
                _ => t,
            };
            let mut value = |j: u32| match (i + j) % 997 {
                0..=7 => odd[((i + j) % 997) as usize],
                _ => 10f64.powf(rng.unit() * 14.0 - 6.0),
            };
            let s = Sample {
                t_ms,
                cp_ng_per_ml: value(0),
                ce_ng_per_ml: value(500),
            };
            let mut out = Vec::new();
            w.push(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                old_row(from_ms, &s),
                "{s:?}"
            );
        }
    }

    #[test]
    fn rfc3339_matches_format_rfc3339() {
        let chosen = [
            0,
            1,
            999,
            1000,
            86_399_999,
            86_400_000,
            -1,
            -86_400_000,
            951_782_400_000,     // 2000-02-29
            4_107_542_400_000,   // 2100-03-01
            1_795_737_600_000,   // 2026-11-27
            1_795_737_600_250,   // .250
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000,
            -62_135_596_800_000,
            i64::MIN,
            i64::MAX,
        ];
        for t in chosen {
            assert_eq!(rfc3339(t), format_rfc3339(t), "{t}");
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..200_000 {
            let t = (rng.next() % 260_000_000_000_000) as i64 - 3_000_000_000_000;
            let t = if rng.next().is_multiple_of(2) {
                t - t % 1000
            } else {
                t
            };
            assert_eq!(rfc3339(t), format_rfc3339(t), "{t}");
        }
        // One writer over a rising sequence (the cached date), across
        // midnights and with odd steps.
        let mut w = Rfc3339Writer::new();
        let mut t = 1_795_737_600_000 - 3_600_000;
        while t < 1_795_737_600_000 + 3 * 86_400_000 {
            let mut s = Vec::new();
            w.push(&mut s, t);
            assert_eq!(String::from_utf8(s).unwrap(), format_rfc3339(t), "{t}");
            t += 977_777;
        }
        // Every day of 400 years (a whole Gregorian cycle), at midnight.
        for day in 0..146_097i64 {
            let t = day * 86_400_000;
            assert_eq!(rfc3339(t), format_rfc3339(t), "{t}");
        }
    }
}
