"""Stage-1 training step of the demo's encoder: attention kernel and precision, side by side.

Times a training step (forward, cross-entropy, backward, AdamW) of `EEGPTForEmotionClassification`
at the demo recipe's size (the "tiny" preset, input scale 3, batches of 32 windows of 58 x 1024)
in four settings, on the same weights and batch:

- sdpa attention in float32 (transformers' default; the baseline);
- eager attention in float32;
- sdpa and eager under `torch.autocast(bfloat16)` (what the Trainer's `bf16: true` does on the CPU).

Each setting's loss is checked against the float32 baseline's. bfloat16 pays only on a CPU with
bfloat16 units (AVX512-BF16 or AMX); the script says whether this one has them.

    python benchmarks/stage1_step.py
    python benchmarks/stage1_step.py --preset tiny --batch 32 --steps 6
"""

import argparse
import copy
import time

import torch

from modeling_e2llm import EEGPTConfig, EEGPTForEmotionClassification


def time_steps(model, eeg, channel_ids, labels, bf16: bool, steps: int, warmup: int = 2) -> tuple[float, float]:
    """(seconds per step after `warmup` steps, the first step's loss)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    first_loss, start = None, None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(eeg, channel_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if first_loss is None:
            first_loss = float(loss.detach())
    return (time.perf_counter() - start) / steps, first_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = EEGPTConfig.from_preset(args.preset, num_labels=7, input_scale=3.0, initializer_range=0.1)
    reference = EEGPTForEmotionClassification(config)
    channels = 58
    eeg = torch.randn(args.batch, channels, 1024) * 0.02  # about 20 uV, in mV
    channel_ids = torch.arange(channels)
    labels = torch.randint(0, 7, (args.batch,))
    print(
        f"EEGPT {args.preset}, batch {args.batch} x {channels} x 1024, {torch.get_num_threads()} threads; CPU "
        f"bfloat16 units: AVX512-BF16 {torch.cpu._is_avx512_bf16_supported()}, AMX {torch.cpu._is_amx_tile_supported()}"
    )
    results = {}
    for attention in ("sdpa", "eager"):
        for bf16 in (False, True):
            model = copy.deepcopy(reference)
            model.set_attn_implementation(attention)
            results[(attention, bf16)] = time_steps(model, eeg, channel_ids, labels, bf16, args.steps)
    base_seconds, base_loss = results[("sdpa", False)]
    for (attention, bf16), (seconds, loss) in results.items():
        print(
            f"{attention:5s} {'bf16 autocast' if bf16 else 'float32      '}  {1000 * seconds:8.1f} ms/step  "
            f"{base_seconds / seconds:5.2f}x the sdpa float32 speed  first loss {loss:.4f} "
            f"(float32 sdpa {base_loss:.4f}, difference {abs(loss - base_loss):.1e})"
        )


if __name__ == "__main__":
    main()
