//! Creating files with the right permissions from the start (no window where a secret is
//! world-readable).

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;

pub fn create_dir(path: &Path, mode: u32) -> anyhow::Result<()> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Creates a new file with `mode`: never an existing file, never through a symlink
/// (`O_CREAT|O_EXCL` fails on both, a dangling symlink included).
pub fn create_new(path: &Path, mode: u32) -> anyhow::Result<std::fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))
}

/// Writes a new file (never overwrites) with `mode`.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = create_new(path, mode)?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}
