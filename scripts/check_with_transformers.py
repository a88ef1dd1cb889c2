"""Loads what finetune_llm wrote into transformers and checks that it computes lowrank's logits.

    ~/.venvs/lowrank-ref/bin/python scripts/check_with_transformers.py runs/llm-adapter
    ~/.venvs/lowrank-ref/bin/python scripts/check_with_transformers.py runs/llm-adapter --merged merged.gguf
    ~/.venvs/lowrank-ref/bin/python scripts/check_with_transformers.py runs/llm-adapter --merged merged-dir

The adapter folder (adapter_config.json + adapter_model.safetensors) goes onto transformers' model of the
same GGUF file through PEFT, as a user would load it:

    model = AutoModelForCausalLM.from_pretrained("models", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    model = PeftModel.from_pretrained(model, "runs/llm-adapter")
    logits = model(input_ids).logits

With --merged, the merged model (a GGUF file or a Hugging Face folder from --merge-to) is loaded alone.
Either way the logits must match lowrank_logits.json (written beside the adapter) within --tol (1e-3;
F16 / Q8_0 GGUF files round the weights, give them 0.1 / 0.5).
"""
import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def load(path):
    if os.path.isdir(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    folder, name = os.path.split(os.path.abspath(path))
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("adapter", help="finetune_llm's --out folder")
    ap.add_argument("--base", default=BASE, help="the GGUF file (or folder) the adapter was trained on")
    ap.add_argument("--merged", help="a merged model written by --merge-to, checked instead of base + adapter")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    with open(os.path.join(args.adapter, "lowrank_logits.json")) as f:
        expected = json.load(f)
    if args.merged:
        model = load(args.merged)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load(args.base), args.adapter)
    with torch.no_grad():
        logits = model.eval()(torch.tensor([expected["ids"]])).logits[0]
    ours = torch.tensor(expected["logits"], dtype=torch.float32)
    theirs = logits[:, expected["columns"]]
    diff = (ours - theirs).abs().max().item()
    what = args.merged or f"{args.base} + PEFT adapter {args.adapter}"
    print(f"{what}: max |logit diff| vs lowrank = {diff:.2e} over {ours.numel()} logits")
    if not diff <= args.tol:
        sys.exit(f"differs by more than --tol {args.tol}")


if __name__ == "__main__":
    main()
