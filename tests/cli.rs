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
