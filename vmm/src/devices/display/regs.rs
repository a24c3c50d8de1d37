//! The VGA register file behind ports 0x3C0-0x3DF (also at offset 0x400
//! of the MMIO BAR): attribute controller (0x3C0/0x3C1, index and data
//! through one flip-flop that a read of 0x3DA resets), miscellaneous
//! output (0x3C2 write, 0x3CC read), sequencer (0x3C4/0x3C5), DAC
//! (0x3C6 mask, 0x3C7/0x3C8 read and write index, 0x3C9 data, three
//! writes or reads per entry), graphics controller (0x3CE/0x3CF), CRTC
//! (0x3D4/0x3D5) and input status 1 (0x3DA, whose retrace bits toggle on
//! every read so that polling loops end). Only the colour (0x3Dx)
//! addresses are decoded. Every index is masked to its register array:
//! no value a guest writes indexes outside one.

/// Offsets from 0x3C0.
pub const AR_INDEX: u8 = 0x00;
pub const AR_READ: u8 = 0x01;
pub const MISC_WRITE: u8 = 0x02;
pub const SR_INDEX: u8 = 0x04;
pub const SR_DATA: u8 = 0x05;
pub const DAC_MASK: u8 = 0x06;
pub const DAC_READ_INDEX: u8 = 0x07;
pub const DAC_WRITE_INDEX: u8 = 0x08;
pub const DAC_DATA: u8 = 0x09;
pub const FEATURE_READ: u8 = 0x0a;
pub const MISC_READ: u8 = 0x0c;
pub const GR_INDEX: u8 = 0x0e;
pub const GR_DATA: u8 = 0x0f;
pub const CR_INDEX: u8 = 0x14;
pub const CR_DATA: u8 = 0x15;
pub const STATUS1: u8 = 0x1a;

/// Attribute controller registers: 16 palette entries, then mode
/// control (0x10), overscan, colour plane enable, panning, colour select.
pub const AR_COUNT: usize = 0x15;
pub const AR_MODE: usize = 0x10;
pub const AR_PLANE_ENABLE: usize = 0x12;
pub const AR_COLOR_SELECT: usize = 0x14;
/// Palette address source: set, the attribute controller shows video.
pub const AR_PAS: u8 = 0x20;

/// Sequencer registers used by the renderer and the memory window.
pub const SR_CLOCKING: usize = 1;
pub const SR_MAP_MASK: usize = 2;
pub const SR_CHAR_MAP: usize = 3;
pub const SR_MEMORY_MODE: usize = 4;
/// Graphics controller registers.
pub const GR_SET_RESET: usize = 0;
pub const GR_ENABLE_SET_RESET: usize = 1;
pub const GR_COLOR_COMPARE: usize = 2;
pub const GR_ROTATE: usize = 3;
pub const GR_READ_MAP: usize = 4;
pub const GR_MODE: usize = 5;
pub const GR_MISC: usize = 6;
pub const GR_COLOR_DONT_CARE: usize = 7;
pub const GR_BIT_MASK: usize = 8;

/// Input status 1: display enable and vertical retrace.
const ST01_TOGGLE: u8 = 0x09;

/// The VGA's registers and latches.
#[derive(Clone)]
pub struct VgaRegs {
    pub misc: u8,
    pub sr_index: u8,
    pub sr: [u8; 8],
    pub gr_index: u8,
    pub gr: [u8; 16],
    pub cr_index: u8,
    pub cr: [u8; 256],
    pub ar_index: u8,
    pub ar: [u8; AR_COUNT],
    ar_flip_flop: bool,
    pub pel_mask: u8,
    dac_state: u8,
    dac_sub_index: usize,
    dac_read_index: u8,
    dac_write_index: u8,
    dac_cache: [u8; 3],
    /// 256 entries of 6-bit (8-bit with the VBE 8-bit DAC) red, green, blue.
    pub palette: [u8; 768],
    st01: u8,
    feature: u8,
    /// The four planes' bytes as the last planar read latched them.
    pub latch: u32,
}

impl Default for VgaRegs {
    fn default() -> Self {
        VgaRegs {
            misc: 0x01,
            sr_index: 0,
            sr: [0; 8],
            gr_index: 0,
            gr: [0; 16],
            cr_index: 0,
            cr: [0; 256],
            ar_index: 0,
            ar: [0; AR_COUNT],
            ar_flip_flop: false,
            pel_mask: 0xff,
            dac_state: 0,
            dac_sub_index: 0,
            dac_read_index: 0,
            dac_write_index: 0,
            dac_cache: [0; 3],
            palette: [0; 768],
            st01: 0,
            feature: 0,
            latch: 0,
        }
    }
}

/// Writable bits of each sequencer register (QEMU's mask table).
const SR_MASK: [u8; 8] = [0x03, 0x3d, 0x0f, 0x3f, 0x0e, 0x00, 0x00, 0xff];
/// Writable bits of each graphics controller register.
const GR_MASK: [u8; 16] = [
    0x0f, 0x0f, 0x0f, 0x1f, 0x03, 0x7b, 0x0f, 0x0f, 0xff, 0, 0, 0, 0, 0, 0, 0,
];

impl VgaRegs {
    /// A read of port 0x3C0 + `offset` (offset masked to 0..0x20).
    pub fn read(&mut self, offset: u8) -> u8 {
        match offset & 0x1f {
            AR_INDEX if !self.ar_flip_flop => self.ar_index,
            AR_INDEX => 0,
            AR_READ => self
                .ar
                .get(usize::from(self.ar_index & 0x1f))
                .copied()
                .unwrap_or(0),
            MISC_WRITE => 0, // input status 0
            SR_INDEX => self.sr_index,
            SR_DATA => self.sr[usize::from(self.sr_index & 7)],
            DAC_MASK => self.pel_mask,
            DAC_READ_INDEX => self.dac_state,
            DAC_WRITE_INDEX => self.dac_write_index,
            DAC_DATA => {
                let v = self.palette[usize::from(self.dac_read_index) * 3 + self.dac_sub_index];
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    self.dac_sub_index = 0;
                    self.dac_read_index = self.dac_read_index.wrapping_add(1);
                }
                v
            }
            FEATURE_READ => self.feature,
            MISC_READ => self.misc,
            GR_INDEX => self.gr_index,
            GR_DATA => self.gr[usize::from(self.gr_index & 0x0f)],
            CR_INDEX => self.cr_index,
            CR_DATA => self.cr[usize::from(self.cr_index)],
            STATUS1 => {
                self.ar_flip_flop = false;
                self.st01 ^= ST01_TOGGLE;
                self.st01
            }
            _ => 0xff,
        }
    }

    /// A write of `value` to port 0x3C0 + `offset`.
    pub fn write(&mut self, offset: u8, value: u8) {
        match offset & 0x1f {
            AR_INDEX => {
                if !self.ar_flip_flop {
                    self.ar_index = value & 0x3f;
                } else {
                    let index = usize::from(self.ar_index & 0x1f);
                    let v = match index {
                        0..=0x0f => value & 0x3f,
                        0x10 => value & !0x10,
                        0x11 => value,
                        0x12 => value & 0x3f,
                        0x13 => value & 0x0f,
                        0x14 => value & 0x0f,
                        _ => 0,
                    };
                    if let Some(r) = self.ar.get_mut(index) {
                        *r = v;
                    }
                }
                self.ar_flip_flop = !self.ar_flip_flop;
            }
            MISC_WRITE => self.misc = value & !0x10,
            SR_INDEX => self.sr_index = value & 7,
            SR_DATA => {
                let i = usize::from(self.sr_index & 7);
                self.sr[i] = value & SR_MASK[i];
            }
            DAC_MASK => self.pel_mask = value,
            DAC_READ_INDEX => {
                self.dac_read_index = value;
                self.dac_sub_index = 0;
                self.dac_state = 3;
            }
            DAC_WRITE_INDEX => {
                self.dac_write_index = value;
                self.dac_sub_index = 0;
                self.dac_state = 0;
            }
            DAC_DATA => {
                self.dac_cache[self.dac_sub_index] = value;
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    let at = usize::from(self.dac_write_index) * 3;
                    self.palette[at..at + 3].copy_from_slice(&self.dac_cache);
                    self.dac_sub_index = 0;
                    self.dac_write_index = self.dac_write_index.wrapping_add(1);
                }
            }
            GR_INDEX => self.gr_index = value & 0x0f,
            GR_DATA => {
                let i = usize::from(self.gr_index & 0x0f);
                self.gr[i] = value & GR_MASK[i];
            }
            CR_INDEX => self.cr_index = value,
            CR_DATA => {
                let i = usize::from(self.cr_index);
                // Registers 0-7 are write-protected by CR11 bit 7, except
                // the overflow register's line compare bit.
                if self.cr[0x11] & 0x80 != 0 && i <= 7 {
                    if i == 7 {
                        self.cr[7] = (self.cr[7] & !0x10) | (value & 0x10);
                    }
                    return;
                }
                self.cr[i] = value;
            }
            STATUS1 => self.feature = value & 0x10,
            _ => {}
        }
    }

    /// The attribute controller shows video (palette address source set).
    pub fn video_enabled(&self) -> bool {
        self.ar_index & AR_PAS != 0
    }

    /// 16-colour index `c` through the attribute palette, colour select
    /// and the DAC: an 8-bit RGB triple (`dac8`: the DAC holds 8-bit
    /// values, else 6-bit ones).
    pub fn attr_rgb(&self, c: u8, dac8: bool) -> [u8; 3] {
        let v = self.ar[usize::from(c & 0x0f)];
        let index = if self.ar[AR_MODE] & 0x80 != 0 {
            ((self.ar[AR_COLOR_SELECT] & 0x0f) << 4) | (v & 0x0f)
        } else {
            ((self.ar[AR_COLOR_SELECT] & 0x0c) << 4) | (v & 0x3f)
        };
        self.dac_rgb(index, dac8)
    }

    /// DAC entry `index` as 8-bit RGB.
    pub fn dac_rgb(&self, index: u8, dac8: bool) -> [u8; 3] {
        let at = usize::from(index) * 3;
        let mut rgb = [0; 3];
        for (o, &v) in rgb.iter_mut().zip(&self.palette[at..at + 3]) {
            *o = if dac8 {
                v
            } else {
                (v << 2) | ((v & 0x3f) >> 4)
            };
        }
        rgb
    }
}
