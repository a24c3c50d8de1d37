//! Nova's microversions: the range kilnd serves and the one a request
//! asks for (`OpenStack-API-Version: compute X.Y`, or the older
//! `X-OpenStack-Nova-API-Version: X.Y`; none: the minimum).

use std::fmt;

/// A microversion `2.Y` (the major is always 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion(pub u32);

/// The lowest one kilnd serves.
pub const MIN: Microversion = Microversion(1);
/// The highest: what current openstacksdk asks servers for (2.100), so
/// openstackclient negotiates it. Responses carry the fields of every
/// microversion up to the one asked for that kilnd can fill (see
/// `manager/README.md`, "OpenStack API").
pub const MAX: Microversion = Microversion(100);

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "2.{}", self.0)
    }
}

/// Why a requested microversion is refused: `Malformed` is a 400,
/// `Unsupported` a 406, as in Nova.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("Invalid API version request string {0:?}: use X.Y")]
    Malformed(String),
    #[error("Version {0} is not supported by the API. Minimum is {MIN} and maximum is {MAX}.")]
    Unsupported(String),
}

/// The microversion of a request from its `OpenStack-API-Version` header
/// (all of it: services separated by commas) or, without one naming
/// compute, its `X-OpenStack-Nova-API-Version` header.
pub fn negotiate(
    openstack: Option<&str>,
    legacy: Option<&str>,
) -> Result<Microversion, VersionError> {
    let asked = openstack
        .into_iter()
        .flat_map(|h| h.split(','))
        .find_map(|part| {
            let mut words = part.split_whitespace();
            match (words.next(), words.next()) {
                (Some(s), Some(v)) if s.eq_ignore_ascii_case("compute") => Some(v.to_owned()),
                _ => None,
            }
        })
        .or_else(|| legacy.map(|v| v.trim().to_owned()));
    match asked {
        None => Ok(MIN),
        Some(v) => parse(&v),
    }
}

fn parse(v: &str) -> Result<Microversion, VersionError> {
    if v.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let (major, minor) = v
        .split_once('.')
        .ok_or_else(|| VersionError::Malformed(v.to_owned()))?;
    let major: u32 = major
        .parse()
        .map_err(|_| VersionError::Malformed(v.to_owned()))?;
    let minor: u32 = minor
        .parse()
        .map_err(|_| VersionError::Malformed(v.to_owned()))?;
    let m = Microversion(minor);
    if major != 2 || m < MIN || m > MAX {
        return Err(VersionError::Unsupported(v.to_owned()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(negotiate(None, None), Ok(MIN));
        assert_eq!(negotiate(Some("compute 2.60"), None), Ok(Microversion(60)));
        assert_eq!(
            negotiate(Some("image 2.5, compute 2.47"), Some("2.3")),
            Ok(Microversion(47))
        );
        assert_eq!(
            negotiate(Some("image 2.5"), Some("2.3")),
            Ok(Microversion(3))
        );
        assert_eq!(negotiate(Some("compute latest"), None), Ok(MAX));
        assert_eq!(
            negotiate(Some("compute 2.101"), None),
            Err(VersionError::Unsupported("2.101".into()))
        );
        assert!(matches!(
            negotiate(Some("compute 3.0"), None),
            Err(VersionError::Unsupported(_))
        ));
        assert!(matches!(
            negotiate(None, Some("two")),
            Err(VersionError::Malformed(_))
        ));
        assert_eq!(Microversion(100).to_string(), "2.100");
    }
}
