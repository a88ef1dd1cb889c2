//! Saving a folder as one unit: a checkpoint or adapter folder is written complete into a staging folder
//! beside its target, then swapped in with one atomic rename. A kill at any instant leaves the whole old
//! folder or the whole new one under the target's name, never a mix (new weights with an old config).
//!
//! ```text
//! runs/.adapter.staging-<pid>/   <- the new files are written here (each one synced)
//! runs/adapter/                  <- swapped with the staging folder in one step (Linux: renameat2
//!                                   RENAME_EXCHANGE; elsewhere two renames, with a short window)
//! ```
//! Files of the old folder that the new save does not write (a user's notes, a loss curve) are carried
//! over. Staging folders left by a killed save are removed by the next save of the same folder.

use crate::checkpoint::temp_file_of;
use crate::NnError;
use std::path::{Path, PathBuf};

/// Writes folder `dir` as a unit: `write` fills a staging folder, which then replaces `dir`. If `write`
/// fails, `dir` is left as it was.
pub fn save_dir_atomic(
    dir: &Path,
    write: impl FnOnce(&Path) -> Result<(), NnError>,
) -> Result<(), NnError> {
    let (parent, name) = parent_and_name(dir)?;
    // staging folders of earlier saves of this folder that were killed before they finished
    let prefix = format!(".{name}.staging-");
    remove_leftovers(&parent, |entry| entry.starts_with(&prefix));
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(|e| NnError::io(&staging, e))?;
    let result = write(&staging)
        .and_then(|()| carry_over(dir, &staging))
        .and_then(|()| swap_in(&staging, dir));
    let _ = std::fs::remove_dir_all(&staging); // the old folder after a swap, or the failed attempt
    result
}

/// The folder `path` lives in (created if missing) and its own name: where an atomic write stages it.
pub(crate) fn parent_and_name(path: &Path) -> Result<(PathBuf, String), NnError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| NnError::io(parent, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| NnError::io(path, std::io::Error::other("not a file or folder name")))?
        .to_string_lossy()
        .into_owned();
    Ok((parent.to_path_buf(), name))
}

/// Removes the entries of `dir` (files or folders) whose names `is_leftover` picks: what killed writes
/// left behind. Best effort: a leftover that cannot be removed stays.
pub(crate) fn remove_leftovers(dir: &Path, is_leftover: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_leftover(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
        }
    }
}

/// Hard-links (or copies) into `staging` the regular files of `dir` that the new save did not write,
/// except temporary files of killed writes.
fn carry_over(dir: &Path, staging: &Path) -> Result<(), NnError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // no old folder
    };
    for entry in entries.flatten() {
        let (from, to) = (entry.path(), staging.join(entry.file_name()));
        let is_file = entry.file_type().is_ok_and(|t| t.is_file())
            && temp_file_of(&entry.file_name().to_string_lossy()).is_none();
        if is_file && !to.exists() && std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(|e| NnError::io(&from, e))?;
        }
    }
    Ok(())
}

/// Puts `staging` at `dir`; an old `dir` ends up at `staging`.
fn swap_in(staging: &Path, dir: &Path) -> Result<(), NnError> {
    if !dir.exists() {
        return std::fs::rename(staging, dir).map_err(|e| NnError::io(dir, e));
    }
    exchange(staging, dir).map_err(|e| NnError::io(dir, e))
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both pointers are NUL-terminated paths that live across the call; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let err = std::io::Error::last_os_error();
        // a file system without RENAME_EXCHANGE: fall back to two renames
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) => two_renames(a, b),
            _ => Err(err),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    two_renames(a, b)
}

/// `b` -> a side name, `a` -> `b`, side name -> `a`: not atomic (between the first two renames `b` is
/// missing), for systems without an exchange primitive.
fn two_renames(a: &Path, b: &Path) -> std::io::Result<()> {
    let side: PathBuf = a.with_extension("old");
    std::fs::rename(b, &side)?;
    std::fs::rename(a, b)?;
    std::fs::rename(&side, a)
}
