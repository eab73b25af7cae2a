//! A container's root filesystem: an overlay mount of the image's unpacked layers (read-only, shared by
//! every container of the image) under a writable upper directory of its own.
//!
//! ```text
//! CONTAINER_DIR/upper     the container's writes
//! CONTAINER_DIR/work      overlayfs' scratch (same filesystem as upper)
//! CONTAINER_DIR/rootfs    the mount point runc is given
//! ```

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Errors of mounting or unmounting a root filesystem.
#[derive(Debug, Error)]
pub enum RootfsError {
    /// A directory could not be made or removed, or a system call failed.
    #[error("container root {path}: {call}: {source}")]
    Sys {
        path: PathBuf,
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The lower directories do not fit in one page of mount options.
    #[error("container root {0}: too many image layers for one overlay mount")]
    TooManyLayers(PathBuf),
    /// An image without layers.
    #[error("container root {0}: the image has no layers")]
    NoLayers(PathBuf),
}

fn sys(path: &Path, call: &'static str, source: std::io::Error) -> RootfsError {
    RootfsError::Sys {
        path: path.to_path_buf(),
        call,
        source,
    }
}

fn c_path(path: &Path) -> Result<CString, RootfsError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| sys(path, "path", std::io::ErrorKind::InvalidInput.into()))
}

/// The mount point of the container's root in `container_dir`.
pub fn rootfs_path(container_dir: &Path) -> PathBuf {
    container_dir.join("rootfs")
}

/// Whether the container's root is mounted.
pub fn is_mounted(container_dir: &Path) -> bool {
    let root = rootfs_path(container_dir);
    let parent = container_dir;
    match (std::fs::metadata(&root), std::fs::metadata(parent)) {
        (Ok(r), Ok(p)) => {
            use std::os::unix::fs::MetadataExt;
            r.dev() != p.dev()
        }
        _ => false,
    }
}

/// Mounts the overlay of `lower` (top layer first) in `container_dir`; returns the root's path.
/// Already mounted (a restarted agent, a restarted container): kept, with the container's writes.
pub fn mount(container_dir: &Path, lower: &[PathBuf]) -> Result<PathBuf, RootfsError> {
    let root = rootfs_path(container_dir);
    if is_mounted(container_dir) {
        return Ok(root);
    }
    if lower.is_empty() {
        return Err(RootfsError::NoLayers(container_dir.to_path_buf()));
    }
    let (upper, work) = (container_dir.join("upper"), container_dir.join("work"));
    for d in [&upper, &work, &root] {
        std::fs::create_dir_all(d).map_err(|e| sys(d, "mkdir", e))?;
    }
    let lowerdir: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    // The kernel reads mount options from one page.
    if options.len() >= 4096 {
        return Err(RootfsError::TooManyLayers(container_dir.to_path_buf()));
    }
    let target = c_path(&root)?;
    let data =
        CString::new(options).map_err(|_| sys(&root, "options", std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(sys(&root, "mount overlay", std::io::Error::last_os_error()));
    }
    Ok(root)
}

/// Unmounts the container's root, if mounted.
pub fn unmount(container_dir: &Path) -> Result<(), RootfsError> {
    let root = rootfs_path(container_dir);
    if is_mounted(container_dir) {
        let c = c_path(&root)?;
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(sys(&root, "umount", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Unmounts the container's root (if mounted) and removes the container's directory with its writes.
pub fn remove(container_dir: &Path) -> Result<(), RootfsError> {
    unmount(container_dir)?;
    match std::fs::remove_dir_all(container_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(sys(container_dir, "remove", e)),
    }
}
