"""Memory of E2LLM at Qwen3-4B, 8B and 14B widths: parameters, bytes per part, a stage-2 and a stage-3 step.

    python benchmarks/memory.py                          # 4B, 8B, 14B; 1 and 2 layers each
    python benchmarks/memory.py --sizes 4b --tokens 256

Each size is built at Qwen3's exact widths and vocabulary (151,936) with 1 and then 2 decoder
layers, the language model and the frozen encoder in bfloat16 and the projector in float32 (the
dtype policy of stages 2 and 3), beside EEGPT large; each build runs in a fresh process, so that
one's freed memory cannot hide another's peak. Measured in each: the parameters and bytes of
every part (encoder, projector, embeddings, LM head, one decoder layer), and the peak resident
memory that one training step adds over the loaded model (the CPU's resident set size, sampled
every millisecond):

- stage 2: the projector trains (Adam, float32), the rest is frozen;
- stage 3: LoRA r 128 on q_proj and k_proj and the projector train (PEFT, as the recipes).

Each stage in a process of its own, with activation checkpointing, as the recipes, on one row of `--tokens` tokens (three EEG
windows, the answer the last `--answer-tokens`), taking the trainer's loss (each row's answer
positions through the LM head in blocks). The step's first call is measured: it allocates the
optimizer state. Extrapolated to the full depth (36, 36, 40 layers): parameters and weights from
the counted per-layer figures (exact), the step's peak from the measured difference between the
1- and 2-layer builds, per layer. The recipes' micro-batch of 4 (2 for 14B) multiplies the
activations, not the weights or the optimizer state.
"""

from __future__ import annotations

import argparse
import multiprocessing

from train_step import PeakSampler, resident_bytes

GiB = 2**30
# Qwen3's published configurations (hidden, intermediate, heads, kv heads, layers, tied embeddings).
SIZES = {
    "4b": dict(hidden_size=2560, intermediate_size=9728, num_attention_heads=32, num_key_value_heads=8, layers=36, tie=True),
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_attention_heads=32, num_key_value_heads=8, layers=36, tie=False),
    "14b": dict(hidden_size=5120, intermediate_size=17408, num_attention_heads=40, num_key_value_heads=8, layers=40, tie=False),
}
LORA_Q_K = r"model\.language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj)"


def build(size: str, layers: int):
    """E2LLM at `size`'s widths with `layers` decoder layers, stored as stage 2 stores it."""
    import torch
    from transformers import Qwen3ForCausalLM

    from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
    from train.stages.tiny import tiny_qwen3_config

    spec = SIZES[size]
    config = tiny_qwen3_config(
        hidden_size=spec["hidden_size"], intermediate_size=spec["intermediate_size"], num_hidden_layers=layers,
        num_attention_heads=spec["num_attention_heads"], num_key_value_heads=spec["num_key_value_heads"],
        head_dim=128, tie_word_embeddings=spec["tie"], max_position_embeddings=40960,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cpu"):
        language_model = Qwen3ForCausalLM._from_config(config, dtype=torch.bfloat16)
    encoder = EEGPTModel(EEGPTConfig.from_preset("large")).to(torch.bfloat16)
    model = E2LLMForConditionalGeneration.from_parts(encoder, language_model)
    model.model.projector.float()
    return model


def parts(model) -> dict[str, tuple[int, int]]:
    """(parameters, bytes) of each part; a tied LM head counts once, with the embeddings."""
    groups = {
        "encoder": model.model.eeg_encoder,
        "projector": model.model.projector,
        "embeddings": model.model.language_model.embed_tokens,
        "decoder layer": model.model.language_model.layers[0],
    }
    figures = {name: _count(module.parameters()) for name, module in groups.items()}
    if model.lm_head.weight is not model.model.language_model.embed_tokens.weight:
        figures["LM head"] = _count(model.lm_head.parameters())
    figures["all"] = _count(model.parameters())
    return figures


def _count(parameters) -> tuple[int, int]:
    parameters = list({id(p): p for p in parameters}.values())
    return sum(p.numel() for p in parameters), sum(p.numel() * p.element_size() for p in parameters)


def batch(tokens: int, answer_tokens: int):
    import torch

    from train.tokenizer import EEG_END_TOKEN_ID, EEG_START_TOKEN_ID, EEG_TOKEN_ID

    eeg = ([EEG_START_TOKEN_ID] + [EEG_TOKEN_ID] * 16 + [EEG_END_TOKEN_ID]) * 3
    text = torch.randint(0, 150000, (tokens - len(eeg),)).tolist()
    ids = text[:10] + eeg + text[10:]
    labels = [-100] * (tokens - answer_tokens) + ids[tokens - answer_tokens :]
    inputs = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, tokens, dtype=torch.long),
        "eeg_values": torch.randn(3, 58, 1024) * 0.01,
        "eeg_channel_ids": torch.arange(58),
    }
    return inputs, torch.tensor([labels])


def step_peak(model, inputs, labels) -> int:
    """Bytes one training step (forward, backward, Adam) adds at its peak over what is held before it."""
    import torch

    from train.stages.trainer import answer_mask

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)
    model.train()
    before = resident_bytes()
    with PeakSampler() as sampler:
        loss = model(**inputs, labels=labels, logits_to_keep=answer_mask(labels), use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return sampler.peak - before


def measure(size: str, layers: int, stage: int, args, results) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from train.stages.merge import peft_wrapping

    torch.set_num_threads(args.threads)
    model = build(size, layers)
    figures = {"parts": parts(model)}
    model.activation_checkpointing_enable()
    model.requires_grad_(False)
    inputs, labels = batch(args.tokens, args.answer_tokens)
    if stage == 2:
        model.model.projector.requires_grad_(True)
    else:
        model.enable_input_require_grads()
        lora = LoraConfig(r=128, lora_alpha=256, lora_dropout=0.05, target_modules=LORA_Q_K, modules_to_save=["projector"])
        with peft_wrapping():
            model = get_peft_model(model, lora)
    figures["step"] = step_peak(model, inputs, labels)
    figures["trainable"] = _count(p for p in model.parameters() if p.requires_grad)[0]
    results.put((size, layers, stage, figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--tokens", type=int, default=512, help="tokens in the row")
    parser.add_argument("--answer-tokens", type=int, default=250, help="answer tokens (the loss) at the row's end")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    measured = {}
    for size in args.sizes:
        for layers in (1, 2):
            for stage in (2, 3):
                process = context.Process(target=measure, args=(size, layers, stage, args, results))
                process.start()
                process.join()
                if process.exitcode:
                    raise SystemExit(f"{size}, {layers} layers, stage {stage} failed with exit code {process.exitcode}")
                name, depth, number, figures = results.get()
                measured[name, depth, number] = figures

    print(f"One row of {args.tokens} tokens ({args.answer_tokens} answer tokens), activation checkpointing, CPU, "
          f"{args.threads} threads. Measured at 2 layers; 'full' extrapolated per layer.")  # fmt: skip
    for size in args.sizes:
        full = SIZES[size]["layers"]
        print(f"\nQwen3-{size.upper()} widths + EEGPT large")
        print(f"{'part':<16} {'parameters':>15} {'MiB':>10}")
        for part, (count, size_bytes) in measured[size, 2, 2]["parts"].items():
            print(f"{part:<16} {count:>15,} {size_bytes / 2**20:>10.1f}")
        layer_count, layer_bytes = measured[size, 2, 2]["parts"]["decoder layer"]
        all_count, all_bytes = measured[size, 2, 2]["parts"]["all"]
        print(f"{'all, ' + str(full) + ' layers':<16} {all_count + (full - 2) * layer_count:>15,} "
              f"{(all_bytes + (full - 2) * layer_bytes) / 2**20:>10.1f}   (extrapolated: counted per layer)")  # fmt: skip
        for stage in (2, 3):
            one, two = measured[size, 1, stage], measured[size, 2, stage]
            per_layer = two["step"] - one["step"]
            trainable = two["trainable"] + (full - 2) * (two["trainable"] - one["trainable"])
            print(f"stage {stage} step peak over the weights: 1 layer {one['step'] / GiB:.2f} GiB, 2 layers "
                  f"{two['step'] / GiB:.2f} GiB, per layer {per_layer / GiB:+.3f} GiB; {full} layers "
                  f"{(two['step'] + (full - 2) * per_layer) / GiB:.2f} GiB (extrapolated); {trainable:,} trainable "
                  f"parameters at {full} layers")  # fmt: skip


if __name__ == "__main__":
    main()
