"""Demo only: a tiny random Qwen3 reads the task texts before it stands in for a pretrained one.

    e2llm lm-warmup --config train/recipes/demo/lm_warmup.yaml --data e2llm-demo/prepared \\
        --output_dir e2llm-demo/lm-warmup

A real run takes a pretrained Qwen3 (`--llm Qwen/Qwen3-8B`) and never runs this. The demo's
language model is a tiny Qwen3 with random weights: it knows no language, so stage 2 could not
teach a projector to make it answer. This step trains it briefly, with TRL's `SFTTrainer` as a
plain language model, on the QA split as prompt-completion pairs: the rendered chat up to the
answer (each EEG item written as the processor writes it, `<eeg_start>`, 16 `<eeg>`,
`<eeg_end>`, so the layout matches what stage 2 feeds it) and the answer, which alone carries
the loss, as in stages 2 and 3; the answer-position loss keeps each step cheap. It learns the wording and the answer format but cannot
learn which emotion an EEG shows: that is left to the projector in stage 2.

The output folder holds the model (`Qwen3ForCausalLM`, safetensors) and the tokenizer with the
EEG tokens; stage 2 takes it as `--llm e2llm-demo/lm-warmup`.
"""

from __future__ import annotations

import sys

from train.config import LMWarmupArguments

DEMO_ONLY = "demo-only"


def chat_texts(qa, processor):
    """The QA rows as prompt-completion pairs: the rendered chat up to the last answer, EEG items
    expanded, and that answer with its closing `<|im_end|>`."""
    from train.collator import clean_messages

    def render(row):
        messages = clean_messages(row["messages"])
        last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
        prompt = processor.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)
        full = processor.apply_chat_template(messages[: last + 1], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(f"The chat template renders {row['id']}'s prompt differently inside the whole chat")
        return {"prompt": processor.expand_eeg_placeholders(prompt), "completion": full[len(prompt):].rstrip("\n")}

    return qa.map(render, remove_columns=qa.column_names)


def main(argv: list[str] | None = None) -> int:
    from transformers import Qwen3ForCausalLM, set_seed
    from transformers.utils import is_torch_bf16_gpu_available
    from trl import SFTConfig, TrlParser

    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.parts import load_qa
    from train.tiny import tiny_qwen3_config
    from train.tokenizer import build_qwen3_tokenizer
    from train.trainer import AnswerLossSFTTrainer

    parser = TrlParser((LMWarmupArguments, SFTConfig))
    if not is_torch_bf16_gpu_available():
        parser.set_defaults(bf16=False)
    args, training_args = parser.parse_args_and_config(argv)
    set_seed(training_args.seed)

    processor = E2LLMProcessor(E2LLMFeatureExtractor(), build_qwen3_tokenizer())
    qa = load_qa(args.data, args.qa_split)
    if args.max_train_samples is not None:
        qa = qa.select(range(min(args.max_train_samples, len(qa))))
    texts = chat_texts(qa, processor)

    config = tiny_qwen3_config(
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_hidden_layers,
    )
    model = Qwen3ForCausalLM(config)
    trainer = AnswerLossSFTTrainer(model=model, args=training_args, train_dataset=texts, processing_class=processor.tokenizer)
    trainer.model.add_model_tags([DEMO_ONLY])
    trainer.train()
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        print(f"Demo-only language model warmed up on {len(texts)} texts; saved to {training_args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
