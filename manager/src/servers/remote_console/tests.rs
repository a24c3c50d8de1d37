//! The token rules, without a server.

use super::*;

#[test]
fn a_token_works_once_for_its_server_only() {
    let t = Tokens::default();
    let a = t.issue("a", Duration::from_secs(60)).unwrap();
    let b = t.issue("a", Duration::from_secs(60)).unwrap();
    assert_eq!(a.len(), 64);
    assert_ne!(a, b, "random");
    // The page does not use it up.
    assert!(check_page(&t, "a", Some(&a)).is_ok());
    assert!(matches!(
        check_page(&t, "b", Some(&a)),
        Err(Refused::OtherServer)
    ));
    assert!(matches!(t.check(&a, "a", true), Found::Ok));
    assert!(matches!(t.check(&a, "a", true), Found::None), "used");
    // Another server's token is refused and used up.
    assert!(matches!(t.check(&b, "c", true), Found::Other));
    assert!(matches!(t.check(&b, "a", true), Found::None));
    for bad in ["", "zz", &"0".repeat(64), &"g".repeat(64)] {
        assert!(matches!(t.check(bad, "a", true), Found::None), "{bad}");
    }
    assert!(matches!(check_page(&t, "a", None), Err(Refused::Token(m)) if m.contains("required")));
}

#[test]
fn tokens_expire_and_are_bounded() {
    let t = Tokens::default();
    let a = t.issue("a", Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(matches!(t.check(&a, "a", true), Found::None), "expired");
    assert_eq!(t.live(), 0, "expired ones are dropped");
    for _ in 0..MAX_LIVE {
        t.issue("a", Duration::from_secs(60)).unwrap();
    }
    assert!(matches!(
        t.issue("a", Duration::from_secs(60)),
        Err(ServerError::Conflict(_))
    ));
}

#[test]
fn hex_round_trips() {
    let b: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
    assert_eq!(unhex(&hex(&b)), Some(b));
    assert_eq!(unhex(&hex(&b).to_uppercase()), Some(b));
}
