//! `save_dir_atomic`: a folder is replaced as a whole or not at all.

use lowrank_nn::{save_dir_atomic, write_atomic, NnError};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowrank-save-dir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Writes a "weights" and a "config" file with the same version tag: a mix of versions is a torn save.
fn save(dir: &Path, version: &str) -> Result<(), NnError> {
    save_dir_atomic(dir, |staging| {
        write_atomic(&staging.join("weights"), version.as_bytes())?;
        write_atomic(&staging.join("config"), version.as_bytes())
    })
}

#[test]
fn a_save_replaces_the_whole_folder_and_keeps_foreign_files() {
    let root = scratch("replace");
    let dir = root.join("adapter");
    save(&dir, "v1").unwrap();
    assert_eq!(
        (read(&dir.join("weights")), read(&dir.join("config"))),
        ("v1".into(), "v1".into())
    );
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    save(&dir, "v2").unwrap();
    assert_eq!(
        (read(&dir.join("weights")), read(&dir.join("config"))),
        ("v2".into(), "v2".into())
    );
    assert_eq!(
        read(&dir.join("notes.txt")),
        "mine",
        "files the save does not write are kept"
    );
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["adapter".to_string()],
        "no staging folder is left behind"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_failed_save_leaves_the_old_folder_untouched() {
    let root = scratch("fail");
    let dir = root.join("base");
    save(&dir, "good").unwrap();
    let err = save_dir_atomic(&dir, |staging| {
        write_atomic(&staging.join("weights"), b"half")?;
        Err(NnError::io(staging, std::io::Error::other("disk full")))
    })
    .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(
        (read(&dir.join("weights")), read(&dir.join("config"))),
        ("good".into(), "good".into())
    );
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        1,
        "the staging folder is removed"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn leftovers_of_a_killed_save_are_cleaned_up_by_the_next() {
    let root = scratch("leftover");
    let dir = root.join("base");
    save(&dir, "v1").unwrap();
    // what a save killed mid-write leaves: a staging folder with part of the new files
    let stale = root.join(".base.staging-999999");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("weights"), "torn").unwrap();
    assert_eq!(
        read(&dir.join("weights")),
        "v1",
        "the target never saw the torn save"
    );
    save(&dir, "v2").unwrap();
    assert!(!stale.exists());
    assert_eq!(read(&dir.join("config")), "v2");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn temporary_files_of_killed_writes_are_removed_not_carried_over() {
    let root = scratch("tmpfiles");
    let dir = root.join("adapter");
    save(&dir, "v1").unwrap();
    // a write_atomic killed before its rename leaves `.{name}.tmp{pid}` beside its target
    std::fs::write(dir.join(".notes.txt.tmp4242"), "torn").unwrap();
    std::fs::write(dir.join(".hidden"), "a user's own dot file").unwrap();
    save(&dir, "v2").unwrap();
    assert!(!dir.join(".notes.txt.tmp4242").exists());
    assert_eq!(read(&dir.join(".hidden")), "a user's own dot file");
    // a file written directly with write_atomic removes its own leftovers too
    std::fs::write(root.join(".curve.svg.tmp77"), "torn").unwrap();
    write_atomic(&root.join("curve.svg"), b"new").unwrap();
    assert!(!root.join(".curve.svg.tmp77").exists());
    assert_eq!(read(&root.join("curve.svg")), "new");
    std::fs::remove_dir_all(&root).unwrap();
}
