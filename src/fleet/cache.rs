//! `routes_cache`: the last applied set, kept on disk so that a gateway can start while its
//! source is down.
//!
//! The cache is a folder shaped like a `routes_dir` (so that, in an emergency, `routes_dir`
//! can point at it) plus a `version` file, written last. It is replaced whole: the new set is
//! written into `<cache>.new`, the old folder renamed to `<cache>.old`, the new one renamed
//! into place and the old one removed. A crash at any step leaves either a whole cache, or no
//! cache and a whole `<cache>.old`, which [`read`] then uses; a folder without `version` is
//! incomplete and ignored.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{route_files, Published};

fn sibling(dir: &Path, ext: &str) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// The cached set, if there is a whole one.
pub(super) fn read(dir: &Path) -> Result<Option<Published>, String> {
    for d in [dir.to_path_buf(), sibling(dir, ".old")] {
        let version = match std::fs::read_to_string(d.join("version")) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read routes_cache {}: {e}", d.display())),
        };
        let version = version
            .trim()
            .parse()
            .map_err(|_| format!("routes_cache {}: `version` does not hold a number", d.display()))?;
        let mut entries = Vec::new();
        let list =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read routes_cache {}: {e}", d.display()))?;
        for entry in list {
            let entry = entry.map_err(|e| format!("cannot read routes_cache {}: {e}", d.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if super::is_route_file_name(&name) {
                let text = std::fs::read_to_string(entry.path())
                    .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
                entries.push((name, text));
            }
        }
        return Ok(Some(Published { version, files: route_files(entries) }));
    }
    Ok(None)
}

/// Replace the cache with `p` (blocking).
pub(super) fn write(dir: &Path, p: &Published) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let new = sibling(dir, ".new");
    let old = sibling(dir, ".old");
    let _ = std::fs::remove_dir_all(&new);
    std::fs::create_dir(&new)?;
    let put = |name: &str, data: &[u8]| -> std::io::Result<()> {
        let mut f = std::fs::File::create(new.join(name))?;
        f.write_all(data)?;
        f.sync_all()
    };
    for (name, text) in &p.files {
        put(name, text.as_bytes())?;
    }
    put("version", format!("{}\n", p.version).as_bytes())?;
    let _ = std::fs::remove_dir_all(&old);
    match std::fs::rename(dir, &old) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::rename(&new, dir)?;
    let _ = std::fs::remove_dir_all(&old);
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The renames are durable once the folder holding them is.
        let _ = std::fs::File::open(parent).and_then(|f| f.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: u64) -> Published {
        Published {
            version: v,
            files: vec![("a.toml".into(), format!("# {v}\n")), ("b.toml".into(), String::new())],
        }
    }

    #[test]
    fn a_written_set_reads_back_and_a_newer_one_replaces_it_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/routes");
        assert_eq!(read(&dir).unwrap(), None);
        write(&dir, &set(3)).unwrap();
        assert_eq!(read(&dir).unwrap(), Some(set(3)));
        write(&dir, &Published { version: 4, files: vec![("c.toml".into(), "x".into())] }).unwrap();
        let got = read(&dir).unwrap().unwrap();
        assert_eq!(got.version, 4);
        assert_eq!(got.files, vec![("c.toml".to_owned(), "x".to_owned())], "no file of the old set is left");
    }

    #[test]
    fn a_crash_between_the_renames_leaves_the_old_set_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("routes");
        write(&dir, &set(7)).unwrap();
        std::fs::rename(&dir, sibling(&dir, ".old")).unwrap();
        assert_eq!(read(&dir).unwrap(), Some(set(7)));
        // A folder without `version` (a write cut short) is not a cache.
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.toml"), "half").unwrap();
        assert_eq!(read(&dir).unwrap(), Some(set(7)));
    }
}
