//! The examples reject bad flags before doing any work: exit code 1, one line naming the flag, and no file
//! touched.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

/// target/<profile>/examples/<name>, next to this test's own binary in target/<profile>/deps. The examples
/// are built first with this test's profile (a no-op after `cargo test`, which builds them anyway), so a
/// test run alone never runs a stale example.
fn example(name: &str) -> Command {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--examples", "-p", "lowrank"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo to build the examples");
        assert!(status.success(), "building the examples failed");
    });
    let exe = std::env::current_exe().expect("the test binary");
    let dir: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples");
    Command::new(dir.join(name))
}

fn rejects(name: &str, args: &[&str], message: &str) {
    let out = example(name)
        .args(args)
        // paths that must not be created or read: a rejected flag stops everything before them
        .args(match name {
            "finetune_gpt" => vec!["--base", "/nonexistent/base", "--out", "/nonexistent/out"],
            "pretrain" => vec!["--out", "/nonexistent/out"],
            _ => vec!["--base", "/nonexistent/base"],
        })
        .output()
        .unwrap_or_else(|e| panic!("run example {name}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {stderr}");
    assert!(stderr.contains(message), "{name} {args:?}: {stderr}");
}

#[test]
fn bad_numeric_flags_are_rejected_before_any_work() {
    rejects(
        "finetune_gpt",
        &["--lr", "nan"],
        "--lr must be a finite number above 0, got NaN",
    );
    rejects(
        "finetune_gpt",
        &["--lr=-1"],
        "--lr must be a finite number above 0",
    );
    rejects(
        "finetune_gpt",
        &["--steps", "0"],
        "--steps must be at least 1",
    );
    rejects(
        "finetune_gpt",
        &["--rank", "0"],
        "--rank must be at least 1",
    );
    rejects(
        "finetune_gpt",
        &["--alpha", "inf"],
        "--alpha must be a finite number",
    );
    rejects(
        "finetune_gpt",
        &["--paged-optimizer"],
        "--paged-optimizer pages AdamW's state between host and GPU memory",
    );
    rejects("pretrain", &["--batch", "0"], "--batch must be at least 1");
    rejects(
        "pretrain",
        &["--lr", "0"],
        "--lr must be a finite number above 0",
    );
    rejects("generate", &["--prompt", ""], "--prompt must not be empty");
}

#[test]
fn bad_paths_are_rejected_before_any_work_and_nothing_is_overwritten() {
    let dir = std::env::temp_dir().join(format!("lowrank-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // a folder with weights but no config.json is not a checkpoint: no new base is pretrained over it
    let weights = dir.join("model.safetensors");
    std::fs::write(&weights, b"precious").unwrap();
    let run = |name: &str, args: &[&str]| {
        let out = example(name).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("finetune_gpt", &["--base", dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a checkpoint"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), b"precious");
    let missing = dir.join("missing.txt");
    let (code, err) = run("finetune_gpt", &["--data", missing.to_str().unwrap()]);
    assert!(code == Some(1) && err.contains("--data"), "{err}");
    let (code, err) = run("pretrain", &["--out", "/proc/lowrank-cannot-write-here"]);
    assert!(code == Some(1) && err.contains("--out"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
