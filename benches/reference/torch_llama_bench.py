"""Speed anchor: what a user would pick instead of lowrank, on the same work.

A Hugging Face LlamaForCausalLM with lowrank's toy sizes (byte vocab 256, RMSNorm, RoPE, SwiGLU, no biases),
trained on CPU with PyTorch: full fine-tune, PEFT LoRA (r=8, alpha=16, q_proj+v_proj), PEFT LoRA on all
linear layers, PEFT DoRA on q_proj+v_proj; plus greedy forward throughput with the LoRA merged.
Each variant runs in a fresh process so peak RSS is its own. Prints one JSON line per variant.

  "$REF_VENV"/bin/python benches/reference/torch_llama_bench.py [--threads 2] [--configs small,medium] [--steps 20]
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

CONFIGS = {
    "small": dict(d_model=128, n_layers=4, n_heads=4, seq=64, batch=16),
    "medium": dict(d_model=256, n_layers=6, n_heads=8, seq=128, batch=16),
}
VARIANTS = ["full", "lora_qv", "lora_all", "dora_qv", "infer"]


def child(cfg_name, variant, steps, warmup, threads):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from peft import LoraConfig, get_peft_model
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = CONFIGS[cfg_name]
    hf = LlamaConfig(vocab_size=256, hidden_size=c["d_model"], intermediate_size=4 * c["d_model"],
                     num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
                     num_key_value_heads=c["n_heads"], max_position_embeddings=c["seq"],
                     rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                     attn_implementation="eager")
    model = LlamaForCausalLM(hf)
    total = sum(p.numel() for p in model.parameters())
    targets = {"lora_qv": ["q_proj", "v_proj"], "dora_qv": ["q_proj", "v_proj"], "infer": ["q_proj", "v_proj"],
               "lora_all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    if variant != "full":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets[variant],
                                                 use_dora=(variant == "dora_qv"), task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (c["batch"], c["seq"]), generator=g)
    times = []
    if variant == "infer":
        model = model.merge_and_unload().eval()
        with torch.no_grad():
            for i in range(warmup + steps):
                t = time.perf_counter(); model(input_ids=x); times.append(time.perf_counter() - t)
    else:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        model.train()
        for i in range(warmup + steps):
            t = time.perf_counter()
            loss = model(input_ids=x, labels=x).loss
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
    ms = statistics.median(times[warmup:]) * 1e3
    tok = c["batch"] * c["seq"]
    print(json.dumps(dict(config=cfg_name, variant=variant, threads=threads, ms_per_step=round(ms, 2),
                          tokens_per_s=round(tok / ms * 1e3), params_total=total, params_trainable=trainable,
                          peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                          torch=torch.__version__)), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="small,medium")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--_child", nargs=2)
    a = ap.parse_args()
    if a._child:
        return child(a._child[0], a._child[1], a.steps, a.warmup, a.threads)
    for cfg in a.configs.split(","):
        for v in a.variants.split(","):
            subprocess.run([sys.executable, __file__, "--_child", cfg, v, "--steps", str(a.steps),
                            "--warmup", str(a.warmup), "--threads", str(a.threads)], check=True)


if __name__ == "__main__":
    main()
