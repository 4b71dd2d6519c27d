//! `--reset-on-progress`: did an attempt change its state dir? A
//! [`Snapshot`] before and after the attempt lists every entry under the
//! dir (depth first, names sorted, symlinks not followed) with its kind,
//! size and modification time; progress is any difference — an entry
//! created or removed, or one whose size or mtime changed. At most
//! [`ENTRIES`] entries are listed: a change past them (in that order) is
//! not seen, unless it also changes the mtime of a directory listed.

use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// The most entries a snapshot lists (SPEC: up to 10,000 are compared).
pub const ENTRIES: usize = 10_000;

/// The state of a directory tree, as far as progress is concerned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot(Vec<Entry>);

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// The path below the root, `/`-separated.
    path: Vec<u8>,
    dir: bool,
    size: u64,
    mtime: (i64, i64),
}

impl Snapshot {
    /// Lists `root` (an unreadable part lists as empty).
    pub fn of(root: &Path) -> Snapshot {
        let mut entries = Vec::new();
        walk(root, &mut Vec::new(), &mut entries);
        Snapshot(entries)
    }
}

fn walk(dir: &Path, prefix: &mut Vec<u8>, out: &mut Vec<Entry>) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    let mut names: Vec<_> = read.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort();
    for name in names {
        if out.len() >= ENTRIES {
            return;
        }
        let path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(name.as_bytes());
        out.push(Entry {
            path: prefix.clone(),
            dir: meta.is_dir(),
            size: if meta.is_dir() { 0 } else { meta.len() },
            mtime: (meta.mtime(), meta.mtime_nsec()),
        });
        if meta.is_dir() {
            walk(&path, prefix, out);
        }
        prefix.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_files_created_removed_grown_and_touched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let empty = Snapshot::of(root);
        assert_eq!(empty, Snapshot::of(root), "nothing changed");
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/part"), b"abc").unwrap();
        let one = Snapshot::of(root);
        assert_ne!(empty, one);
        assert_eq!(one.0.iter().map(|e| e.path.as_slice()).collect::<Vec<_>>(), [&b"sub"[..], b"sub/part"]);
        std::fs::write(root.join("sub/part"), b"abcd").unwrap();
        assert_ne!(one, Snapshot::of(root), "grown");
        let grown = Snapshot::of(root);
        let f = std::fs::File::options().write(true).open(root.join("sub/part")).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_ne!(grown, Snapshot::of(root), "touched");
        std::fs::remove_file(root.join("sub/part")).unwrap();
        assert_ne!(one, Snapshot::of(root), "removed");
        // A missing dir is an empty one.
        assert_eq!(Snapshot::of(&root.join("none")), Snapshot::default());
    }

    #[test]
    fn lists_at_most_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..ENTRIES + 5 {
            std::fs::write(dir.path().join(format!("{i:06}")), b"").unwrap();
        }
        assert_eq!(Snapshot::of(dir.path()).0.len(), ENTRIES);
    }
}
