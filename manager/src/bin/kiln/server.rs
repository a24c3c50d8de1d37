//! `kiln server ...`: the subcommands and what each asks kilnd.

use super::*;

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub(crate) enum Wait {
    /// Until ACTIVE.
    Active,
    /// Until ACTIVE and its readiness condition is met.
    Ready,
}

// Parsed once per run: `Create`'s many options cost nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum ServerCmd {
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
        /// Virtio devices, instead of the image's own `virtio_model`.
        #[arg(long, value_enum)]
        virtio_model: Option<Virtio>,
        /// Ready when the console matches this regex.
        #[arg(long, conflicts_with_all = ["ready_code", "ready_agent"])]
        ready_console: Option<String>,
        /// Ready when the guest writes this code to the debug port.
        #[arg(long, conflicts_with = "ready_agent")]
        ready_code: Option<u8>,
        /// Ready when the guest agent answers guest-ping (needs an agent).
        #[arg(long)]
        ready_agent: bool,
        /// Seconds the server has to become ready (with a --ready-*
        /// condition): past them it goes to ERROR, its last screenshot kept.
        #[arg(long)]
        ready_timeout: Option<u64>,
        /// Delete the server automatically after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// A NIC on this network: `NAME[:IP][,ip=IP][,mac=MAC][,link=down]`
        /// (repeatable); IP: its fixed address on a network with a subnet.
        #[arg(long = "network", value_parser = network::parse_nic)]
        networks: Vec<kiln_api::compute::NicRequest>,
        /// A key pair (`kiln keypair`) whose public key goes with the server.
        #[arg(long)]
        key_name: Option<String>,
        /// The guest's admin password (at most 255 bytes); without a value,
        /// read as one line from stdin (so it stays out of `ps`).
        #[arg(long, num_args = 0..=1)]
        admin_pass: Option<Option<String>>,
        /// User data for the guest from this file (any bytes, at most
        /// 64 KiB; sent base64 as Nova's API takes it).
        #[arg(long)]
        user_data: Option<PathBuf>,
        /// Attach a config drive (needs a root disk).
        #[arg(long)]
        config_drive: bool,
        /// A TPM 2.0 (true/false) [default: the image's].
        #[arg(long)]
        tpm: Option<bool>,
        /// `vga` or `none`, instead of the image's default.
        #[arg(long, value_parser = console::parse_display)]
        display: Option<kiln_api::compute::Display>,
        /// The root disk's bus, `virtio` or `sata` [default: the image's].
        #[arg(long, value_parser = crate::image::bus_parser())]
        disk_bus: Option<kiln_api::compute::DiskBus>,
        /// An ISO image on a CD-ROM (repeat for more, in order).
        #[arg(long = "cdrom")]
        cdroms: Vec<String>,
        /// The user data also as `autounattend.xml` on a CD-ROM of its own
        /// (Windows unattended installs).
        #[arg(long)]
        answer_file: bool,
        /// UEFI Secure Boot on (true/false) [default: the image's].
        #[arg(long)]
        secure_boot: Option<bool>,
        /// A guest agent channel (true/false) [default: the image's].
        #[arg(long)]
        agent: Option<bool>,
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
    /// Make a UEFI server's variable store again from the template at its
    /// next start (SHUTOFF or ERROR).
    ResetNvram {
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
    /// The display's picture as PNG, to stdout (not a terminal); `--last`:
    /// the one kept when it last ended on a fault, a time-out or its TTL.
    Screenshot {
        server: String,
        #[arg(long)]
        last: bool,
    },
    /// What the guest agent says: OS, hostname, interfaces and addresses.
    Guest {
        server: String,
    },
    /// Type on the server's keyboard: key names as QEMU's sendkey (`ret`,
    /// `esc`, `f12`, `ctrl-alt-delete`, `shift-a`), then `--text`.
    Keys {
        server: String,
        keys: Vec<String>,
        /// Characters to type (US layout).
        #[arg(long)]
        text: Option<String>,
        /// How long each key is held (ms; default 100).
        #[arg(long)]
        hold_ms: Option<u32>,
    },
    /// Set a NIC's link as the guest sees it (a cable plugged in or
    /// pulled out); kept across stop, start and reboots.
    Link {
        server: String,
        /// The NIC's index (`kiln server show` lists them).
        nic: u32,
        #[arg(value_parser = network::parse_link)]
        state: LinkState,
    },
    /// The password the guest posted to the metadata service, as posted
    /// (cloudbase-init: encrypted with the key pair); `--clear` forgets it.
    Password {
        server: String,
        #[arg(long)]
        clear: bool,
    },
}

pub(crate) fn server_cmd(
    api: &Api<'_>,
    json: bool,
    c: &ServerCmd,
) -> Result<(), Box<dyn std::error::Error>> {
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
            api.show(json, &path, |l: &ServerList| servers(&l.servers))?;
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
            if !s.virtio_model.is_modern() {
                println!("virtio_model: {}", s.virtio_model.as_str());
            }
            if let Some(k) = &s.key_name {
                println!("key_name: {k}");
            }
            if s.config_drive {
                println!("config_drive: true");
            }
            if s.tpm {
                println!("tpm: true");
            }
            if !s.display.is_none() {
                println!("display: {}", s.display.as_str());
            }
            if !s.disk_bus.is_virtio() {
                println!("disk_bus: {}", s.disk_bus.as_str());
            }
            if !s.cdroms.is_empty() {
                println!("cdroms: {}", s.cdroms.join(", "));
            }
            if s.answer_file {
                println!("answer_file: true");
            }
            if s.secure_boot {
                println!("secure_boot: true");
            }
            if s.agent {
                println!("agent: true");
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
            virtio_model,
            ready_console,
            ready_code,
            ready_agent,
            ready_timeout,
            ttl,
            networks,
            key_name,
            admin_pass,
            user_data,
            config_drive,
            tpm,
            display,
            disk_bus,
            cdroms,
            answer_file,
            secure_boot,
            agent,
            wait,
            timeout,
        } => {
            let admin_pass = match admin_pass {
                None => None,
                Some(Some(p)) => Some(p.clone()),
                Some(None) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    Some(line.trim_end_matches(['\n', '\r']).to_string())
                }
            };
            let ready = (ready_console.is_some()
                || ready_code.is_some()
                || *ready_agent
                || ready_timeout.is_some())
            .then(|| ReadyCondition {
                console: ready_console.clone(),
                debug_code: *ready_code,
                agent: *ready_agent,
                timeout_s: *ready_timeout,
            });
            let req = ServerCreate {
                name: name.clone(),
                flavor: flavor.clone(),
                image: image.clone(),
                cmdline: cmdline.clone(),
                user_data: user_data
                    .as_deref()
                    .map(keypair::read_user_data)
                    .transpose()?,
                metadata: Default::default(),
                ready,
                ttl_s: *ttl,
                disk_image: disk_image.clone(),
                networks: networks.clone(),
                firmware: firmware.map(Firmware::from),
                virtio_model: virtio_model.map(VirtioModel::from),
                key_name: key_name.clone(),
                admin_pass,
                config_drive: *config_drive,
                tpm: *tpm,
                display: *display,
                disk_bus: *disk_bus,
                cdroms: cdroms.clone(),
                answer_file: *answer_file,
                secure_boot: *secure_boot,
                agent: *agent,
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
        ServerCmd::ResetNvram { server } => action(server, ServerAction::ResetNvram)?,
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
        ServerCmd::Screenshot { server, last } => {
            let s = api.server(server)?;
            let q = if *last { "?last=true" } else { "" };
            console::screenshot(api.socket, &format!("/v1/servers/{}/screenshot{q}", s.id))?;
        }
        ServerCmd::Guest { server } => {
            let s = api.server(server)?;
            let g: kiln_api::compute::GuestInfo =
                api.get(&format!("/v1/servers/{}/guest", s.id))?;
            if json {
                return print_json(&g);
            }
            tables::guest(&g);
        }
        ServerCmd::Keys {
            server,
            keys,
            text,
            hold_ms,
        } => {
            let s = api.server(server)?;
            let req = kiln_api::control::KeysRequest {
                keys: keys.clone(),
                text: text.clone(),
                hold_ms: *hold_ms,
            };
            console::keys(api.socket, &format!("/v1/servers/{}/keys", s.id), &req)?;
        }
        ServerCmd::Link { server, nic, state } => {
            let s = api.server(server)?;
            let n: Nic = api.send(
                "PUT",
                &format!("/v1/servers/{}/nics/{nic}", s.id),
                &NicUpdate { link: *state },
            )?;
            show(json, &n, |n| tables::nics(std::slice::from_ref(n)))?;
        }
        ServerCmd::Password { server, clear } => {
            let path = format!("/v1/servers/{}/password", api.server(server)?.id);
            if *clear {
                api.call("DELETE", &path, None)?;
            } else {
                let p: serde_json::Value = api.get(&path)?;
                if json {
                    return print_json(&p);
                }
                println!("{}", p["password"].as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}
