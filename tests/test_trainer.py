"""AnswerLossSFTTrainer: the loss of TRL's own SFTTrainer, from logits at the answer positions only."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import Qwen3ForCausalLM
from trl import SFTConfig, SFTTrainer

from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
from train.stages.tiny import tiny_qwen3_config
from train.stages.trainer import AnswerLossSFTTrainer, fused_head_scores_only_answers
from train.tokenizer import EEG_END_TOKEN_ID, EEG_START_TOKEN_ID, EEG_TOKEN_ID, build_qwen3_tokenizer

PAD = 151643


def batch(with_eeg: bool) -> dict[str, torch.Tensor]:
    """Two left-padded rows whose answers (the labelled tail) differ in length."""
    generator = torch.Generator().manual_seed(0)
    eeg = [EEG_START_TOKEN_ID] + [EEG_TOKEN_ID] * 16 + [EEG_END_TOKEN_ID] if with_eeg else []
    rows, labels = [], []
    for answer in (3, 9):
        prompt = [9707, 1879, *eeg, 13]
        tokens = torch.randint(0, 150000, (answer,), generator=generator).tolist()
        padding = 9 - answer
        rows.append([PAD] * padding + prompt + tokens)
        labels.append([-100] * (padding + len(prompt)) + tokens)
    inputs = {"input_ids": torch.tensor(rows), "labels": torch.tensor(labels)}
    inputs["attention_mask"] = (inputs["input_ids"] != PAD).long()
    if with_eeg:
        inputs["eeg_values"] = torch.randn(2, 58, 1024, generator=generator) * 0.05
        inputs["eeg_channel_ids"] = torch.arange(58)
    return inputs


def build(kind: str):
    torch.manual_seed(0)
    language_model = Qwen3ForCausalLM(tiny_qwen3_config(initializer_range=0.2))
    if kind == "qwen3":
        return language_model
    return E2LLMForConditionalGeneration.from_parts(EEGPTModel(EEGPTConfig.from_preset("tiny")), language_model)


def trainer(cls, model, tmp_path):
    args = SFTConfig(
        output_dir=str(tmp_path), report_to="none", bf16=False, use_cpu=True, remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True}, max_length=None,
    )  # fmt: skip
    return cls(
        model=model, args=args, train_dataset=Dataset.from_dict({"input_ids": [[1]]}),
        processing_class=build_qwen3_tokenizer(), data_collator=lambda rows: rows,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["e2llm", "qwen3"])
@pytest.mark.parametrize("num_items_in_batch", [None, 30])
def test_the_answer_loss_equals_trls_own_loss_and_gradients(kind, num_items_in_batch, tmp_path):
    """On the CPU TRL's fused head scores every position; the answer-position loss must be the same
    number and give the same gradients, with and without `num_items_in_batch` (gradient accumulation)."""
    assert not fused_head_scores_only_answers(torch.device("cpu"))
    model = build(kind).train()
    inputs = batch(with_eeg=kind == "e2llm")
    results = []
    for cls in (SFTTrainer, AnswerLossSFTTrainer):
        model.zero_grad()
        loss = trainer(cls, model, tmp_path).compute_loss(model, dict(inputs), num_items_in_batch=num_items_in_batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (trl_loss, trl_grads), (our_loss, our_grads) = results
    torch.testing.assert_close(our_loss, trl_loss)
    assert our_grads.keys() == trl_grads.keys() and our_grads
    for name in trl_grads:
        torch.testing.assert_close(our_grads[name], trl_grads[name], rtol=1e-4, atol=1e-6)
    targets = int((inputs["labels"][:, 1:] != -100).sum())
    full = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits[:, :-1].float()
    expected = torch.nn.functional.cross_entropy(
        full.flatten(0, 1), inputs["labels"][:, 1:].flatten(), ignore_index=-100, reduction="sum"
    ) / (num_items_in_batch or targets)
    torch.testing.assert_close(our_loss, expected.detach(), rtol=1e-5, atol=1e-5)


def test_the_answer_loss_logs_trls_metrics_over_the_answer_tokens(tmp_path):
    model = build("qwen3").train()
    inputs = batch(with_eeg=False)
    ours = trainer(AnswerLossSFTTrainer, model, tmp_path)
    theirs = trainer(SFTTrainer, model, tmp_path)
    for run in (ours, theirs):
        with torch.no_grad():
            run.compute_loss(model, dict(inputs))
    for key in ("mean_token_accuracy", "entropy", "num_tokens"):
        torch.testing.assert_close(ours._metrics["train"][key], theirs._metrics["train"][key], rtol=1e-4, atol=1e-6)
    assert ours._metrics["train"]["num_tokens"] == [int(inputs["attention_mask"].sum())]
