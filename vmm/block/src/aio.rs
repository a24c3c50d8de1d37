//! Positioned O_DIRECT reads and writes through Linux native AIO, one request at a time per
//! thread (`io_submit` then `io_getevents`).
//!
//! Why: with `O_DIRECT`, a *synchronous* `pwrite` into a hole or an
//! unwritten extent holds the ext4 inode lock until the device completes, so
//! writes from many threads run one after another. An AIO request holds it
//! only while submitting, so threads' writes overlap on the device, as with
//! QEMU's `aio=native`. Each thread keeps its own AIO context; where AIO is
//! unavailable the caller falls back to `pwrite`.

use std::cell::RefCell;
use std::io;
use std::os::unix::io::RawFd;

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;

/// `struct iocb` (little-endian layout).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

struct Ctx(libc::c_ulong);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: destroys the AIO context this thread created; no request is pending.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.0) };
    }
}

thread_local! {
    /// None: not tried yet; Some(None): AIO unavailable on this thread.
    static CTX: RefCell<Option<Option<Ctx>>> = const { RefCell::new(None) };
}

fn setup() -> Option<Ctx> {
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes the new context id into `ctx`, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_setup,
            1 as libc::c_long,
            &mut ctx as *mut libc::c_ulong,
        )
    };
    (r == 0).then_some(Ctx(ctx))
}

/// Writes `buf` at `off` on `fd` through AIO. Returns None when AIO is not
/// available (the caller then uses `pwrite`), else the outcome.
pub fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> Option<io::Result<()>> {
    run(fd, IOCB_CMD_PWRITE, buf.as_ptr() as u64, buf.len(), off)
}

/// Reads into `buf` at `off`; returns the bytes read (short only at end of file).
pub fn pread(fd: RawFd, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
    CTX.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c.get_or_insert_with(setup).as_ref()?;
        Some(submit_wait(
            ctx.0,
            fd,
            IOCB_CMD_PREAD,
            buf.as_mut_ptr() as u64,
            buf.len(),
            off,
        ))
    })
}

fn run(fd: RawFd, op: u16, ptr: u64, len: usize, off: u64) -> Option<io::Result<()>> {
    CTX.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c.get_or_insert_with(setup).as_ref()?;
        let mut done = 0usize;
        while done < len {
            match submit_wait(
                ctx.0,
                fd,
                op,
                ptr + done as u64,
                len - done,
                off + done as u64,
            ) {
                Ok(0) => {
                    return Some(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "AIO wrote nothing",
                    )))
                }
                Ok(n) => done += n,
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(()))
    })
}

/// Submits one request and waits for it; returns the byte count.
fn submit_wait(
    ctx: libc::c_ulong,
    fd: RawFd,
    op: u16,
    ptr: u64,
    len: usize,
    off: u64,
) -> io::Result<usize> {
    let mut cb = Iocb {
        aio_lio_opcode: op,
        aio_fildes: fd as u32,
        aio_buf: ptr,
        aio_nbytes: len as u64,
        aio_offset: off as i64,
        ..Default::default()
    };
    let mut list = [&mut cb as *mut Iocb];
    loop {
        // SAFETY: the iocb and the buffer it points to (borrowed by our
        // caller for the whole call) stay alive and unmoved until
        // io_getevents below has returned the completion.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                ctx,
                1 as libc::c_long,
                list.as_mut_ptr(),
            )
        };
        if r == 1 {
            break;
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(if r < 0 {
            e
        } else {
            io::Error::other("io_submit accepted no request")
        });
    }
    let mut ev = IoEvent::default();
    loop {
        // SAFETY: `ev` is valid for one event; a null timeout waits until completion.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                ctx,
                1 as libc::c_long,
                1 as libc::c_long,
                &mut ev as *mut IoEvent,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        if r == 1 {
            break;
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(e);
    }
    if ev.res < 0 {
        return Err(io::Error::from_raw_os_error((-ev.res) as i32));
    }
    Ok(ev.res as usize)
}
