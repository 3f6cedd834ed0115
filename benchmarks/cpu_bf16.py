"""bf16 mixed precision on this CPU against fp32 (issue 34): one LoRA training step (forward + backward) and one
forward pass of the embedded SmolLM2-135M, the two precisions alternated in one process after a warm-up of each,
and the CPU's bf16 instructions as torch sees them. Run it alone:

    python benchmarks/cpu_bf16.py --out benchmarks/results/cpu_bf16

`taskfit ... --precision bf16` is refused on a CPU without AMX / AVX512-BF16; this records why (or, on a CPU that
has them, what bf16 buys). Writes OUT.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

log = logging.getLogger("cpu_bf16")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from taskfit.models.catalog import resolve_model
    from taskfit.models.loading import autocast, cpu_has_bf16
    from taskfit.settings import TuneConfig
    from taskfit.tuning.skeleton import lora_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    _, location = resolve_model("smollm2-135m-instruct")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(location)),
                           lora_config(TuneConfig(method="lora", task="demo"), "CAUSAL_LM"))
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length))

    def train_step(mixed):
        started = time.perf_counter()
        with autocast(mixed, "cpu"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started, float(loss)

    def forward(mixed):
        started = time.perf_counter()
        with torch.inference_mode(), autocast(mixed, "cpu"):
            model(input_ids=ids)
        return time.perf_counter() - started

    kinds = {"fp32": None, "bf16": "bf16"}
    for name, mixed in kinds.items():  # warm-up: one-off kernel creation is not a step's cost
        log.info("warm-up %s", name)
        train_step(mixed), forward(mixed)
    times = {name: {"train": [], "forward": [], "loss": None} for name in kinds}
    for r in range(args.repeats):
        for name, mixed in kinds.items():
            seconds, loss = train_step(mixed)
            times[name]["train"].append(round(seconds, 3))
            times[name]["forward"].append(round(forward(mixed), 3))
            times[name]["loss"] = loss
            log.info("repeat %d %s: train %.2f s, forward %.2f s", r + 1, name, seconds, times[name]["forward"][-1])
    result = {"cpu": cpu_name(), "cpu_has_bf16": cpu_has_bf16(),
              "amx": torch.cpu._is_amx_tile_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
              "torch": torch.__version__, "threads": args.threads, "batch": args.batch, "length": args.length,
              "times": times}
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    median = {n: {k: statistics.median(t[k]) for k in ("train", "forward")} for n, t in times.items()}
    print(f"CPU: {result['cpu']}; AMX {result['amx']}, AVX512-BF16 {result['avx512_bf16']}; torch {torch.__version__},"
          f" {args.threads} threads; LoRA r 8 on every projection, {args.batch} x {args.length} tokens, median of "
          f"{args.repeats}\n")
    print("| pass | fp32 s | bf16 s | bf16 / fp32 |\n|---|---|---|---|")
    for k in ("train", "forward"):
        print(f"| {k} | {median['fp32'][k]:.2f} | {median['bf16'][k]:.2f} | "
              f"{median['bf16'][k] / median['fp32'][k]:.2f}x |")
    print(f"\nloss of the last step: fp32 {times['fp32']['loss']:.6f}, bf16 {times['bf16']['loss']:.6f}")


if __name__ == "__main__":
    main()
