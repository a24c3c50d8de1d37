//! Small helpers: UTC timestamps, the rules for user-given names, reading
//! the end of a console log.

use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An error and every cause under it, `: `-separated: how an error
/// becomes a message a client or a server's fault shows.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out = format!("{out}: {s}");
        source = s.source();
    }
    out
}

/// Now as RFC 3339 UTC with seconds (`2026-11-26T23:46:47Z`).
pub fn now_rfc3339() -> String {
    rfc3339(now_secs())
}

/// Seconds since the Unix epoch as RFC 3339 UTC. Times past the end of
/// year 9999 (which only a corrupt record could hold) show as its last
/// second.
pub fn rfc3339(secs: u64) -> String {
    /// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
    const LAST: i64 = 253_402_300_799;
    let secs = i64::try_from(secs).unwrap_or(LAST).min(LAST);
    let t = OffsetDateTime::from_unix_timestamp(secs).expect("1970 to 9999 is in range");
    t.format(&Rfc3339)
        .expect("a UTC time in 1970 to 9999 has an RFC 3339 form")
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a user-given name (flavor, image, server): 1 to 64 characters of
/// `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`. This keeps names
/// safe in paths and tables (no `/`, no `..`, no control characters).
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 64 {
        return Err(NameError::Length { what });
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(NameError::Start {
            what,
            name: name.to_owned(),
        });
    }
    if let Some(c) = bad_name_char(name) {
        return Err(NameError::Char {
            what,
            name: name.to_owned(),
            c,
        });
    }
    Ok(())
}

/// Why [`check_name`] refuses a name (`what`: flavor, image, server, ...).
#[derive(Debug, Error)]
pub enum NameError {
    #[error("{what} name must be 1 to 64 characters long")]
    Length { what: &'static str },
    #[error("{what} name {name:?} must not start with '.' or '-'")]
    Start { what: &'static str, name: String },
    #[error("{what} name {name:?} has the character {c:?}; allowed are A-Z a-z 0-9 . _ -")]
    Char {
        what: &'static str,
        name: String,
        c: char,
    },
}

/// The first character of `name` outside `A-Z a-z 0-9 . _ -` (the
/// characters of names and of bridge names), if any.
pub fn bad_name_char(name: &str) -> Option<char> {
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
}

/// At most this much of the end of a console log is read.
pub const CONSOLE_MAX: u64 = 1 << 20;

/// The end of a log: at most [`CONSOLE_MAX`] bytes, and the last `tail`
/// lines of that when given. A missing file is empty.
pub fn read_tail(path: &std::path::Path, tail: Option<usize>) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_MAX)));
    let mut buf = Vec::new();
    let _ = f.take(CONSOLE_MAX).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    match tail {
        None => text,
        Some(n) => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            lines[lines.len().saturating_sub(n)..].concat()
        }
    }
}

/// A readiness regex, with a bound on its compiled size.
pub fn console_regex(pattern: &str) -> Result<regex::Regex, RegexError> {
    if pattern.len() > 1024 {
        return Err(RegexError::TooLong);
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(RegexError::Invalid)
}

/// Why [`console_regex`] refuses a pattern.
#[derive(Debug, Error)]
pub enum RegexError {
    #[error("ready.console is longer than 1024 bytes")]
    TooLong,
    #[error("ready.console is not a valid regex")]
    Invalid(#[source] regex::Error),
}

/// A server's `user_data` as the guest gets it: the API's base64 (as
/// Nova's; standard alphabet, padded, line breaks and spaces ignored as
/// `base64 -w 76` writes them) decoded.
pub fn decode_user_data(b64: &str) -> Result<Vec<u8>, base64ct::Error> {
    use base64ct::Encoding;
    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64ct::Base64::decode_vec(&compact)
}

/// A server's hostname as Nova derives it from the server's name
/// (`sanitize_hostname`): the first 63 characters, space, `_` and `.` to
/// `-`, anything but ASCII letters, digits and `-` dropped, lower case,
/// no `-` at either end; `server-<id>` if nothing is left. (Nova keeps
/// Latin-1 letters; a DHCP hostname is ASCII, so kilnd drops them.)
pub fn hostname(name: &str, id: &str) -> String {
    let h: String = name
        .chars()
        .take(63)
        .map(|c| if matches!(c, ' ' | '_' | '.') { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect::<String>()
        .to_ascii_lowercase();
    let h = h.trim_matches('-');
    if h.is_empty() {
        format!("server-{id}").chars().take(63).collect()
    } else {
        h.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_base64() {
        assert_eq!(decode_user_data("aGk=").unwrap(), b"hi");
        assert_eq!(decode_user_data("aGVs\nbG8=\n").unwrap(), b"hello");
        assert_eq!(decode_user_data("").unwrap(), b"");
        for bad in ["aGk", "#cloud-config", "aGk=aGk=", "a"] {
            assert!(decode_user_data(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_736_807), "2026-11-26T23:46:47Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn names() {
        assert!(check_name("server", "web-1.a_b").is_ok());
        for bad in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_name("server", bad).is_err(), "{bad:?} accepted");
        }
    }
}
