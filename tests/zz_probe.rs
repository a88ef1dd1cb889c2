use lowrank::gpt::{Gpt, GptConfig};
use lowrank::lora::{LoraConfig, LoraModel, Targets};
use lowrank::nn::{AdamW, AdamWConfig, Module};
use lowrank::tensor::Cpu;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

fn run(cfg: GptConfig, b: usize, t: usize, lora: Option<Targets>) {
    let dev = Cpu::<f32>::new();
    let mut model = Gpt::new(cfg.clone(), 0, &dev);
    if let Some(targets) = lora.clone() {
        model
            .add_adapter(
                "a",
                &LoraConfig {
                    r: 8,
                    alpha: 16.0,
                    targets,
                    ..LoraConfig::default()
                },
                0,
            )
            .unwrap();
    }
    let mut opt = AdamW::new(model.trainable_params(), AdamWConfig::default());
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 37 % 256) as u32).collect();
    let tg: Vec<u32> = ids.iter().map(|i| (i + 1) % 256).collect();
    for _ in 0..2 {
        let l = model.loss(&ids, &tg, b, t);
        l.backward().unwrap();
        opt.step();
        opt.zero_grad();
    }
    let before = counting_alloc::live();
    let loss = model.loss(&ids, &tg, b, t);
    let kept = counting_alloc::live() - before;
    drop(loss);
    let (_, peak) = counting_alloc::peak_of(|| {
        let l = model.loss(&ids, &tg, b, t);
        l.backward().unwrap();
        opt.step();
        opt.zero_grad();
    });
    let (bb, tt, c, f, v, h, l) = (
        b,
        t,
        cfg.d_model,
        cfg.d_ff,
        cfg.vocab_size,
        cfg.n_heads,
        cfg.n_layers,
    );
    println!("PROBE lora={:?} B{bb} T{tt} C{c} F{f} V{v} H{h} L{l}: kept {kept} peak {peak}  | BTC {} BTF {} BTV {} BHTT {}", lora.map(|t| t.names()), bb*tt*c*4, bb*tt*f*4, bb*tt*v*4, bb*h*tt*tt*4);
}

#[test]
fn probe() {
    let qv = || Some(Targets::Names(vec!["q_proj".into(), "v_proj".into()]));
    for (b, t) in [(4, 32), (8, 64)] {
        run(GptConfig::small(), b, t, qv());
        run(GptConfig::small(), b, t, None);
        run(GptConfig::small(), b, t, Some(Targets::AllLinear));
        let mut c = GptConfig::small();
        c.n_layers = 2;
        run(c.clone(), b, t, qv());
        c.d_ff = 1024;
        run(c, b, t, qv());
    }
}
