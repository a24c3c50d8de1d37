use serde_json::json;

use super::*;

fn create(v: Value) -> Result<ServerCreate, String> {
    let c: CreateBody = serde_json::from_value(v).unwrap();
    to_kiln(c.server, Some("default".into()))
}

#[test]
fn create_maps_onto_kiln() {
    let k = create(json!({"server": {
        "name": "a", "imageRef": "http://h/image/v2/images/img", "flavorRef": "m1.tiny",
        "networks": [{"uuid": "n1", "fixed_ip": "10.0.0.5"}], "key_name": "k",
        "user_data": "aGk=", "metadata": {"x": "y"}, "config_drive": "True",
        "adminPass": "pw", "min_count": 1, "max_count": 1,
        "OS-DCF:diskConfig": "AUTO",
        "block_device_mapping_v2": [{"uuid": "img", "boot_index": 0, "source_type": "image",
                                     "destination_type": "local",
                                     "delete_on_termination": true}]}}))
    .unwrap();
    assert_eq!((k.image.as_str(), k.flavor.as_str()), ("img", "m1.tiny"));
    assert_eq!(k.networks[0].network, "n1");
    assert_eq!(k.networks[0].ip.as_deref(), Some("10.0.0.5"));
    assert!(k.config_drive);
    assert_eq!(k.admin_pass.as_deref(), Some("pw"));
    let auto = create(
        json!({"server": {"name": "a", "imageRef": "i", "flavorRef": "f",
                                        "networks": "auto"}}),
    )
    .unwrap();
    assert_eq!(auto.networks[0].network, "default");
    let none = create(
        json!({"server": {"name": "a", "imageRef": "i", "flavorRef": "f",
                                        "networks": "none"}}),
    )
    .unwrap();
    assert!(none.networks.is_empty());
}

#[test]
fn create_refuses_what_kiln_cannot_do() {
    for (body, says) in [
        (json!({"name": "a", "flavorRef": "f"}), "imageRef"),
        (
            json!({"name": "a", "imageRef": "i", "flavorRef": "f", "max_count": 2}),
            "max_count",
        ),
        (
            json!({"name": "a", "imageRef": "i", "flavorRef": "f",
                "block_device_mapping_v2": [{"uuid": "v", "boot_index": 0,
                    "source_type": "volume", "destination_type": "volume"}]}),
            "volumes",
        ),
        (
            json!({"name": "a", "imageRef": "i", "flavorRef": "f",
                "networks": [{"port": "p"}]}),
            "ports",
        ),
        (
            json!({"name": "a", "imageRef": "i", "flavorRef": "f", "personality": []}),
            "personality",
        ),
        (
            json!({"name": "a", "imageRef": "i", "flavorRef": "f", "config_drive": "maybe"}),
            "config_drive",
        ),
    ] {
        let e = create(json!({ "server": body })).unwrap_err();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn actions() {
    let a = |v: Value| action(v.as_object().unwrap());
    assert!(matches!(
        a(json!({"os-start": null})),
        Ok(Action::Kiln(ServerAction::Start))
    ));
    assert!(matches!(
        a(json!({"reboot": {"type": "HARD"}})),
        Ok(Action::Kiln(ServerAction::Reboot {
            kind: RebootType::Hard
        }))
    ));
    assert!(matches!(
        a(json!({"os-getConsoleOutput": {"length": 5}})),
        Ok(Action::ConsoleOutput(Some(5)))
    ));
    assert!(matches!(
        a(json!({"os-getConsoleOutput": {"length": -1}})),
        Ok(Action::ConsoleOutput(None))
    ));
    assert!(a(json!({"reboot": {}})).is_err());
    assert!(a(json!({"shelve": null})).unwrap_err().contains("shelve"));
    assert!(a(json!({})).is_err());
}

#[test]
fn changes_since_times() {
    let t = |s: &str| parse_time(s).map(|t| t.unix_timestamp());
    assert_eq!(t("2026-12-07T23:00:00Z"), Some(1_796_684_400));
    assert_eq!(t("2026-12-07T23:00:00+01:00"), Some(1_796_680_800));
    assert_eq!(t("2026-12-07T23:00:00"), Some(1_796_684_400));
    assert_eq!(t("2026-12-07T23:00"), Some(1_796_684_400));
    assert_eq!(t("2026-12-07 23:00:00"), Some(1_796_684_400));
    assert_eq!(t("yesterday"), None);
    assert_eq!(t("2026-13-07T23:00:00Z"), None);
}

#[test]
fn vnc_console_action() {
    let body = |v: Value| v.as_object().unwrap().clone();
    match action(&body(json!({"os-getVNCConsole": {"type": "novnc"}}))) {
        Ok(Action::VncConsole(t)) => assert_eq!(t, "novnc"),
        other => panic!("{other:?}"),
    }
    let e = action(&body(json!({"os-getVNCConsole": {}}))).unwrap_err();
    assert!(e.contains("needs a type"), "{e}");
}
