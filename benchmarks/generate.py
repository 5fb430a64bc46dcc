"""E2LLM generation speed: the KV cache, and batching, measured in one run on the same model.

Greedy generation of 64 new tokens after a one-window EEG prompt (an IED question, as the
processor writes it: `<eeg_start>`, 16 x `<eeg>`, `<eeg_end>`):
1. with the KV cache (the EEG is encoded once, on the prefill step) against without it
   (every step re-reads the whole sequence and re-encodes the EEG);
2. 8 prompts (different EEG, different questions, left-padded) in one batch against the same 8
   one at a time, both with the cache.

The model has random weights: EEGPT "large" (the released encoder's size) and a small Qwen3 with
the real vocabulary (default hidden 512, 4 layers), sized for a CPU; only speed is measured.

    python benchmarks/generate.py
    python benchmarks/generate.py --new-tokens 32 --text-layers 2
"""

import argparse
import time

import torch
from transformers import Qwen3ForCausalLM

from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
from train.stages.tiny import tiny_qwen3_config
from train.tokenizer import EEG_END_TOKEN, EEG_START_TOKEN, EEG_TOKEN, build_qwen3_tokenizer

QUESTIONS = (
    "Describe this EEG and name the emotion it shows.",
    "What emotion does this EEG suggest? Explain.",
    "Read this recording and tell me how the person feels.",
    "Interpret the EEG.",
    "Which of the seven emotions fits this EEG best, and why?",
    "Describe the signal, then conclude with an emotion label.",
    "How would you characterise the affective state in this EEG?",
    "Give a short analysis of this EEG and its emotion.",
)


def prompt(question: str) -> str:
    eeg = EEG_START_TOKEN + EEG_TOKEN * 16 + EEG_END_TOKEN
    return f"<|im_start|>user\n{eeg}\n{question}<|im_end|>\n<|im_start|>assistant\n"


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eeg-preset", default="large")
    parser.add_argument("--text-hidden", type=int, default=512)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    text_config = tiny_qwen3_config(
        hidden_size=args.text_hidden,
        intermediate_size=3 * args.text_hidden,
        num_hidden_layers=args.text_layers,
        num_attention_heads=args.text_hidden // 64,
        num_key_value_heads=max(1, args.text_hidden // 128),
        head_dim=64,
    )
    model = E2LLMForConditionalGeneration.from_parts(
        EEGPTModel(EEGPTConfig.from_preset(args.eeg_preset)), Qwen3ForCausalLM(text_config)
    ).eval()
    tokenizer = build_qwen3_tokenizer()
    tokenizer.padding_side = "left"
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.batch)]
    batch = tokenizer([prompt(q) for q in questions], return_tensors="pt", padding=True)
    eeg = torch.randn(args.batch, 58, 1024) * 0.05
    channel_ids = torch.arange(58)
    settings = dict(
        max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )

    def one(i, use_cache=True):
        inputs = tokenizer([prompt(questions[i])], return_tensors="pt")
        return model.generate(
            **inputs, eeg_values=eeg[i : i + 1], eeg_channel_ids=channel_ids, use_cache=use_cache, **settings
        )

    with torch.inference_mode():
        one(0)  # warm-up
        t_cached, cached = timed(lambda: one(0, use_cache=True))
        t_uncached, uncached = timed(lambda: one(0, use_cache=False))
        t_single, singles = timed(lambda: [one(i) for i in range(args.batch)])
        t_batched, batched = timed(
            lambda: model.generate(**batch, eeg_values=eeg, eeg_channel_ids=channel_ids, **settings)
        )

    new = args.new_tokens
    same = sum(torch.equal(batched[i, -new:], singles[i][0, -new:]) for i in range(args.batch))
    print(
        f"E2LLM: EEGPT {args.eeg_preset} + Qwen3 (hidden {args.text_hidden}, {args.text_layers} layers, "
        f"vocab {text_config.vocab_size}); {new} new tokens, greedy; {torch.get_num_threads()} threads"
    )
    print(f"prompt: {cached.shape[1] - new} tokens, one 4 s EEG window")
    print(f"KV cache:   with {t_cached:6.2f} s ({new / t_cached:6.1f} tokens/s), "
          f"without {t_uncached:6.2f} s ({new / t_uncached:6.1f} tokens/s): speed-up {t_uncached / t_cached:5.1f}x; "
          f"same tokens: {torch.equal(cached, uncached)}")
    print(f"batching:   {args.batch} one at a time {t_single:6.2f} s, one batch of {args.batch} {t_batched:6.2f} s: "
          f"speed-up {t_single / t_batched:5.1f}x ({args.batch * new / t_batched:.1f} tokens/s); "
          f"same tokens as alone: {same}/{args.batch}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
