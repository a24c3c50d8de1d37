//! The RTC as a bus device with its interrupt timer: [`RtcDevice`] shares
//! an [`Rtc`] with a thread that sleeps until the next enabled event (see
//! [`Rtc::next_event`]), then lets the RTC catch up, which raises IRQ 8.
//! The guest's accesses that can change the next event (any data-port
//! write, a read of register C) wake the thread to recompute it. With no
//! interrupt enabled the thread waits on a condition variable and costs
//! nothing. It stops when the device is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{Rtc, REG_C};
use crate::devices::bus::ByteRegisters;

/// Woken a little after an event is due, so that the clock has passed it.
const SLACK: Duration = Duration::from_micros(50);

struct Shared {
    rtc: Mutex<Rtc>,
    changed: Condvar,
    stop: AtomicBool,
}

/// The RTC on the I/O bus, with its timer thread.
pub struct RtcDevice {
    shared: Arc<Shared>,
    /// The register index last written (kept here so that reads of C can
    /// be spotted without locking twice).
    index: u8,
}

impl RtcDevice {
    /// Start the timer thread for `rtc` (which should have its interrupt
    /// set with [`Rtc::with_interrupt`]).
    pub fn new(rtc: Rtc) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            rtc: Mutex::new(rtc),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("rtc".into())
            .spawn(move || {
                if let Err(e) = crate::devices::thread_start() {
                    log::error!("rtc: {e}; the RTC timer stops");
                    return;
                }
                run(&s)
            })?;
        Ok(RtcDevice { shared, index: 0 })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rtc> {
        self.shared.rtc.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn run(s: &Shared) {
    let mut rtc = s.rtc.lock().unwrap_or_else(|e| e.into_inner());
    while !s.stop.load(Ordering::SeqCst) {
        rtc.catch_up();
        rtc = match rtc.next_event() {
            None => s.changed.wait(rtc).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                s.changed
                    .wait_timeout(rtc, d + SLACK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

impl Drop for RtcDevice {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _guard = self.lock();
        self.shared.changed.notify_all();
    }
}

impl ByteRegisters for RtcDevice {
    fn read_byte(&mut self, offset: u64) -> u8 {
        let v = self.lock().read_byte(offset);
        if offset == 1 && self.index == REG_C {
            // IRQF cleared: the next event may raise IRQ 8 again.
            self.shared.changed.notify_one();
        }
        v
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        self.lock().write_byte(offset, value);
        match offset {
            0 => self.index = value & 0x7f,
            1 => self.shared.changed.notify_one(),
            _ => {}
        }
    }
}
