"""Demo only: a tiny random Qwen3 learns to read the task texts before it stands in for a pretrained one.

    e2llm lm-warmup --config train/recipes/demo/lm_warmup.yaml --data e2llm-demo/prepared \\
        --output_dir e2llm-demo/lm-warmup

A real run takes a pretrained Qwen3 (`--llm Qwen/Qwen3-8B`) and never runs this. The demo's
language model is a tiny Qwen3 with random weights: it knows no language, so stage 2 could not
teach a projector to make it answer. This step trains it, with TRL's `SFTTrainer` as a plain
language model, on the QA split as prompt-completion pairs: the rendered chat up to the answer
and the answer, which alone carries the loss, as in stages 2 and 3.

What a pretrained model brings and this one must learn is the ability to read its input. So each
EEG item is written as the processor lays it out, `<eeg_start>`, 16 slots, `<eeg_end>`, but the
slots hold what the segment shows in words: its emotion (" sad" 16 times), or, with
`--eeg_span_features true` (the demo's recipe), its emotion followed by the words of its salient
measured features (" sad alpha occipital reduced beta frontal raised", repeated to 16 words),
which the grounded explanations state (`train.data.claims`). The model learns to describe what
the span says and to reason over several spans, without ever seeing EEG. Stage 2 then teaches
the projector to write into those slots what the EEG shows, as it would for a pretrained model's
embedding space. (`--eeg_as_words false` leaves the bare `<eeg>` tokens, and the model can then
learn only the wording.)

The texts use about a thousand distinct words. The model reads them through a tokenizer trained
on them (`train.tokenizer.build_demo_tokenizer`: byte-level BPE with Qwen3's pre-tokenizer,
special tokens and EEG tokens), and its vocabulary is that tokenizer's, so its LM head costs
little next to its layers; stages 2 and 3, evaluation and the published folder take both as
they would take a Hub Qwen3 and its tokenizer.

The output folder holds the model (`Qwen3ForCausalLM`, safetensors) and its tokenizer with the
EEG tokens; stage 2 takes it as `--llm e2llm-demo/lm-warmup`.
"""

from __future__ import annotations

import sys

from train.stages.config import LMWarmupArguments

DEMO_ONLY = "demo-only"


def eeg_span_as_words(prompt: str, words: list[list[str]], num_eeg_tokens: int) -> str:
    """`prompt` with its i-th `<eeg>` written as `<eeg_start>`, the i-th list of words repeated in
    turn to `num_eeg_tokens` words, `<eeg_end>`: the span keeps the layout stage 2 feeds, its
    content says what the EEG shows (`["sad"]` gives " sad" 16 times)."""
    from processing_e2llm import EEG_END_TOKEN, EEG_START_TOKEN, EEG_TOKEN

    pieces = prompt.split(EEG_TOKEN)
    if len(pieces) - 1 != len(words):
        raise ValueError(f"The prompt has {len(pieces) - 1} EEG items but words for {len(words)} were given")
    if any(not span for span in words):
        raise ValueError("Every EEG span needs at least one word")
    spans = [
        EEG_START_TOKEN + "".join(f" {span[i % len(span)]}" for i in range(num_eeg_tokens)) + EEG_END_TOKEN
        for span in words
    ]
    return pieces[0] + "".join(span + piece for span, piece in zip(spans, pieces[1:]))


def segment_span_words(segments, features: bool) -> dict[str, list[str]]:
    """Segment id -> the words its EEG span is written with: the emotion, then (`features`) the
    words of its salient measured features."""
    from train.data.claims import claim_words, salient_claims
    from train.data.features import FEATURE_NAMES

    names = ["id", "emotion", *(FEATURE_NAMES if features else ())]
    columns = segments.select_columns(names).to_dict()
    words = {}
    for row, segment in enumerate(columns["id"]):
        claims = salient_claims({name: columns[name][row] for name in FEATURE_NAMES}) if features else []
        words[segment] = [columns["emotion"][row], *claim_words(claims)]
    return words


def chat_texts(qa, processor, segment_words: dict[str, list[str]] | None = None):
    """The QA rows as prompt-completion pairs: the rendered chat up to the last answer, EEG items
    expanded, and that answer with its closing `<|im_end|>`.

    With `segment_words` (segment id -> words, `segment_span_words`) each EEG span is written in
    words (see `eeg_span_as_words`); without it, as the bare `<eeg>` tokens the processor writes."""
    from train.stages.collator import clean_messages

    def render(row):
        messages = clean_messages(row["messages"])
        last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
        prompt = processor.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)
        full = processor.apply_chat_template(messages[: last + 1], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(f"The chat template renders {row['id']}'s prompt differently inside the whole chat")
        completion = full[len(prompt):].rstrip("\n")
        if segment_words is None:
            prompt = processor.expand_eeg_placeholders(prompt)
        else:
            words = [segment_words[segment_id] for segment_id in row["segment_ids"]]
            prompt = eeg_span_as_words(prompt, words, processor.num_eeg_tokens)
        return {"prompt": prompt, "completion": completion}

    return qa.map(render, remove_columns=qa.column_names)


def parse_task_repeats(spec: str | None) -> dict[str, int]:
    """`"EIM=2,ESS=3"` -> `{"EIM": 2, "ESS": 3}`; None or "" -> `{}`."""
    from train.data.qa import TASKS

    repeats = {}
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        task, _, count = item.partition("=")
        task = task.strip()
        if task not in TASKS:
            raise ValueError(f"task_repeats names an unknown task {task!r} in {spec!r}; the tasks are {', '.join(TASKS)}")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"task_repeats wants TASK=N with N a whole number of at least 1, got {item!r} in {spec!r}")
        repeats[task] = int(count)
    return repeats


def repeat_tasks(qa, repeats: dict[str, int]):
    """`qa` with each row of a task in `repeats` present that many times (others once), in order."""
    if not repeats:
        return qa
    indices = [i for i, task in enumerate(qa["task"]) for _ in range(repeats.get(task, 1))]
    return qa.select(indices)


class StepSortedSampler:
    """Random order in which each optimizer step's samples come sorted by length.

    The indices are shuffled (a new order each epoch, from `seed` and the epoch), cut into
    steps of `step_size` (micro-batch size x gradient accumulation steps), and each step's
    indices sorted by `lengths`. A step still holds a random draw of samples, so its
    accumulated gradient is that of a random batch of `step_size`; only its micro-batches are
    formed of samples of similar length and pad little. Grouping by length across steps
    (`group_by_length`) would instead give steps of one task at a time.
    """

    def __init__(self, lengths, step_size: int, seed: int = 0):
        if step_size < 1:
            raise ValueError(f"step_size must be at least 1, got {step_size}")
        self.lengths, self.step_size, self.seed, self.epoch = list(lengths), step_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        for start in range(0, len(order), self.step_size):
            yield from sorted(order[start : start + self.step_size], key=lambda index: self.lengths[index])


def _step_sorted_trainer():
    from trl import SFTTrainer

    class StepSortedSFTTrainer(SFTTrainer):
        """TRL's `SFTTrainer` whose optimizer steps draw random samples and form their micro-batches
        of samples of similar length (`StepSortedSampler`)."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            if self.args.gradient_accumulation_steps == 1 or self.args.world_size > 1:
                return super()._get_train_sampler(train_dataset)
            step = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
            seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
            return StepSortedSampler([len(ids) for ids in dataset["input_ids"]], step, seed)

    return StepSortedSFTTrainer


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import is_torch_bf16_gpu_available
    from trl import SFTConfig, TrlParser

    from train.io import output_lock

    parser = TrlParser((LMWarmupArguments, SFTConfig))
    if not is_torch_bf16_gpu_available():
        parser.set_defaults(bf16=False)
    args, training_args = parser.parse_args_and_config(argv)
    with output_lock(training_args.output_dir, "e2llm lm-warmup", enabled=training_args.process_index == 0):
        return run(args, training_args)


def run(args: LMWarmupArguments, training_args) -> int:
    """The warm-up with parsed arguments; the caller holds the output folder (`train.io.output_lock`)."""
    from transformers import Qwen3ForCausalLM, set_seed

    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.stages.parts import load_qa, load_segments
    from train.stages.stage2 import last_checkpoint
    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import build_demo_tokenizer

    set_seed(training_args.seed)

    qa = load_qa(args.data, args.qa_split)
    if args.max_train_samples is not None:
        qa = qa.select(range(min(args.max_train_samples, len(qa))))
    qa = repeat_tasks(qa, parse_task_repeats(args.task_repeats))
    segment_words = None
    if args.eeg_as_words:
        segment_words = segment_span_words(load_segments(args.data)["train"], args.eeg_span_features)
    # Rendering a chat needs no tokenizer's words: the demo tokenizer before training serves.
    texts = chat_texts(qa, E2LLMProcessor(E2LLMFeatureExtractor(), build_demo_tokenizer(())), segment_words)
    tokenizer = build_demo_tokenizer(
        (prompt + completion for prompt, completion in zip(texts["prompt"], texts["completion"])), args.vocab_size
    )

    config = tiny_qwen3_config(
        tokenizer,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        num_key_value_heads=args.num_key_value_heads,
        head_dim=args.head_dim,
    )
    trainer = _step_sorted_trainer()(
        model=Qwen3ForCausalLM(config), args=training_args, train_dataset=texts, processing_class=tokenizer
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, args.resume))
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        # The trainer turned the KV cache off for training; the saved model stands in for a
        # pretrained Qwen3, whose config generates with it.
        model.config.use_cache = True
        model.add_model_tags([DEMO_ONLY])
        model.save_pretrained(training_args.output_dir)
        tokenizer.save_pretrained(training_args.output_dir)
        trainer.create_model_card(tags=[DEMO_ONLY])
        print(
            f"Demo-only language model warmed up on {len(texts)} texts (a vocabulary of {len(tokenizer)} tokens); "
            f"saved to {training_args.output_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
