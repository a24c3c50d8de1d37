//! `kiln`: the command-line client of `kilnd`. Tables for people, `--json`
//! for scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use kiln_api::compute::{
    ConsoleOutput, DiskFormat, DiskSource, Firmware, Flavor, FlavorCreate, FlavorList, HostInfo,
    Image, ImageCreate, ImageKind, ImageList, ImageStatus, OsType, ReadyCondition, RebootType,
    Server, ServerAction, ServerCreate, ServerList, ServerStatus,
};
use kiln_manager::client::{self, ClientError};

mod console;
mod network;
mod tables;

use serde::de::DeserializeOwned;
use tables::{flavors, images, servers, table};

const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(name = "kiln", about = "Client of kilnd, the Kiln compute service")]
struct Cli {
    /// kilnd's API socket.
    #[arg(
        long,
        env = "KILN_SOCKET",
        default_value = "/run/kiln/kiln.sock",
        global = true
    )]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Host capacity and usage.
    Host,
    #[command(subcommand)]
    Flavor(FlavorCmd),
    #[command(subcommand)]
    Image(ImageCmd),
    #[command(subcommand)]
    Server(ServerCmd),
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Attach to a server's serial console (Ctrl-] detaches).
    Console { server: String },
}

#[derive(Subcommand)]
enum FlavorCmd {
    List,
    Show {
        id: String,
    },
    Create {
        name: String,
        #[arg(long)]
        vcpus: u32,
        #[arg(long)]
        ram_mb: u64,
        #[arg(long, default_value_t = 0)]
        disk_gb: u64,
    },
    Delete {
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Raw,
    Qcow2,
}

/// How a disk image boots (Nova's `hw_firmware_type`).
#[derive(Clone, Copy, ValueEnum)]
enum Fw {
    /// SeaBIOS.
    Bios,
    /// OVMF, with an NVRAM of each server's own.
    Uefi,
}

/// The operating system on a disk image (Nova's `os_type`).
#[derive(Clone, Copy, ValueEnum)]
enum Os {
    Linux,
    /// Servers get the Hyper-V enlightenments and an RTC in local time.
    Windows,
}

impl From<Os> for OsType {
    fn from(o: Os) -> OsType {
        match o {
            Os::Linux => OsType::Linux,
            Os::Windows => OsType::Windows,
        }
    }
}

impl From<Fw> for Firmware {
    fn from(f: Fw) -> Firmware {
        match f {
            Fw::Bios => Firmware::Bios,
            Fw::Uefi => Firmware::Uefi,
        }
    }
}

#[derive(Subcommand)]
enum ImageCmd {
    List,
    Show {
        id: String,
    },
    /// Register a kernel (host paths) for direct boot.
    Kernel {
        name: String,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initramfs: Option<PathBuf>,
        #[arg(long)]
        cmdline: Option<String>,
    },
    /// Import a disk image of the given format into the image store.
    /// Servers made from it boot it through firmware.
    Import {
        name: String,
        #[arg(long)]
        path: PathBuf,
        #[arg(long, value_enum)]
        format: Format,
        /// Firmware of servers made from it [default: bios].
        #[arg(long, value_enum)]
        firmware: Option<Fw>,
        /// Its operating system [default: linux].
        #[arg(long, value_enum)]
        os_type: Option<Os>,
    },
    /// Make a disk image from a local file: uploaded through the API with
    /// `--upload` (the file may be anywhere the CLI can read), else
    /// imported by kilnd from the file's path.
    Create {
        name: String,
        #[arg(long, visible_alias = "path")]
        file: PathBuf,
        #[arg(long, value_enum)]
        format: Format,
        #[arg(long)]
        upload: bool,
        /// Firmware of servers made from it [default: bios].
        #[arg(long, value_enum)]
        firmware: Option<Fw>,
        /// Its operating system [default: linux].
        #[arg(long, value_enum)]
        os_type: Option<Os>,
    },
    Delete {
        id: String,
    },
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Wait {
    /// Until ACTIVE.
    Active,
    /// Until ACTIVE and its readiness condition is met.
    Ready,
}

#[derive(Subcommand)]
enum ServerCmd {
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    Show {
        server: String,
    },
    Create {
        name: String,
        #[arg(long)]
        flavor: String,
        /// A kernel image (boots directly) or a disk image (the root disk,
        /// booted through firmware).
        #[arg(long)]
        image: String,
        #[arg(long)]
        cmdline: Option<String>,
        /// Disk image for the root disk (a qcow2 overlay of the flavor's size).
        #[arg(long)]
        disk_image: Option<String>,
        /// Firmware, instead of the disk image's own (disk images only).
        #[arg(long, value_enum)]
        firmware: Option<Fw>,
        /// Ready when the console matches this regex.
        #[arg(long, conflicts_with = "ready_code")]
        ready_console: Option<String>,
        /// Ready when the guest writes this code to the debug port.
        #[arg(long)]
        ready_code: Option<u8>,
        /// Delete the server automatically after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// A NIC on this network: `NAME[,mac=MAC]` (repeatable).
        #[arg(long = "network", value_parser = network::parse_nic)]
        networks: Vec<kiln_api::compute::NicRequest>,
        /// Wait until the server is ACTIVE or ready (fails if it goes to
        /// ERROR or SHUTOFF first)
        #[arg(long, value_enum)]
        wait: Option<Wait>,
        /// Seconds to wait.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    Delete {
        server: String,
    },
    Start {
        server: String,
    },
    Stop {
        server: String,
    },
    Reboot {
        server: String,
        #[arg(long)]
        hard: bool,
    },
    Pause {
        server: String,
    },
    Resume {
        server: String,
    },
    /// The serial console log.
    Console {
        server: String,
        #[arg(long)]
        tail: Option<usize>,
    },
}

struct Api<'a> {
    socket: &'a Path,
}

impl Api<'_> {
    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        client::request(self.socket, "GET", path, None, TIMEOUT)?.json()
    }

    fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        client::request_json(self.socket, method, path, body, TIMEOUT)?.json()
    }

    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(), ClientError> {
        client::request(self.socket, method, path, body, TIMEOUT)?.ok()
    }

    /// A server by id, or by name if exactly one has it.
    fn server(&self, key: &str) -> Result<Server, ClientError> {
        match self.get::<Server>(&format!("/v1/servers/{}", enc(key))) {
            Err(ClientError::Status { status: 404, .. }) => {
                let list: ServerList = self.get(&format!("/v1/servers?name={}", enc(key)))?;
                match list.servers.len() {
                    1 => Ok(list.servers.into_iter().next().expect("one")),
                    0 => Err(ClientError::Status {
                        status: 404,
                        message: format!("no server {key:?}"),
                    }),
                    n => Err(ClientError::Status {
                        status: 409,
                        message: format!("{n} servers are named {key:?}; use an id"),
                    }),
                }
            }
            r => r,
        }
    }
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let api = Api {
        socket: &cli.socket,
    };
    let json = cli.json;
    match &cli.cmd {
        Cmd::Host => {
            let h: HostInfo = api.get("/v1/host")?;
            if json {
                return print_json(&h);
            }
            let row = |n: &str, r: &kiln_api::compute::ResourceUsage| {
                vec![
                    n.to_string(),
                    r.total.to_string(),
                    r.reserved.to_string(),
                    r.allocation_ratio.to_string(),
                    r.capacity.to_string(),
                    r.used.to_string(),
                    r.free.to_string(),
                ]
            };
            table(
                &[
                    "RESOURCE", "TOTAL", "RESERVED", "RATIO", "CAPACITY", "USED", "FREE",
                ],
                vec![
                    row("vcpus", &h.vcpus),
                    row("ram_mb", &h.ram_mb),
                    row("disk_gb", &h.disk_gb),
                ],
            );
            println!("servers: {}", h.servers);
        }
        Cmd::Flavor(c) => match c {
            FlavorCmd::List => {
                let l: FlavorList = api.get("/v1/flavors")?;
                if json {
                    return print_json(&l);
                }
                flavors(&l.flavors);
            }
            FlavorCmd::Show { id } => show(
                json,
                &api.get::<Flavor>(&format!("/v1/flavors/{}", enc(id)))?,
                |f| flavors(std::slice::from_ref(f)),
            )?,
            FlavorCmd::Create {
                name,
                vcpus,
                ram_mb,
                disk_gb,
            } => {
                let req = FlavorCreate {
                    name: name.clone(),
                    vcpus: *vcpus,
                    ram_mb: *ram_mb,
                    disk_gb: *disk_gb,
                };
                show(
                    json,
                    &api.send::<Flavor>("POST", "/v1/flavors", &req)?,
                    |f| flavors(std::slice::from_ref(f)),
                )?
            }
            FlavorCmd::Delete { id } => {
                api.call("DELETE", &format!("/v1/flavors/{}", enc(id)), None)?
            }
        },
        Cmd::Image(c) => match c {
            ImageCmd::List => {
                let l: ImageList = api.get("/v1/images")?;
                if json {
                    return print_json(&l);
                }
                images(&l.images);
            }
            ImageCmd::Show { id } => show(
                json,
                &api.get::<Image>(&format!("/v1/images/{}", enc(id)))?,
                |i| images(std::slice::from_ref(i)),
            )?,
            ImageCmd::Kernel {
                name,
                kernel,
                initramfs,
                cmdline,
            } => {
                let req = ImageCreate::Kernel {
                    name: name.clone(),
                    kernel: abs(kernel)?,
                    initramfs: initramfs.as_deref().map(abs).transpose()?,
                    cmdline: cmdline.clone(),
                };
                show(json, &api.send::<Image>("POST", "/v1/images", &req)?, |i| {
                    images(std::slice::from_ref(i))
                })?
            }
            ImageCmd::Create {
                name,
                file,
                format,
                upload: true,
                firmware,
                os_type,
            } => {
                let req = ImageCreate::Disk {
                    name: name.clone(),
                    path: None,
                    format: disk_format(*format),
                    source: DiskSource::Upload,
                    firmware: firmware.map(Firmware::from),
                    os_type: os_type.map(OsType::from),
                };
                let img: Image = api.send("POST", "/v1/images", &req)?;
                let r = client::upload(
                    &cli.socket,
                    &format!("/v1/images/{}/file", img.id),
                    file,
                    TIMEOUT,
                    |done, total| {
                        if !json {
                            eprint!("\r{}", progress_bar(done, total));
                        }
                    },
                );
                if !json {
                    eprintln!();
                }
                let img: Image = match r.and_then(|r| r.json()) {
                    Ok(img) => img,
                    Err(e) => {
                        // Leave no queued or failed record behind.
                        let _ = api.call("DELETE", &format!("/v1/images/{}", img.id), None);
                        return Err(format!("upload of {name} failed: {e}").into());
                    }
                };
                show(json, &img, |i| images(std::slice::from_ref(i)))?
            }
            ImageCmd::Import {
                name,
                path,
                format,
                firmware,
                os_type,
            }
            | ImageCmd::Create {
                name,
                file: path,
                format,
                upload: false,
                firmware,
                os_type,
            } => {
                let req = ImageCreate::Disk {
                    name: name.clone(),
                    path: Some(abs(path)?),
                    format: disk_format(*format),
                    source: DiskSource::Path,
                    firmware: firmware.map(Firmware::from),
                    os_type: os_type.map(OsType::from),
                };
                let mut img: Image = api.send("POST", "/v1/images", &req)?;
                while img.status == ImageStatus::Importing {
                    if let (false, Some(p)) = (json, img.progress) {
                        eprint!("\r{}", progress_bar(p.bytes_done, p.bytes_total));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    img = api.get(&format!("/v1/images/{}", img.id))?;
                }
                if let (false, ImageKind::Disk { size_bytes, .. }) = (json, &img.kind) {
                    if img.status == ImageStatus::Active {
                        eprint!("\r{}", progress_bar(*size_bytes, *size_bytes));
                    }
                    eprintln!();
                }
                if img.status == ImageStatus::Error {
                    let why = img.fault.unwrap_or_default();
                    return Err(format!("import of {name} failed: {why}").into());
                }
                show(json, &img, |i| images(std::slice::from_ref(i)))?
            }
            ImageCmd::Delete { id } => {
                api.call("DELETE", &format!("/v1/images/{}", enc(id)), None)?
            }
        },
        Cmd::Server(c) => server_cmd(&api, json, c)?,
        Cmd::Network(c) => network::run(&api, json, c)?,
        Cmd::Console { server } => {
            let s = api.server(server)?;
            console::attach(&cli.socket, &s.id)?;
        }
    }
    Ok(())
}

fn server_cmd(api: &Api<'_>, json: bool, c: &ServerCmd) -> Result<(), Box<dyn std::error::Error>> {
    let action = |key: &str, a: ServerAction| -> Result<(), Box<dyn std::error::Error>> {
        let s = api.server(key)?;
        let b = serde_json::to_vec(&a)?;
        api.call("POST", &format!("/v1/servers/{}/action", s.id), Some(&b))?;
        Ok(())
    };
    match c {
        ServerCmd::List { status, name } => {
            let mut q = Vec::new();
            if let Some(s) = status {
                q.push(format!("status={}", enc(s)));
            }
            if let Some(n) = name {
                q.push(format!("name={}", enc(n)));
            }
            let path = if q.is_empty() {
                "/v1/servers".to_string()
            } else {
                format!("/v1/servers?{}", q.join("&"))
            };
            let l: ServerList = api.get(&path)?;
            if json {
                return print_json(&l);
            }
            servers(&l.servers);
        }
        ServerCmd::Show { server } => {
            let s = api.server(server)?;
            if json {
                return print_json(&s);
            }
            servers(std::slice::from_ref(&s));
            if let Some(fw) = s.firmware {
                println!("firmware: {}", fw.as_str());
            }
            if let Some(n) = &s.nvram {
                println!("nvram: {n}");
            }
            if let Some(f) = &s.fault {
                println!("fault: {} ({})", f.message, f.created);
            }
            network::print_nics(&s);
        }
        ServerCmd::Create {
            name,
            flavor,
            image,
            cmdline,
            disk_image,
            firmware,
            ready_console,
            ready_code,
            ttl,
            networks,
            wait,
            timeout,
        } => {
            let ready = (ready_console.is_some() || ready_code.is_some()).then(|| ReadyCondition {
                console: ready_console.clone(),
                debug_code: *ready_code,
            });
            let req = ServerCreate {
                name: name.clone(),
                flavor: flavor.clone(),
                image: image.clone(),
                cmdline: cmdline.clone(),
                user_data: None,
                metadata: Default::default(),
                ready,
                ttl_s: *ttl,
                disk_image: disk_image.clone(),
                networks: networks.clone(),
                firmware: firmware.map(Firmware::from),
            };
            let mut s: Server = api.send("POST", "/v1/servers", &req)?;
            if wait.is_some() {
                let deadline = Instant::now() + Duration::from_secs(*timeout);
                while s.status == ServerStatus::Build {
                    if Instant::now() > deadline {
                        return Err(format!("server {} still BUILD after {timeout} s", s.id).into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    s = api.get(&format!("/v1/servers/{}", s.id))?;
                }
                loop {
                    if s.status != ServerStatus::Active {
                        let fault = s.fault.as_ref().map(|f| f.message.as_str()).unwrap_or("");
                        return Err(
                            format!("server {} is {} {fault}", s.id, s.status.as_str()).into()
                        );
                    }
                    if *wait == Some(Wait::Active) || s.ready {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("server {} not ready after {timeout} s", s.id).into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    s = api.get(&format!("/v1/servers/{}", s.id))?;
                }
                if let (false, Some(ms)) = (json, s.ready_after_ms) {
                    eprintln!("ready after {ms} ms");
                }
            }
            show(json, &s, |s| servers(std::slice::from_ref(s)))?;
        }
        ServerCmd::Delete { server } => {
            let s = api.server(server)?;
            api.call("DELETE", &format!("/v1/servers/{}", s.id), None)?;
        }
        ServerCmd::Start { server } => action(server, ServerAction::Start)?,
        ServerCmd::Stop { server } => action(server, ServerAction::Stop)?,
        ServerCmd::Reboot { server, hard } => action(
            server,
            ServerAction::Reboot {
                kind: if *hard {
                    RebootType::Hard
                } else {
                    RebootType::Soft
                },
            },
        )?,
        ServerCmd::Pause { server } => action(server, ServerAction::Pause)?,
        ServerCmd::Resume { server } => action(server, ServerAction::Resume)?,
        ServerCmd::Console { server, tail } => {
            let s = api.server(server)?;
            let path = match tail {
                Some(n) => format!("/v1/servers/{}/console?tail={n}", s.id),
                None => format!("/v1/servers/{}/console", s.id),
            };
            let c: ConsoleOutput = api.get(&path)?;
            if json {
                return print_json(&c);
            }
            print!("{}", c.output);
        }
    }
    Ok(())
}

/// `[#########           ]  45%  58/128 MiB`
fn disk_format(f: Format) -> DiskFormat {
    match f {
        Format::Raw => DiskFormat::Raw,
        Format::Qcow2 => DiskFormat::Qcow2,
    }
}

fn progress_bar(done: u64, total: u64) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = (frac * 30.0).round() as usize;
    format!(
        "[{}{}] {:3.0}% {}/{} MiB",
        "#".repeat(filled.min(30)),
        " ".repeat(30 - filled.min(30)),
        frac * 100.0,
        done >> 20,
        total >> 20
    )
}

fn abs(p: &Path) -> Result<String, std::io::Error> {
    Ok(std::path::absolute(p)?.display().to_string())
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Box<dyn std::error::Error>> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn show<T: serde::Serialize>(
    json: bool,
    v: &T,
    human: impl Fn(&T),
) -> Result<(), Box<dyn std::error::Error>> {
    if json {
        return print_json(v);
    }
    human(v);
    Ok(())
}
