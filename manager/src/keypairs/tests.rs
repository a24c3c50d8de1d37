//! Unit tests of the key pair rules: keys made by OpenSSH's `ssh-keygen`
//! (fixed here with the fingerprints it printed), refusals, generation.

use super::*;

/// `(ssh-keygen -t ..., its public key line, ssh-keygen -l's fingerprint)`.
pub(crate) const KEYS: &[(&str, &str, &str)] = &[
    (
        "ED25519",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIGWNuyxcAKgSjjU3ui6cVcv0lhyk6y6IDh3MBdt3jP1 t@kiln",
        "SHA256:XykR5ATE/45Z0OhbLNKns7qjtdO/jUekVIkdB3SEiq0",
    ),
    (
        "RSA",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDIsUfcu2Cw1OqmGBCilO9ik27/7SO4WZC7R5UpabfBdgrcORIVxJnnWpglWllc6rbuYXi/7pdEmE1EaBE8If10nWnGMs9zxqnKo19uotNHmXi90EYMRDbKTdvULXvqjhPBxtVuSP+FcmIxYoc323+Ir6YWtzrAznLpgUxDOXOwj3BQpDTuh6kFYQQQgh94k/nS4aZrtsK/+LuUSA2mnDIi+mDIzUFriXzN17wv7o92VBVrN29rnZJSmuburxqqwWCzZghvdrfHqwdNm8nwC/dvItgT/yGzip6hCXtDdncIV33BfNVUeVL0xvqHU0+Xl0k7GhlUhjnVuLmhNTRmFqtX t@kiln",
        "SHA256:m2gUqL6ugBUAntE7iivwHKjCvt3wpQoyYj0/xTAEMcM",
    ),
    (
        "P256",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOf2aJt3rkNTXPViNtEgADYK4FAb0USPzBDXnFomJcASQKPLZmJ7rpe3iYmTXO9KdArwbX3R6LL5vM2UqGKrzCc= t@kiln",
        "SHA256:12rzkmjIIeTtnHY78z/KOeV95smO8uOc6WrDD9pEfJ8",
    ),
    (
        "P384",
        "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBAm8F9+42aJxoRfRoRlUaESUdjDymUOjiYUDkTf6KTcR6nQ+CSk8+7BaTXcgYKq5vYT5EqgGD58MDrW60sVAvjkJs7hAq0LUYs6SNtwkAUsqdecqu1T80SUg/Z4oiI/URA== t@kiln",
        "SHA256:NDOqsEnHQCzAmdIfW5tdLouIlKzWnTPRBNT66TZL1Uw",
    ),
    (
        "P521",
        "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAAYCJ21OtxLEbjT4LiobBlpBfyoXx/fDA7rER6Qmu8Xr3E7CkyUyRDnnfpJoXRS2NlXFWKr7e5UxAdIMgSrKwDXrAAPIVf3hCxqB7AkfyO1BbysY29OtAiS4izCnrXG8d3tcglKhOrhjwu6WC37Pigwx72d5YoV0ZjXauPPyGqQnnmA/Q== t@kiln",
        "SHA256:yxBL3tCwQIEuW4q//gc1maAq+NM+nNuqz8t6TcBmuEM",
    ),
];

const DSA: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBAOKZzGgE4NqR10kTnfr5T9IyBNOw05hHzN9PTuNpgezr1wQDqs/YqIPXnz9l1z5edZMxPeiBC+xwI+1QLeUwkEk/K7702VFsElAaJWw6kfW61gHywuu17vCp7KtPuOKpGceNXT/V85Jj6rtnvUfpr4C+iZOErOcwGsvIwlUnIiS/AAAAFQDH8cnLduUs+DXjNbDtN3diSVi5iQAAAIEAv+QSqSVvoN/13A8ExzLsf8tRWmPcc5tJCygsxtP3Sv3TutxH6k+xQoAHXnacvBMW18UId541R92kRVo8kNAKZHBqAHyB6XmXukxnu8FG+leO2Q32C0C+WAsmhMyS40jV1rFGBP2mT7UAKhmUt0Qy/BewzjE2JaBlY34YdujAZVEAAACABCjtWCc/cv6iT5KnjC6t9zq9z+WOyy2JddhhYDItdGmMFHwm5Y6nvvolpoPpc45r3fASWz/KltzUm8H4JvFVk//Q/23pwiQjwKfWC5OD02UJoRy/anjPdJy17dsOnZV7P1rLc9UgvuUGGciUP+iw9IoHX/mVP8ADIECUB9AGBiM= root@vm";

#[test]
fn openssh_keys_parse_with_ssh_keygens_fingerprint() {
    for (kind, line, fingerprint) in KEYS {
        let key = parse_public(&format!("  {line}\n")).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            key.fingerprint(HashAlg::Sha256).to_string(),
            *fingerprint,
            "{kind}"
        );
        assert_eq!(key.to_openssh().unwrap(), *line, "{kind}");
    }
}

#[test]
fn bad_public_keys_are_refused() {
    let ed = KEYS[0].1;
    let (alg, rest) = ed.split_once(' ').unwrap();
    let b64 = rest.split(' ').next().unwrap();
    let cases = [
        String::new(),
        "ssh-ed25519".into(),
        "ssh-ed25519 !!notbase64".into(),
        // Truncated key data.
        format!("{alg} {}", &b64[..b64.len() - 8]),
        // The blob says ed25519, the line says RSA.
        format!("ssh-rsa {b64}"),
        format!("{ed}\n{ed}"),
        DSA.into(),
        format!("{alg} {}", "A".repeat(MAX_PUBLIC_KEY)),
        "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
    ];
    for c in cases {
        match parse_public(&c) {
            Err(KeypairError::Invalid(m)) => assert!(m.starts_with("public_key: "), "{m}"),
            other => panic!("{c:?} gave {other:?}"),
        }
    }
}

#[test]
fn generated_pairs_are_ed25519_and_match() {
    let (public, pem) = generate("k1").unwrap();
    assert_eq!(public.algorithm(), Algorithm::Ed25519);
    assert_eq!(public.comment(), "k1");
    let private = PrivateKey::from_openssh(&pem).unwrap();
    assert!(!private.is_encrypted());
    assert_eq!(private.public_key().key_data(), public.key_data());
    let (other, _) = generate("k1").unwrap();
    assert_ne!(other.key_data(), public.key_data());
}
