//! The CRB register state machine against a fake backend (the real swtpm
//! is driven by `tests/tests/tpm.rs`; here the backend misbehaves on
//! purpose: responses too big, failures) and hostile register access.

use std::sync::{Arc, Mutex};

use super::*;

/// What the fake backend does with a command.
#[derive(Clone, Copy)]
enum Answer {
    /// A success response echoing the command's code, of this many bytes.
    Ok(usize),
    /// Claims a response longer than the buffer.
    TooBig,
    Fail,
}

struct Fake {
    answer: Answer,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TpmBackend for Fake {
    fn execute(
        &mut self,
        _locality: u8,
        cmd: &[u8],
        resp: &mut [u8],
    ) -> Result<usize, TpmBackendError> {
        self.seen.lock().unwrap().push(cmd.to_vec());
        match self.answer {
            Answer::Ok(n) => {
                resp[..HEADER_LEN].copy_from_slice(&error_response(0));
                resp[2..6].copy_from_slice(&(n as u32).to_be_bytes());
                resp[HEADER_LEN..n].fill(0xab);
                Ok(n)
            }
            Answer::TooBig => Ok(resp.len() + 1),
            Answer::Fail => Err(TpmBackendError::Protocol("gone".into())),
        }
    }
}

fn crb(answer: Answer) -> (TpmCrb, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        answer,
        seen: seen.clone(),
    };
    (TpmCrb::new(Box::new(fake)), seen)
}

fn r32(d: &mut TpmCrb, off: u64) -> u32 {
    let mut b = [0u8; 4];
    d.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w32(d: &mut TpmCrb, off: u64, v: u32) {
    d.write(off, &v.to_le_bytes());
}

/// Put `cmd` in the buffer and start it with a byte write.
fn run(d: &mut TpmCrb, cmd: &[u8]) -> Vec<u8> {
    d.write(DATA_BUFFER as u64, cmd);
    d.write(CTRL_START as u64, &[1]);
    assert_eq!(r32(d, CTRL_START as u64), 0, "CTRL_START clears");
    let mut out = vec![0u8; BUFFER_SIZE];
    d.read(DATA_BUFFER as u64, &mut out);
    let n = header_size(&out).unwrap().min(BUFFER_SIZE);
    out.truncate(n);
    out
}

fn command(size: u32) -> Vec<u8> {
    let mut c = vec![0x80, 0x01];
    c.extend_from_slice(&size.to_be_bytes());
    c.extend_from_slice(&0x17bu32.to_be_bytes());
    c.resize((size as usize).clamp(HEADER_LEN, BUFFER_SIZE), 0);
    c
}

fn rc(resp: &[u8]) -> u32 {
    u32::from_be_bytes(resp[6..10].try_into().unwrap())
}

#[test]
fn power_on_registers_are_qemus() {
    let (mut d, _) = crb(Answer::Ok(10));
    assert_eq!(r32(&mut d, INTF_ID as u64), INTF_ID_LO);
    assert_eq!(r32(&mut d, INTF_ID_HI as u64), 0x0001_1014);
    let mut b = [0u8; 8];
    d.read(INTF_ID as u64, &mut b);
    assert_eq!(
        u64::from_le_bytes(b),
        0x0001_1014_0000_0000 | u64::from(INTF_ID_LO)
    );
    assert_eq!(r32(&mut d, LOC_STATE as u64), LOC_STATE_REG_VALID);
    assert_eq!(r32(&mut d, CTRL_STS as u64), CTRL_STS_IDLE);
    assert_eq!(r32(&mut d, CTRL_CMD_SIZE as u64), BUFFER_SIZE as u32);
    assert_eq!(r32(&mut d, CTRL_RSP_SIZE as u64), BUFFER_SIZE as u32);
    let buf = (CRB_BASE + 0x80) as u32;
    assert_eq!(r32(&mut d, CTRL_CMD_LADDR as u64), buf);
    assert_eq!(r32(&mut d, CTRL_RSP_ADDR as u64), buf);
    assert_eq!(r32(&mut d, CTRL_CMD_HADDR as u64), 0);
    assert_eq!(CRB_CONTROL_AREA, 0xfed4_0040);
    // One byte of INTF_ID: the interface type, CRB.
    let mut one = [0u8];
    d.read(INTF_ID as u64, &mut one);
    assert_eq!(one[0] & 0xf, 1);
}

#[test]
fn locality_request_and_relinquish_with_byte_writes() {
    let (mut d, _) = crb(Answer::Ok(10));
    d.write(LOC_CTRL as u64, &[LOC_CTRL_REQUEST_ACCESS as u8]);
    assert_eq!(
        r32(&mut d, LOC_STATE as u64),
        LOC_STATE_REG_VALID | LOC_STATE_ASSIGNED
    );
    assert_eq!(r32(&mut d, LOC_STS as u64), LOC_STS_GRANTED);
    assert_eq!(r32(&mut d, LOC_CTRL as u64), 0, "write-only");
    d.write(LOC_CTRL as u64, &[LOC_CTRL_RELINQUISH as u8]);
    assert_eq!(r32(&mut d, LOC_STATE as u64), LOC_STATE_REG_VALID);
    assert_eq!(r32(&mut d, LOC_STS as u64), 0);
}

#[test]
fn cmd_ready_and_go_idle() {
    let (mut d, _) = crb(Answer::Ok(10));
    w32(&mut d, CTRL_REQ as u64, CTRL_REQ_CMD_READY);
    assert_eq!(r32(&mut d, CTRL_STS as u64), 0);
    w32(&mut d, CTRL_REQ as u64, CTRL_REQ_GO_IDLE);
    assert_eq!(r32(&mut d, CTRL_STS as u64), CTRL_STS_IDLE);
}

#[test]
fn a_command_reaches_the_backend_and_its_response_the_buffer() {
    let (mut d, seen) = crb(Answer::Ok(20));
    let cmd = command(12);
    let resp = run(&mut d, &cmd);
    assert_eq!(seen.lock().unwrap().as_slice(), &[cmd]);
    assert_eq!(resp.len(), 20);
    assert_eq!(rc(&resp), 0);
    assert!(resp[HEADER_LEN..].iter().all(|&b| b == 0xab));
    assert_eq!(d.commands, 1);
    // A second start while nothing changed runs the command again.
    run(&mut d, &command(12));
    assert_eq!(seen.lock().unwrap().len(), 2);
    // Writing 0 to CTRL_START does nothing.
    w32(&mut d, CTRL_START as u64, 0);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn a_full_buffer_response_fits() {
    let (mut d, _) = crb(Answer::Ok(BUFFER_SIZE));
    let resp = run(&mut d, &command(BUFFER_SIZE as u32));
    assert_eq!(resp.len(), BUFFER_SIZE);
    assert_eq!(rc(&resp), 0);
}

#[test]
fn hostile_command_sizes_never_reach_the_backend() {
    for size in [0, 1, 9, BUFFER_SIZE as u32 + 1, 0x1000, u32::MAX] {
        let (mut d, seen) = crb(Answer::Ok(10));
        let resp = run(&mut d, &command(size));
        assert_eq!(rc(&resp), TPM_RC_COMMAND_SIZE, "size {size}");
        assert!(seen.lock().unwrap().is_empty(), "size {size}");
    }
}

#[test]
fn a_response_bigger_than_the_buffer_or_a_failure_is_an_error_response() {
    let (mut d, _) = crb(Answer::TooBig);
    assert_eq!(rc(&run(&mut d, &command(12))), TPM_RC_FAILURE);
    let (mut d, _) = crb(Answer::Fail);
    assert_eq!(rc(&run(&mut d, &command(12))), TPM_RC_FAILURE);
    assert_eq!(
        r32(&mut d, CTRL_STS as u64) & CTRL_STS_FATAL,
        CTRL_STS_FATAL
    );
}

#[test]
fn any_access_at_any_offset_stays_in_the_window() {
    let (mut d, seen) = crb(Answer::Ok(10));
    for size in [1usize, 2, 3, 4, 8] {
        for off in (0..CRB_SIZE + 16).chain([u64::MAX - 3, u64::MAX]) {
            let mut b = vec![0u8; size];
            d.read(off, &mut b);
            if off >= CRB_SIZE {
                assert!(
                    b.iter().all(|&x| x == 0),
                    "read past the window at {off:#x}"
                );
            }
            d.write(off, &vec![0xffu8; size]);
        }
    }
    // 0xff bytes everywhere started commands; those with a size of
    // 0xffffffff were refused, the rest (a previous 10-byte response in
    // the buffer) fit it.
    assert!(d.commands > 0);
    assert!(seen.lock().unwrap().iter().all(|c| c.len() <= BUFFER_SIZE));
    // Read-only registers kept their values.
    assert_eq!(r32(&mut d, INTF_ID as u64), INTF_ID_LO);
    assert_eq!(r32(&mut d, CTRL_CMD_SIZE as u64), BUFFER_SIZE as u32);
}
