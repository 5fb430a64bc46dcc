"""Time of a demo LM warm-up step: micro-batches sorted by length within the step, against one padded batch.

    python benchmarks/lm_warmup.py
    python benchmarks/lm_warmup.py --steps 40 --threads 1

`e2llm lm-warmup` (demo only) trains the tiny Qwen3 of `train/recipes/demo/lm_warmup.yaml` on the
task texts. Its samples differ in length about fourfold (one-EEG IED against three-EEG EIM with
its scenarios), so one random batch of a step's 16 samples pads most of them to the longest. The
recipe instead draws the same 16 samples per step and lets `train.stages.lm_warmup.StepSortedSampler`
sort them by length into 4 micro-batches of 4 whose gradients accumulate (the recipe's
`per_device_train_batch_size` and `gradient_accumulation_steps`). Both ways compute the same step:
the benchmark checks that their gradients agree before timing them.

Both run here on the same QA texts (EEG spans written as emotion names, through the demo
tokenizer trained on them, as `e2llm lm-warmup` does), the same model and the same draws: `padded` (one batch of 16, padded to its longest sample) and
`sorted` (the recipe's 4 x 4). Figures: median time of forward + backward per step, and the
ratio of `padded` to `sorted`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECIPE = Path(__file__).resolve().parents[1] / "train" / "recipes" / "demo" / "lm_warmup.yaml"


def qa_texts(count: int, seed: int):
    """`count` training texts of the four tasks, EEG spans in words, and the demo tokenizer trained on them."""
    from datasets import Dataset

    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.stages.lm_warmup import chat_texts
    from train.data.features import FEATURE_NAMES
    from train.data.qa import EMOTIONS, build_qa_sets, qa_features
    from train.tokenizer import build_demo_tokenizer

    rng = torch.Generator().manual_seed(seed)
    segments = {}
    for split, size in (("train", 280), ("test", 70)):
        emotions = [EMOTIONS[i % len(EMOTIONS)] for i in range(size)]
        intensity = torch.rand(size, generator=rng).tolist()
        scores = torch.randn(len(FEATURE_NAMES), size, generator=rng).tolist()
        segments[split] = {"id": [f"{split}-{i}" for i in range(size)], "emotion": emotions, "intensity": intensity,
                           **dict(zip(FEATURE_NAMES, scores))}
    sizes = {"train": count, "stage3": 0, "test_multi": 0, "test_esr": 0}
    rows = build_qa_sets(segments["train"], segments["test"], sizes=sizes, seed=seed)["train"]
    qa = Dataset.from_list(rows, features=qa_features())
    processor = E2LLMProcessor(E2LLMFeatureExtractor(), build_demo_tokenizer(()))
    words = {segment: [emotion] for segment, emotion in zip(segments["train"]["id"], segments["train"]["emotion"])}
    texts = chat_texts(qa, processor, words)
    vocab_size = yaml.safe_load(RECIPE.read_text())["vocab_size"]
    return texts, build_demo_tokenizer((p + c for p, c in zip(texts["prompt"], texts["completion"])), vocab_size)


def encode(texts, tokenizer):
    """Per sample: token ids and labels (-100 on the prompt)."""
    samples = []
    for prompt, completion in zip(texts["prompt"], texts["completion"]):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        samples.append((p + c, [-100] * len(p) + c))
    return samples


def collate(samples, pad: int):
    length = max(len(ids) for ids, _ in samples)
    input_ids = torch.full((len(samples), length), pad)
    labels = torch.full((len(samples), length), -100)
    attention = torch.zeros((len(samples), length), dtype=torch.long)
    for row, (ids, targets) in enumerate(samples):
        input_ids[row, length - len(ids):] = torch.tensor(ids)
        labels[row, length - len(ids):] = torch.tensor(targets)
        attention[row, length - len(ids):] = 1
    return input_ids, labels, attention


def step(model, micro_batches, pad: int) -> None:
    """Forward and backward of one optimizer step: loss summed over micro-batches, divided by all targets."""
    targets = sum(sum(t != -100 for t in labels[1:]) for batch in micro_batches for _, labels in batch)
    for batch in micro_batches:
        input_ids, labels, attention = collate(batch, pad)
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
        )
        (loss / targets).backward()


def gradients(model):
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import Qwen3ForCausalLM

    from train.stages.lm_warmup import StepSortedSampler
    from train.stages.tiny import tiny_qwen3_config

    recipe = yaml.safe_load(RECIPE.read_text())
    micro, accumulation = recipe["per_device_train_batch_size"], recipe["gradient_accumulation_steps"]
    step_size = micro * accumulation
    texts, tokenizer = qa_texts(max(400, step_size * args.steps), args.seed)
    samples, pad = encode(texts, tokenizer), tokenizer.pad_token_id
    shape = {k: recipe[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                    "num_key_value_heads", "head_dim")}  # fmt: skip
    torch.manual_seed(args.seed)
    model = Qwen3ForCausalLM(tiny_qwen3_config(tokenizer, **shape))
    order = list(StepSortedSampler([len(ids) for ids, _ in samples], step_size, args.seed))
    steps = [[samples[i] for i in order[s : s + step_size]] for s in range(0, step_size * args.steps, step_size)]

    def padded(batch):
        return [batch]

    def sorted_micro(batch):
        return [batch[i : i + micro] for i in range(0, len(batch), micro)]

    step(model, padded(steps[0]), pad)
    reference = gradients(model)
    model.zero_grad()
    step(model, sorted_micro(steps[0]), pad)
    for a, b in zip(reference, gradients(model)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.zero_grad()

    times = {"padded": [], "sorted": []}
    for batch in steps:
        for name, split in (("padded", padded), ("sorted", sorted_micro)):
            start = time.perf_counter()
            step(model, split(batch), pad)
            times[name].append(time.perf_counter() - start)
            model.zero_grad()
    padded_s, sorted_s = statistics.median(times["padded"]), statistics.median(times["sorted"])
    tokens = statistics.mean(len(ids) for ids, _ in samples)
    print(f"demo LM {shape['num_hidden_layers']} layers x {shape['hidden_size']}, {len(tokenizer)} tokens; "
          f"{args.steps} steps of {step_size} samples (mean {tokens:.0f} tokens), {args.threads} thread(s)")
    print("same gradients: yes (checked on the first step)")
    print(f"padded  (1 x {step_size}):  {padded_s * 1000:7.1f} ms/step")
    print(f"sorted  ({accumulation} x {micro}):   {sorted_s * 1000:7.1f} ms/step")
    print(f"ratio padded / sorted: {padded_s / sorted_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
