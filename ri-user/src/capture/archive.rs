//! `--archive`: a bundle directory as one `.tar.zst` file to send, and
//! reading one back (unpacked into a temporary directory removed on exit).

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
};

use super::CaptureError;

/// Writes `DIR.tar.zst` beside `dir`, holding `dir` under its own name.
pub fn pack(dir: &Path) -> Result<PathBuf, CaptureError> {
    let name = dir
        .file_name()
        .ok_or_else(|| CaptureError::Bundle(format!("{}: no directory name", dir.display())))?;
    let out = dir.with_file_name(format!("{}.tar.zst", name.to_string_lossy()));
    let enc = zstd::Encoder::new(BufWriter::new(File::create(&out)?), 9)?;
    let mut tar = tar::Builder::new(enc);
    tar.append_dir_all(name, dir)?;
    tar.into_inner()?.finish()?;
    Ok(out)
}

/// Directories unpacked by [`unpack`], removed when ri exits.
static UNPACKED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Unpacks a `.tar.zst` bundle into a new temporary directory; the bundle
/// directory inside it.
pub fn unpack(file: &Path) -> Result<PathBuf, CaptureError> {
    let bad = |m: String| CaptureError::Bundle(format!("{}: {m}", file.display()));
    let tmp = std::env::temp_dir().join(format!(
        "ri-bundle.{}.{}",
        std::process::id(),
        super::bundle::mono_ns()
    ));
    std::fs::create_dir_all(&tmp)?;
    UNPACKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(tmp.clone());
    let dec = zstd::Decoder::new(File::open(file)?).map_err(|e| bad(e.to_string()))?;
    tar::Archive::new(dec)
        .unpack(&tmp)
        .map_err(|e| bad(format!("not a bundle archive ({e})")))?;
    let inner = std::fs::read_dir(&tmp)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").is_file())
        .ok_or_else(|| bad("no bundle (manifest.json) inside".into()))?;
    Ok(inner)
}

/// Removes what [`unpack`] unpacked.
pub fn cleanup() {
    for d in UNPACKED.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(d);
    }
}
