//! The display's picture and text through a VMM's control API
//! (`GET /v1/vm/screenshot`, decoded from PNG, and `GET /v1/vm/screen`).

use std::time::{Duration, Instant};

use kiln_api::control::{Request, ScreenInfo};

use crate::{api, Vm};

/// A decoded screenshot: width, height, RGB bytes.
pub struct Shot {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Shot {
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let at = (y * self.width + x) * 3;
        [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]
    }
}

/// `GET /v1/vm/screenshot`, decoded; and how long the request took.
pub fn screenshot(vm: &Vm) -> (Shot, Duration) {
    let sock = vm.api_socket.as_ref().expect("api socket");
    let t = Instant::now();
    let r = kiln_api::client::control(sock, &Request::Screenshot, api::TIMEOUT).unwrap();
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    (decode_png(&r.body), took)
}

/// `GET /v1/vm/screen`.
pub fn screen(vm: &Vm) -> ScreenInfo {
    let sock = vm.api_socket.as_ref().expect("api socket");
    let r = kiln_api::client::control(sock, &Request::Screen, api::TIMEOUT).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

/// An 8-bit RGB or RGBA PNG's pixels (alpha dropped).
pub fn decode_png(bytes: &[u8]) -> Shot {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        t => panic!("PNG colour type {t:?}"),
    };
    Shot {
        width: info.width as usize,
        height: info.height as usize,
        rgb,
    }
}
