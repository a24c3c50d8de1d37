//! Pagination as Nova and Glance do it: `limit` (at most that many) and
//! `marker` (the id of the last item of the previous page: the page
//! starts after it; an unknown marker is a 400), with a link to the next
//! page when this one is full (Nova's `servers_links`/`flavors_links`,
//! Glance's `next`). Lists are in a stable order (the store's), so the
//! pages of an unchanged list are disjoint and cover it.

use super::error::{OsError, Service};

/// A page of `items` (in order) by the query's `limit` and `marker`:
/// (the page, the marker of the next page when there may be one).
pub fn page<T>(
    service: Service,
    pairs: &[(String, String)],
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
) -> Result<(Vec<T>, Option<String>), OsError> {
    let get = |k: &str| pairs.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v);
    let limit = match get("limit") {
        None => None,
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            OsError::bad(
                service,
                format!("limit {l:?} is not a whole number of 0 or more"),
            )
        })?),
    };
    let start = match get("marker") {
        None => 0,
        Some(m) => {
            items
                .iter()
                .position(|x| id(x) == m)
                .ok_or_else(|| OsError::bad(service, format!("marker [{m}] not found")))?
                + 1
        }
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let Some(limit) = limit else {
        return Ok((rest, None));
    };
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next = (more && limit > 0)
        .then(|| rest.last().map(|x| id(x).to_owned()))
        .flatten();
    Ok((rest, next))
}

/// `path?limit=..&marker=..` with the query's other pairs kept, for a
/// next link.
pub fn next_href(path: &str, pairs: &[(String, String)], marker: &str) -> String {
    let mut q = url_encoded(
        pairs
            .iter()
            .filter(|(k, _)| k != "marker")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if !q.is_empty() {
        q.push('&');
    }
    q.push_str(&url_encoded([("marker", marker)]));
    format!("{path}?{q}")
}

fn url_encoded<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn pages_cover_the_list_once() {
        fn id<'a>(x: &'a &str) -> &'a str {
            x
        }
        let items = vec!["a", "b", "c", "d", "e"];
        let (p, next) = page(Service::Compute, &q(&[("limit", "2")]), items.clone(), id).unwrap();
        assert_eq!((p, next.as_deref()), (vec!["a", "b"], Some("b")));
        let (p, next) = page(
            Service::Compute,
            &q(&[("limit", "2"), ("marker", "b")]),
            items.clone(),
            id,
        )
        .unwrap();
        assert_eq!((p, next.as_deref()), (vec!["c", "d"], Some("d")));
        let (p, next) = page(
            Service::Compute,
            &q(&[("limit", "2"), ("marker", "d")]),
            items.clone(),
            id,
        )
        .unwrap();
        assert_eq!((p, next), (vec!["e"], None));
        // A full last page has no next link.
        let (p, next) = page(Service::Compute, &q(&[("limit", "5")]), items.clone(), id).unwrap();
        assert_eq!((p.len(), next), (5, None));
        let (p, _) = page(Service::Compute, &q(&[("marker", "a")]), items.clone(), id).unwrap();
        assert_eq!(p.len(), 4);
        for bad in [("limit", "-1"), ("limit", "x"), ("marker", "zz")] {
            let e = page(Service::Compute, &q(&[bad]), items.clone(), id).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
            assert!(e.message.contains(bad.1), "{}", e.message);
        }
    }

    #[test]
    fn next_links_keep_the_filters() {
        let pairs = q(&[("limit", "2"), ("name", "a b"), ("marker", "old")]);
        assert_eq!(
            next_href("http://h/compute/v2.1/servers", &pairs, "m1"),
            "http://h/compute/v2.1/servers?limit=2&name=a%20b&marker=m1"
        );
    }
}
