"""Demo only: a tiny random Qwen3 learns to read the task texts before it stands in for a pretrained one.

    e2llm lm-warmup --config train/recipes/demo/lm_warmup.yaml --data e2llm-demo/prepared \\
        --output_dir e2llm-demo/lm-warmup

A real run takes a pretrained Qwen3 (`--llm Qwen/Qwen3-8B`) and never runs this. The demo's
language model is a tiny Qwen3 with random weights: it knows no language, so stage 2 could not
teach a projector to make it answer. This step trains it, with the stages' trainer (TRL's
`SFTTrainer`, logits taken at the answer positions only: `train.stages.trainer`) as a plain
language model, on the QA split as prompt-completion pairs: the rendered chat up to the answer
and the answer, which alone carries the loss, as in stages 2 and 3. (On the CPU, TRL's own loss
scores every position in float32 tiles: with the demo's 1,100-token vocabulary that took a
warm-up step from 0.32 to 0.40 s, measured in `e2llm lm-warmup` itself on 60 steps.)

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

With `--eeg_as_words false --eeg_span_code true` (the demo's recipe) the text keeps the bare
`<eeg>` slots and, in the model's input, every slot of an EEG item holds the same learned vector:
the sum of its emotion's code and (`--eeg_span_features true`) one code per salient feature claim
(`segment_span_codes`, `fill_span_codes`), plus `--eeg_span_noise` of noise. The codes train with
the model and are saved beside it (`span_codes.safetensors`), not in it. This is what stage 2's
projector can learn to write: it maps each time patch on its own, so it can put one summary of
the segment into every slot, but not a sequence of different words (it does not know which word
a slot should hold).

With `--eeg_span_scores true` (the demo's recipe) the features enter the span as one code per
claimable feature weighted by the segment's z-score, rather than one code per salient claim: the
span then moves smoothly with the EEG, so that a projector's approximate reading still leads the
model to the features it shows, and the model learns which of them are salient. Stage 2 of the
demo (`--span_code_weight`, `with_span_code_targets`) also pulls the projector's output towards
each segment's span code, besides the frozen model's loss.

The texts use about a thousand distinct words. The model reads them through a tokenizer trained
on them (`train.tokenizer.build_demo_tokenizer`: byte-level BPE with Qwen3's pre-tokenizer,
special tokens and EEG tokens), and its vocabulary is that tokenizer's, so its LM head costs
little next to its layers; stages 2 and 3, evaluation and the published folder take both as
they would take a Hub Qwen3 and its tokenizer.

The output folder holds the model (`Qwen3ForCausalLM`, safetensors) and its tokenizer with the
EEG tokens; stage 2 takes it as `--llm e2llm-demo/lm-warmup`.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import sys

from train.stages.config import LMWarmupArguments

DEMO_ONLY = "demo-only"
SPAN_CODES_FILE = "span_codes.safetensors"


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


def segment_claims(segments, features: bool) -> dict:
    """Segment id -> (its emotion, the claims of its salient measured features, or none without `features`)."""
    from train.data.claims import salient_claims
    from train.data.features import FEATURE_NAMES

    names = ["id", "emotion", *(FEATURE_NAMES if features else ())]
    columns = segments.select_columns(names).to_dict()
    return {
        segment: (columns["emotion"][row],
                  salient_claims({name: columns[name][row] for name in FEATURE_NAMES}) if features else [])
        for row, segment in enumerate(columns["id"])
    }  # fmt: skip


def segment_span_words(segments, features: bool) -> dict[str, list[str]]:
    """Segment id -> the words its EEG span is written with: the emotion, then (`features`) the
    words of its salient measured features."""
    from train.data.claims import claim_words

    claims_of = segment_claims(segments, features)
    return {segment: [emotion, *claim_words(claims)] for segment, (emotion, claims) in claims_of.items()}


SCORE_LIMIT = 3.0


def span_code_count(scores: bool = False) -> int:
    """How many span codes `segment_span_codes` weighs: one per emotion, then two (raised, reduced)
    per claimable feature, or (`scores`) one per claimable feature."""
    from train.data.claims import CLAIMABLE
    from train.data.qa import EMOTIONS

    return len(EMOTIONS) + (1 if scores else 2) * len(CLAIMABLE)


def segment_span_codes(segments, features: bool, scores: bool = False) -> dict[str, list[float]]:
    """Segment id -> the weight of each span code in its EEG span (`eeg_span_code`), a list of
    `span_code_count(scores)`: 1 for its emotion's (its index in `EMOTIONS`), then (`features`)
    1 for each salient feature claim (after the emotions, two per claimable feature: reduced,
    raised) or (`scores`) each claimable feature's z-score (within +-`SCORE_LIMIT`, 0 where
    missing). The span is the codes' weighted sum (`fill_span_codes`)."""
    from train.data.claims import CLAIMABLE
    from train.data.qa import EMOTIONS

    codes = {}
    for segment, (emotion, claims) in segment_claims(segments, features and not scores).items():
        weights = [0.0] * span_code_count(scores)
        weights[EMOTIONS.index(emotion)] = 1.0
        for claim in claims:
            weights[len(EMOTIONS) + 2 * CLAIMABLE.index(claim.feature) + (claim.direction > 0)] = 1.0
        codes[segment] = weights
    if features and scores:
        columns = segments.select_columns(["id", *CLAIMABLE]).to_dict()
        for row, segment in enumerate(columns["id"]):
            for index, name in enumerate(CLAIMABLE):
                value = columns[name][row]
                if value is not None and not math.isnan(value):
                    codes[segment][len(EMOTIONS) + index] = max(-SCORE_LIMIT, min(SCORE_LIMIT, float(value)))
    return codes


def chat_texts(qa, processor, segment_words: dict[str, list[str]] | None = None,
               segment_codes: dict[str, list[float]] | None = None):  # fmt: skip
    """The QA rows as prompt-completion pairs: the rendered chat up to the last answer, EEG items
    expanded, and that answer with its closing `<|im_end|>`.

    With `segment_words` (segment id -> words, `segment_span_words`) each EEG span is written in
    words (see `eeg_span_as_words`); without it, as the bare `<eeg>` tokens the processor writes.
    With `segment_codes` (segment id -> codes, `segment_span_codes`) each row also gets
    `eeg_codes`, the codes of its EEG items in order, which fill their slots in training."""
    if segment_words is not None and segment_codes is not None:
        raise ValueError("An EEG span is written either in words or as codes, not both")
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
        if segment_codes is not None:
            return {"prompt": prompt, "completion": completion,
                    "eeg_codes": [segment_codes[segment_id] for segment_id in row["segment_ids"]]}  # fmt: skip
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


class SpanCodeCollator:
    """TRL's language-modeling collator, plus `eeg_codes`: ``(batch, EEG items, codes)`` float,
    the weights of the span codes (`segment_span_codes`), 0 where a row has fewer items."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator([{k: v for k, v in example.items() if k != "eeg_codes"} for example in examples])
        batch["eeg_codes"] = code_table([example["eeg_codes"] for example in examples])
        return batch


def code_table(codes):
    """Rows of EEG items' code weights (`segment_span_codes`) -> a (rows, items, codes) float
    tensor, 0 where a row has fewer items: what `fill_span_codes` takes."""
    import torch

    items = max((len(row) for row in codes), default=0)
    width = max((len(item) for row in codes for item in row), default=0)
    table = torch.zeros((len(codes), max(items, 1), max(width, 1)), dtype=torch.float32)
    for b, row in enumerate(codes):
        for i, item in enumerate(row):
            table[b, i, : len(item)] = torch.tensor(item, dtype=torch.float32)
    return table


def fill_span_codes(embeds, input_ids, codes, table, eeg_token_id: int, num_eeg_tokens: int, noise: float = 0.0):
    """`embeds` with every `<eeg>` slot of the i-th EEG item of each row replaced by the sum of
    the rows of `table` (an `nn.Embedding`) weighted by `codes[row, i]` (an item of all zeros:
    none), plus Gaussian noise of `noise` times that sum's norm."""
    import torch

    valid = codes.ne(0).any(dim=2)  # (B, items)
    vectors = codes.to(table.weight.dtype) @ table.weight  # (B, items, H)
    slots = input_ids == eeg_token_id
    per_row = slots.sum(dim=1)
    expected = valid.sum(dim=1) * num_eeg_tokens
    if not torch.equal(per_row, expected):
        raise ValueError(
            f"rows hold {per_row.tolist()} <eeg> slots where their EEG items call for {expected.tolist()}"
        )
    filled = vectors.repeat_interleave(num_eeg_tokens, dim=1)  # (B, items * slots, H)
    if noise > 0:
        filled = filled + noise * filled.norm(dim=-1, keepdim=True) / filled.shape[-1] ** 0.5 * torch.randn_like(filled)
    take = torch.arange(filled.shape[1], device=embeds.device)[None, :] < per_row[:, None]
    embeds = embeds.clone()
    embeds[slots] = filled[take].to(embeds.dtype)
    return embeds


def load_span_codes(folder) -> tuple[object, bool, bool] | None:
    """(the span-code table, whether it codes features, whether as scores) a warm-up saved in
    `folder` (`span_codes.safetensors`), or None when the folder has none."""
    from pathlib import Path

    from safetensors import safe_open

    path = Path(folder) / SPAN_CODES_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
        table = file.get_tensor("weight")
    return table, metadata.get("eeg_span_features", "true") == "true", metadata.get("eeg_span_scores") == "true"


class SpanCodeTargetCollator:
    """Stage 2 of the demo: the stages' `E2LLMCollator`, plus `eeg_span_codes`, the warm-up's code
    weights of each EEG window's segment, ``(windows, codes)`` float, the windows in the
    collator's order (row by row, in placeholder order)."""

    def __init__(self, collator, segment_codes: dict[str, list[float]]):
        self.collator, self.segment_codes = collator, segment_codes

    def __call__(self, rows):
        batch = self.collator(rows)
        windows = [[self.segment_codes[segment] for segment in row["segment_ids"]] for row in rows]
        batch["eeg_span_codes"] = code_table([[item] for row in windows for item in row])[:, 0]
        return batch


def span_code_distance(eeg_tokens, codes, table):
    """How far the projector's EEG tokens (windows, patches, hidden) lie from the span codes of
    their segments (`codes`, (windows, codes) weights; `table` (codes, hidden)): the mean squared
    distance over tokens, relative to the codes' mean squared norm (0: every token is its code)."""
    targets = (codes.to(table.dtype) @ table).to(eeg_tokens.dtype)  # (windows, hidden)
    error = (eeg_tokens - targets.unsqueeze(1)).pow(2).sum(-1).mean()
    return error / targets.pow(2).sum(-1).mean().clamp(min=1e-12)


def span_code_trainer(base, table, weight: float):
    """`base` (a stage trainer class) whose loss adds `weight` x `span_code_distance` between the
    projector's output and the warm-up's span codes of the batch's segments (`eeg_span_codes`
    from `SpanCodeTargetCollator`): the demo's projector is told directly what the warm-up LM
    reads in an EEG slot, besides learning it through the frozen LM's loss."""

    class SpanCodeTargetTrainer(base):
        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "eeg_span_codes" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "eeg_span_codes"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            codes = inputs.pop("eeg_span_codes")
            projector = self.accelerator.unwrap_model(model).model.projector
            outputs = []
            handle = projector.register_forward_hook(lambda module, args, output: outputs.append(output))
            try:
                result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                              num_items_in_batch=num_items_in_batch)  # fmt: skip
            finally:
                handle.remove()
            loss = result[0] if return_outputs else result
            distance = span_code_distance(outputs[0], codes.to(outputs[0].device), table.to(outputs[0].device))
            mode = "train" if model.training else "eval"
            self._metrics[mode]["span_code_distance"].append(distance.item())
            scaled = self.loss_is_scaled_for_ga
            if scaled is None:
                scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None
            if model.training and scaled:
                # The LM loss came already divided over the accumulated micro-batches; Trainer divides the sum by none.
                distance = distance / self.current_gradient_accumulation_steps
            loss = loss + weight * distance
            return (loss, *result[1:]) if return_outputs else loss

    return SpanCodeTargetTrainer


def with_span_code_targets(script_args, collator, trainer_class):
    """Stage 2 of the demo with `span_code_weight`: (`span_code_trainer` over `trainer_class`,
    `SpanCodeTargetCollator` over `collator`), the codes those the warm-up in `script_args.llm`
    saved, of the segments in `script_args.data`."""
    from datasets import concatenate_datasets

    from train.stages.parts import load_segments

    if script_args.span_code_weight < 0:
        raise ValueError(f"span_code_weight must be 0 or more, got {script_args.span_code_weight}")
    saved = load_span_codes(script_args.llm) if script_args.llm else None
    if saved is None:
        raise ValueError(
            f"span_code_weight {script_args.span_code_weight} needs the demo's warmed-up language model, whose "
            f"folder holds {SPAN_CODES_FILE} (e2llm lm-warmup with eeg_span_code true); {script_args.llm!r} has none"
        )
    table, features, scores = saved
    segments = load_segments(script_args.data)
    codes = segment_span_codes(concatenate_datasets([segments["train"], segments["test"]]), features, scores)
    return span_code_trainer(trainer_class, table, script_args.span_code_weight), SpanCodeTargetCollator(collator, codes)


# A check's verdict in the gold answers (`train.data.qa`): "... so it fits." or "... so it does not fit."
_VERDICT = re.compile(r"so it (fits|does not fit)\b")
# An EIM answer restating a scenario of the question: "\nA. Stepping barefoot on something slimy. ..."
_RESTATED = re.compile(r"(?:^|\n)[ABC]\. (\S)")
CHECKS_FILE = "warmup_checks.json"


def check_verdicts(model, tokenizer, texts, table=None, eeg_token_id: int | None = None,
                   num_eeg_tokens: int = 0) -> dict:  # fmt: skip
    """How often the model, teacher-forced on gold answers, gives each check its right verdict.

    `texts` are `chat_texts` rows (with `eeg_codes` when `table`, the span codes, fills the EEG
    slots). At every "so it fits" / "so it does not fit" of a completion the model's next-token
    logits are read: a verdict is right when the gold one's first token (" fits" or " does")
    scores above the other's. The verdict depends on whether two written emotions are the same,
    the comparison EPC, ESS and EIM answers rest on, so this tells whether the model has learned
    to compare them, apart from how well it reads the EEG. Returns `checks`, `right`,
    `accuracy` (%), and the same split by whether the gold verdict is "fits" (`fits_*`).

    Also, at every scenario an EIM answer restates (``A. <the question's scenario A>``), whether
    the model's most likely next token is the scenario's first one: `restated`,
    `restated_right`, `restated_accuracy`. Restating means finding the question's ``A.`` and
    copying what follows it, a look-up a pretrained model brings and the warm-up's must learn
    (train/recipes/demo/lm_warmup.yaml)."""
    import torch

    first = {word: tokenizer.encode(f" {word.split()[0]}", add_special_tokens=False)[0] for word in ("fits", "does not fit")}
    counts = {"checks": 0, "right": 0, "fits_checks": 0, "fits_right": 0, "restated": 0, "restated_right": 0}
    was_training = model.training
    model.eval()
    for row in texts:
        text = row["prompt"] + row["completion"]
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([encoded["input_ids"]])
        starts = [start for start, _ in encoded["offset_mapping"]]
        verdicts = [(m.start(1), m.group(1)) for m in _VERDICT.finditer(text, len(row["prompt"]))]
        restated = [len(row["prompt"]) + m.start(1) for m in _RESTATED.finditer(row["completion"])]
        if not verdicts and not restated:
            continue
        with torch.no_grad():
            embeds = model.get_input_embeddings()(ids)
            if table is not None:
                embeds = fill_span_codes(embeds, ids, code_table([row["eeg_codes"]]), table, eeg_token_id, num_eeg_tokens)
            logits = model(inputs_embeds=embeds).logits[0]
        for char, verdict in verdicts:
            # The token holding the verdict word's first letter (byte-level BPE puts the space before it in it).
            token = bisect.bisect_right(starts, char) - 1
            other = "fits" if verdict != "fits" else "does not fit"
            right = bool(logits[token - 1, first[verdict]] > logits[token - 1, first[other]])
            counts["checks"] += 1
            counts["right"] += right
            if verdict == "fits":
                counts["fits_checks"] += 1
                counts["fits_right"] += right
        for char in restated:
            token = bisect.bisect_right(starts, char) - 1
            counts["restated"] += 1
            counts["restated_right"] += bool(logits[token - 1].argmax() == ids[0, token])
    model.train(was_training)

    def percent(right, checks):
        return round(100 * right / checks, 1) if checks else None

    counts["accuracy"] = percent(counts["right"], counts["checks"])
    counts["fits_accuracy"] = percent(counts["fits_right"], counts["fits_checks"])
    counts["does_not_fit_accuracy"] = percent(counts["right"] - counts["fits_right"], counts["checks"] - counts["fits_checks"])
    counts["restated_accuracy"] = percent(counts["restated_right"], counts["restated"])
    return counts


def _span_inputs(args, segments) -> tuple[dict | None, dict | None]:
    """(segment words, segment codes) of `segments` as `args` writes the EEG spans: words
    (`eeg_as_words`), codes (`eeg_span_code`) or neither (the bare slots)."""
    if args.eeg_as_words:
        return segment_span_words(segments, args.eeg_span_features), None
    if args.eeg_span_code:
        return None, segment_span_codes(segments, args.eeg_span_features, args.eeg_span_scores)
    return None, None


def _held_out_checks(args, model, tokenizer, processor, limit: int = 150) -> dict | None:
    """`check_verdicts` on (up to `limit` rows of) the prepared `test_multi` split, its EEG spans
    filled as in training; None when the data has no `test_multi` split."""
    from train.stages.parts import load_qa, load_segments

    try:
        qa = load_qa(args.data, "test_multi")
    except ValueError:
        return None
    qa = qa.select(range(min(limit, len(qa))))
    words, codes = _span_inputs(args, load_segments(args.data)["test"])
    table = eeg_token_id = None
    if codes is not None:
        from processing_e2llm import EEG_TOKEN

        table, eeg_token_id = model.eeg_span_codes, tokenizer.convert_tokens_to_ids(EEG_TOKEN)
    texts = chat_texts(qa, processor, words, codes)
    return check_verdicts(model, tokenizer, texts, table, eeg_token_id, processor.num_eeg_tokens)


def _step_sorted_trainer():
    from train.stages.trainer import AnswerLossSFTTrainer

    class StepSortedSFTTrainer(AnswerLossSFTTrainer):
        """The stages' `AnswerLossSFTTrainer` (TRL's `SFTTrainer`, logits at the answer positions
        only) whose optimizer steps draw random samples and form their micro-batches of samples of
        similar length (`StepSortedSampler`). With `span_codes` (an `nn.Embedding`
        set on the model as `eeg_span_codes`), batches carry `eeg_codes` and the EEG slots are
        filled with them (`fill_span_codes`)."""

        span_code_settings: tuple[int, int, float] | None = None  # (eeg token id, slots per item, noise)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if self.span_code_settings is not None and "eeg_codes" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "eeg_codes"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.span_code_settings is not None and "eeg_codes" in inputs:
                token, slots, noise = self.span_code_settings
                codes, input_ids = inputs.pop("eeg_codes"), inputs.pop("input_ids")
                inner = self.accelerator.unwrap_model(model)
                embeds = inner.get_input_embeddings()(input_ids)
                noise = noise if model.training else 0.0
                inputs["inputs_embeds"] = fill_span_codes(embeds, input_ids, codes, inner.eeg_span_codes, token, slots, noise)
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)  # fmt: skip

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
    from train.io import write_atomic
    from train.stages.parts import load_qa, load_segments
    from train.stages.stage2 import last_checkpoint
    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import build_demo_tokenizer

    set_seed(training_args.seed)

    qa = load_qa(args.data, args.qa_split)
    if args.max_train_samples is not None:
        qa = qa.select(range(min(args.max_train_samples, len(qa))))
    qa = repeat_tasks(qa, parse_task_repeats(args.task_repeats))
    if args.eeg_span_code and args.eeg_as_words:
        raise ValueError("eeg_span_code fills the bare <eeg> slots with codes: set eeg_as_words false with it")
    segment_words, segment_codes = _span_inputs(args, load_segments(args.data)["train"])
    # Rendering a chat needs no tokenizer's words: the demo tokenizer before training serves.
    processor = E2LLMProcessor(E2LLMFeatureExtractor(), build_demo_tokenizer(()))
    texts = chat_texts(qa, processor, segment_words, segment_codes)
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
    model = Qwen3ForCausalLM(config)
    trainer_class = _step_sorted_trainer()
    if segment_codes is not None:
        import torch

        from processing_e2llm import EEG_TOKEN

        # Not a submodule of the saved model: removed before saving (below).
        model.eeg_span_codes = torch.nn.Embedding(span_code_count(args.eeg_span_scores), config.hidden_size)
        torch.nn.init.normal_(model.eeg_span_codes.weight, std=config.initializer_range)
        trainer_class.span_code_settings = (
            tokenizer.convert_tokens_to_ids(EEG_TOKEN), processor.num_eeg_tokens, args.eeg_span_noise
        )
    trainer = trainer_class(model=model, args=training_args, train_dataset=texts, processing_class=tokenizer)
    if segment_codes is not None:
        trainer.data_collator = SpanCodeCollator(trainer.data_collator)
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, args.resume))
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        checks = _held_out_checks(args, model, tokenizer, processor)
        if checks is not None:
            write_atomic(f"{training_args.output_dir}/{CHECKS_FILE}", json.dumps(checks, indent=2))
            print(
                f"Teacher-forced on the gold test_multi answers, {checks['accuracy']} % of {checks['checks']} check "
                f"verdicts are right ({checks['fits_accuracy']} % of the 'fits', {checks['does_not_fit_accuracy']} % "
                f"of the 'does not fit'); the first word of {checks['restated_accuracy']} % of the {checks['restated']} "
                f"scenarios EIM answers restate; saved to {CHECKS_FILE}"
            )
        if hasattr(model, "eeg_span_codes"):
            from safetensors.torch import save_file

            # Kept beside the model, not in it: what the warm-up answers given the true codes can be checked.
            save_file({"weight": model.eeg_span_codes.weight.detach().contiguous()},
                      f"{training_args.output_dir}/{SPAN_CODES_FILE}",
                      metadata={"eeg_span_features": str(bool(args.eeg_span_features)).lower(),
                                "eeg_span_scores": str(bool(args.eeg_span_scores)).lower()})  # fmt: skip
            del model.eeg_span_codes
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
