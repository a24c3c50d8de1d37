//! Reading what the rtc probe prints (`RTC YYYY-MM-DD HH:MM:SS`, then
//! `RTC regB 0xNN`) to compare the guest's clock with the host's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::macros::format_description;
use time::PrimitiveDateTime;

use crate::Vm;

/// The time on the first `RTC 2…` line of `out` (read as UTC), as seconds
/// since the epoch; None without such a line or if it is no valid time.
pub fn line_seconds(out: &str) -> Option<i64> {
    let line = out.lines().find(|l| l.starts_with("RTC 2"))?;
    let format = format_description!("RTC [year]-[month]-[day] [hour]:[minute]:[second]");
    let t = PrimitiveDateTime::parse(line, format).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// The host's clock now, in seconds since the epoch.
pub fn host_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the host clock is after 1970")
        .as_secs() as i64
}

/// One reading of the rtc probe running in `vm`.
pub struct Reading {
    /// The guest's RTC, seconds since the epoch.
    pub guest: i64,
    /// The host's clock right after the guest printed it.
    pub host: i64,
    /// The serial output up to the `RTC regB` line.
    pub out: String,
}

/// Waits (at most `timeout`) for the probe's `RTC regB` line and reads the
/// guest's time from its output; panics with the logs without one.
pub fn read(vm: &mut Vm, timeout: Duration) -> Reading {
    let out = vm.wait_serial_line("RTC regB", timeout);
    let host = host_seconds();
    let guest = line_seconds(&out).unwrap_or_else(|| panic!("no RTC line\n{}", vm.describe()));
    Reading { guest, host, out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rtc_line() {
        // 2026-11-27 is 20_784 days after 1970-01-01.
        assert_eq!(
            line_seconds("x\nRTC 2026-11-27 00:00:01\n"),
            Some(20_784 * 86_400 + 1)
        );
        assert_eq!(
            line_seconds("RTC 2000-03-01 00:00:00"),
            Some(11_017 * 86_400)
        );
        assert_eq!(line_seconds("RTC 2026-11-27\n"), None);
        assert_eq!(line_seconds("RTC 2026-02-30 00:00:00\n"), None);
        assert_eq!(line_seconds("RTC error: x\n"), None);
    }
}
