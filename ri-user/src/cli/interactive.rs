//! Flags of `ri top`, `ri shell`, `ri completions` and the hidden `ri manpages`.

use std::path::PathBuf;

use clap::Args;

/// Options of `ri top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The pack whose instruments to show (default motr).
    #[arg(value_name = "PACK", default_value = "motr")]
    pub pack: String,
    /// Watch only this process (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Also every process with this name or executable running when top
    /// starts.
    #[command(flatten)]
    pub select: super::SelectArgs,
    /// Print one frame as plain text after one refresh, then exit.
    #[arg(long)]
    pub once: bool,
    /// Seconds between refreshes.
    #[arg(short, long, default_value_t = 1.0, value_name = "SECONDS")]
    pub interval: f64,
    /// Also read this pack file (repeatable).
    #[arg(long = "pack", value_name = "FILE")]
    pub packs: Vec<PathBuf>,
    /// Print each refresh as one JSON line of tables, for a local
    /// `ri top -H` that draws them (set by it).
    #[arg(long, hide = true)]
    pub frames: bool,
}

/// Options of `ri shell`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The processes every command of the shell looks at (as -p).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Also every process with this name or executable running when the
    /// shell starts (each command gets them as -p; `save` writes the names).
    #[command(flatten)]
    pub select: super::SelectArgs,
    /// The history file (default ~/.ri_history).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Print the completions of TEXT (a line up to the cursor) as JSON and
    /// end: what `ri shell -H` asks a host's ri.
    #[arg(long, hide = true, value_name = "TEXT")]
    pub complete: Option<String>,
}

/// Options of `ri completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of `ri manpages`.
#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Folder to write `ri.1` and `ri-COMMAND.1` into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}
