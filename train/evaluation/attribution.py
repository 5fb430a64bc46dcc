"""`e2llm attribute`: which electrodes an answer came from, drawn as a scalp map.

    e2llm attribute --model runs/stage3/merged --data prepared/ --out eval/attribution.png
    e2llm attribute --model hub/e2llm-qwen3-8b --data prepared/ --out eval/attribution.png --sample 12

The attribution of an answer to the input electrodes is integrated gradients (Sundararajan et
al., 2017) of the answer's log-probability with respect to `eeg_values`, from an all-zero EEG
to the real one (`steps` points on the straight path, midpoint rule), or gradient x input
(`method="gradient_x_input"`, one backward pass): each sample's contribution, summed over time
and over the windows of the sample, gives one signed value per electrode. Positive: that
electrode's signal made the answer more likely. An electrode whose signal is zero gets zero.

The answer is the final `Answer: ...` line of the model's reply, scored after the prompt and the
explanation the model wrote before it; so the map shows where the conclusion came from, given
its own reasoning. `plot_attribution` draws it with MNE's `plot_topomap` at the electrodes'
standard 10-05 positions.

The command answers one test sample of the prepared data (`test_ied`, `--sample`), the EEG as
evaluation feeds it (the centred 4 s crop), and writes the PNG and, beside it, a JSON file with
the reply, the true emotion and the value of each electrode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

METHODS = ("integrated_gradients", "gradient_x_input")


def electrode_attribution(model, inputs: dict, target_ids, *, method: str = "integrated_gradients",
                          steps: int = 16) -> np.ndarray:  # fmt: skip
    """Attribution of the log-probability of `target_ids` to each electrode: `(C,)` float64.

    `inputs` are the processor's outputs for the text before the target (`input_ids`,
    `attention_mask`, `eeg_values` (W, C, T), `eeg_channel_ids`), one sample; `target_ids` the
    token ids whose summed log-probability is attributed. Channels follow `eeg_values`' order.
    """
    import torch

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = next(model.parameters()).device
    prompt = torch.as_tensor(inputs["input_ids"], device=device)
    if prompt.ndim != 2 or prompt.shape[0] != 1:
        raise ValueError(f"attribution takes one sample; input_ids has shape {tuple(prompt.shape)}")
    target = torch.as_tensor(target_ids, device=device).reshape(1, -1)
    if target.shape[1] == 0:
        raise ValueError("the target holds no token to attribute")
    input_ids = torch.cat([prompt, target], dim=1)
    attention_mask = torch.ones_like(input_ids)
    eeg = torch.as_tensor(inputs["eeg_values"], device=device).float()
    channel_ids = torch.as_tensor(inputs["eeg_channel_ids"], device=device)
    dtype = next(model.parameters()).dtype
    fractions = [1.0] if method == "gradient_x_input" else [(k + 0.5) / steps for k in range(steps)]
    gradient = torch.zeros_like(eeg)
    was_training = model.training
    model.eval()
    try:
        for fraction in fractions:
            scaled = (eeg * fraction).requires_grad_(True)
            # Logits only where the target is predicted: the last prompt position and the target's.
            logits = model(input_ids=input_ids, attention_mask=attention_mask, eeg_values=scaled.to(dtype),
                           eeg_channel_ids=channel_ids, logits_to_keep=target.shape[1] + 1).logits  # fmt: skip
            predicted = logits[0, :-1].float().log_softmax(-1)
            log_probability = predicted.gather(-1, target[0, :, None]).sum()
            (grad,) = torch.autograd.grad(log_probability, scaled)
            gradient += grad / len(fractions)
    finally:
        model.train(was_training)
    return (gradient * eeg).sum(dim=(0, 2)).double().cpu().numpy()


def reply_attribution(model, processor, messages: list[dict], eeg: dict, reply: str, **options) -> np.ndarray:
    """Attribution (per electrode, `eeg_values`' channel order) of the final `Answer:` line of
    `reply` (of its end of turn when `reply` is empty), the assistant's answer to `messages` (a
    chat ending with the user turn) about the model-ready windows `eeg` (`eeg_values`,
    `eeg_channel_ids`)."""
    head, separator, answer = reply.rpartition("Answer:")
    if not separator:
        head, answer = "", reply
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + head
    inputs = processor(text=text, eeg=eeg, return_tensors="pt")
    target = processor.tokenizer((separator + answer).rstrip(), add_special_tokens=False)["input_ids"]
    if not target:
        # An empty reply: the model ended its turn at once, so that end is what the EEG led to.
        target = [processor.tokenizer.eos_token_id]
    return electrode_attribution(model, inputs, target, **options)


def channel_names_of(channel_ids: Sequence[int]) -> list[str]:
    """EEGPT vocabulary names of `eeg_channel_ids` (one window's row)."""
    from processing_e2llm import EEGPT_CHANNELS

    return [EEGPT_CHANNELS[int(index)] for index in channel_ids]


def plot_attribution(values: Sequence[float], channel_names: Sequence[str], path: str | os.PathLike | None = None,
                     title: str | None = None, axes=None):  # fmt: skip
    """Draw per-electrode `values` as a scalp map at standard 10-05 positions (MNE `plot_topomap`).

    Red: the electrode's signal raised the answer's probability; blue: it lowered it. With `path`
    the figure is saved as PNG (written atomically); with `axes` it is drawn there. Returns the
    matplotlib figure.
    """
    import mne
    from matplotlib.figure import Figure

    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(channel_names),):
        raise ValueError(f"{values.shape} values for {len(channel_names)} channel names")
    info = mne.create_info(list(channel_names), 256.0, "eeg")
    # MNE 1.13 renamed the standard 10-05 template (same positions); older releases know only the old name.
    template = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    info.set_montage(mne.channels.make_standard_montage(template), match_case=False, on_missing="raise")
    figure = axes.figure if axes is not None else Figure(figsize=(4.2, 4.2), layout="constrained")
    axes = axes if axes is not None else figure.subplots()
    limit = float(np.abs(values).max()) or 1.0
    image, _ = mne.viz.plot_topomap(values, info, axes=axes, show=False, cmap="RdBu_r", vlim=(-limit, limit),
                                    names=list(channel_names), sensors=True)  # fmt: skip
    figure.colorbar(image, ax=axes, shrink=0.7, label="attribution to the answer's log-probability")
    if title:
        axes.set_title(title, fontsize=9)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        figure.savefig(staging, format="png", dpi=120)
        os.replace(staging, path)
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2llm attribute", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an E2LLM folder: stage 2, stage 3's merged/, or published")
    parser.add_argument("--data", required=True, help="prepared data folder (output of `e2llm prepare`)")
    parser.add_argument("--out", required=True, help="the PNG to write; its .json twin holds the values")
    parser.add_argument("--sample", type=int, default=0, help="index of the test_ied sample (default 0)")
    parser.add_argument("--method", choices=METHODS, default="integrated_gradients")
    parser.add_argument("--steps", type=int, default=16, help="integrated-gradients steps (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest reply (default 256)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)

    import datasets
    import torch

    from train.data.segments import SegmentStore
    from train.evaluation.evaluate import _eeg_inputs, _generate, load_for_evaluation

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_for_evaluation(args.model, device, "auto")
    if processor is None:
        raise ValueError(f"{args.model} holds a stage-1 classifier; attribution needs an E2LLM model (stage 2 or 3)")
    qa = datasets.load_from_disk(str(Path(args.data) / "qa"))["test_ied"]
    if not 0 <= args.sample < len(qa):
        raise ValueError(f"--sample {args.sample} is outside test_ied's {len(qa)} samples")
    sample = qa[args.sample]
    segments = datasets.load_from_disk(str(Path(args.data) / "segments"))["test"]
    store = SegmentStore(segments)
    messages = sample["messages"][: next(i for i, m in enumerate(sample["messages"]) if m["role"] == "assistant")]
    eeg = _eeg_inputs(store, sample["segment_ids"])
    reply = _generate(model, processor, [messages], [eeg], args.max_new_tokens)[0]
    values = reply_attribution(model, processor, messages, eeg, reply, method=args.method, steps=args.steps)
    names = channel_names_of(eeg["eeg_channel_ids"][0])
    answer = reply.strip().splitlines()[-1] if reply.strip() else "(no answer)"
    plot_attribution(values, names, args.out, title=f"{answer}  (true: {sample['answer']})")
    report = {"sample": sample["id"], "segment": sample["segment_ids"][0], "true": sample["answer"], "reply": reply,
              "method": args.method, "attribution": dict(zip(names, map(float, values)))}  # fmt: skip
    Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {args.out} and its values ({answer}; true {sample['answer']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
