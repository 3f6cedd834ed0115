"""Tuning on a tiny random Llama built in the test: the loss goes down, adapters reload and merge to the same logits,
training resumes from a checkpoint, every method runs, and bad training files are refused naming the line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from taskfit.api import Prompt
from taskfit.errors import UserError
from taskfit.models.export import merge
from taskfit.tuning import TuneConfig, load_tune_config, tune
from taskfit.tuning.data import IGNORE, Pair, Tokenizer, read_training_file

PAIRS = [("the movie was great", "positive"), ("a terrible film", "negative"), ("great and positive", "positive"),
         ("negative, terrible", "negative")]


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.json"
    instances = [{"input": f"Review: {text}", "output": label} for text, label in PAIRS * 4]
    path.write_text(json.dumps({"type": "text2text", "instances": instances}, indent=1))
    return path


def config(tiny_model_dir, train_file, out, **overrides) -> TuneConfig:
    base = {"model": f"hf:{tiny_model_dir}", "train_file": train_file, "output": out, "batch_size": 4,
            "max_steps": 12, "lr": 5e-3, "logging_steps": 1, "save_steps": 6, "progress": False, "threads": 1,
            "warmup_ratio": 0.0}
    return TuneConfig(**(base | overrides))


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_lora_reduces_loss_reloads_and_merges_to_the_same_logits(tmp_path, tiny_model_dir, train_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    result = tune(config(tiny_model_dir, train_file, out, max_steps=30))
    card = result.card
    assert card["final_loss"] < card["first_loss"] - 0.25  # a random tiny model: from ~ln(vocab) down
    assert 0 < card["trainable_share"] < 0.5 and card["steps"] == 30
    for name in ("adapter_config.json", "adapter_model.safetensors", "loss.png", "run_card.json", "RUN_CARD.md"):
        assert (out / name).is_file(), name
    ids = list(range(5, 40))
    trained = logits(result.model.eval(), ids)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    assert torch.allclose(logits(reloaded, ids), trained, atol=1e-5)
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), ids)
    assert not torch.allclose(base, trained, atol=1e-3)  # training changed the model
    merged_dir = merge(out, tmp_path / "merged")
    assert json.loads((merged_dir / "run_card.json").read_text())["merged_from"] == str(out)  # still tuned
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert (logits(merged, ids) - trained).abs().max() < 1e-4


def test_eval_with_adapter_uses_the_merged_weights(tmp_path, tiny_model_dir, train_file):
    from taskfit.models.hf import HFBackend

    out = tmp_path / "lora"
    result = tune(config(tiny_model_dir, train_file, out, max_steps=4))
    backend = HFBackend(tiny_model_dir, adapter=out, threads=1)
    ids = list(range(5, 30))
    assert (logits(backend.model, ids) - logits(result.model.eval(), ids)).abs().max() < 1e-4
    assert backend.describe()["adapter"] == str(out)


def test_resume_continues_the_step_count(tmp_path, tiny_model_dir, train_file):
    out = tmp_path / "run"
    tune(config(tiny_model_dir, train_file, out))
    finished = json.loads((out / "run_card.json").read_text())
    # resuming a finished run trains nothing and hands back its card
    assert tune(config(tiny_model_dir, train_file, out), resume=True).card == finished
    # a crash after the first checkpoint: only checkpoint-6 and the run's settings are left
    for path in out.iterdir():
        if path.name not in ("checkpoint-6", "settings.json"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(UserError, match="--resume"):
        tune(config(tiny_model_dir, train_file, out))
    # other data or settings would train another model from this checkpoint: refused, naming what changed
    with pytest.raises(UserError, match=r"--resume: .* other settings \(limit: None then, 3 now"):
        tune(config(tiny_model_dir, train_file, out, limit=3), resume=True)
    card = tune(config(tiny_model_dir, train_file, out), resume=True).card
    assert card["resumed_from_step"] == 6 and card["steps"] == 12
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("method", ["ia3", "prefix", "prompt", "adapter", "full"])
def test_every_method_trains(tmp_path, tiny_model_dir, train_file, method):
    card = tune(config(tiny_model_dir, train_file, tmp_path / method, method=method, max_steps=3)).card
    assert card["steps"] == 3 and card["final_loss"] > 0
    saved = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (tmp_path / method / saved).is_file()
    if method == "full":
        assert card["trainable_share"] == 1.0
    else:
        assert card["trainable_share"] < 0.2


def test_bottleneck_adapter_trains_saves_only_itself_and_evaluates(tmp_path, tiny_model_dir, train_file):
    from transformers import AutoModelForCausalLM

    from taskfit.adapters.bottleneck import WEIGHTS_FILE, is_bottleneck
    from taskfit.models.hf import HFBackend

    out = tmp_path / "adapter"
    result = tune(config(tiny_model_dir, train_file, out, method="adapter", adapter_size=8, max_steps=30, lr=3e-2,
                         target_modules=["self_attn", "mlp"]))
    card = result.card
    # a random tiny model's sub-module outputs are near zero, so the adapters mostly learn a shift: a smaller drop
    assert card["final_loss"] < card["first_loss"] - 0.1
    # 2 layers x 2 places x (32*8 + 8 + 8*32 + 32) parameters, nothing else trainable
    assert card["trainable_parameters"] == 2 * 2 * (32 * 8 + 8 + 8 * 32 + 32)
    assert is_bottleneck(out) and (out / WEIGHTS_FILE).stat().st_size < 20_000
    ids = list(range(5, 40))
    trained = logits(result.model.eval(), ids)
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), ids)
    assert not torch.allclose(base, trained, atol=1e-3)
    backend = HFBackend(tiny_model_dir, adapter=out, threads=1)
    assert (logits(backend.model, ids) - trained).abs().max() < 1e-5
    with pytest.raises(UserError, match="cannot be merged"):
        merge(out, tmp_path / "merged")


def _reference_logprob(peft_model, ctx: list[int], cont: list[int]) -> float:
    """log p(cont | ctx) from PEFT's own forward pass (virtual tokens prepended by PEFT), one row, no padding."""
    with torch.no_grad():
        out = peft_model(input_ids=torch.tensor([ctx + cont]), attention_mask=torch.ones(1, len(ctx) + len(cont),
                                                                                          dtype=torch.long))
    logprobs = torch.log_softmax(out.logits[0, -len(cont) - 1 : -1].float(), dim=-1)
    return float(logprobs.gather(-1, torch.tensor(cont)[:, None]).sum())


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prefix_and_prompt_adapters_evaluate_as_peft_runs_them(tmp_path, tiny_model_dir, train_file, method):
    """Every scoring path of the backend (one context; contexts sharing a prefix; multi-token continuations;
    greedy decoding) gives what PEFT's own forward pass gives with the virtual tokens."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from taskfit.api import GenerateRequest, LoglikelihoodRequest, Message, Prompt
    from taskfit.models.hf import HFBackend

    out = tmp_path / method
    tune(config(tiny_model_dir, train_file, out, method=method, virtual_tokens=5, max_steps=3))
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    backend = HFBackend(tiny_model_dir, adapter=out, threads=1, batch_size=4)
    assert backend.runner.virtual_tokens == 5
    system = Message("system", "Answer with one word: positive or negative.")
    prompts = [Prompt((system, Message("user", f"Review: {text}")), "The sentiment is") for text, _ in PAIRS]
    conts = [" positive", " negative", " great and positive"]
    requests = [LoglikelihoodRequest(prompt, cont) for prompt in prompts for cont in conts]
    lone = [LoglikelihoodRequest(prompts[0], " terrible film")]
    for batch in (requests, lone):
        for request, result in zip(batch, backend.loglikelihood(batch)):
            ctx, cont = backend._encode_pair(backend.render(request.context), request.continuation)
            assert result.logprob == pytest.approx(_reference_logprob(peft_model, ctx, cont), abs=1e-4)
    assert backend.stats["forward_passes"] > 0
    (generated,) = backend.generate([GenerateRequest(prompts[1], max_tokens=6, temperature=0.0)])
    ids = backend._encode(backend.render(prompts[1]))
    with torch.no_grad():
        for _ in range(generated.n_tokens):
            ids.append(int(peft_model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert generated.n_tokens > 0
    assert generated.text == backend.text(ids[-generated.n_tokens :])


def test_loss_only_on_answer_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    from taskfit.api import Message, Prompt

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    encode = Tokenizer(tok)
    item = encode(Pair(Prompt((Message("user", "Review: great"),), "The sentiment is"), " positive"), 512)
    answer = [t for t, label in zip(item.input_ids, item.labels) if label != IGNORE]
    assert tok.decode(answer) == " positive<|im_end|>"
    prompt_part = [t for t, label in zip(item.input_ids, item.labels) if label == IGNORE]
    assert tok.decode(prompt_part).endswith("<|im_start|>assistant\nThe sentiment is")


def test_task_pairs_use_the_evaluation_prompt(tmp_path, tiny_model_dir):
    from taskfit.models.hf import HFBackend
    from taskfit.tasks.task import load_task
    from taskfit.tuning.data import pairs_from_task

    task = load_task("demo")
    pairs = pairs_from_task(task, task.examples()[:3])
    backend = HFBackend(tiny_model_dir, threads=1)
    from transformers import AutoTokenizer

    encode = Tokenizer(AutoTokenizer.from_pretrained(tiny_model_dir))
    for pair, example in zip(pairs, task.examples()[:3]):
        assert encode.render(pair.prompt) == backend.render(pair.prompt)
        assert pair.answer.strip() == task.space.word(example)
        assert pair.prompt.answer_prefix == task.config.prompt.answer_prefix


def test_malformed_training_files_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n{"input": "e", "output": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl:3: not valid JSON"):
        read_training_file(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"input": "a", "output": "b"}\n\n{"input": "c"}\n')
    with pytest.raises(UserError, match=r"missing\.jsonl:3: key 'output': missing or not a string"):
        read_training_file(missing)
    doc = tmp_path / "doc.json"
    doc.write_text('{"type": "text2text", "instances": [\n  {"input": "a", "output": "b"},\n  {"input": "c"}\n]}\n')
    with pytest.raises(UserError, match=r"doc\.json:3 \(instance 2\): key 'output': missing or not a string"):
        read_training_file(doc)
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "text2text",\n "instances": [\n  {"input": "a" "output": "b"}\n]}\n')
    with pytest.raises(UserError, match=r"broken\.json:3: not valid JSON"):
        read_training_file(broken)
    conversation = tmp_path / "conv.jsonl"
    conversation.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(UserError, match=r"conv\.jsonl:1: a conversation needs at least one assistant turn"):
        read_training_file(conversation)


def test_conversations_learn_every_assistant_turn(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    path = tmp_path / "conv.json"
    path.write_text(json.dumps({"type": "conversation", "instances": [{"messages": [
        {"role": "user", "content": "the movie"}, {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "a film"}, {"role": "assistant", "content": "negative"}]}]}))
    (sample,) = read_training_file(path)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = Tokenizer(tok)(sample, 512)
    learned = tok.decode([t for t, label in zip(item.input_ids, item.labels) if label != IGNORE])
    assert learned == "positive<|im_end|>negative<|im_end|>"


def test_config_needs_one_data_source(tmp_path):
    with pytest.raises(UserError, match="exactly one of --task"):
        load_tune_config(None, {})
    with pytest.raises(UserError, match="unknown key 'rnak'"):
        (tmp_path / "t.yaml").write_text("task: sst2\nrnak: 4\n")
        load_tune_config(tmp_path / "t.yaml", {})


def test_answer_only_loss_equals_the_models_own_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    from taskfit.api import Message, Prompt
    from taskfit.tuning.data import collate
    from taskfit.tuning.sft import answer_only_trainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    encode = Tokenizer(tok)
    items = [encode(Pair(Prompt((Message("user", text),), "The sentiment is"), f" {label}"), 512)
             for text, label in PAIRS]
    batch = collate(items, tok.pad_token_id, lambda x: torch.tensor(x, dtype=torch.long))
    with torch.no_grad():
        reference = model(**batch).loss  # padded rows, the model's own loss on every labelled position
        trainer = answer_only_trainer(Trainer).__new__(answer_only_trainer(Trainer))
        ours = trainer.compute_loss(model, dict(batch))  # the rows packed into one sequence, no padding
    assert ours.item() == pytest.approx(reference.item(), abs=1e-5)
    assert len({len(item.input_ids) for item in items}) > 1  # real padding in the reference


def test_int8_quantization_keeps_output_and_down_projections_and_stays_close(tiny_model_dir):
    from taskfit.models.hf import HFBackend

    fp32 = HFBackend(tiny_model_dir, threads=1)
    int8 = HFBackend(tiny_model_dir, threads=1, quantize="int8")
    assert type(int8.model.lm_head) is torch.nn.Linear  # the output layer stays fp32
    quantized = [name for name, module in int8.model.named_modules()
                 if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantized) == 2 * 6  # q, k, v, o, gate, up in each of the 2 layers; down_proj stays fp32
    ids = list(range(5, 60))
    exact, approx = torch.log_softmax(logits(fp32.model, ids), -1), torch.log_softmax(logits(int8.model, ids), -1)
    assert 0 < (exact - approx).abs().max() < 0.05
    # another model for the response cache
    assert int8.describe()["dtype"] != fp32.describe()["dtype"]


def test_stage_and_method_axes():
    assert TuneConfig(stage="head", task="demo").method == "head"
    assert TuneConfig(method="head", task="demo").stage == "head"
    assert TuneConfig(task="demo").stage == "sft"
    with pytest.raises(ValueError, match="sft method"):
        TuneConfig(stage="head", method="lora", task="demo")


def test_training_files_in_the_formats_users_already_have(tmp_path):
    """alpaca (a JSON list), ShareGPT, TRL prompt-completion (standard and conversational) and messages JSONL all
    become the same samples (issue 16 item 10)."""
    from taskfit.api import Message
    from taskfit.tuning.data import Conversation

    alpaca = tmp_path / "alpaca_data.json"
    alpaca.write_text(json.dumps([{"instruction": "Classify the review.", "input": "great film", "output": "positive"},
                                  {"instruction": "Say hi.", "input": "", "output": "hi", "system": "Be brief."}]))
    first, second = read_training_file(alpaca)
    assert first == Pair(Prompt((Message("user", "Classify the review.\n\ngreat film"),)), "positive")
    assert second == Pair(Prompt((Message("system", "Be brief."), Message("user", "Say hi."))), "hi")

    rows = [{"conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi there"}],
             "system": "Be kind."},
            {"prompt": "2+2=", "completion": "4"},
            {"prompt": [{"role": "user", "content": "2+3="}], "completion": [{"role": "assistant", "content": "5"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sharegpt, trl, trl_chat, messages = read_training_file(mixed)
    assert sharegpt == Conversation((Message("system", "Be kind."), Message("user", "hello"),
                                     Message("assistant", "hi there")))
    assert trl == Pair(Prompt((Message("user", "2+2="),)), "4")
    assert trl_chat == Conversation((Message("user", "2+3="), Message("assistant", "5")))
    assert messages == Conversation((Message("user", "a"), Message("assistant", "b")))

    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"conversations": [{"from": "bot", "value": "x"}]}\n{"question": "q", "answer": "a"}\n')
    with pytest.raises(UserError, match=r"odd\.jsonl:1: key 'conversations': each ShareGPT turn needs 'from'"):
        read_training_file(odd)
    odd.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(UserError, match=r"odd\.jsonl:1: not a training row taskfit knows \(keys \['answer', "
                                        r"'question'\]\); use one of"):
        read_training_file(odd)


def test_kbqa_training_prompts_show_the_facts_evaluation_shows(tmp_path):
    """Tuning on a KBQA task sets up its knowledge base first (it used to fail: answer space used before setup)."""
    from taskfit.settings import TuneConfig
    from taskfit.tuning.sft import training_samples

    folder = tmp_path / "nlpcc2016_kbqa"
    folder.mkdir()
    rows = [{"id": 1, "question": "《高等数学》是哪个出版社出版的？", "answer": "武汉大学出版社",
             "triple": ["高等数学", "出版社", "武汉大学出版社"]},
            {"id": 2, "question": "安德烈是哪个国家的人呢？", "answer": "法国", "triple": ["安德烈", "国籍", "法国"]}]
    (folder / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    config = TuneConfig(task="nlpcc_kbqa", data_dir=tmp_path, split="train", output=tmp_path / "out")
    pairs, info, _ = training_samples(config)
    assert info["n"] == 2
    assert "知识：\n高等数学 | 出版社 | 武汉大学出版社" in pairs[0].prompt.messages[-1].content
    assert pairs[0].answer.strip() == "武汉大学出版社"


def test_a_batch_packed_without_padding_trains_as_one_padded_pass_does(tiny_model_dir, tmp_path):
    """--micro-batch-tokens packs each batch's rows into sequences without padding, several packs a step (and
    --gradient-checkpointing recomputes activations): the logged losses and the trained adapter are those of the
    whole batch in one pack."""
    from safetensors.torch import load_file

    from taskfit.models.kv import length_passes, packs
    from taskfit.tuning import tune

    assert packs([5, 9, 3, 9, 4], 18) == [[1, 3], [0, 4, 2]]  # first fit, longest first, at most 18 tokens a pack
    assert packs([30, 5], 16) == [[0], [1]] and packs([5, 9], 0) == [[1, 0]]
    assert length_passes([5, 9, 3, 9, 4], 18) == [[1, 3], [0, 4, 2]]  # rows x the longest <= 18
    assert length_passes([30, 5], 16) == [[0], [1]] and length_passes([5, 9], 0) == [[0, 1]]
    path = tmp_path / "train.jsonl"
    words = "a long and winding review of a film that goes on and on about nothing at all".split()
    path.write_text("".join(json.dumps({"input": " ".join(words[: 2 + (7 * i) % len(words)]),
                                        "output": "positive" if i % 3 else "negative"}) + "\n" for i in range(12)))
    runs = {}
    # rows of 19-71 tokens: 100 packs 1-3 rows, 0 packs the whole batch (equal to the model's own padded loss:
    # test_answer_only_loss_equals_the_models_own_loss)
    for name, extra in (("one pack", {"micro_batch_tokens": 0}), ("packs", {"micro_batch_tokens": 100}),
                        ("checkpointed", {"micro_batch_tokens": 100, "gradient_checkpointing": True})):
        card = tune(TuneConfig(model=f"hf:{tiny_model_dir}", train_file=path, method="lora", batch_size=6,
                               max_steps=4, lr=5e-3, logging_steps=1, progress=False, threads=1,
                               output=tmp_path / name.replace(" ", "-"), **extra)).card
        runs[name] = ([h["loss"] for h in card["loss_history"]],
                      load_file(str(tmp_path / name.replace(" ", "-") / "adapter_model.safetensors")))
    losses, weights = runs["one pack"]
    assert len(losses) == 4 and losses[0] != losses[-1]
    for name in ("packs", "checkpointed"):
        assert runs[name][0] == pytest.approx(losses, abs=1e-5), name
        for key, value in weights.items():
            assert torch.allclose(runs[name][1][key], value, atol=1e-5), (name, key)
