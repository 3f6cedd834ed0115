"""Bottleneck adapters (``--method adapter``), which PEFT does not provide.

An adapter is a small residual MLP, ``h + up(act(down(h)))``, applied to the output of chosen sub-modules of
every decoder layer while the model's own weights stay frozen (Houlsby et al. 2019, "Parameter-Efficient Transfer
Learning for NLP"). The default places one adapter after each layer's MLP, the configuration Pfeiffer et al.
(2021, "AdapterFusion") found to match Houlsby's two-per-layer placement at half the parameters; ``target_modules:
[self_attn, mlp]`` gives Houlsby's placement. The up-projection starts at zero, so training starts from the
untouched model.

The adapters hang off the model through forward hooks, so the base model's parameter names do not change and
every code path that runs the model (the hf backend's KV-cache tricks included: adapters act on each position
alone) keeps working. Saved like a PEFT adapter: ``adapter_config.json`` (``"taskfit_adapter": "bottleneck"``)
and ``adapter_model.safetensors`` holding only the adapter weights. An adapter is non-linear, so it cannot be
merged into the weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskfit.errors import UserError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
KIND = "bottleneck"
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclass
class BottleneckConfig:
    size: int = 64  # bottleneck width
    non_linearity: str = "relu"
    target_modules: list[str] = field(default_factory=lambda: ["mlp"])  # sub-modules of each decoder layer
    base_model_name_or_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"taskfit_adapter": KIND, **asdict(self)}


class Bottleneck(nn.Module):
    """``h + up(act(down(h)))`` with ``up`` initialised to zero (the identity at the start)."""

    def __init__(self, hidden: int, size: int, non_linearity: str):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


def _apply_hook(module: nn.Module, _inputs, output):
    """Forward hook: pass the module's output (the first item of a tuple output, as attention returns) through
    the adapter registered on it."""
    if isinstance(output, tuple):
        return (module.bottleneck(output[0]), *output[1:])
    return module.bottleneck(output)


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", base), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise UserError(f"bottleneck adapters need a decoder with model.layers; {type(base).__name__} has none")
    return layers


def add_adapters(model: nn.Module, config: BottleneckConfig) -> int:
    """Freeze ``model`` and hang a trainable adapter on ``config.target_modules`` of every decoder layer; returns
    the number of adapters added."""
    if config.non_linearity not in ACTIVATIONS:
        raise UserError(f"adapter non-linearity {config.non_linearity!r}: use one of {sorted(ACTIVATIONS)}")
    hidden = model.config.hidden_size
    for param in model.parameters():
        param.requires_grad_(False)
    added = 0
    for index, layer in enumerate(_decoder_layers(model)):
        for name in config.target_modules:
            target = getattr(layer, name, None)
            if not isinstance(target, nn.Module):
                children = [child for child, _ in layer.named_children()]
                raise UserError(f"adapter target module {name!r} is not in decoder layer {index}; its modules are "
                                f"{children}")
            if hasattr(target, "bottleneck"):
                raise UserError(f"decoder layer {index} {name} already has an adapter")
            target.bottleneck = Bottleneck(hidden, config.size, config.non_linearity).to(
                next(model.parameters()).dtype)
            target.register_forward_hook(_apply_hook)
            added += 1
    return added


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only (names end in ``.bottleneck.<down|up>.<weight|bias>``)."""
    return {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()
            if ".bottleneck." in name}


def save_adapters(model: nn.Module, config: BottleneckConfig, output: Path) -> None:
    from safetensors.torch import save_file

    output.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model), str(output / WEIGHTS_FILE))
    (output / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=2) + "\n", encoding="utf-8")


def is_bottleneck(folder: Path) -> bool:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("taskfit_adapter") == KIND
    except (json.JSONDecodeError, AttributeError):
        return False


def load_adapters(model: nn.Module, folder: Path) -> BottleneckConfig:
    """Add the adapters saved in ``folder`` to ``model`` and load their weights (every one must match)."""
    from safetensors.torch import load_file

    raw = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    raw.pop("taskfit_adapter", None)
    config = BottleneckConfig(**raw)
    add_adapters(model, config)
    weights = load_file(str(Path(folder) / WEIGHTS_FILE))
    expected = set(adapter_state(model))
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise UserError(f"adapter {folder} does not fit this model (missing {missing[:3]}, unexpected {extra[:3]}); "
                        "evaluate it with the base model it was trained on")
    try:
        model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shapes differ: another hidden size or bottleneck width
        raise UserError(f"adapter {folder} does not fit this model: {str(exc).splitlines()[-1].strip()}") from None
    return config
