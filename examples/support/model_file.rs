//! The pretrained model the real-model examples default to, and the message that says how to fetch it.

use std::path::Path;

/// Where `scripts/fetch-model.sh` puts SmolLM2-135M-Instruct.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Fails with the fetch command when `path` does not exist.
pub fn check_exists(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    let hint = if path == Path::new(DEFAULT_MODEL) {
        "fetch it with `bash scripts/fetch-model.sh`".to_string()
    } else {
        format!("or fetch the default with `bash scripts/fetch-model.sh` and pass --model {DEFAULT_MODEL}")
    };
    Err(format!(
        "--model {}: no such file or folder; {hint}",
        path.display()
    ))
}
