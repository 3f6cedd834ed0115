"""Issue 16 item 9: would torchao replace torch.ao's dynamic int8 (`--quantize int8`)? One forward pass of the
embedded SmolLM2-135M on 8 short prompts, fp32 vs torch.ao dynamic int8 (taskfit's layer choice) vs torchao's
Int8DynamicActivationInt8WeightConfig on the same layers: seconds (median of 3) and the largest change of a
next-token log-probability against fp32.

    pip install --no-deps torchao   # not a taskfit dependency; see benchmarks/results/int8_torchao.md
    .venv/bin/python benchmarks/int8_torchao.py
"""

from __future__ import annotations

import json
import statistics
import time
import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from taskfit.models.catalog import resolve_model
from taskfit.models.loading import INT8_KEEP_FP32, quantize_int8


def timed(model, ids) -> tuple[float, torch.Tensor]:
    times = []
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            out = model(ids).logits[:, -1].log_softmax(-1)
            times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    _, path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok([f"Review {i}: the movie was great and I loved it" for i in range(8)], return_tensors="pt").input_ids

    def fresh():
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    fp32_s, ref = timed(fresh(), ids)
    ao_s, ao = timed(quantize_int8(fresh()), ids)
    rows = {"fp32": {"forward_s": round(fp32_s, 4), "max_logprob_change": 0.0},
            "torch.ao dynamic int8": {"forward_s": round(ao_s, 4),
                                      "max_logprob_change": round(float((ao - ref).abs().max()), 4)}}
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        rows["torchao int8 dynamic"] = "torchao not installed"
    else:
        model = fresh()
        output = model.get_output_embeddings()
        quantize_(model, Int8DynamicActivationInt8WeightConfig(),
                  filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and m is not output
                  and not fqn.endswith(INT8_KEEP_FP32))
        tao_s, tao = timed(model, ids)
        rows["torchao int8 dynamic"] = {"forward_s": round(tao_s, 4),
                                        "max_logprob_change": round(float((tao - ref).abs().max()), 4)}
    print(json.dumps({"prompts": 8, "tokens": int(ids.numel()), "threads": 2, "torch": torch.__version__,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
