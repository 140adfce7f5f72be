//! Flags of `ri serve`.

use std::path::PathBuf;

use clap::Args;

use crate::serve::ServeOptions;

/// Options of `ri serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve `/metrics` on (loopback unless told otherwise).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// TOML file listing the instruments, their parameters and targets
    /// (reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Pack instruments to serve, `PACK.INSTRUMENT` (see `ri packs`).
    #[arg(value_name = "INSTRUMENT")]
    pub instruments: Vec<String>,
    /// The process the instruments watch (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Processes by name or executable, followed as they start and exit
    /// (in place of the config file's targets, like -p).
    #[command(flatten)]
    pub select: super::SelectArgs,
    /// Also read this pack file (repeatable).
    #[arg(long = "pack", value_name = "FILE")]
    pub packs: Vec<PathBuf>,
}

impl ServeArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> Result<ServeOptions, crate::Error> {
        let listen = self.listen.parse().map_err(|_| {
            crate::Error::Usage(format!(
                "--listen {}: expected ADDRESS:PORT, e.g. 127.0.0.1:9464",
                self.listen
            ))
        })?;
        if self.config.is_none() && self.instruments.is_empty() {
            return Err(crate::Error::Usage(
                "ri serve needs INSTRUMENT names or --config FILE".into(),
            ));
        }
        Ok(ServeOptions {
            listen,
            config: self.config.clone(),
            instruments: self.instruments.clone(),
            targets: crate::serve::Targets {
                pids: self.pids.clone(),
                comms: self.select.comms.clone(),
                exes: self.select.exes.clone(),
            },
            packs: self.packs.clone(),
        })
    }
}
