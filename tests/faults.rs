//! Fault injection: a process that saves a checkpoint and an adapter over and over is killed with SIGKILL
//! at random instants. After every kill both folders must load and equal, tensor for tensor and field for
//! field, one of the two versions being written: never a mix (new weights with an old config), never
//! nothing. The two versions differ in shapes (a torn folder would not load) and in values and alpha (a
//! torn folder would load wrong).

use lowrank::gpt::{Gpt, GptConfig};
use lowrank::lora::{load_adapter, load_adapter_config, save_adapter, LoraConfig, LoraModel};
use lowrank::nn::Module;
use lowrank::tensor::{rng, Cpu, Tensor};
use rand_distr::{Distribution, Uniform};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

type Dev = Cpu<f32>;

/// Set in the child process: the folder it saves into.
const CHILD_ENV: &str = "LOWRANK_FAULT_CHILD";

/// Version `v` (0 or 1) of the base checkpoint.
fn base(v: u64) -> Gpt<Dev> {
    let config = GptConfig {
        d_ff: 16 + 8 * v as usize,
        ..GptConfig::tiny()
    };
    Gpt::new(config, v + 1, &Dev::new())
}

/// Version `v` of an adapter (r and alpha differ, A and B random and non-zero) on version 0 of the base.
fn adapted(v: u64) -> Gpt<Dev> {
    let mut model = base(0);
    let config = LoraConfig {
        r: 2 + 2 * v as usize,
        alpha: 3.0 + 29.0 * v as f64,
        ..LoraConfig::default()
    };
    model.add_adapter("default", &config, v).unwrap();
    for (i, (name, p)) in model.named_params().into_iter().enumerate() {
        if name.contains("lora_") {
            let noise = Tensor::randn(
                p.shape(),
                0.0,
                0.5,
                &mut rng(100 * v + i as u64),
                &p.backend(),
            );
            p.set_value(&p.value() + &noise);
        }
    }
    model
}

fn values(model: &Gpt<Dev>) -> Vec<(String, Vec<f32>)> {
    model
        .named_params()
        .into_iter()
        .map(|(n, p)| (n, p.value().to_vec()))
        .collect()
}

/// Which version the folders hold now; panics (failing the test) on anything else.
fn version_on_disk(root: &Path, bases: &[Gpt<Dev>], adapters: &mut [Gpt<Dev>]) -> (usize, usize) {
    let loaded = Gpt::load(&root.join("base"), &Dev::new())
        .unwrap_or_else(|e| panic!("the base folder does not load after a kill: {e}"));
    let b = (0..2)
        .find(|&v| loaded.config == bases[v].config && values(&loaded) == values(&bases[v]))
        .expect("the base folder holds neither the old nor the new checkpoint");
    let dir = root.join("adapter");
    let mut model = base(0);
    load_adapter(&mut model, &dir, "default")
        .unwrap_or_else(|e| panic!("the adapter folder does not load after a kill: {e}"));
    let config = load_adapter_config(&dir).unwrap();
    let a = (0..2)
        .find(|&v| {
            Some(&config) == adapters[v].adapter_config("default").as_ref()
                && values(&model) == values(&adapters[v])
        })
        .expect("the adapter folder holds neither the old nor the new adapter");
    (b, a)
}

/// The child: saves both versions of both folders in turn until it is killed.
fn save_forever(root: &Path) -> ! {
    let (bases, adapters) = ([base(0), base(1)], [adapted(0), adapted(1)]);
    println!("ready");
    loop {
        for v in 0..2 {
            bases[v].save(&root.join("base")).unwrap();
            save_adapter(&adapters[v], "default", &root.join("adapter")).unwrap();
        }
    }
}

#[test]
fn a_save_killed_at_any_instant_leaves_the_old_or_the_new_folder() {
    if let Some(root) = std::env::var_os(CHILD_ENV) {
        save_forever(Path::new(&root));
    }
    let root: PathBuf = std::env::temp_dir().join(format!("lowrank-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (bases, mut adapters) = ([base(0), base(1)], [adapted(0), adapted(1)]);
    bases[0].save(&root.join("base")).unwrap();
    save_adapter(&adapters[0], "default", &root.join("adapter")).unwrap();

    let mut r = rng(7);
    let mut seen = [[0; 2]; 2];
    let mut mid_save = 0; // kills that landed while a save was under way
    const KILLS: usize = 30;
    for _ in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_save_killed_at_any_instant_leaves_the_old_or_the_new_folder",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &root)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // wait until the child is saving, then kill it at a random instant of its save loop
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert!(n > 0, "the child ended before it was ready");
        }
        let delay = Uniform::new(0u64, 20_000).unwrap().sample(&mut r);
        std::thread::sleep(Duration::from_micros(delay));
        child.kill().unwrap(); // SIGKILL: no destructor, no cleanup runs
        child.wait().unwrap();
        // A save stages into `.NAME.staging-PID` (the child's pid) and removes it after the swap: if it is
        // still there, this kill hit between the save's first write and its end.
        let staging = |name: &str| root.join(format!(".{name}.staging-{}", child.id()));
        mid_save += usize::from(["base", "adapter"].iter().any(|n| staging(n).exists()));
        let (b, a) = version_on_disk(&root, &bases, &mut adapters);
        seen[0][b] += 1;
        seen[1][a] += 1;
    }
    eprintln!(
        "versions found after the kills: base {:?}, adapter {:?}; {mid_save} of {KILLS} kills mid-save",
        seen[0], seen[1]
    );
    // The child does nothing but save, so most kills must land inside one; were none to, the checks above
    // would prove nothing.
    assert!(
        mid_save >= KILLS / 3,
        "only {mid_save} of {KILLS} kills landed during a save"
    );

    // the next save removes what the killed ones left (staging folders, temporary files)
    bases[1].save(&root.join("base")).unwrap();
    save_adapter(&adapters[1], "default", &root.join("adapter")).unwrap();
    assert_eq!(version_on_disk(&root, &bases, &mut adapters), (1, 1));
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["adapter", "base"],
        "leftovers of killed saves remain"
    );
    for dir in ["adapter", "base"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "leftover {dir}/{name}");
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}
