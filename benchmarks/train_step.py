"""Time and peak memory of one stage-2 training step at Qwen3's vocabulary (151,936 words).

    python benchmarks/train_step.py                     # Qwen3-4B's width (2560), 2 layers
    python benchmarks/train_step.py --hidden-size 256 --intermediate-size 768 --heads 4 --kv-heads 1 --steps 5

Three ways to get the language-model loss of the same batch, each measured in a fresh process
of this run (so one's freed memory cannot hide another's peak), in stage-2 conditions (only
the projector trains):

- `full`: the model's own loss over logits for every position, (batch, sequence, vocab), as
  `Trainer` computes it for a plain causal LM.
- `trl-fused`: TRL's `SFTTrainer` loss, its fused LM head (`add_fused_lm_head`): log-probabilities
  in chunks without the whole logits; with Triton (CUDA, XPU) only the target positions, on other
  devices every position. `train.stages.trainer.AnswerLossSFTTrainer` is this where Triton runs.
- `answers`: what `AnswerLossSFTTrainer` does elsewhere: logits at each row's own answer
  positions only (transformers' boolean `logits_to_keep`), the model's `loss_function` there.

The batch has the layout of the multi-EEG tasks: a system prompt, three EEG windows (3 x 18
tokens), a question, then a chain-of-thought answer that carries the loss. Answers run from
`--shortest-answer` to `--answer-tokens` tokens across the rows, left-padded as the collator
pads. The Qwen3 body has Qwen3-4B's shape by default (hidden 2560, MLP 9728, 32 query and 8
key-value heads of 128) with `--layers` layers. Figures: median step time (forward + backward)
over the timed steps and the peak memory they add over the memory held before them (CUDA:
`max_memory_allocated`; CPU: resident set size sampled every millisecond), printed beside the
ratio to `full` as each path finishes.
"""

from __future__ import annotations

import argparse
import contextlib
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
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden_size // args.heads,
    )
    dtype = getattr(torch, args.dtype)
    model = E2LLMForConditionalGeneration.from_parts(
        EEGPTModel(EEGPTConfig.from_preset("tiny")), Qwen3ForCausalLM(text_config)
    ).to(args.device, dtype)
    model.requires_grad_(False)
    model.model.projector.float().requires_grad_(True)  # as stage 2 keeps it

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
    from train.stages.trainer import answer_inputs

    if kind == "full":
        return lambda inputs, labels: model(**inputs, labels=labels).loss
    if kind == "answers":
        return lambda inputs, labels: model(**answer_inputs(inputs, labels)[0]).loss
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return lambda inputs, labels: model(**inputs, labels=labels, fused_lm_head=True).loss


def measure(kind: str, args, results) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model, inputs, labels = build(args)
    compute = loss_function(kind, model)
    cuda = args.device.startswith("cuda")
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def step():
        with autocast:
            loss = compute(inputs, labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return float(loss.detach())

    loss = step()  # warm-up
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else resident_bytes()
    with contextlib.nullcontext() if cuda else PeakSampler() as sampler:
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda else sampler.peak) - before
    results.put((kind, loss, statistics.median(times), peak))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden-size", type=int, default=2560)
    parser.add_argument("--intermediate-size", type=int, default=9728)
    parser.add_argument("--heads", type=int, default=32, help="query heads (head width: hidden size / heads)")
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=120, help="text tokens before the answer, besides EEG")
    parser.add_argument("--answer-tokens", type=int, default=160, help="the longest answer")
    parser.add_argument("--shortest-answer", type=int, default=60, help="the shortest answer (rows in between)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one to warm up; the peak is theirs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], help="frozen weights' dtype (default: bfloat16 on CUDA, else float32)"
    )
    args = parser.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")

    sequence = args.prompt_tokens + 3 * 18 + args.answer_tokens
    print(
        f"stage-2 step, vocabulary 151,936, Qwen3 body hidden {args.hidden_size} x {args.layers} layers, "
        f"batch {args.batch} x {sequence} tokens ({args.shortest_answer}-{args.answer_tokens} answer tokens a row), "
        f"device {args.device}, {args.dtype}"
    )
    print(f"{'loss path':<12} {'loss':>8} {'step s':>8} {'x full':>7} {'peak MiB':>9} {'x full':>7}", flush=True)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    base = None
    for kind in ("full", "trl-fused", "answers"):
        process = context.Process(target=measure, args=(kind, args, results))
        process.start()
        process.join()
        if process.exitcode:
            raise SystemExit(f"{kind} failed with exit code {process.exitcode}")
        name, loss, seconds, peak = results.get()
        base = base or (seconds, peak)
        print(
            f"{name:<12} {loss:8.4f} {seconds:8.3f} {seconds / base[0]:7.2f} "
            f"{peak / 2**20:9.1f} {peak / base[1]:7.2f}",
            flush=True,
        )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
