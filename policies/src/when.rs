//! The intent's time as rules and scoring read it: the date, weekday, hour
//! and minute of its `issued_at` in the bundle's time zone.
//!
//! Invariant: a function of `issued_at` and the bundle alone, never of a
//! clock, so a decision comes out the same on every run, forever. For that
//! reason the time zone is a fixed UTC offset: a named zone's rules
//! (daylight saving) change with each release of the time-zone database,
//! and a decision re-run years later would read another hour.

use serde::Serialize;
use tollgate_protocol::Timestamp;

use crate::Error;

/// Weekday names, Sunday first, as rules read them.
pub const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// The members of `context.time` (and `{time.…}` in reasons).
pub const TIME_FIELDS: [&str; 4] = ["date", "weekday", "hour", "minute"];

/// A bundle's time zone: a fixed offset from UTC, in minutes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct TimeZone {
    offset_minutes: i32,
}

impl From<TimeZone> for String {
    fn from(z: TimeZone) -> Self {
        z.name()
    }
}

impl TimeZone {
    /// UTC.
    pub const UTC: Self = Self { offset_minutes: 0 };

    /// Reads `UTC`, or an offset `+HH:MM` / `-HH:MM` within ±14:00.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::TimeZone(s.to_owned());
        if s == "UTC" {
            return Ok(Self::UTC);
        }
        let b = s.as_bytes();
        if b.len() != 6 || !matches!(b[0], b'+' | b'-') || b[3] != b':' {
            return Err(bad());
        }
        let num = |t: &[u8]| -> Option<i32> {
            t.iter().try_fold(0i32, |acc, c| {
                c.is_ascii_digit().then(|| acc * 10 + i32::from(c - b'0'))
            })
        };
        let (Some(h), Some(m)) = (num(&b[1..3]), num(&b[4..6])) else {
            return Err(bad());
        };
        let minutes = h * 60 + m;
        if m >= 60 || minutes > 14 * 60 {
            return Err(bad());
        }
        Ok(Self {
            offset_minutes: if b[0] == b'-' { -minutes } else { minutes },
        })
    }

    /// `UTC`, or the offset as `+HH:MM` / `-HH:MM`.
    pub fn name(&self) -> String {
        if self.offset_minutes == 0 {
            return "UTC".into();
        }
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let m = self.offset_minutes.unsigned_abs();
        format!("{sign}{:02}:{:02}", m / 60, m % 60)
    }

    /// The local time of `at` in this zone.
    pub fn local(&self, at: &Timestamp) -> LocalTime {
        let secs = at
            .unix_seconds()
            .saturating_add(i64::from(self.offset_minutes) * 60);
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        // 1970-01-01 was a Thursday.
        let weekday = WEEKDAYS[usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0)];
        let text = Timestamp::from_unix(secs, 0);
        LocalTime {
            date: text.as_str()[..10].to_owned(),
            weekday,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
        }
    }
}

/// An instant as a bundle's rules read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalTime {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Lowercase English, e.g. `friday`.
    pub weekday: &'static str,
    /// 0–23.
    pub hour: i64,
    /// 0–59.
    pub minute: i64,
}

impl LocalTime {
    /// A member by name (one of [`TIME_FIELDS`]), as text: `hour` and
    /// `minute` in two digits (`09`, `05`), as a clock shows them.
    pub fn field(&self, name: &str) -> Option<String> {
        match name {
            "date" => Some(self.date.clone()),
            "weekday" => Some(self.weekday.to_owned()),
            "hour" => Some(format!("{:02}", self.hour)),
            "minute" => Some(format!("{:02}", self.minute)),
            _ => None,
        }
    }

    /// A member by name as an integer (`hour`, `minute`).
    pub fn integer(&self, name: &str) -> Option<i64> {
        match name {
            "hour" => Some(self.hour),
            "minute" => Some(self.minute),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(zone: &str, at: &str) -> LocalTime {
        TimeZone::parse(zone)
            .unwrap()
            .local(&Timestamp::parse(at).unwrap())
    }

    #[test]
    fn local_time_in_a_fixed_offset() {
        assert_eq!(
            local("UTC", "2026-11-27T16:05:09.5Z"),
            LocalTime {
                date: "2026-11-27".into(),
                weekday: "friday",
                hour: 16,
                minute: 5
            }
        );
        // Past midnight east of UTC: the next day, a Saturday.
        let east = local("+09:30", "2026-11-27T16:05:00Z");
        assert_eq!(
            (east.date.as_str(), east.weekday, east.hour, east.minute),
            ("2026-11-28", "saturday", 1, 35)
        );
        // Before midnight west of UTC: the day before.
        let west = local("-05:00", "2026-11-30T03:00:00Z");
        assert_eq!(
            (west.date.as_str(), west.weekday, west.hour),
            ("2026-11-29", "sunday", 22)
        );
        // The epoch, a Thursday; a leap day; before the epoch.
        assert_eq!(local("UTC", "1970-01-01T00:00:00Z").weekday, "thursday");
        let leap = local("UTC", "2028-02-29T12:00:00Z");
        assert_eq!(
            (leap.date.as_str(), leap.weekday),
            ("2028-02-29", "tuesday")
        );
        assert_eq!(local("UTC", "1969-12-31T23:59:59Z").weekday, "wednesday");
    }

    proptest::proptest! {
        /// A day later is the next weekday at the same hour and minute, on
        /// a later date, in any zone: the local time is a function of the
        /// instant and the offset alone.
        #[test]
        fn a_day_later_is_the_next_weekday(
            secs in -2_000_000_000i64..4_000_000_000,
            offset in -(14 * 60)..=(14 * 60i32),
            days in 1i64..400,
        ) {
            let zone = TimeZone { offset_minutes: offset };
            let now = zone.local(&Timestamp::from_unix(secs, 0));
            let later = zone.local(&Timestamp::from_unix(secs + days * 86_400, 0));
            let index = |w: &str| WEEKDAYS.iter().position(|d| *d == w).unwrap();
            proptest::prop_assert_eq!(
                index(later.weekday),
                (index(now.weekday) + usize::try_from(days % 7).unwrap()) % 7
            );
            proptest::prop_assert_eq!((later.hour, later.minute), (now.hour, now.minute));
            proptest::prop_assert!(later.date > now.date);
            let local_secs = secs + i64::from(offset) * 60;
            proptest::prop_assert_eq!(now.hour, local_secs.rem_euclid(86_400) / 3600);
        }
    }

    #[test]
    fn zones_are_fixed_offsets_only() {
        for (text, name) in [
            ("UTC", "UTC"),
            ("+00:00", "UTC"),
            ("+01:00", "+01:00"),
            ("-05:30", "-05:30"),
            ("+14:00", "+14:00"),
        ] {
            assert_eq!(TimeZone::parse(text).unwrap().name(), name, "{text}");
        }
        for bad in [
            "Europe/Berlin",
            "+1:00",
            "+01:60",
            "+14:01",
            "01:00",
            "+0100",
            "",
            "utc",
        ] {
            let e = TimeZone::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("time_zone {bad:?} is not")), "{e}");
        }
    }
}
