"""README.md of a stage's output folder: what the folder holds and how to load it, with EEG.

TRL writes a generic card into each output folder while it saves checkpoints ("a fine-tuned
version of [None]" with a text-only `pipeline` example that cannot take EEG). Stages 2 and 3 and
the demo's warm-up write this one instead; the Hub card, with the evaluation results, is
`e2llm publish`'s.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

TAGS = ["e2llm", "eeg", "emotion-recognition"]

E2LLM_USE = """```python
from transformers import AutoModel, AutoProcessor

processor = AutoProcessor.from_pretrained("{folder}", trust_remote_code=True)
model = AutoModel.from_pretrained("{folder}", trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "eeg"}}, {{"type": "text", "text": "Which emotion does this EEG show?"}}]}}]
text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
inputs = processor(text=text, eeg=raw, return_tensors="pt")  # raw: an mne.io.Raw, or arrays with channel names
output = model.generate(**inputs, max_new_tokens=512)
```"""

ADAPTER_USE = """```python
from peft import PeftModel
from transformers import AutoModel, AutoProcessor

base = AutoModel.from_pretrained("{base}", trust_remote_code=True)
model = PeftModel.from_pretrained(base, "{folder}")
processor = AutoProcessor.from_pretrained("{folder}", trust_remote_code=True)
```
then prompt it with EEG as the full model is (README, "Use it in a notebook")."""

NEXT = """

`e2llm evaluate --model {folder}` scores it; `e2llm publish --model {folder}` writes the Hub folder
with its full card."""


def _hub_id(name: str | None) -> str | None:
    if name and name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/", "~")):
        return name
    return None


def stage_card(model, output_dir: str, tags: list[str] = ()) -> ModelCard:
    """The card of a stage folder holding `model` (an E2LLM, a PEFT adapter on one, or the demo's
    bare Qwen3)."""
    from peft import PeftModel

    folder = str(output_dir)
    tags = [*TAGS, *tags]
    if isinstance(model, PeftModel):
        base_dir = model.peft_config[model.active_adapter].base_model_name_or_path or "STAGE-2-FOLDER"
        config = model.get_base_model().config
        title, library = "E2LLM stage 3: LoRA adapter and projector", "peft"
        body = (
            "LoRA on the language model's q_proj and k_proj and the projector, trained on the "
            "chain-of-thought answers, over the stage-2 model it was trained from. With `merge` on, "
            "`merged/` holds the full model and `merge_check.json` how closely it answers as this adapter does.\n\n"
            + ADAPTER_USE.format(base=base_dir, folder=folder)
            + NEXT.format(folder=folder)
        )
    elif hasattr(model, "get_eeg_features"):
        config = model.config
        title, library = "E2LLM stage 2: the projector trained", "transformers"
        body = (
            "The EEG encoder and the language model frozen, the projector trained to write the EEG into "
            "the language model's input. The folder holds the full model and its processor once training "
            "ends; each `checkpoint-*` holds the projector and the optimizer state only.\n\n"
            + E2LLM_USE.format(folder=folder)
            + NEXT.format(folder=folder)
        )
    else:
        config = model.config
        title, library = "A language model trained by the E2LLM demo", "transformers"
        body = "A tiny Qwen3 that reads the task texts, for the CPU demo only: it knows no language beyond them."
    text_config = getattr(config, "text_config", config)
    base_model = _hub_id(getattr(text_config, "_name_or_path", None))
    data = ModelCardData(library_name=library, base_model=base_model, tags=tags, pipeline_tag="text-generation")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{body}\n")
