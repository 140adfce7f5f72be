//! ri's controller library. The path of a probe: `probe` parses the string,
//! `plan` compiles it, `elf` and `target` resolve where it attaches,
//! `session` and `engine` put it into the kernel (`launch` is the core
//! every attaching command runs on: targets, attach, stop), `decode`
//! reads events back and `sink` writes them. `dwarf` reads a binary's types from its debug
//! info. `trace`, `agg` (count, hist, latency), `list`, `peek`, `types` and
//! `report` are the commands, `view` walks a process's state (live or a
//! core) for `ri view` and `ri peek EXPR`, `pack` names instruments and
//! views built from them,
//! `capture` runs session files of them into bundles;
//! `stack` symbolizes user stacks; `cli` holds every flag and `dispatch`
//! runs a parsed command. `shell` and `top` are the interactive commands
//! (over `agg::Live`), `signals` their process-wide signal handling.

pub mod agg;
pub mod budget;
pub mod capture;
pub mod cli;
pub mod ctl;
pub mod decode;
pub mod dispatch;
pub mod dwarf;
pub mod elf;
pub mod engine;
mod error;
pub mod fid;
pub mod launch;
pub mod list;
#[cfg(test)]
mod module_deps;
pub mod pack;
pub mod peek;
pub mod plan;
pub mod probe;
pub mod remote;
pub mod report;
pub mod select;
pub mod serve;
pub mod session;
pub mod shell;
pub mod signals;
pub mod sink;
pub mod stack;
pub mod target;
pub mod text;
pub mod top;
pub mod trace;
pub mod types;
pub mod usdt;
pub mod view;

pub use error::Error;

/// The eBPF object built from `ri-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ri-ebpf"));
