//! Checks of numeric flags, made before any work so that a typo costs no training time.

// Each example includes this file and uses the checks it needs.
#![allow(dead_code)]

/// `Ok` when `value` is finite and above zero, otherwise an error naming the flag: checked before any work.
pub fn positive(flag: &str, value: f64) -> Result<(), Box<dyn std::error::Error>> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("{flag} must be a finite number above 0, got {value}").into())
    }
}

/// `Ok` for a learning rate in (0, 1]: AdamW moves each weight by about `lr` per step, so anything above 1
/// only destroys the model (it would train and save garbage without ever producing a NaN).
pub fn learning_rate(flag: &str, value: f64) -> Result<(), Box<dyn std::error::Error>> {
    positive(flag, value)?;
    if value > 1.0 {
        return Err(format!(
            "{flag} must be at most 1, got {value}: AdamW moves each weight by about lr per step"
        )
        .into());
    }
    Ok(())
}

/// `Ok` when a count flag is at least 1.
pub fn at_least_one(flag: &str, value: usize) -> Result<(), Box<dyn std::error::Error>> {
    if value >= 1 {
        Ok(())
    } else {
        Err(format!("{flag} must be at least 1").into())
    }
}

/// The most tokens one training step may hold (`--batch` x `--seq`): a million tokens already need
/// gigabytes of activations for the toy model, and a typo like `--batch 100000000` must be an error, not an
/// allocation that aborts the process.
pub const MAX_STEP_TOKENS: usize = 1 << 20;

/// `Ok` when `--batch` is at least 1 and a step of `batch` sequences of `seq` tokens stays within
/// `MAX_STEP_TOKENS`.
pub fn batch_size(batch: usize, seq: usize) -> Result<(), Box<dyn std::error::Error>> {
    at_least_one("--batch", batch)?;
    if batch.saturating_mul(seq) > MAX_STEP_TOKENS {
        return Err(format!(
            "--batch {batch} with sequences of {seq} tokens is {} tokens per step; at most {MAX_STEP_TOKENS} \
             fit (--batch at most {})",
            batch as u128 * seq as u128,
            MAX_STEP_TOKENS / seq.max(1)
        )
        .into());
    }
    Ok(())
}

/// `Ok` when `path` is a file that can be read (checked before a long run that would fail on it at the end).
pub fn readable_file(flag: &str, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("{flag} {}: {e}", path.display()).into())
}

/// `Ok` when folder `path` could be written: it, or the nearest ancestor that exists, is a folder that
/// accepts a new file (a probe file is created and removed).
pub fn writable_dir(flag: &str, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let bad = |why: String| format!("{flag} {}: {why}", path.display()).into();
    let mut dir = path;
    while !dir.exists() {
        dir = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
    }
    if !dir.is_dir() {
        return Err(bad(format!("{} is not a folder", dir.display())));
    }
    let probe = dir.join(format!(".lowrank-write-probe-{}", std::process::id()));
    std::fs::File::create(&probe)
        .map_err(|e| bad(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Where an example writes its results: `--out`, `--overwrite`, and the folder chosen from them.
#[derive(clap::Args, Debug)]
pub struct Output {
    /// Where the results are written [default: runs/base for pretrain, runs/adapter for finetune_gpt; or
    /// that name with -2, -3, ... when it holds earlier results].
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Let --out replace the files of an earlier run.
    #[arg(long)]
    pub overwrite: bool,
    /// The folder results go to, once `choose` has run.
    #[arg(skip)]
    pub dir: std::path::PathBuf,
}

impl Output {
    /// Picks the folder. With `--out`: that folder, but one that already holds files is refused unless
    /// `--overwrite` (nothing is replaced by surprise). Without it: `default`, or if that holds earlier
    /// results, the first free `default-2`, `default-3`, ... (said on stdout). Then checks it is writable.
    pub fn choose(&mut self, default: &str) -> Result<(), Box<dyn std::error::Error>> {
        let occupied =
            |p: &std::path::Path| p.is_file() || p.read_dir().is_ok_and(|mut d| d.next().is_some());
        self.dir = match &self.out {
            Some(dir) if occupied(dir) && !self.overwrite => {
                return Err(format!(
                    "--out {}: holds earlier results; pass --overwrite to replace them, or another --out",
                    dir.display()
                )
                .into())
            }
            Some(dir) => dir.clone(),
            None => {
                let default = std::path::PathBuf::from(default);
                if self.overwrite || !occupied(&default) {
                    default
                } else {
                    let free = (2..)
                        .map(|n| std::path::PathBuf::from(format!("{}-{n}", default.display())))
                        .find(|p| !occupied(p))
                        .expect("some numbered folder is free");
                    println!(
                        "{} holds earlier results: writing to {} (--out {} --overwrite replaces them)",
                        default.display(),
                        free.display(),
                        default.display()
                    );
                    free
                }
            }
        };
        writable_dir("--out", &self.dir)
    }
}

/// `--kernels fused|plain`: the fused kernels, or the plain compositions they optimise (same results).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernels {
    /// One kernel per op (attention, RMSNorm, RoPE, SwiGLU, cross-entropy), forward and backward.
    Fused,
    /// Each op composed from elementary ops, as the formulas read: slower, easier to step through.
    Plain,
}

impl From<Kernels> for lowrank::gpt::Kernels {
    fn from(k: Kernels) -> Self {
        match k {
            Kernels::Fused => lowrank::gpt::Kernels::Fused,
            Kernels::Plain => lowrank::gpt::Kernels::Plain,
        }
    }
}
