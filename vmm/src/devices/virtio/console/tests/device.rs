//! The whole device behind the virtio-pci transport, its worker thread and
//! a real client on its unix socket: what a guest driver and `qemu-ga`'s
//! host side see.

use super::*;

const QSIZE: u16 = 16;
const BUF: u64 = 0x1000;

fn buf(q: usize, i: u16) -> u64 {
    0x100000 + 0x10000 * q as u64 + BUF * u64::from(i)
}

struct Driver<'a> {
    dev: VirtioPciDevice,
    mem: &'a GuestMemoryMmap,
    queues: Vec<GuestQueue<'a>>,
    /// Used entries of each queue already looked at.
    seen: [u16; 6],
    /// Next transmit slot of each queue.
    next: [u16; 6],
}

impl TestDriver for Driver<'_> {
    fn device(&mut self) -> &mut VirtioPciDevice {
        &mut self.dev
    }
}

impl<'a> Driver<'a> {
    fn new(mem: &'a GuestMemoryMmap, dev: ConsoleDevice) -> Self {
        let vectors = Arc::new(RecordingVectors::default());
        Driver {
            dev: VirtioPciDevice::new(Box::new(dev), mem.clone(), vectors, 0).unwrap(),
            mem,
            queues: Vec::new(),
            seen: [0; 6],
            next: [0; 6],
        }
    }

    /// Negotiate `features`, set up `n` queues, DRIVER_OK, offer every
    /// receive buffer (queues 0, 2, 4).
    fn setup(&mut self, features: u64, n: usize) -> u8 {
        let msix = self.find_cap(|r0| r0 & 0xff == 0x11).unwrap();
        self.dev.config_write(msix / 4, 3, &[0x80]);
        let st = self.negotiate(features);
        assert_ne!(st & STATUS_FEATURES_OK, 0, "features accepted");
        self.program_msix(n as u64 + 1);
        self.queues.clear();
        self.seen = [0; 6];
        self.next = [0; 6];
        for q in 0..n {
            let gq = GuestQueue::new(self.mem, 0x1000 + 0x1000 * q as u64, QSIZE);
            self.w16(0x16, q as u16);
            self.w16(0x18, QSIZE);
            self.w16(0x1a, q as u16);
            for (off, v) in [(0x20, gq.desc_table), (0x28, gq.avail), (0x30, gq.used)] {
                self.w32(off, v as u32);
                self.w32(off + 4, (v >> 32) as u32);
            }
            self.w16(0x1c, 1);
            self.queues.push(gq);
        }
        let ok = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        self.w8(0x14, ok);
        for q in (0..n).step_by(2) {
            if q != PORT1_RX {
                self.offer(q);
            }
        }
        self.r8(0x14)
    }

    fn offer(&mut self, q: usize) {
        for i in 0..QSIZE {
            self.queues[q].set_desc(i, desc(buf(q, i), BUF as u32, 2, 0));
            self.queues[q].push_avail(i);
        }
        self.notify(q);
    }

    fn notify(&self, q: usize) {
        self.dev.queue_evts()[q].write(1).unwrap();
    }

    /// Send `data` on transmit queue `q`.
    fn send(&mut self, q: usize, data: &[u8]) {
        let slot = self.next[q] % QSIZE;
        self.next[q] += 1;
        self.mem
            .write_slice(data, GuestAddress(buf(q, slot)))
            .unwrap();
        self.queues[q].set_desc(slot, desc(buf(q, slot), data.len() as u32, 0, 0));
        self.queues[q].push_avail(slot);
        self.notify(q);
    }

    fn control(&mut self, id: u32, event: u16, value: u16) {
        self.send(CTRL_TX, &msg(id, event, value).encode(&[]));
    }

    /// What the device filled in receive queue `q` since the last look;
    /// each buffer is offered again.
    fn take(&mut self, q: usize) -> Vec<Vec<u8>> {
        let gq = &self.queues[q];
        let mut out = Vec::new();
        while self.seen[q] != gq.used_idx() {
            let (id, len) = gq.used_elem(self.seen[q]);
            self.seen[q] = self.seen[q].wrapping_add(1);
            let mut b = vec![0u8; len as usize];
            self.mem
                .read_slice(&mut b, GuestAddress(buf(q, id as u16)))
                .unwrap();
            out.push(b);
            gq.push_avail(id as u16);
        }
        if !out.is_empty() {
            self.notify(q);
        }
        out
    }

    /// Control messages until `want` of them came (5 s at most; with
    /// `want` 0, what came within 100 ms).
    fn control_msgs(&mut self, want: usize) -> Vec<(ControlMsg, Vec<u8>)> {
        let mut got = Vec::new();
        if want == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for(|| {
            for b in self.take(CTRL_RX) {
                got.push((ControlMsg::parse(&b).unwrap(), b[HEADER_LEN..].to_vec()));
            }
            got.len() >= want
        });
        got
    }

    /// Port 1's bytes until `want` bytes came (0: what came in 100 ms).
    fn port_bytes(&mut self, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        if want == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for(|| {
            for b in self.take(PORT1_RX) {
                got.extend(b);
            }
            got.len() >= want
        });
        got
    }
}

fn socket_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-console-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn device(path: &PathBuf) -> ConsoleDevice {
    ConsoleDevice::new(UnixListener::bind(path).unwrap()).unwrap()
}

/// Negotiate, DEVICE_READY, both ports ready; the port's name checked.
fn bring_up(d: &mut Driver) {
    let st = d.setup(F_VERSION_1 | F_MULTIPORT, 6);
    assert_eq!(st & STATUS_NEEDS_RESET, 0);
    let mut cfg = [0u8; 4];
    d.dev.bar_read(0, DEVICE_CFG_OFFSET + 4, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg), 2, "max_nr_ports");
    d.control(0, DEVICE_READY, 1);
    let adds = d.control_msgs(2);
    assert_eq!(adds.len(), 2, "{adds:?}");
    assert_eq!(adds[0].0, msg(0, DEVICE_ADD, 1));
    assert_eq!(adds[1].0, msg(1, DEVICE_ADD, 1));
    d.control(0, PORT_READY, 1);
    d.control(1, PORT_READY, 1);
    let got = d.control_msgs(2);
    assert_eq!(got[0].0, msg(0, CONSOLE_PORT, 1));
    assert_eq!(got[1].0, msg(1, PORT_NAME, 1));
    assert_eq!(got[1].1, b"org.qemu.guest_agent.0\0");
}

fn read_exact_timeout(c: &mut UnixStream, n: usize) -> Vec<u8> {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = vec![0u8; n];
    c.read_exact(&mut b).unwrap();
    b
}

#[test]
fn agent_port_joins_guest_and_client() {
    let path = socket_path("join");
    let mem = mem_two_regions();
    let mut d = Driver::new(&mem, device(&path));
    bring_up(&mut d);
    // No client: the host side is closed, and what the guest writes goes
    // nowhere (it is returned all the same).
    d.control(1, PORT_OPEN, 1);
    d.send(PORT1_TX, b"lost");
    assert!(wait_for(|| d.queues[PORT1_TX].used_idx() == 1));
    assert!(
        d.control_msgs(0).is_empty(),
        "no PORT_OPEN without a client"
    );

    let mut client = UnixStream::connect(&path).unwrap();
    assert_eq!(d.control_msgs(1)[0].0, msg(1, PORT_OPEN, 1));
    d.offer(PORT1_RX);
    client.write_all(b"{\"execute\":\"guest-ping\"}\n").unwrap();
    assert_eq!(d.port_bytes(25), b"{\"execute\":\"guest-ping\"}\n");
    d.send(PORT1_TX, b"{\"return\": {}}\n");
    assert_eq!(read_exact_timeout(&mut client, 15), b"{\"return\": {}}\n");

    // A second client waits until the first leaves.
    let mut second = UnixStream::connect(&path).unwrap();
    second.write_all(b"second\n").unwrap();
    assert!(d.port_bytes(0).is_empty(), "the second client is not read");
    drop(client);
    let got = d.control_msgs(2);
    assert_eq!(
        got.iter().map(|m| m.0).collect::<Vec<_>>(),
        [msg(1, PORT_OPEN, 0), msg(1, PORT_OPEN, 1)]
    );
    assert_eq!(d.port_bytes(7), b"second\n");
    d.send(PORT1_TX, b"to second");
    assert_eq!(read_exact_timeout(&mut second, 9), b"to second");

    // A device reset keeps the client: the next driver hears the port
    // open as soon as it is ready.
    d.w8(0x14, 0);
    bring_up_open(&mut d);
    d.control(1, PORT_OPEN, 1);
    d.offer(PORT1_RX);
    second.write_all(b"after reset").unwrap();
    assert_eq!(d.port_bytes(11), b"after reset");
    drop(d);
    let _ = std::fs::remove_file(&path);
}

/// [`bring_up`] with a client already connected.
fn bring_up_open(d: &mut Driver) {
    d.setup(F_VERSION_1 | F_MULTIPORT, 6);
    d.control(0, DEVICE_READY, 1);
    d.control(1, PORT_READY, 1);
    let got = d.control_msgs(4);
    let events: Vec<_> = got.iter().map(|m| m.0).collect();
    assert_eq!(
        events,
        [
            msg(0, DEVICE_ADD, 1),
            msg(1, DEVICE_ADD, 1),
            msg(1, PORT_NAME, 1),
            msg(1, PORT_OPEN, 1)
        ]
    );
}

#[test]
fn a_guest_that_never_reads_bounds_what_is_buffered() {
    let path = socket_path("stall");
    let mem = mem_two_regions();
    let mut d = Driver::new(&mem, device(&path));
    bring_up(&mut d);
    d.control(1, PORT_OPEN, 1);
    let mut client = UnixStream::connect(&path).unwrap();
    assert_eq!(d.control_msgs(1)[0].0, msg(1, PORT_OPEN, 1));
    // No receive buffers: the client writes until its writes would block.
    client.set_nonblocking(true).unwrap();
    let chunk = [0x5au8; 4096];
    let mut sent = 0usize;
    let mut stalls = 0;
    while stalls < 50 {
        match client.write(&chunk) {
            Ok(n) => {
                sent += n;
                stalls = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stalls += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 16 << 20, "the device keeps reading: {sent} bytes");
    }
    eprintln!("a guest that never reads: {sent} bytes accepted");
    assert!(sent >= RX_MAX, "the device buffers up to RX_MAX: {sent}");
    // RX_MAX, and what the kernel holds in the socket's buffers.
    assert!(sent < RX_MAX + (1 << 20), "{sent}");
    // The worker still serves the other direction.
    client.set_nonblocking(false).unwrap();
    d.send(PORT1_TX, b"still here");
    assert_eq!(read_exact_timeout(&mut client, 10), b"still here");
    // Once the guest reads, the bytes come in order.
    d.offer(PORT1_RX);
    let got = d.port_bytes(1);
    assert!(!got.is_empty() && got.iter().all(|&b| b == 0x5a));
    drop(d);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn without_multiport_only_the_console_port_exists() {
    let path = socket_path("single");
    let mem = mem_two_regions();
    let mut d = Driver::new(&mem, device(&path));
    let st = d.setup(F_VERSION_1, 2);
    assert_eq!(st & STATUS_NEEDS_RESET, 0);
    d.send(PORT0_TX, b"console text");
    assert!(wait_for(|| d.queues[PORT0_TX].used_idx() == 1));
    // A client may connect; nothing reaches it.
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(c.read(&mut [0u8; 8]).is_err());
    drop(d);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_hostile_control_chain_needs_a_reset_and_no_panic() {
    let path = socket_path("hostile");
    let mem = mem_two_regions();
    let mut d = Driver::new(&mem, device(&path));
    bring_up(&mut d);
    let q = &d.queues[CTRL_TX];
    q.set_desc(5, desc(0x10000, 8, 1, 6));
    q.set_desc(6, desc(0x10000, 8, 1, 5));
    q.push_avail(5);
    d.notify(CTRL_TX);
    assert!(wait_for(|| d.r8(0x14) & STATUS_NEEDS_RESET != 0));
    // A reset brings it back, socket and all.
    d.w8(0x14, 0);
    bring_up(&mut d);
    let _c = UnixStream::connect(&path).unwrap();
    assert_eq!(d.control_msgs(1)[0].0, msg(1, PORT_OPEN, 1));
    drop(d);
    let _ = std::fs::remove_file(&path);
}
