//! `kilnd`: the Kiln compute service. See `kiln_manager::config` for the
//! configuration and `kilnd --print-default-config` for its defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln_manager::config::{Config, DEFAULT_CONFIG};

#[derive(Parser)]
#[command(
    name = "kilnd",
    about = "Kiln compute service: REST API on a unix socket, one kiln-vmm per server"
)]
struct Args {
    /// TOML configuration file (keys left out take their defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory (overrides `state_dir`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// API socket path (overrides `socket`).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Print a clouds.yaml (cloud `kiln`) for the OpenStack API of the
    /// kilnd this configuration makes, and exit.
    #[arg(long)]
    print_clouds_yaml: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match &args.config {
        Some(p) => Config::load(p),
        None => Ok(Config::default_config()),
    };
    let mut config = match config {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Some(d) = args.state_dir {
        config.state_dir = d;
    }
    if let Some(s) = args.socket {
        config.socket = s;
    }
    if args.print_clouds_yaml {
        return match kiln_manager::openstack::identity::clouds_yaml(&config) {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kilnd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match rt.block_on(kiln_manager::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints an error and its chain of causes once.
fn fail(e: &dyn std::error::Error) -> ExitCode {
    let mut msg = format!("kilnd: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}
