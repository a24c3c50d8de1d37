//! The Bochs VBE "dispi" interface: an index at port 0x1CE and 16-bit data
//! at 0x1CF (also registers 0-0xA directly at offset 0x500 of the MMIO
//! BAR). The guest sets resolution, depth and virtual size, then enables;
//! the mode shows from the framebuffer BAR at the start the offsets
//! give. Values are fixed up as they are enabled (depth one of 4, 8, 15,
//! 16, 24, 32; sizes within the maxima and the video memory), so the
//! renderer never derives a mode that reaches past the memory.

pub const INDEX_ID: usize = 0;
pub const INDEX_XRES: usize = 1;
pub const INDEX_YRES: usize = 2;
pub const INDEX_BPP: usize = 3;
pub const INDEX_ENABLE: usize = 4;
pub const INDEX_BANK: usize = 5;
pub const INDEX_VIRT_WIDTH: usize = 6;
pub const INDEX_VIRT_HEIGHT: usize = 7;
pub const INDEX_X_OFFSET: usize = 8;
pub const INDEX_Y_OFFSET: usize = 9;
pub const INDEX_VIDEO_MEMORY_64K: usize = 10;
pub const NUM_REGS: usize = 11;

pub const ENABLED: u16 = 0x01;
pub const GETCAPS: u16 = 0x02;
pub const DAC_8BIT: u16 = 0x20;
pub const LFB_ENABLED: u16 = 0x40;
pub const NOCLEARMEM: u16 = 0x80;

pub const ID0: u16 = 0xb0c0;
pub const ID5: u16 = 0xb0c5;
pub const MAX_XRES: u16 = 16000;
pub const MAX_YRES: u16 = 12000;
pub const MAX_BPP: u16 = 32;

/// What enabling a mode asks of the VGA side.
#[derive(Debug, PartialEq, Eq)]
pub enum VbeEffect {
    None,
    /// A mode was enabled: clear `clear` bytes of video memory, switch
    /// the legacy window to linear (chain-4) graphics.
    Enabled {
        clear: usize,
    },
    /// VBE was turned off: back to VGA modes.
    Disabled,
}

/// The dispi registers and what the enabled mode derives from them.
#[derive(Clone, Debug)]
pub struct Vbe {
    pub index: u16,
    pub regs: [u16; NUM_REGS],
    /// Bytes per line of the enabled mode.
    pub line_offset: usize,
    /// Where the visible picture starts in video memory.
    pub start: usize,
    vram_size: usize,
}

/// Bytes a pixel of `bpp` takes (4 bpp: half).
pub fn bytes_per_line(bpp: u16, width: usize) -> usize {
    match bpp {
        4 => width / 2,
        15 => width * 2,
        b => width * usize::from(b).div_ceil(8),
    }
}

impl Vbe {
    pub fn new(vram_size: usize) -> Self {
        let mut regs = [0; NUM_REGS];
        regs[INDEX_ID] = ID5;
        Vbe {
            index: 0,
            regs,
            line_offset: 0,
            start: 0,
            vram_size,
        }
    }

    pub fn enabled(&self) -> bool {
        self.regs[INDEX_ENABLE] & ENABLED != 0
    }

    pub fn dac_8bit(&self) -> bool {
        self.regs[INDEX_ENABLE] & DAC_8BIT != 0
    }

    /// Where the 64 KiB legacy window starts in video memory.
    pub fn bank_offset(&self) -> usize {
        usize::from(self.regs[INDEX_BANK]) << 16
    }

    pub fn read(&self, index: usize) -> u16 {
        let caps = self.regs[INDEX_ENABLE] & GETCAPS != 0;
        match index {
            INDEX_XRES if caps => MAX_XRES,
            INDEX_YRES if caps => MAX_YRES,
            INDEX_BPP if caps => MAX_BPP,
            INDEX_VIDEO_MEMORY_64K => (self.vram_size >> 16).min(0xffff) as u16,
            i if i < NUM_REGS => self.regs[i],
            _ => 0,
        }
    }

    /// Write register `index`; returns what the VGA side must do.
    pub fn write(&mut self, index: usize, value: u16) -> VbeEffect {
        match index {
            INDEX_ID if (ID0..=ID5).contains(&value) => self.regs[INDEX_ID] = value,
            INDEX_XRES | INDEX_YRES | INDEX_BPP | INDEX_VIRT_WIDTH | INDEX_VIRT_HEIGHT
                if !self.enabled() =>
            {
                self.regs[index] = value;
            }
            INDEX_BANK => {
                let banks = (self.vram_size >> 16).max(1);
                self.regs[INDEX_BANK] = (usize::from(value) % banks) as u16;
            }
            INDEX_X_OFFSET | INDEX_Y_OFFSET => {
                self.regs[index] = value;
                self.update_start();
            }
            INDEX_ENABLE => return self.write_enable(value),
            _ => {}
        }
        VbeEffect::None
    }

    fn write_enable(&mut self, value: u16) -> VbeEffect {
        let was = self.enabled();
        self.regs[INDEX_ENABLE] = value & (ENABLED | GETCAPS | DAC_8BIT | LFB_ENABLED | NOCLEARMEM);
        match (was, value & ENABLED != 0) {
            (false, true) => {
                self.fixup();
                self.regs[INDEX_BANK] = 0;
                let clear = if value & NOCLEARMEM != 0 {
                    0
                } else {
                    self.line_offset * usize::from(self.regs[INDEX_VIRT_HEIGHT])
                };
                VbeEffect::Enabled { clear }
            }
            (true, false) => VbeEffect::Disabled,
            _ => VbeEffect::None,
        }
    }

    /// Bring the mode registers into range, as they are enabled.
    fn fixup(&mut self) {
        let r = &mut self.regs;
        if !matches!(r[INDEX_BPP], 4 | 8 | 15 | 16 | 24 | 32) {
            r[INDEX_BPP] = 8;
        }
        let bpp = r[INDEX_BPP];
        r[INDEX_XRES] = (r[INDEX_XRES].clamp(8, MAX_XRES)) & !7;
        r[INDEX_YRES] = r[INDEX_YRES].clamp(1, MAX_YRES);
        // Shrink the visible size until one screen fits the memory.
        while bytes_per_line(bpp, usize::from(r[INDEX_XRES])) * usize::from(r[INDEX_YRES])
            > self.vram_size
        {
            r[INDEX_YRES] /= 2;
            r[INDEX_XRES] = (r[INDEX_XRES] / 2).max(8) & !7;
        }
        r[INDEX_VIRT_WIDTH] = r[INDEX_VIRT_WIDTH].clamp(r[INDEX_XRES], MAX_XRES) & !7;
        self.line_offset = bytes_per_line(bpp, usize::from(r[INDEX_VIRT_WIDTH]));
        let max_lines = (self.vram_size / self.line_offset).min(usize::from(u16::MAX)) as u16;
        if max_lines < r[INDEX_YRES] {
            r[INDEX_VIRT_WIDTH] = r[INDEX_XRES];
            self.line_offset = bytes_per_line(bpp, usize::from(r[INDEX_XRES]));
        }
        let max_lines = (self.vram_size / self.line_offset).min(usize::from(u16::MAX)) as u16;
        r[INDEX_VIRT_HEIGHT] = max_lines.max(r[INDEX_YRES]);
        self.update_start();
    }

    /// The start from the offsets, clamped so that the visible picture
    /// stays inside video memory.
    fn update_start(&mut self) {
        let r = &self.regs;
        let bpp = r[INDEX_BPP];
        let x = bytes_per_line(bpp, usize::from(r[INDEX_X_OFFSET]));
        let start = usize::from(r[INDEX_Y_OFFSET]) * self.line_offset + x;
        let visible = self.line_offset * usize::from(r[INDEX_YRES]);
        self.start = start.min(self.vram_size.saturating_sub(visible));
    }
}
