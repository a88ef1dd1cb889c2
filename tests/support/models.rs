//! The models the tests read from models/, which `bash scripts/fetch-model.sh` fills (weights are never
//! committed): SmolLM2-135M-Instruct and the tiny GQA fixture model. A test without its model prints the
//! fetch command and passes, unless `LOWRANK_REQUIRE_MODEL=1` (set by .ci/run): then it fails. A test
//! binary includes it with `#[path = "support/models.rs"] mod models;`.

// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const TINY: &str = "tiny-gqa.gguf";

/// models/`name`, if it is there.
pub fn model_file(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name);
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var("LOWRANK_REQUIRE_MODEL").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "LOWRANK_REQUIRE_MODEL=1 but {} is missing: run `bash scripts/fetch-model.sh`",
        path.display()
    );
    eprintln!(
        "skipped: {} is missing; fetch it with `bash scripts/fetch-model.sh`",
        path.display()
    );
    None
}
