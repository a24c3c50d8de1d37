//! `kiln`: the command-line client of `kilnd`. Tables for people, `--json`
//! for scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use kiln_api::client::{self, ClientError};
use kiln_api::compute::{
    ConsoleOutput, Firmware, Flavor, FlavorCreate, FlavorList, HostInfo, LinkState, Nic, NicUpdate,
    ReadyCondition, RebootType, Server, ServerAction, ServerCreate, ServerList, ServerStatus,
    VirtioModel,
};

mod console;
mod image;
mod keypair;
use image::{Fw, ImageCmd, Virtio};
mod network;
mod server;
use server::{server_cmd, ServerCmd};
mod tables;

use serde::de::DeserializeOwned;
use tables::{flavors, servers, table};

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
    #[command(subcommand)]
    Keypair(keypair::KeypairCmd),
    /// Attach to a server's serial console (Ctrl-] detaches); `--vnc`:
    /// print a browser console URL (noVNC, one-time token) instead.
    Console {
        server: String,
        #[arg(long)]
        vnc: bool,
    },
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
        /// An extra spec KEY=VALUE, as `openstack flavor create --property`
        /// (e.g. `quota:disk_total_iops_sec=500`); repeat for more.
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
        properties: Vec<(String, String)>,
    },
    Delete {
        id: String,
    },
}

/// `KEY=VALUE` of `kiln flavor create --property`.
fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
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

    /// `GET path`, printed as JSON or by `human`.
    fn show<T: DeserializeOwned + serde::Serialize>(
        &self,
        json: bool,
        path: &str,
        human: impl Fn(&T),
    ) -> Result<(), Box<dyn std::error::Error>> {
        show(json, &self.get::<T>(path)?, human)
    }

    /// `GET /v1/{what}/{id}`, printed as JSON or as a one-row `table`.
    fn show_one<T: DeserializeOwned + serde::Serialize>(
        &self,
        json: bool,
        what: &str,
        id: &str,
        table: fn(&[T]),
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.show(json, &format!("/v1/{what}/{}", enc(id)), |v: &T| {
            table(std::slice::from_ref(v))
        })
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
                api.show(json, "/v1/flavors", |l: &FlavorList| flavors(&l.flavors))?
            }
            FlavorCmd::Show { id } => api.show_one(json, "flavors", id, flavors)?,
            FlavorCmd::Create {
                name,
                vcpus,
                ram_mb,
                disk_gb,
                properties,
            } => {
                let req = FlavorCreate {
                    name: name.clone(),
                    vcpus: *vcpus,
                    ram_mb: *ram_mb,
                    disk_gb: *disk_gb,
                    extra_specs: properties.iter().cloned().collect(),
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
        Cmd::Image(c) => image::run(&api, &cli.socket, json, c)?,
        Cmd::Server(c) => server_cmd(&api, json, c)?,
        Cmd::Network(c) => network::run(&api, json, c)?,
        Cmd::Keypair(c) => keypair::run(&api, json, c)?,
        Cmd::Console { server, vnc: false } => {
            let s = api.server(server)?;
            console::attach(&cli.socket, &s.id)?;
        }
        Cmd::Console { server, vnc: true } => {
            let s = api.server(server)?;
            let body = kiln_api::compute::RemoteConsoleCreate {
                remote_console: kiln_api::compute::RemoteConsoleRequest {
                    protocol: "vnc".into(),
                    kind: "novnc".into(),
                },
            };
            let path = format!("/v1/servers/{}/remote-consoles", enc(&s.id));
            let c: kiln_api::compute::RemoteConsoleBody = api.send("POST", &path, &body)?;
            println!("{}", c.remote_console.url);
        }
    }
    Ok(())
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
