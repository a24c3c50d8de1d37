//! O_DIRECT writes through a per-thread io_uring: one `io_uring_enter`
//! submits the write and waits for it (Linux AIO needs two system calls).
//! Used before `aio.rs`, which is the fallback where io_uring is disabled.

use std::cell::RefCell;
use std::io;
use std::os::unix::io::RawFd;

use io_uring::{opcode, types, IoUring};

thread_local! {
    /// None: not tried yet; Some(None): io_uring unavailable on this thread.
    static RING: RefCell<Option<Option<IoUring>>> = const { RefCell::new(None) };
}

/// Writes all of `buf` at `off`; None when io_uring is unavailable.
pub fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> Option<io::Result<()>> {
    RING.with(|r| {
        let mut r = r.borrow_mut();
        let ring = r.get_or_insert_with(|| IoUring::new(4).ok()).as_mut()?;
        let mut done = 0usize;
        while done < buf.len() {
            match write_once(ring, fd, &buf[done..], off + done as u64) {
                Ok(0) => {
                    return Some(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "io_uring write wrote nothing",
                    )))
                }
                Ok(n) => done += n,
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(()))
    })
}

fn write_once(ring: &mut IoUring, fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    let len = buf.len().min(1 << 30) as u32;
    let sqe = opcode::Write::new(types::Fd(fd), buf.as_ptr(), len)
        .offset(off)
        .build()
        .user_data(1);
    // SAFETY: the buffer stays borrowed, alive and unmoved until the
    // completion is reaped below, before this function returns.
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if let Some(cqe) = ring.completion().next() {
            let res = cqe.result();
            return if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            };
        }
    }
}
