//! The life of an output directory, for every command that writes one: checks before any work (not an input,
//! not inside one, no input inside it; an existing target is replaced only with `overwrite` and only if
//! merge-rs wrote it), a temporary sibling to write into, and an atomic move into place that never replaces
//! anything without `overwrite` (rename-no-replace, so of two concurrent writers one fails). Outputs carry
//! a marker file listing what merge-rs wrote; temporary siblings left by killed processes are removed.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{MergeError, Result};

/// The marker merge-rs leaves in every output directory: the files it wrote, one per line.
pub(crate) const MARKER: &str = ".merge-rs-output";
const TEMP_TAG: &str = ".merge-rs-";

/// An output directory being written (in a temporary sibling until [`OutputDir::commit`]).
#[derive(Debug)]
pub(crate) struct OutputDir {
    target: PathBuf,
    temp: PathBuf,
    overwrite: bool,
    created_parents: Vec<PathBuf>,
    committed: bool,
}

impl OutputDir {
    /// Check `target` ([`check`]) and create the temporary directory.
    pub(crate) fn prepare(target: &Path, inputs: &[PathBuf], overwrite: bool) -> Result<OutputDir> {
        check(target, inputs, overwrite)?;
        let (parent, name) = split(target)?;
        let created_parents = create_parents(&parent)?;
        remove_stale_temps(&parent, &name);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = parent.join(format!(".{name}{TEMP_TAG}{}-{nanos}", std::process::id()));
        let output = OutputDir {
            target: target.to_path_buf(),
            temp,
            overwrite,
            created_parents,
            committed: false,
        };
        std::fs::create_dir(&output.temp).map_err(|e| output.error(e))?;
        Ok(output)
    }

    /// The temporary directory to write into.
    pub(crate) fn temp(&self) -> &Path {
        &self.temp
    }

    /// The final path.
    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    /// An I/O error while writing, named after the output (not the temporary directory).
    pub(crate) fn error(&self, source: std::io::Error) -> MergeError {
        MergeError::Io {
            path: self.target.clone(),
            source,
        }
    }

    /// Write the marker and move the directory into place.
    pub(crate) fn commit(mut self) -> Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(&self.temp)
            .map_err(|e| self.error(e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.push(MARKER.to_string());
        names.sort();
        std::fs::write(self.temp.join(MARKER), names.join("\n") + "\n").map_err(|e| self.error(e))?;
        if self.target.exists() {
            check_replaceable(&self.target, self.overwrite)?;
            let aside = PathBuf::from(format!("{}.old", self.temp.display()));
            rename_no_replace(&self.target, &aside).map_err(|e| self.error(e))?;
            if let Err(e) = rename_no_replace(&self.temp, &self.target) {
                let _ = std::fs::rename(&aside, &self.target);
                return Err(self.error(e));
            }
            let _ = std::fs::remove_dir_all(&aside);
        } else {
            rename_no_replace(&self.temp, &self.target).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => MergeError::OutputExists {
                    path: self.target.clone(),
                },
                _ => self.error(e),
            })?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.temp);
        for dir in self.created_parents.iter().rev() {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// Whether `target` can be written: it is not one of `inputs` (every path the command reads), not inside
/// one, holds none, and is absent, or replaceable with `overwrite`. Touches nothing on disk.
pub(crate) fn check(target: &Path, inputs: &[PathBuf], overwrite: bool) -> Result<()> {
    check_not_input(target, inputs)?;
    check_replaceable(target, overwrite)?;
    split(target).map(|_| ())
}

/// The parent (`.` when none) and the file name of `target`.
fn split(target: &Path) -> Result<(PathBuf, String)> {
    let name = target
        .file_name()
        .filter(|n| n.as_bytes() != b"..")
        .ok_or_else(|| MergeError::arg(format!("{}: not a usable output path", target.display())))?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string_lossy().into_owned()))
}

/// Create the missing ancestors of `dir`, returning those created (outermost first).
fn create_parents(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    for d in &missing {
        std::fs::create_dir(d).map_err(|e| MergeError::io(d, e))?;
    }
    Ok(missing)
}

/// The output must not be an input, inside an input's directory, or contain an input.
pub(crate) fn check_not_input(target: &Path, inputs: &[PathBuf]) -> Result<()> {
    let out = absolute(target);
    for input in inputs {
        let path = absolute(input);
        if out == path || path.starts_with(&out) || (input.is_dir() && out.starts_with(&path)) {
            return Err(MergeError::OutputIsInput {
                path: target.to_path_buf(),
                input: input.clone(),
            });
        }
    }
    Ok(())
}

/// Without `overwrite` the target must not exist; with it, it must be a directory merge-rs wrote, holding
/// nothing merge-rs did not write.
fn check_replaceable(target: &Path, overwrite: bool) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(target) else {
        return Ok(());
    };
    if !overwrite {
        return Err(MergeError::OutputExists {
            path: target.to_path_buf(),
        });
    }
    let refuse = |why: String| {
        MergeError::arg(format!(
            "{}: --overwrite replaces only a directory merge-rs wrote, and {why}; remove it yourself or choose another --out",
            target.display()
        ))
    };
    if !meta.is_dir() {
        return Err(refuse("this is not a directory".into()));
    }
    let listed =
        std::fs::read_to_string(target.join(MARKER)).map_err(|_| refuse(format!("it has no {MARKER} marker")))?;
    let listed: std::collections::HashSet<&str> = listed.lines().collect();
    let entries = std::fs::read_dir(target).map_err(|e| MergeError::io(target, e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        if !listed.contains(name.to_string_lossy().as_ref()) {
            return Err(refuse(format!(
                "it holds '{}', which merge-rs did not write",
                name.to_string_lossy()
            )));
        }
        // merge-rs writes plain files only: a listed name that is now a directory or a link holds someone's data
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            return Err(refuse(format!(
                "'{}' is no longer the file merge-rs wrote there",
                name.to_string_lossy()
            )));
        }
    }
    Ok(())
}

/// Remove `.<name>.merge-rs-<pid>-*` siblings whose process is gone (left by a kill -9 or a crash).
fn remove_stale_temps(parent: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_TAG}");
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Rename `from` to `to`, failing with `AlreadyExists` if `to` exists (atomically, with renameat2).
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) || err.raw_os_error() == Some(libc::ENOSYS) {
        // The filesystem cannot rename without replacing: check, then rename (not atomic).
        if to.exists() {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
        }
        return std::fs::rename(from, to);
    }
    Err(err)
}

/// A canonical absolute path, also for paths that do not exist yet (their parent is canonicalised).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => absolute(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
        .join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(target: &Path, overwrite: bool) -> Result<OutputDir> {
        OutputDir::prepare(target, &[], overwrite)
    }

    #[test]
    fn commits_atomically_with_a_marker() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join("a/b/out");
        let out = prepare(&target, false).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(out.temp().join("x.txt"), "x").unwrap_or_else(|e| panic!("{e}"));
        out.commit().unwrap_or_else(|e| panic!("{e}"));
        let marker = std::fs::read_to_string(target.join(MARKER)).unwrap_or_default();
        assert_eq!(marker, format!("{MARKER}\nx.txt\n"));
        // Replaced only with overwrite, and then cleanly.
        assert!(matches!(prepare(&target, false), Err(MergeError::OutputExists { .. })));
        let again = prepare(&target, true).unwrap_or_else(|e| panic!("{e}"));
        again.commit().unwrap_or_else(|e| panic!("{e}"));
        assert!(!target.join("x.txt").exists());
    }

    #[test]
    fn never_replaces_what_merge_rs_did_not_write() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(target.join("precious.txt"), "x").unwrap_or_else(|e| panic!("{e}"));
        let err = prepare(&target, true).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no .merge-rs-output marker"), "{err}");
        std::fs::write(target.join(MARKER), format!("{MARKER}\n")).unwrap_or_else(|e| panic!("{e}"));
        let err = prepare(&target, true).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("'precious.txt', which merge-rs did not write"), "{err}");
        assert!(target.join("precious.txt").exists());
    }

    #[test]
    fn a_listed_name_turned_into_a_directory_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join("out");
        prepare(&target, false)
            .and_then(|o| {
                std::fs::write(o.temp().join("config.json"), "{}").map_err(|e| o.error(e))?;
                o.commit()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_file(target.join("config.json")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(target.join("config.json")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(target.join("config.json").join("mine.txt"), "x").unwrap_or_else(|e| panic!("{e}"));
        let err = prepare(&target, true).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("'config.json' is no longer the file merge-rs wrote"),
            "{err}"
        );
        assert!(target.join("config.json").join("mine.txt").exists());
    }

    #[test]
    fn a_target_that_appears_meanwhile_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join("out");
        let first = prepare(&target, false).unwrap_or_else(|e| panic!("{e}"));
        let second = prepare(&target, false).unwrap_or_else(|e| panic!("{e}"));
        first.commit().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(second.commit(), Err(MergeError::OutputExists { .. })));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).into_iter().flatten().collect();
        assert_eq!(leftovers.len(), 1, "the loser's temporary directory is removed");
    }

    #[test]
    fn failure_removes_the_temporary_directory_and_created_parents() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        drop(prepare(&dir.path().join("new/deeper/out"), false).unwrap_or_else(|e| panic!("{e}")));
        assert!(!dir.path().join("new").exists());
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let stale = dir.path().join(".out.merge-rs-999999999-1");
        std::fs::create_dir(&stale).unwrap_or_else(|e| panic!("{e}"));
        let mine = dir.path().join(format!(".out.merge-rs-{}-1", std::process::id()));
        std::fs::create_dir(&mine).unwrap_or_else(|e| panic!("{e}"));
        drop(prepare(&dir.path().join("out"), false));
        assert!(!stale.exists() && mine.exists());
    }

    #[test]
    fn inputs_and_outputs_must_not_overlap() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let input = dir.path().join("model");
        std::fs::create_dir(&input).unwrap_or_else(|e| panic!("{e}"));
        let inside = input.join("out");
        for (target, inputs) in [
            (input.clone(), vec![input.clone()]),
            (inside, vec![input.clone()]),
            (dir.path().join("o"), vec![dir.path().join("o/w.json")]),
        ] {
            assert!(
                matches!(
                    OutputDir::prepare(&target, &inputs, true),
                    Err(MergeError::OutputIsInput { .. })
                ),
                "{}",
                target.display()
            );
        }
    }
}
