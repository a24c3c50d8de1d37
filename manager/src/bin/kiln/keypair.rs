//! `kiln keypair create|list|show|delete`: SSH key pairs servers name with
//! `kiln server create --key-name`; and `--user-data FILE`, the other
//! thing a server carries for its guest.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use clap::Subcommand;
use kiln_api::compute::{Keypair, KeypairCreate, KeypairList};

use crate::{enc, show, Api};

#[derive(Subcommand)]
pub enum KeypairCmd {
    List,
    Show {
        name: String,
    },
    /// Import an OpenSSH public key, or (without one) have kilnd generate
    /// an ed25519 pair: its private key is printed, or written to
    /// `--private-key-file`, once.
    Create {
        name: String,
        /// An OpenSSH public key file (`~/.ssh/id_ed25519.pub`).
        #[arg(long, conflicts_with = "private_key_file")]
        public_key_file: Option<std::path::PathBuf>,
        /// Write a generated private key here (mode 0600, a new file).
        #[arg(long)]
        private_key_file: Option<std::path::PathBuf>,
    },
    Delete {
        name: String,
    },
}

pub fn run(api: &Api<'_>, json: bool, c: &KeypairCmd) -> Result<(), Box<dyn std::error::Error>> {
    match c {
        KeypairCmd::List => api.show(json, "/v1/keypairs", |l: &KeypairList| table(&l.keypairs))?,
        KeypairCmd::Show { name } => api.show(
            json,
            &format!("/v1/keypairs/{}", enc(name)),
            |k: &Keypair| {
                table(std::slice::from_ref(k));
                println!("public_key: {}", k.public_key);
            },
        )?,
        KeypairCmd::Create {
            name,
            public_key_file,
            private_key_file,
        } => {
            let public_key = match public_key_file {
                None => None,
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("reading {}: {e}", p.display()))?,
                ),
            };
            let req = KeypairCreate {
                name: name.clone(),
                public_key,
                kind: Default::default(),
            };
            let mut k: Keypair = api.send("POST", "/v1/keypairs", &req)?;
            if let (Some(path), Some(private)) = (private_key_file, k.private_key.take()) {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                f.write_all(private.as_bytes())?;
            }
            show(json, &k, |k| {
                table(std::slice::from_ref(k));
                if let Some(p) = &k.private_key {
                    print!("{p}");
                }
            })?
        }
        KeypairCmd::Delete { name } => {
            api.call("DELETE", &format!("/v1/keypairs/{}", enc(name)), None)?
        }
    }
    Ok(())
}

fn table(keys: &[Keypair]) {
    println!("{:<24} {:<5} FINGERPRINT", "NAME", "TYPE");
    for k in keys {
        println!("{:<24} {:<5} {}", k.name, "ssh", k.fingerprint);
    }
}

/// `--user-data FILE`: the file's bytes, base64 as the API takes them.
pub fn read_user_data(path: &std::path::Path) -> Result<String, Box<dyn std::error::Error>> {
    use base64ct::Encoding;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(base64ct::Base64::encode_string(&bytes))
}
