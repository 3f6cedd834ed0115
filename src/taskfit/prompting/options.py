"""Strategy options: one pydantic model per strategy (unknown keys rejected), grouped by the part they configure.

Wording defaults come from ``templates.yaml`` (prompts are data). ``answer_format: json`` makes any strategy ask
for ``{"label": ...}``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from taskfit.prompting.templates import default
from taskfit.strict import StrictModel


class BaseOptions(StrictModel):
    """The answer format, shared by every strategy."""

    reads_pool: ClassVar[bool] = False  # the strategy reads the task's demonstration pool (APE: its candidates)

    def uses_pool(self) -> bool:
        """Whether a run with these options reads the pool split (grid checks the split exists; results.json
        records which split and how many rows)."""
        return self.reads_pool

    def seconds_per_row(self, generate: bool) -> float:
        """A rough prior of a row's seconds on 2 CPU cores with the embedded 135M model, for ``grid --dry-run``
        (recorded benchmarks: zero-shot scoring ~0.2 s per SST-2 row, greedy generation ~1 s for short answers).
        A strategy whose cost differs says so in its options class."""
        return 0.2 + (0.8 if generate else 0.0)

    answer_format: Literal["text", "json"] = "text"
    json_output_format: str | None = Field(None, description="default: templates.yaml json.<task type>")
    json_prefill: bool = Field(True, description='json mode, generate: start the reply with {"key": so the model '
                                                 "writes only the value")
    constrained: bool = Field(True, description="json mode, generate: on backends with constrained decoding "
                                                "(llamacpp), make the reply match the answer's JSON schema")


class DemoOptions(BaseOptions):
    """Where demonstrations come from and how they are laid out."""

    selector: Literal["random", "fixed", "knn"] = "random"
    k: int = Field(4, ge=0)
    order: Literal["as_selected", "similar_last", "shuffled"] | None = None
    indices: list[int] = Field(default_factory=list)
    demo_style: Literal["multi_turn", "single_prompt"] = "multi_turn"
    pool_limit: int | None = Field(None, gt=0, description="use only the first N pool rows")
    encoder: str = "all-minilm-l6-v2"
    knn_field: str | None = None
    calibrate: bool = Field(False, description="contextual calibration of label scores (loglikelihood mode)")
    demo_labels: Literal["gold", "random", "flipped", "none"] = Field(
        "gold", description="the answers the demos show (Min et al. 2022): gold; random (drawn from the label set "
                            "with the seed); flipped (a label other than the gold one); none (inputs only, in one "
                            "prompt)")
    demo_inputs: str = Field("task", description="the demos' inputs: task (the pool's own), or another task's name or "
                                                 "a text file (.txt lines, .jsonl 'text') whose inputs of similar "
                                                 "length replace them (out-of-domain inputs)")
    demos_header: str = Field(default_factory=lambda: default("few_shot", "demos_header"))
    query_header: str = Field(default_factory=lambda: default("few_shot", "query_header"))

    def uses_pool(self) -> bool:
        return self.k > 0

    def seconds_per_row(self, generate: bool) -> float:
        return super().seconds_per_row(generate) + 0.4 * self.k  # kNN 4-shot ~1.7 s a row


class SamplingOptions(StrictModel):
    """Sampled paths and their vote."""

    n: int = Field(1, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    vote: Literal["majority", "weighted"] = "majority"


class CoTOptions(DemoOptions, SamplingOptions):
    k: int = Field(0, ge=0)
    reasoning_trigger: str = Field(default_factory=lambda: default("cot", "reasoning_trigger"))
    answer_trigger: str = Field(default_factory=lambda: default("cot", "answer_trigger"))
    max_reasoning_tokens: int = Field(default_factory=lambda: default("cot", "max_reasoning_tokens"), gt=0)

    def seconds_per_row(self, generate: bool) -> float:
        return 4.0  # reasoning first: ~4 s a row


class SelfConsistencyOptions(CoTOptions):
    n: int = Field(5, ge=1)
    reasoning: bool = True

    def seconds_per_row(self, generate: bool) -> float:
        return 4.0 * self.n


class PlanAndSolveOptions(BaseOptions, SamplingOptions):
    """Plan-and-solve (zero-shot); ``n > 1`` samples n plans-and-solutions and votes, as self-consistency does."""

    plan_trigger: str = Field(default_factory=lambda: default("plan_and_solve", "plan_trigger"))
    solve_trigger: str = Field(default_factory=lambda: default("plan_and_solve", "solve_trigger"))
    answer_trigger: str = Field(default_factory=lambda: default("plan_and_solve", "answer_trigger"))
    max_plan_tokens: int = Field(default_factory=lambda: default("plan_and_solve", "max_plan_tokens"), gt=0)
    max_reasoning_tokens: int = Field(default_factory=lambda: default("plan_and_solve", "max_reasoning_tokens"),
                                      gt=0)

    def seconds_per_row(self, generate: bool) -> float:
        return 1.0


class ProgramOptions(BaseOptions):
    """Program-aided answers (number tasks): write a program, run it in the sandbox, revise on errors."""

    instruction: str = Field(default_factory=lambda: default("program", "instruction"))
    feedback: str = Field(default_factory=lambda: default("program", "feedback"))
    not_a_number: str = Field(default_factory=lambda: default("program", "not_a_number"))
    max_program_tokens: int = Field(default_factory=lambda: default("program", "max_program_tokens"), gt=0)
    revisions: int = Field(2, ge=0, description="times an error or a missing result is fed back for a new program")
    revision_temperature: float = Field(0.7, ge=0, description="sampling temperature of revised programs (the first "
                                        "is greedy)")
    timeout_s: float = Field(5.0, gt=0, le=60, description="seconds one program may run")
    memory_mb: int = Field(256, ge=64, le=4096, description="memory one program may use")

    def seconds_per_row(self, generate: bool) -> float:
        return 1.0


class CARPOptions(DemoOptions, SamplingOptions):
    k: int = Field(0, ge=0)
    selector: Literal["random", "fixed", "knn"] = "knn"
    instruction: str = Field(default_factory=lambda: default("carp", "instruction"))
    clues_prefix: str = Field(default_factory=lambda: default("carp", "clues_prefix"))
    reasoning_prefix: str = Field(default_factory=lambda: default("carp", "reasoning_prefix"))
    decision_prefix: str = Field(default_factory=lambda: default("carp", "decision_prefix"))
    annotate_instruction: str = Field(default_factory=lambda: default("carp", "annotate_instruction"))
    max_reasoning_tokens: int = Field(default_factory=lambda: default("carp", "max_reasoning_tokens"), gt=0)

    def seconds_per_row(self, generate: bool) -> float:
        return 5.0


class APEOptions(BaseOptions):
    reads_pool: ClassVar[bool] = True  # candidates are scored on pool rows

    def seconds_per_row(self, generate: bool) -> float:
        return 0.4

    m: int = Field(8, ge=1, description="candidate instructions to propose")
    n_pairs: int = Field(5, ge=1, description="input/output pairs shown to the proposer")
    score_n: int = Field(50, ge=1, description="pool examples each candidate is scored on")
    temperature: float = Field(0.9, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    include_task_instruction: bool = True
    proposal: str = Field(default_factory=lambda: default("ape", "proposal"))
    proposal_prefix: str = Field(default_factory=lambda: default("ape", "proposal_prefix"))
    max_instruction_tokens: int = Field(default_factory=lambda: default("ape", "max_instruction_tokens"), gt=0)


STRATEGY_OPTIONS: dict[str, type[BaseOptions]] = {
    "zero_shot": BaseOptions, "few_shot": DemoOptions, "cot": CoTOptions, "self_consistency": SelfConsistencyOptions,
    "carp": CARPOptions, "ape": APEOptions, "plan_and_solve": PlanAndSolveOptions, "program": ProgramOptions}
"""Strategy names and their option models, light enough for the CLI and the run config to check ``--strategy`` and
``strategy_args`` before any model loads; each strategy class in :mod:`~taskfit.prompting.strategies` declares the
same model as its ``Options`` (a test holds the two together). A strategy defined elsewhere is added to both by
:func:`taskfit.prompting.strategies.register_strategy`."""
