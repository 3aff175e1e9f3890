//! FHIR dates as ranges (search is precision-aware: `2020-03` means all of March 2020) and the
//! comparison prefixes `eq ne lt gt le ge sa eb ap`.
//!
//! The calendar arithmetic is Ward's own (days from the civil date, proleptic Gregorian) over
//! plain `i64` milliseconds: it is total over the whole FHIR range, years 0001 to 9999 with zones
//! from -14:00 to +14:00, including the end of `9999` and the start of `0001` shifted by a zone,
//! which leave the range of date libraries. Every value within the syntax is either a range or
//! `None` (the caller's 4xx); nothing here can overflow or panic.

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// The FHIR year range (the R4 `date` regex excludes year 0000).
const MIN_YEAR: i64 = 1;
const MAX_YEAR: i64 = 9999;
/// The widest zone offset the R4 regex allows (`14:00`), in minutes.
const MAX_OFFSET_MINUTES: i64 = 14 * 60;

/// An inclusive range of milliseconds since the Unix epoch. Open ends (a Period without
/// `start` or `end`) are `i64::MIN` / `i64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateRange {
    pub lo: i64,
    pub hi: i64,
}

impl DateRange {
    pub fn point(ms: i64) -> DateRange {
        DateRange { lo: ms, hi: ms }
    }

    /// The calendar years (UTC) this range touches (open ends clamp to 1..=9999).
    pub fn years(&self) -> (i32, i32) {
        (year_of(self.lo), year_of(self.hi))
    }
}

/// Days from 1970-01-01 to `y-m-d` (H. Hinnant's `days_from_civil`).
#[allow(
    clippy::arithmetic_side_effects,
    reason = "callers pass year 0..=10000, month 1..=12, day 1..=31: every term is below 4 million"
)]
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year (proleptic Gregorian) of day `z` after 1970-01-01 (H. Hinnant's `civil_from_days`).
#[allow(
    clippy::arithmetic_side_effects,
    reason = "callers pass days of years 1..=9999 only (|z| < 3 million)"
)]
fn year_of_day(z: i64) -> i64 {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    if m <= 2 { y + 1 } else { y }
}

fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Milliseconds since the epoch at 00:00 UTC of `y-m-d`, for a valid date of years
/// 1..=10000 (10000-01-01 is the exclusive end of 9999).
fn start_ms(y: i64, m: i64, d: i64) -> Option<i64> {
    let valid = (MIN_YEAR..=MAX_YEAR + 1).contains(&y)
        && (1..=12).contains(&m)
        && (1..=days_in_month(y, m)).contains(&d);
    valid
        .then(|| days_from_civil(y, m, d))
        .and_then(|days| days.checked_mul(DAY_MS))
}

fn year_of(ms: i64) -> i32 {
    let first = start_ms(MIN_YEAR, 1, 1).unwrap_or(i64::MIN);
    let last = start_ms(MAX_YEAR + 1, 1, 1).unwrap_or(i64::MAX);
    let y = if ms < first {
        MIN_YEAR
    } else if ms >= last {
        MAX_YEAR
    } else {
        year_of_day(ms.div_euclid(DAY_MS))
    };
    i32::try_from(y.clamp(MIN_YEAR, MAX_YEAR)).unwrap_or(1)
}

/// Comparison prefix of a date, number or quantity search value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    /// Splits a leading two-letter prefix off `s` (default `eq`).
    pub fn split(s: &str) -> (Prefix, &str) {
        let p = match s.get(..2) {
            Some("eq") => Prefix::Eq,
            Some("ne") => Prefix::Ne,
            Some("lt") => Prefix::Lt,
            Some("gt") => Prefix::Gt,
            Some("le") => Prefix::Le,
            Some("ge") => Prefix::Ge,
            Some("sa") => Prefix::Sa,
            Some("eb") => Prefix::Eb,
            Some("ap") => Prefix::Ap,
            _ => return (Prefix::Eq, s),
        };
        (p, s.get(2..).unwrap_or_default())
    }
}

/// Whether a value covering `v` satisfies `prefix q` (the interpretation most servers use):
/// - `eq`: `v` lies within `q`; `ne`: it does not;
/// - `lt`/`gt`: `v` starts before / ends after `q`; `le`/`ge`: `v` starts at or before the end of
///   `q` / ends at or after its start;
/// - `sa`/`eb`: `v` starts after `q` ends / ends before `q` starts;
/// - `ap`: `v` overlaps `q` widened by [`widen`].
pub fn range_matches(prefix: Prefix, q: DateRange, v: DateRange) -> bool {
    match prefix {
        Prefix::Eq => v.lo >= q.lo && v.hi <= q.hi,
        Prefix::Ne => !(v.lo >= q.lo && v.hi <= q.hi),
        Prefix::Lt => v.lo < q.lo,
        Prefix::Gt => v.hi > q.hi,
        Prefix::Le => v.lo <= q.hi,
        Prefix::Ge => v.hi >= q.lo,
        Prefix::Sa => v.lo > q.hi,
        Prefix::Eb => v.hi < q.lo,
        Prefix::Ap => {
            let w = widen(q);
            v.lo <= w.hi && v.hi >= w.lo
        }
    }
}

/// Milliseconds since the epoch now (0 if the clock is before it).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `ap` range: `q` widened on both sides by 10% of the distance between its middle and
/// now, at least one day (saturating at the ends of `i64`).
pub fn widen(q: DateRange) -> DateRange {
    let mid = (q.lo / 2).saturating_add(q.hi / 2);
    let margin = (now_ms().saturating_sub(mid).saturating_abs() / 10).max(DAY_MS);
    DateRange {
        lo: q.lo.saturating_sub(margin),
        hi: q.hi.saturating_add(margin),
    }
}

/// Parses a FHIR date, dateTime or instant (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`,
/// `YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm]`) into the range it denotes. A time without a zone is
/// taken as UTC. `None` for anything else, including impossible dates (`2020-02-30`) and years
/// outside 0001..9999.
pub fn parse_range(s: &str) -> Option<DateRange> {
    let s = s.trim();
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut it = date_part.split('-');
    let year = i64::from(digits(it.next()?, 4)?);
    let mut part = || -> Option<Option<i64>> {
        match it.next() {
            Some(p) => digits(p, 2).map(|v| Some(i64::from(v))),
            None => Some(None),
        }
    };
    let month = part()?;
    let day = part()?;
    if part()?.is_some() || !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return None;
    }
    let next_year = year.checked_add(1)?;
    let Some(time_part) = time_part else {
        // A date: from its first millisecond to the one before the next year, month or day.
        let (lo, end) = match (month, day) {
            (None, None) => (start_ms(year, 1, 1)?, start_ms(next_year, 1, 1)?),
            (Some(12), None) => (start_ms(year, 12, 1)?, start_ms(next_year, 1, 1)?),
            (Some(m), None) => (start_ms(year, m, 1)?, start_ms(year, m.checked_add(1)?, 1)?),
            (Some(m), Some(d)) => {
                let lo = start_ms(year, m, d)?;
                (lo, lo.checked_add(DAY_MS)?)
            }
            (None, Some(_)) => return None,
        };
        return Some(DateRange {
            lo,
            hi: end.checked_sub(1)?,
        });
    };
    let (Some(m), Some(d)) = (month, day) else {
        return None;
    };
    let day_start = start_ms(year, m, d)?;
    let (clock, offset_minutes) = split_zone(time_part)?;
    let mut parts = clock.split(':');
    let h = i64::from(digits(parts.next()?, 2)?);
    let mi = i64::from(digits(parts.next()?, 2)?);
    let sec = parts.next();
    if parts.next().is_some() || h > 23 || mi > 59 {
        return None;
    }
    let (sec_ms, width) = match sec {
        None => (0, 60_000),
        Some(sec) => seconds(sec)?,
    };
    let lo = day_start.checked_add(clock_ms(h, mi, sec_ms, offset_minutes))?;
    Some(DateRange {
        lo,
        hi: lo.checked_add(width)?.checked_sub(1)?,
    })
}

/// The milliseconds a clock reading adds to its day's UTC start.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "h <= 23, mi <= 59, sec_ms <= 60_999, |offset| <= 840 (checked by the caller): |result| < 2 * 10^8"
)]
fn clock_ms(h: i64, mi: i64, sec_ms: i64, offset_minutes: i64) -> i64 {
    (h * 60 + mi - offset_minutes) * 60_000 + sec_ms
}

/// Splits `hh:mm[:ss[.f]]` from its zone (`Z`, `±hh:mm` up to 14:00, or none: UTC), in minutes
/// east of UTC.
fn split_zone(t: &str) -> Option<(&str, i64)> {
    if let Some(c) = t.strip_suffix('Z') {
        return Some((c, 0));
    }
    let Some(pos) = t.rfind(['+', '-']) else {
        return Some((t, 0));
    };
    let (clock, zone) = t.split_at_checked(pos)?;
    let (h, mi) = zone.get(1..)?.split_once(':')?;
    let (h, mi) = (i64::from(digits(h, 2)?), i64::from(digits(mi, 2)?));
    let minutes = h.checked_mul(60)?.checked_add(mi)?;
    if mi > 59 || minutes > MAX_OFFSET_MINUTES {
        return None;
    }
    let signed = if zone.starts_with('-') {
        0i64.checked_sub(minutes)?
    } else {
        minutes
    };
    Some((clock, signed))
}

/// `ss[.f+]` as (milliseconds, width of the precision in milliseconds). Digits past the
/// millisecond are accepted and dropped. `60` (a leap second) is accepted.
fn seconds(s: &str) -> Option<(i64, i64)> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let whole = i64::from(digits(whole, 2)?);
    if whole > 60 {
        return None;
    }
    let whole_ms = whole.checked_mul(1000)?;
    let Some(frac) = frac else {
        return Some((whole_ms, 1000));
    };
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The first three digits, right-padded with zeros: `5` → 500 ms.
    let millis: String = frac.chars().chain("00".chars()).take(3).collect();
    let width = match frac.len() {
        1 => 100,
        2 => 10,
        _ => 1,
    };
    Some((whole_ms.checked_add(millis.parse::<i64>().ok()?)?, width))
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The year of an ISO date or dateTime (`YYYY...`).
pub fn year(s: &str) -> Option<i32> {
    s.get(..4)
        .and_then(|y| digits(y, 4))
        .and_then(|y| i32::try_from(y).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{Date, Month, OffsetDateTime};

    fn ms(s: &str) -> i64 {
        let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
    }

    /// 10000-01-01T00:00:00Z, the exclusive end of the FHIR range (past the `time` crate's).
    const END_OF_9999: i64 = 253_402_300_800_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn precision_ranges() {
        let r = parse_range("2020").unwrap();
        assert_eq!(r.lo, ms("2020-01-01T00:00:00Z"));
        assert_eq!(r.hi, ms("2021-01-01T00:00:00Z") - 1);
        let r = parse_range("2020-02").unwrap();
        assert_eq!(r.hi, ms("2020-03-01T00:00:00Z") - 1);
        let r = parse_range("2020-12").unwrap();
        assert_eq!(r.hi, ms("2021-01-01T00:00:00Z") - 1);
        let r = parse_range("2020-02-29").unwrap();
        assert_eq!(r.lo, ms("2020-02-29T00:00:00Z"));
        assert_eq!(r.hi, ms("2020-03-01T00:00:00Z") - 1);
        let r = parse_range("2020-02-29T10:00:00+02:00").unwrap();
        assert_eq!(r.lo, ms("2020-02-29T08:00:00Z"));
        assert_eq!(r.hi, r.lo + 999);
        let r = parse_range("2020-02-29T10:00:00.5Z").unwrap();
        assert_eq!(r.lo, ms("2020-02-29T10:00:00.5Z"));
        assert_eq!(r.hi, r.lo + 99);
        let r = parse_range("2020-02-29T10:00:00.123456Z").unwrap();
        assert_eq!(r.lo, ms("2020-02-29T10:00:00.123Z"));
        assert_eq!(r.hi, r.lo);
        let r = parse_range("2020-02-29T10:00").unwrap();
        assert_eq!(r.hi, r.lo + 59_999);
        for bad in [
            "20",
            "2020-13",
            "2020-02-30",
            "2020-1",
            "x",
            "2020-01-01T25:00Z",
            "2020-01-01Tx",
        ] {
            assert!(parse_range(bad).is_none(), "{bad}");
        }
    }

    /// Issue 15: values at both ends of the FHIR range (years 0001..9999, zones -12:00..+14:00)
    /// are ranges, never a panic; values just outside are refused.
    #[test]
    fn extremes_of_the_fhir_range() {
        let first = ms("0001-01-01T00:00:00Z");
        let cases: &[(&str, Option<(i64, i64)>)] = &[
            ("9999", Some((ms("9999-01-01T00:00:00Z"), END_OF_9999 - 1))),
            ("9999-12", Some((ms("9999-12-01T00:00:00Z"), END_OF_9999 - 1))),
            ("9999-12-31", Some((END_OF_9999 - 24 * HOUR, END_OF_9999 - 1))),
            (
                "9999-12-31T23:59:59Z",
                Some((END_OF_9999 - 1000, END_OF_9999 - 1)),
            ),
            (
                "9999-12-31T23:59:59.999Z",
                Some((END_OF_9999 - 1, END_OF_9999 - 1)),
            ),
            ("9999-12-31T23:59:60Z", Some((END_OF_9999, END_OF_9999 + 999))),
            (
                "9999-12-31T23:59:59.999-12:00",
                Some((END_OF_9999 + 12 * HOUR - 1, END_OF_9999 + 12 * HOUR - 1)),
            ),
            (
                "9999-12-31T23:59:59-14:00",
                Some((END_OF_9999 + 14 * HOUR - 1000, END_OF_9999 + 14 * HOUR - 1)),
            ),
            ("9999-12-31T23:59", Some((END_OF_9999 - 60_000, END_OF_9999 - 1))),
            ("0001", Some((first, ms("0002-01-01T00:00:00Z") - 1))),
            ("0001-01", Some((first, ms("0001-02-01T00:00:00Z") - 1))),
            ("0001-01-01", Some((first, first + 24 * HOUR - 1))),
            (
                "0001-01-01T00:00:00+14:00",
                Some((first - 14 * HOUR, first - 14 * HOUR + 999)),
            ),
            (
                "0001-01-01T00:00:00.000+12:00",
                Some((first - 12 * HOUR, first - 12 * HOUR)),
            ),
            (
                "0001-01-01T00:00:00-12:00",
                Some((first + 12 * HOUR, first + 12 * HOUR + 999)),
            ),
            (
                "2000-02-29",
                Some((ms("2000-02-29T00:00:00Z"), ms("2000-03-01T00:00:00Z") - 1)),
            ),
            ("0000", None),
            ("0000-12-31", None),
            ("10000", None),
            ("10000-01-01", None),
            ("-001", None),
            ("9999-13", None),
            ("9999-00", None),
            ("9999-12-32", None),
            ("9999-12-00", None),
            ("1900-02-29", None),
            ("2021-02-29", None),
            ("9999-12-31T24:00:00Z", None),
            ("9999-12-31T23:60:00Z", None),
            ("9999-12-31T23:59:61Z", None),
            ("9999-12-31T23:59:59+14:01", None),
            ("9999-12-31T23:59:59-15:00", None),
            ("9999-12-31T23:59:59+05:60", None),
            ("9999-12-31T23:59:59+99:99", None),
            ("9999-12-31T23:59:59.Z", None),
            ("9999-12-31T23:59:59+", None),
            ("9999T10:00:00Z", None),
            ("9999-12T10:00:00Z", None),
            ("9999-12-31T", None),
            ("", None),
        ];
        for (s, want) in cases {
            let got = parse_range(s).map(|r| (r.lo, r.hi));
            assert_eq!(got, *want, "{s}");
        }
        // Years are clamped to the FHIR range, whatever the zone.
        let late = parse_range("9999-12-31T23:59:59-12:00").unwrap();
        assert_eq!(late.years(), (9999, 9999));
        let early = parse_range("0001-01-01T00:00:00+14:00").unwrap();
        assert_eq!(early.years(), (1, 1));
        let open = DateRange {
            lo: i64::MIN,
            hi: i64::MAX,
        };
        assert_eq!(open.years(), (1, 9999));
        // Every prefix over the extremes and open ends.
        let prefixes = [
            Prefix::Eq,
            Prefix::Ne,
            Prefix::Lt,
            Prefix::Gt,
            Prefix::Le,
            Prefix::Ge,
            Prefix::Sa,
            Prefix::Eb,
            Prefix::Ap,
        ];
        for q in [late, early, open] {
            for v in [late, early, open] {
                for p in prefixes {
                    range_matches(p, q, v);
                }
            }
            let w = widen(q);
            assert!(w.lo <= q.lo && w.hi >= q.hi);
        }
    }

    /// Every day boundary of every year 0001..9999 against the `time` crate (which covers the
    /// range up to the last day of 9999), at the zone extremes: ranges are contiguous and never
    /// panic. (Exhaustive over the FHIR range instead of a sampled property test.)
    #[test]
    fn every_year_month_and_zone_is_total() {
        let mut previous_end: Option<i64> = None;
        for y in 1..=9999i32 {
            let year = parse_range(&format!("{y:04}")).unwrap();
            if let Some(end) = previous_end {
                assert_eq!(year.lo, end + 1, "{y}");
            }
            previous_end = Some(year.hi);
            assert_eq!(year.years(), (y, y));
            for m in 1..=12u8 {
                let month = Month::try_from(m).unwrap();
                let first = Date::from_calendar_date(y, month, 1).unwrap();
                let oracle = first.midnight().assume_utc().unix_timestamp() * 1000;
                let r = parse_range(&format!("{y:04}-{m:02}")).unwrap();
                assert_eq!(r.lo, oracle, "{y}-{m}");
                let last = time::util::days_in_month(month, y);
                let d = parse_range(&format!("{y:04}-{m:02}-{last:02}")).unwrap();
                assert_eq!(d.hi, r.hi, "{y}-{m}-{last}");
                assert!(parse_range(&format!("{y:04}-{m:02}-{:02}", last + 1)).is_none());
                // Zones move a value across a year boundary only in January and December.
                let zones: &[&str] = if m == 1 || m == 12 {
                    &["+14:00", "-12:00", "-14:00", "Z"]
                } else {
                    &["+14:00", "-14:00"]
                };
                for zone in zones {
                    for day in [1, last] {
                        let s = format!("{y:04}-{m:02}-{day:02}T23:59:59.999{zone}");
                        let r = parse_range(&s).unwrap();
                        assert_eq!(r.lo, r.hi, "{s}");
                        let s = format!("{y:04}-{m:02}-{day:02}T00:00:00{zone}");
                        let r = parse_range(&s).unwrap();
                        range_matches(Prefix::Ap, r, r);
                        let (ylo, yhi) = r.years();
                        assert!((1..=9999).contains(&ylo) && ylo <= yhi && yhi <= 9999, "{s}");
                    }
                }
            }
        }
        assert_eq!(previous_end, Some(END_OF_9999 - 1));
    }

    #[test]
    fn prefixes() {
        let day = parse_range("2020-05-05").unwrap();
        let month = parse_range("2020-05").unwrap();
        assert!(range_matches(Prefix::Eq, month, day));
        assert!(!range_matches(Prefix::Eq, day, month));
        assert!(range_matches(Prefix::Ne, day, month));
        assert!(range_matches(Prefix::Ge, month, day));
        assert!(range_matches(Prefix::Le, month, day));
        assert!(!range_matches(Prefix::Gt, month, day));
        assert!(!range_matches(Prefix::Lt, month, day));
        let june = parse_range("2020-06-10").unwrap();
        assert!(range_matches(Prefix::Gt, month, june));
        assert!(range_matches(Prefix::Sa, month, june));
        assert!(range_matches(Prefix::Eb, june, day));
        assert!(range_matches(
            Prefix::Ap,
            june,
            parse_range("2020-06-11").unwrap()
        ));
        assert_eq!(Prefix::split("ge2020"), (Prefix::Ge, "2020"));
        assert_eq!(Prefix::split("2020"), (Prefix::Eq, "2020"));
        assert_eq!(Prefix::split("ge"), (Prefix::Ge, ""));
        assert_eq!(Prefix::split("é"), (Prefix::Eq, "é"));
        assert_eq!(year("1937-04-19"), Some(1937));
    }
}
