//! The RTC's calendar time: seconds since the epoch to a date and time
//! and back, with the `time` crate's proleptic Gregorian calendar (pure
//! arithmetic, no system calls: fine under the VMM's seccomp filter).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// The range of seconds the calendar holds: years 0 to 9999, what the
/// century and year registers can say.
const FIRST: i64 = -62_167_219_200;
const LAST: i64 = 253_402_300_799;

/// A calendar time; fields may hold nonsense a guest wrote while SET was
/// held, hence the wide types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DateTime {
    pub(super) year: i64,
    pub(super) month: i64,
    pub(super) day: i64,
    pub(super) hour: i64,
    pub(super) minute: i64,
    pub(super) second: i64,
}

impl DateTime {
    /// The date and time `secs` after the epoch; a clock run past year
    /// 9999 stays at its last second.
    pub(super) fn from_secs(secs: i64) -> Self {
        let t = OffsetDateTime::from_unix_timestamp(secs.clamp(FIRST, LAST))
            .expect("years 0 to 9999 are in range");
        DateTime {
            year: t.year().into(),
            month: i64::from(u8::from(t.month())),
            day: t.day().into(),
            hour: t.hour().into(),
            minute: t.minute().into(),
            second: t.second().into(),
        }
    }

    /// The date, if the fields make one in years 0 to 9999.
    fn date(self) -> Option<Date> {
        if !(0..=9999).contains(&self.year) {
            return None;
        }
        let month = Month::try_from(u8::try_from(self.month).ok()?).ok()?;
        Date::from_calendar_date(self.year as i32, month, u8::try_from(self.day).ok()?).ok()
    }

    /// Seconds since the epoch, or None if a field is out of range.
    pub(super) fn to_secs(self) -> Option<i64> {
        let field = |v: i64| u8::try_from(v).ok();
        let time =
            Time::from_hms(field(self.hour)?, field(self.minute)?, field(self.second)?).ok()?;
        let t = PrimitiveDateTime::new(self.date()?, time);
        Some(t.assume_utc().unix_timestamp())
    }

    /// 1 = Sunday; 0 while the guest holds a date that does not exist.
    pub(super) fn weekday(self) -> i64 {
        self.date()
            .map_or(0, |d| d.weekday().number_from_sunday().into())
    }
}
