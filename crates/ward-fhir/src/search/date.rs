//! FHIR dates as ranges (search is precision-aware: `2020-03` means all of March 2020) and the
//! comparison prefixes `eq ne lt gt le ge sa eb ap`.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

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

    /// The calendar years this range touches (open ends clamp to 1..=9999).
    pub fn years(&self) -> (i32, i32) {
        (year_of(self.lo), year_of(self.hi))
    }
}

fn year_of(ms: i64) -> i32 {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| t.year())
        .unwrap_or(if ms < 0 { 1 } else { 9999 })
        .clamp(1, 9999)
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
        (p, &s[2..])
    }
}

/// Whether a value covering `v` satisfies `prefix q` (the interpretation most servers use):
/// - `eq`: `v` lies within `q`; `ne`: it does not;
/// - `lt`/`gt`: `v` starts before / ends after `q`; `le`/`ge`: `v` starts at or before the end of
///   `q` / ends at or after its start;
/// - `sa`/`eb`: `v` starts after `q` ends / ends before `q` starts;
/// - `ap`: `v` overlaps `q` widened by [`approx_margin`].
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

/// The `ap` margin: 10% of the distance between the value and now, at least one day.
pub fn widen(q: DateRange) -> DateRange {
    const DAY: i64 = 86_400_000;
    let now = i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mid = q.lo / 2 + q.hi / 2;
    let margin = ((now - mid).abs() / 10).max(DAY);
    DateRange {
        lo: q.lo.saturating_sub(margin),
        hi: q.hi.saturating_add(margin),
    }
}

/// Parses a FHIR date, dateTime or instant (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`,
/// `YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm]`) into the range it denotes. A time without a zone is
/// taken as UTC.
pub fn parse_range(s: &str) -> Option<DateRange> {
    let s = s.trim();
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut it = date_part.split('-');
    let year: i32 = digits(it.next()?, 4)?.try_into().ok()?;
    let month = match it.next() {
        Some(m) => Some(digits(m, 2)?),
        None => None,
    };
    let day = match it.next() {
        Some(d) => Some(digits(d, 2)?),
        None => None,
    };
    if it.next().is_some() || year < 1 {
        return None;
    }
    let utc = UtcOffset::UTC;
    let start_of = |y: i32, m: u32, d: u32| -> Option<OffsetDateTime> {
        let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
        let date = Date::from_calendar_date(y, month, u8::try_from(d).ok()?).ok()?;
        Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_offset(utc))
    };
    let ms = |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    let Some(time_part) = time_part else {
        let (lo, next) = match (month, day) {
            (None, None) => (start_of(year, 1, 1)?, start_of(year + 1, 1, 1)?),
            (Some(m), None) => {
                let lo = start_of(year, m, 1)?;
                let next = if m == 12 {
                    start_of(year + 1, 1, 1)?
                } else {
                    start_of(year, m + 1, 1)?
                };
                (lo, next)
            }
            (Some(m), Some(d)) => {
                let lo = start_of(year, m, d)?;
                (lo, lo + time::Duration::DAY)
            }
            (None, Some(_)) => return None,
        };
        return Some(DateRange {
            lo: ms(lo)?,
            hi: ms(next)? - 1,
        });
    };
    let (Some(m), Some(d)) = (month, day) else {
        return None;
    };
    let day_start = start_of(year, m, d)?;
    // Split off the zone.
    let (clock, offset) = if let Some(c) = time_part.strip_suffix('Z') {
        (c, 0i64)
    } else if let Some(pos) = time_part.rfind(['+', '-']) {
        let (c, z) = time_part.split_at(pos);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, mi) = z[1..].split_once(':')?;
        let minutes = i64::from(digits(h, 2)?) * 60 + i64::from(digits(mi, 2)?);
        if minutes > 14 * 60 {
            return None;
        }
        (c, sign * minutes)
    } else {
        (time_part, 0)
    };
    let mut parts = clock.split(':');
    let h = digits(parts.next()?, 2)?;
    let mi = digits(parts.next()?, 2)?;
    let sec = parts.next();
    if parts.next().is_some() || h > 23 || mi > 59 {
        return None;
    }
    let mut lo = ms(day_start)? + (i64::from(h) * 3600 + i64::from(mi) * 60) * 1000;
    let width = match sec {
        None => 60_000,
        Some(sec) => {
            let (whole, frac) = match sec.split_once('.') {
                Some((w, f)) => (w, Some(f)),
                None => (sec, None),
            };
            let sv = digits(whole, 2)?;
            if sv > 60 {
                return None;
            }
            lo += i64::from(sv) * 1000;
            match frac {
                None => 1000,
                Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => return None,
                Some(f) => {
                    let mut v: i64 = 0;
                    for (i, b) in f.bytes().take(3).enumerate() {
                        v += i64::from(b - b'0') * 10i64.pow(2 - i as u32);
                    }
                    lo += v;
                    match f.len() {
                        1 => 100,
                        2 => 10,
                        _ => 1,
                    }
                }
            }
        }
    };
    lo -= offset * 60_000;
    Some(DateRange {
        lo,
        hi: lo + width - 1,
    })
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

    fn ms(s: &str) -> i64 {
        let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
    }

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
        assert_eq!(year("1937-04-19"), Some(1937));
    }
}
