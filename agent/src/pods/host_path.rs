//! hostPath volumes' `type` as kubelet checks it before the containers start: `DirectoryOrCreate`
//! makes the directory (0755, parents too), `FileOrCreate` an empty file (0644, the parent must
//! exist), and `Directory`, `File`, `Socket`, `CharDevice`, `BlockDevice` must find that kind of
//! file. Unset (`""`) checks nothing, as in Kubernetes.

use std::{
    fs::{self, OpenOptions},
    io,
    os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use k8s_openapi::api::core::v1::HostPathVolumeSource;

/// Prepares or checks the path; the error is the FailedMount message.
pub fn prepare(source: &HostPathVolumeSource) -> Result<(), String> {
    let path = Path::new(&source.path);
    let kind = source.type_.as_deref().unwrap_or_default();
    let wrong = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not a {what}",
            source.path
        ))
    };
    let meta = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("hostPath {}: {e}", source.path)),
    };
    match (kind, meta) {
        ("", _) => Ok(()),
        ("DirectoryOrCreate", None) => {
            fs::create_dir_all(path).map_err(|e| format!("creating hostPath {}: {e}", source.path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("hostPath {}: {e}", source.path))
        }
        ("FileOrCreate", None) => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(|_| ())
            .map_err(|e| format!("creating hostPath {}: {e}", source.path)),
        ("DirectoryOrCreate" | "Directory", Some(m)) if m.is_dir() => Ok(()),
        ("DirectoryOrCreate" | "Directory", _) => wrong("directory"),
        ("FileOrCreate" | "File", Some(m)) if m.is_file() => Ok(()),
        ("FileOrCreate" | "File", _) => wrong("file"),
        ("Socket", Some(m)) if m.file_type().is_socket() => Ok(()),
        ("Socket", _) => wrong("socket"),
        ("CharDevice", Some(m)) if m.file_type().is_char_device() => Ok(()),
        ("CharDevice", _) => wrong("character device"),
        ("BlockDevice", Some(m)) if m.file_type().is_block_device() => Ok(()),
        ("BlockDevice", _) => wrong("block device"),
        (other, _) => Err(format!("hostPath {}: unknown type {other:?}", source.path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &Path, kind: &str) -> HostPathVolumeSource {
        HostPathVolumeSource {
            path: path.display().to_string(),
            type_: Some(kind.into()),
        }
    }

    #[test]
    fn types_create_or_check() {
        let dir = std::env::temp_dir().join(format!("berth-hostpath-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let made = dir.join("a/b");
        prepare(&source(&made, "DirectoryOrCreate")).expect("directory made");
        assert!(made.is_dir());
        prepare(&source(&made, "Directory")).expect("a directory");
        let file = made.join("f");
        prepare(&source(&file, "FileOrCreate")).expect("file made");
        assert!(file.is_file());
        prepare(&source(&file, "File")).expect("a file");
        assert!(
            prepare(&source(&file, "Directory"))
                .expect_err("refused")
                .contains("not a directory")
        );
        assert!(
            prepare(&source(&made, "File"))
                .expect_err("refused")
                .contains("not a file")
        );
        assert!(prepare(&source(&dir.join("none/f"), "FileOrCreate")).is_err());
        assert!(prepare(&source(&dir.join("none"), "Directory")).is_err());
        assert!(
            prepare(&source(&file, "Socket"))
                .expect_err("refused")
                .contains("not a socket")
        );
        prepare(&source(&dir.join("none"), "")).expect("unset checks nothing");
        assert!(
            prepare(&source(&file, "Weird"))
                .expect_err("refused")
                .contains("unknown type")
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
