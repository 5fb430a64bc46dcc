"""Time and peak memory of one stage-2 training step at Qwen3's vocabulary (151,936 words).

    python benchmarks/train_step.py
    python benchmarks/train_step.py --hidden-size 512 --layers 4 --batch 4 --steps 5

Five ways to get the language-model loss of the same batch, each measured in a fresh process
of this run (so one's freed memory cannot hide another's peak), in stage-2 conditions (only
the projector trains):

- `full`: the model's own loss, over logits for every position: (batch, sequence, vocab).
- `union`: logits at the positions where any row's next token is an answer token
  (`logits_to_keep` as an index tensor, the same positions in every row), cross-entropy there.
- `rows`: logits at each row's own answer positions (`logits_to_keep` as a boolean mask),
  cross-entropy there.
- `answers`: what `train.stages.trainer.AnswerLossSFTTrainer` does: the same positions, and the labels
  with them, so that the model takes the loss a block of positions at a time through the LM
  head (`linear_cross_entropy`) without making the whole logits.
- `trl-fused`: TRL's fused LM head (`SFTTrainer`'s default loss): chunked log-probabilities
  without full logits; on CPU it scores every position.

The batch has the layout of the multi-EEG tasks: a system prompt, three EEG windows (3 x 18
tokens), a question, then a chain-of-thought answer that carries the loss. Answers run from
`--shortest-answer` to `--answer-tokens` tokens across the rows, left-padded as the collator
pads, as the demo's batches mix short IED answers with long EIM ones. Figures: median
step time (forward + backward) and the peak memory a step adds over the memory held before it
(CUDA: `max_memory_allocated`; CPU: resident set size sampled every millisecond), printed
beside the ratio to `full`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class PeakSampler:
    """The highest resident set size seen while the block runs, sampled every millisecond."""

    def __enter__(self):
        self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def build(args):
    """A stage-2 E2LLM (tiny EEGPT, Qwen3 body of the given size, real vocabulary) and one batch."""
    import torch
    from transformers import Qwen3ForCausalLM

    from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import EEG_END_TOKEN_ID, EEG_START_TOKEN_ID, EEG_TOKEN_ID

    torch.manual_seed(0)
    text_config = tiny_qwen3_config(
        hidden_size=args.hidden_size,
        intermediate_size=3 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden_size // 64),
        num_key_value_heads=max(1, args.hidden_size // 256),
        head_dim=64,
    )
    model = E2LLMForConditionalGeneration.from_parts(
        EEGPTModel(EEGPTConfig.from_preset("tiny")), Qwen3ForCausalLM(text_config)
    ).to(args.device)
    model.requires_grad_(False)
    model.model.projector.requires_grad_(True)

    windows = 3
    eeg = [EEG_START_TOKEN_ID] + [EEG_TOKEN_ID] * 16 + [EEG_END_TOKEN_ID]
    lengths = torch.linspace(args.shortest_answer, args.answer_tokens, args.batch).round().long().tolist()
    width = args.prompt_tokens + len(eeg) * windows + max(lengths)
    rows, label_rows, attention = [], [], []
    for length in lengths:
        prompt = torch.randint(0, 150000, (args.prompt_tokens,)).tolist()
        prompt[10:10] = eeg * windows
        answer = torch.randint(0, 150000, (length,)).tolist()
        padding = width - len(prompt) - length
        rows.append([0] * padding + prompt + answer)
        label_rows.append([-100] * (padding + len(prompt)) + answer)
        attention.append([0] * padding + [1] * (len(prompt) + length))
    inputs = {
        "input_ids": torch.tensor(rows, device=args.device),
        "attention_mask": torch.tensor(attention, device=args.device),
        "eeg_values": torch.randn(args.batch * windows, 58, 1024, device=args.device) * 0.01,
        "eeg_channel_ids": torch.arange(58, device=args.device),
    }
    return model, inputs, torch.tensor(label_rows, device=args.device)


def loss_function(kind: str, model):
    import torch.nn.functional as F

    from train.stages.trainer import answer_mask, answer_targets, union_loss_sum

    if kind == "full":
        return lambda inputs, labels: model(**inputs, labels=labels).loss
    if kind == "union":

        def union(inputs, labels):
            loss_sum, _, _ = union_loss_sum(model, inputs, labels)
            return loss_sum / answer_mask(labels).sum()

        return union
    if kind == "rows":

        def rows(inputs, labels):
            mask = answer_mask(labels)
            logits = model(**inputs, logits_to_keep=mask).logits
            return F.cross_entropy(logits.float(), answer_targets(labels, mask))

        return rows
    if kind == "answers":
        return lambda inputs, labels: model(**inputs, labels=labels, logits_to_keep=answer_mask(labels)).loss
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return lambda inputs, labels: model(**inputs, labels=labels, fused_lm_head=True).loss


def measure(kind: str, args, results) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model, inputs, labels = build(args)
    compute = loss_function(kind, model)
    cuda = args.device.startswith("cuda")

    def step():
        loss = compute(inputs, labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return float(loss.detach())

    loss = step()  # warm-up
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = resident_bytes()
        with PeakSampler() as sampler:
            step()
        peak = sampler.peak - before
    results.put((kind, loss, statistics.median(times), peak))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=120, help="text tokens before the answer, besides EEG")
    parser.add_argument("--answer-tokens", type=int, default=160, help="the longest answer")
    parser.add_argument("--shortest-answer", type=int, default=60, help="the shortest answer (rows in between)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    figures = {}
    for kind in ("full", "union", "rows", "answers", "trl-fused"):
        process = context.Process(target=measure, args=(kind, args, results))
        process.start()
        process.join()
        if process.exitcode:
            raise SystemExit(f"{kind} failed with exit code {process.exitcode}")
        name, loss, seconds, peak = results.get()
        figures[name] = (loss, seconds, peak)

    sequence = args.prompt_tokens + 3 * 18 + args.answer_tokens
    print(
        f"stage-2 step, vocabulary 151,936, Qwen3 body hidden {args.hidden_size} x {args.layers} layers, "
        f"batch {args.batch} x {sequence} tokens ({args.shortest_answer}-{args.answer_tokens} answer tokens a row), "
        f"device {args.device}"
    )
    base_loss, base_time, base_peak = figures["full"]
    print(f"{'loss path':<12} {'loss':>8} {'step s':>8} {'x full':>7} {'peak MiB':>9} {'x full':>7}")
    for name, (loss, seconds, peak) in figures.items():
        print(
            f"{name:<12} {loss:8.4f} {seconds:8.3f} {seconds / base_time:7.2f} "
            f"{peak / 2**20:9.1f} {peak / base_peak:7.2f}"
        )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
