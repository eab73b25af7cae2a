//! One image layer (a tar stream, gzip-compressed or not) unpacked into a directory of its own, in
//! the form overlayfs reads as a lower layer: whiteouts (`.wh.NAME`) become 0/0 character devices and
//! opaque directories (`.wh..wh..opq`) get the `trusted.overlay.opaque` attribute, as containerd's
//! overlay snapshotter does. Layers are never applied onto each other: a container's root is an overlay
//! mount over all of them, so each layer is unpacked once and shared by every image and container.
//!
//! A layer is untrusted input: entries may name absolute paths, `..`, or reach through a symlink the
//! same layer planted. Paths are taken component by component (absolute and `.` parts dropped, `..`
//! refused), and files are written by the `tar` crate's `unpack_in`, which refuses to write outside the
//! directory (it checks each parent after resolving symlinks).

use std::{
    ffi::CString,
    fs::File,
    io::{BufReader, Read},
    os::unix::ffi::OsStrExt,
    path::{Component, Path, PathBuf},
};

use flate2::read::GzDecoder;
use thiserror::Error;

/// Errors of unpacking one layer.
#[derive(Debug, Error)]
pub enum UnpackError {
    /// The layer blob cannot be read, or the directory written.
    #[error("layer {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An entry names a path that leaves the layer (`..`).
    #[error("layer entry {0:?} leaves the image's root; refusing the layer")]
    UnsafePath(PathBuf),
    /// The layer is compressed in a way berth does not read.
    #[error("layer compressed as {0} (berth reads gzip and uncompressed layers)")]
    Compression(&'static str),
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Unpacks the layer blob at `blob` into `dir` (which must exist and be empty). The compression is
/// recognised by its magic bytes, whatever the media type claims.
pub fn unpack_layer(blob: &Path, dir: &Path) -> Result<(), UnpackError> {
    let mut file = BufReader::new(File::open(blob).map_err(io(blob))?);
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(io(blob))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let reader = head.chain(file);
    match magic {
        [0x1f, 0x8b, ..] => unpack_tar(GzDecoder::new(reader), dir),
        [0x28, 0xb5, 0x2f, 0xfd] => Err(UnpackError::Compression("zstd")),
        _ => unpack_tar(reader, dir),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The entry's path relative to the layer root: absolute and `.` components dropped, `..` refused.
fn relative(path: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(UnpackError::UnsafePath(path.to_path_buf())),
        }
    }
    Ok(out)
}

fn unpack_tar(reader: impl Read, dir: &Path) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(io(dir))? {
        let mut entry = entry.map_err(io(dir))?;
        let path = relative(&entry.path().map_err(io(dir))?)?;
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue; // the root itself
        };
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let parent = dir.join(path.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&parent).map_err(io(&parent))?;
            if name == OPAQUE_MARKER {
                set_opaque(&parent)?;
            } else {
                whiteout(&parent.join(hidden))?;
            }
            continue;
        }
        entry.unpack_in(dir).map_err(io(&dir.join(&path)))?;
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<CString, UnpackError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| UnpackError::UnsafePath(path.to_path_buf()))
}

/// overlayfs' whiteout: a character device 0/0 hides the name in lower layers.
fn whiteout(path: &Path) -> Result<(), UnpackError> {
    let c = c_path(path)?;
    // SAFETY: a valid NUL-terminated path; mknod does not keep it.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(UnpackError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    }
    Ok(())
}

/// overlayfs' opaque directory: lower layers' content of it is hidden.
fn set_opaque(dir: &Path) -> Result<(), UnpackError> {
    let c = c_path(dir)?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid NUL-terminated path and name, a one-byte value that outlives the call.
    let rc = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(UnpackError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-unpack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch");
        dir
    }

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match content {
                Some(text) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(text.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, text.as_bytes()).expect("append");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, &[][..]).expect("append");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn gzip_and_plain_layers_unpack_with_whiteouts_in_overlay_form() {
        let dir = scratch("wh");
        let tar = layer(&[
            ("etc/", None),
            ("etc/motd", Some("hello")),
            ("etc/.wh.gone", Some("")),
            ("var/", None),
            ("var/.wh..wh..opq", Some("")),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        for (name, bytes) in [("plain", tar.clone()), ("gz", gz.finish().expect("gzip"))] {
            let blob = dir.join(format!("{name}.blob"));
            std::fs::write(&blob, bytes).expect("blob");
            let out = dir.join(name);
            std::fs::create_dir(&out).expect("out");
            unpack_layer(&blob, &out).expect("unpack");
            assert_eq!(
                std::fs::read_to_string(out.join("etc/motd")).expect("motd"),
                "hello"
            );
            let meta = std::fs::symlink_metadata(out.join("etc/gone")).expect("whiteout");
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            assert!(
                meta.file_type().is_char_device(),
                "{name}: whiteout is a char device"
            );
            assert_eq!(meta.rdev(), 0);
            assert!(!out.join("etc/.wh.gone").exists());
            let c = c_path(&out.join("var")).expect("path");
            let mut value = [0u8; 4];
            // SAFETY: valid path and name, buffer of the length given.
            let n = unsafe {
                libc::getxattr(
                    c.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            assert_eq!(n, 1, "{name}: opaque attribute set");
            assert_eq!(value[0], b'y');
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_entry_leaving_the_root_is_refused() {
        let dir = scratch("escape");
        // The tar builder refuses to write `..` itself: patch the name into the header.
        let mut tar = layer(&[("aa/bb/cc", Some("x"))]);
        tar[..8].copy_from_slice(b"../../cc");
        let mut h = tar::Header::from_byte_slice(&tar[..512]).clone();
        h.set_cksum();
        tar[..512].copy_from_slice(h.as_bytes());
        let blob = dir.join("blob");
        std::fs::write(&blob, tar).expect("blob");
        let out = dir.join("out");
        std::fs::create_dir(&out).expect("out");
        let err = unpack_layer(&blob, &out).expect_err("refused");
        assert!(matches!(err, UnpackError::UnsafePath(_)), "{err}");
        assert!(!dir.join("cc").exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn zstd_layers_get_a_clear_error() {
        let dir = scratch("zstd");
        let blob = dir.join("blob");
        std::fs::write(&blob, [0x28, 0xb5, 0x2f, 0xfd, 0, 0]).expect("blob");
        let err = unpack_layer(&blob, &dir).expect_err("zstd");
        assert!(err.to_string().contains("zstd"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
