//! The VMM control protocol: HTTP/1.1 with JSON bodies on the unix socket
//! given by `--api-socket`. One request per connection or keep-alive.
//!
//! | method and path        | body in | answer |
//! |------------------------|---------|--------|
//! | `GET /v1/vm`           |         | [`VmInfo`] (with each NIC's MAC and link, [`NetInfo`]) |
//! | `PUT /v1/vm/pause`     |         | 204 |
//! | `PUT /v1/vm/resume`    |         | 204 |
//! | `PUT /v1/vm/power-button` |      | 204 (ACPI power button: the guest shuts down) |
//! | `PUT /v1/vm/reset`     |         | 204 (hard reset, as the reset line) |
//! | `PUT /v1/vm/kill`      |         | 204, then the VMM exits |
//! | `PUT /v1/vm/net/{index}` | [`NetUpdate`] | 204 (link up/down: config space, config-change interrupt) |
//! | `GET /v1/vm/screenshot` |        | 200 `image/png`: the display's picture now (404 without a display) |
//! | `GET /v1/vm/screen`    |         | [`ScreenInfo`]: the display's mode, and text mode's characters |
//! | `POST /v1/vm/keys`     | [`KeysRequest`] | 204 once every key was pressed and released on the PS/2 keyboard |
//! | `POST /v1/vm/pointer`  | [`PointerRequest`] | 204: the pointer moved (PS/2 mouse, tablet), as a VNC viewer's would |
//!
//! Errors answer 4xx/5xx with an [`ErrorBody`].
//!
//! [`Request`] is this table in code: both ends use it, the client to build
//! a request ([`Request::method`], [`Request::path`], [`Request::body`]),
//! kiln-vmm to route one ([`Request::parse`]), so neither writes a path by
//! hand.

use serde::{Deserialize, Serialize};

pub use crate::vm::LinkState;
use crate::vm::VmConfig;

/// The state of a VM as its VMM reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Being built, not yet running guest code.
    Created,
    Running,
    Paused,
    /// The guest has stopped; the VMM is about to exit.
    Shutdown,
}

/// How a VM ended. Also the VMM's exit status, see [`ExitReason::exit_code`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExitReason {
    /// The guest powered off (ACPI S5 or the like).
    PowerOff,
    /// The guest asked for a reboot (i8042, port 0xCF9, ACPI reset).
    Reboot,
    /// A vCPU triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault { vcpu: u8 },
    /// KVM could not emulate an instruction; the registers at that point.
    EmulationFailure { vcpu: u8, registers: String },
    /// Killed through the control API.
    Killed,
    /// A fault of the host or of the VMM itself.
    HostError { message: String },
}

impl ExitReason {
    /// The VMM's process exit status for this ending.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::PowerOff => 0,
            ExitReason::Reboot => 10,
            ExitReason::TripleFault { .. } => 11,
            ExitReason::EmulationFailure { .. } => 12,
            ExitReason::Killed => 13,
            ExitReason::HostError { .. } => 1,
        }
    }
}

/// What `exit_file` (see [`crate::vm::VmConfig`]) holds after the VMM ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The VMM's exit status, as [`ExitReason::exit_code`] gives it.
    pub code: i32,
    pub reason: ExitReason,
}

/// One write to the debug port (I/O port 0x80): the code and when it came,
/// in microseconds since the VMM process started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootProgress {
    pub code: u8,
    pub time_us: u64,
}

/// `GET /v1/vm`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    pub state: VmState,
    pub pid: u32,
    pub config: VmConfig,
    /// Debug-port codes in the order written (the first 4096 are kept).
    pub boot_progress: Vec<BootProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<ExitReason>,
    /// Each NIC, in `VmConfig::nets` order. A link set down stays down
    /// across a reset (`PUT /v1/vm/reset`), and a MAC chosen at random
    /// stays the same, as a PC's NIC keeps both when the PC reboots.
    #[serde(default)]
    pub nets: Vec<NetInfo>,
}

/// A NIC as the VMM reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInfo {
    /// Its index in `VmConfig::nets` (`PUT /v1/vm/net/{index}`).
    pub index: usize,
    /// The MAC address the guest sees, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub link: LinkState,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `POST /v1/vm/keys`: press and release each of `keys` (QEMU `sendkey`
/// names: `ret`, `esc`, `f1`, `a`, `ctrl-alt-delete`: the keys of a combo
/// are pressed in order and released in reverse), then type `text` (US
/// layout, Shift added where a character needs it). Each key is held
/// `hold_ms` (default [`KeysRequest::DEFAULT_HOLD_MS`]), with as long a
/// gap after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u32>,
}

impl KeysRequest {
    /// As QEMU's `sendkey`.
    pub const DEFAULT_HOLD_MS: u32 = 100;
    pub const MAX_HOLD_MS: u32 = 1000;
    /// Keys and characters in one request, at most.
    pub const MAX_KEYS: usize = 256;
    /// The longest a request may take to type.
    pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn hold(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.hold_ms.unwrap_or(Self::DEFAULT_HOLD_MS)))
    }

    /// Combos and characters to type.
    pub fn count(&self) -> usize {
        self.keys.len() + self.text.as_deref().map_or(0, |t| t.chars().count())
    }

    /// How long typing takes (each key held, then as long a gap).
    pub fn duration(&self) -> std::time::Duration {
        self.hold() * 2 * self.count() as u32
    }

    /// Why this request is refused, if it is (names are checked by the VMM).
    pub fn check(&self) -> Result<(), String> {
        let n = self.count();
        if n == 0 {
            return Err("nothing to type: give \"keys\" or \"text\"".into());
        }
        if n > Self::MAX_KEYS {
            return Err(format!(
                "{n} keys and characters is too many; at most {}",
                Self::MAX_KEYS
            ));
        }
        match self.hold_ms {
            Some(h) if h == 0 || h > Self::MAX_HOLD_MS => {
                return Err(format!(
                    "hold_ms {h} is out of range 1..={}",
                    Self::MAX_HOLD_MS
                ))
            }
            _ => {}
        }
        if self.duration() > Self::MAX_DURATION {
            return Err(format!(
                "typing would take {:?}, longer than {:?}; send fewer keys or a shorter hold_ms",
                self.duration(),
                Self::MAX_DURATION
            ));
        }
        Ok(())
    }
}

/// `PUT /v1/vm/net/{index}`: change NIC `index` (in `VmConfig::nets`
/// order) as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetUpdate {
    pub link: LinkState,
}

/// `GET /v1/vm/screen`: what the display shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenInfo {
    /// `text`, `graphics` (VGA planar or 256-colour), `vbe` (a linear
    /// framebuffer mode) or `blank`.
    pub mode: String,
    /// The picture's size in pixels, as the screenshot has it.
    pub width: u32,
    pub height: u32,
    /// Bits per pixel of a VBE mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpp: Option<u16>,
    /// Text mode: each row's characters (printable ASCII; others as
    /// spaces; trailing spaces trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Vec<String>>,
}

/// `POST /v1/vm/pointer`: the pointer is at (`x`, `y`), in pixels of
/// the current screen, holding `buttons` (RFB's mask: 1 left, 2 middle, 4
/// right, 8 and 16 the wheel up and down), as a VNC viewer's
/// PointerEvent: the tablet gets the position, the PS/2 mouse the motion
/// since the last such request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointerRequest {
    pub x: u16,
    pub y: u16,
    #[serde(default)]
    pub buttons: u8,
}

impl PointerRequest {
    /// The RFB mask has five buttons.
    pub const MAX_BUTTONS: u8 = 0x1f;
}

/// A control request, as the table above lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /v1/vm`: answers a [`VmInfo`].
    Info,
    /// `PUT /v1/vm/pause`.
    Pause,
    /// `PUT /v1/vm/resume`.
    Resume,
    /// `PUT /v1/vm/power-button`.
    PowerButton,
    /// `PUT /v1/vm/reset`.
    Reset,
    /// `PUT /v1/vm/kill`.
    Kill,
    /// `PUT /v1/vm/net/{index}` with a [`NetUpdate`]: set NIC `index`'s
    /// link up or down.
    NetLink { index: usize, link: LinkState },
    /// `GET /v1/vm/screenshot`: answers a PNG.
    Screenshot,
    /// `GET /v1/vm/screen`: answers a [`ScreenInfo`].
    Screen,
    /// `POST /v1/vm/keys`: types on the keyboard.
    Keys(KeysRequest),
    /// `POST /v1/vm/pointer`: moves the pointer.
    Pointer(PointerRequest),
}

/// A request kiln-vmm refuses before acting: the HTTP status (400, 404,
/// 405) and the message of its [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl Refused {
    fn new(status: u16, message: String) -> Self {
        Refused { status, message }
    }
}

impl Request {
    pub fn method(&self) -> &'static str {
        match self {
            Request::Info | Request::Screenshot | Request::Screen => "GET",
            Request::Keys(_) | Request::Pointer(_) => "POST",
            _ => "PUT",
        }
    }

    pub fn path(&self) -> String {
        match self {
            Request::Info => "/v1/vm".to_string(),
            Request::Pause => "/v1/vm/pause".to_string(),
            Request::Resume => "/v1/vm/resume".to_string(),
            Request::PowerButton => "/v1/vm/power-button".to_string(),
            Request::Reset => "/v1/vm/reset".to_string(),
            Request::Kill => "/v1/vm/kill".to_string(),
            Request::NetLink { index, .. } => format!("/v1/vm/net/{index}"),
            Request::Screenshot => "/v1/vm/screenshot".to_string(),
            Request::Screen => "/v1/vm/screen".to_string(),
            Request::Keys(_) => "/v1/vm/keys".to_string(),
            Request::Pointer(_) => "/v1/vm/pointer".to_string(),
        }
    }

    /// The JSON body, for the requests that take one.
    pub fn body(&self) -> Option<Vec<u8>> {
        match self {
            Request::NetLink { link, .. } => {
                Some(serde_json::to_vec(&NetUpdate { link: *link }).expect("NetUpdate serializes"))
            }
            Request::Keys(k) => Some(serde_json::to_vec(k).expect("KeysRequest serializes")),
            Request::Pointer(p) => Some(serde_json::to_vec(p).expect("PointerRequest serializes")),
            _ => None,
        }
    }

    /// The request a method, path and body make. A query string and a
    /// trailing `/` are ignored; the actions also take `POST`.
    pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<Request, Refused> {
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        if let Some(index) = path.strip_prefix("/v1/vm/net/") {
            return Request::parse_net(method, path, index, body);
        }
        if path == "/v1/vm/keys" {
            return Request::parse_keys(method, path, body);
        }
        if path == "/v1/vm/pointer" {
            return Request::parse_pointer(method, path, body);
        }
        let action = match path {
            "/v1/vm" | "/v1/vm/screenshot" | "/v1/vm/screen" => {
                return match method {
                    "GET" => Ok(match path {
                        "/v1/vm" => Request::Info,
                        "/v1/vm/screenshot" => Request::Screenshot,
                        _ => Request::Screen,
                    }),
                    _ => Err(Refused::new(
                        405,
                        format!("{method} is not allowed on {path}; use GET"),
                    )),
                }
            }
            "/v1/vm/pause" => Request::Pause,
            "/v1/vm/resume" => Request::Resume,
            "/v1/vm/power-button" => Request::PowerButton,
            "/v1/vm/reset" => Request::Reset,
            "/v1/vm/kill" => Request::Kill,
            _ => return Err(Refused::new(404, format!("no such resource: {path}"))),
        };
        match method {
            "PUT" | "POST" => Ok(action),
            _ => Err(Refused::new(
                405,
                format!("{method} is not allowed on {path}; use PUT"),
            )),
        }
    }

    /// `POST /v1/vm/keys`.
    fn parse_keys(method: &str, path: &str, body: &[u8]) -> Result<Request, Refused> {
        if method != "POST" {
            return Err(Refused::new(
                405,
                format!("{method} is not allowed on {path}; use POST"),
            ));
        }
        let keys: KeysRequest = serde_json::from_slice(body).map_err(|e| {
            Refused::new(
                400,
                format!(
                    "body must be {{\"keys\": [\"ret\", \"ctrl-alt-delete\"], \"text\": \"...\", \"hold_ms\": 100}}: {e}"
                ),
            )
        })?;
        keys.check().map_err(|m| Refused::new(400, m))?;
        Ok(Request::Keys(keys))
    }

    /// `POST /v1/vm/pointer`.
    fn parse_pointer(method: &str, path: &str, body: &[u8]) -> Result<Request, Refused> {
        if method != "POST" {
            return Err(Refused::new(
                405,
                format!("{method} is not allowed on {path}; use POST"),
            ));
        }
        let p: PointerRequest = serde_json::from_slice(body).map_err(|e| {
            Refused::new(
                400,
                format!(
                    "body must be {{\"x\": 0..65535, \"y\": 0..65535, \"buttons\": 0..31}}: {e}"
                ),
            )
        })?;
        if p.buttons > PointerRequest::MAX_BUTTONS {
            return Err(Refused::new(
                400,
                format!(
                    "buttons {} is not a button mask: 1 left, 2 middle, 4 right, 8 wheel up, 16 wheel down (0..31)",
                    p.buttons
                ),
            ));
        }
        Ok(Request::Pointer(p))
    }

    /// `PUT /v1/vm/net/{index}` (`path` without query or trailing `/`).
    fn parse_net(method: &str, path: &str, index: &str, body: &[u8]) -> Result<Request, Refused> {
        let index: usize = index
            .parse()
            .map_err(|_| Refused::new(404, format!("no such resource: {path} (NIC index?)")))?;
        if method != "PUT" {
            return Err(Refused::new(
                405,
                format!("{method} is not allowed on {path}; use PUT"),
            ));
        }
        let update: NetUpdate = serde_json::from_slice(body).map_err(|e| {
            Refused::new(
                400,
                format!("body must be {{\"link\": \"up\"|\"down\"}}: {e}"),
            )
        })?;
        Ok(Request::NetLink {
            index,
            link: update.link,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_parses_back_from_its_method_path_and_body() {
        for r in [
            Request::Info,
            Request::Pause,
            Request::Resume,
            Request::PowerButton,
            Request::Reset,
            Request::Kill,
            Request::Screenshot,
            Request::Screen,
            Request::NetLink {
                index: 3,
                link: LinkState::Down,
            },
            Request::Keys(KeysRequest {
                keys: vec!["ctrl-alt-delete".into()],
                text: Some("hi\n".into()),
                hold_ms: Some(5),
            }),
        ] {
            let body = r.body().unwrap_or_default();
            assert_eq!(Request::parse(r.method(), &r.path(), &body), Ok(r.clone()));
        }
        assert_eq!(
            Request::NetLink {
                index: 0,
                link: LinkState::Up
            }
            .body()
            .unwrap(),
            br#"{"link":"up"}"#
        );
    }

    #[test]
    fn keys_bodies_are_checked() {
        let refused =
            |body: &str| Request::parse("POST", "/v1/vm/keys", body.as_bytes()).unwrap_err();
        assert_eq!(refused("{}").status, 400);
        assert_eq!(refused(r#"{"keys":[]}"#).status, 400);
        assert!(refused(r#"{"keys":["a"],"hold_ms":0}"#)
            .message
            .contains("hold_ms"));
        assert!(refused(r#"{"key":["a"]}"#)
            .message
            .contains("unknown field"));
        let many = format!(r#"{{"text":"{}"}}"#, "a".repeat(KeysRequest::MAX_KEYS + 1));
        assert!(refused(&many).message.contains("too many"));
        let slow = r#"{"text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","hold_ms":1000}"#;
        assert!(refused(slow).message.contains("longer than"));
        assert_eq!(
            Request::parse("GET", "/v1/vm/keys", b"")
                .unwrap_err()
                .status,
            405
        );
        assert!(Request::parse("POST", "/v1/vm/keys", br#"{"keys":["ret"]}"#).is_ok());
    }

    #[test]
    fn pointer_bodies_are_checked() {
        let p = |m: &str, body: &str| Request::parse(m, "/v1/vm/pointer", body.as_bytes());
        assert_eq!(
            p("POST", r#"{"x":3,"y":4,"buttons":5}"#),
            Ok(Request::Pointer(PointerRequest {
                x: 3,
                y: 4,
                buttons: 5
            }))
        );
        let req = Request::Pointer(PointerRequest {
            x: 1,
            y: 2,
            buttons: 0,
        });
        let body = String::from_utf8(req.body().unwrap()).unwrap();
        assert_eq!(p(req.method(), &body), Ok(req.clone()));
        assert_eq!(req.path(), "/v1/vm/pointer");
        for bad in [
            r#"{"x":1,"y":2,"buttons":32}"#,
            r#"{"x":1}"#,
            "",
            r#"{"x":1,"y":2,"w":1}"#,
        ] {
            assert_eq!(p("POST", bad).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(p("PUT", r#"{"x":1,"y":2}"#).unwrap_err().status, 405);
    }
}
