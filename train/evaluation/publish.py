"""`e2llm publish`: a complete Hub model folder with its card, checked by loading it, optionally uploaded.

    e2llm publish --model runs/stage3 --results eval/stage3/results.json --out hub/e2llm-qwen3-8b \\
        --base-model Qwen/Qwen3-8B --repo-id my-org/e2llm-qwen3-8b
    e2llm publish --model runs/stage3 --adapter-only --adapter-base my-org/e2llm-qwen3-8b-stage2 --out hub/adapter

The folder holds what `AutoModel.from_pretrained(repo, trust_remote_code=True)` and
`AutoProcessor.from_pretrained(repo, trust_remote_code=True)` need: the merged weights in the
dtype they were saved in (bfloat16 for the Qwen3 recipes; config.json's `dtype` says it), as
safetensors files of at most `--max-shard-size` (5 GB; `model.safetensors.index.json` lists
them), `config.json` with its `auto_map`, `generation_config.json`, `modeling_e2llm.py`,
`processing_e2llm.py`, the processor, tokenizer and chat template files, and `README.md`, the
model card rendered from `model_cards/e2llm.md` with the evaluation results of `--results` as
`model-index` metadata and as tables, and the dtype, the shards and the merge check.

`--model` is a stage-3 output folder, a merged folder, or a stage-2 folder. Of a stage-3
folder, its `merged/` is published when the merge passed its check (`merge_check.json`,
written by stage 3); when it did not, the adapter is published instead, and the command says
why. `--adapter-only` publishes the stage-3 LoRA adapter (with the projector it trains), the
processor and the card.

Before anything is uploaded the folder is loaded in a fresh Python process with
`HF_HUB_OFFLINE=1`, exactly as a user would load it, and generates a few tokens from random
EEG. `--repo-id` then creates the repository (`HfApi.create_repo`) and uploads the folder
(`HfApi.upload_folder`); `model.push_to_hub` is not used because it replaces the card.
Without a token or network, the command says so and the local folder stays complete.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from train.evaluation.evaluate import CHOICE_TASKS, PAPER_BEST, format_tables
from train.stages.parts import DEFAULT_MAX_SHARD_SIZE

CARD_TEMPLATE = "e2llm.md"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TASK_NAMES = {
    "IED": "EEG emotion identification (IED)",
    "EPC": "EEG emotion pairwise comparison (EPC)",
    "ESS": "EEG emotion superlative selection (ESS)",
    "EIM": "EEG emotion instance matching (EIM)",
    "ESR": "EEG emotion scenario reasoning (ESR)",
}
TASK_SPLITS = {"IED": "test_ied", "EPC": "test_multi", "ESS": "test_multi", "EIM": "test_multi", "ESR": "test_esr"}
IED_METRICS = (
    ("balanced_accuracy", "Balanced accuracy"),
    ("cohen_kappa", "Cohen's kappa (x 100)"),
    ("f1", "Weighted F1"),
)
# The faithfulness of the explanations (`e2llm evaluate`), beside the same-emotion baseline.
FAITHFULNESS_METRICS = (
    ("claim_precision", "Explanation claim precision"),
    ("all_true", "Explanations with all claims true"),
    ("baseline_claim_precision", "Claim precision of the same-emotion baseline"),
    ("typical_claim_precision", "Claim precision of the emotion's typical features"),
)
DEFAULT_DATASET_NAME = "SEED-VII"


class UploadError(RuntimeError):
    """The Hub could not be reached or refused the upload; the local folder is complete."""


def card_template_path() -> Path:
    """`model_cards/e2llm.md`: from the source tree, else from the installed `model_cards` data."""
    source = Path(__file__).resolve().parents[2] / "model_cards" / CARD_TEMPLATE
    if source.exists():
        return source
    from importlib.resources import files

    try:
        return Path(str(files("model_cards").joinpath(CARD_TEMPLATE)))
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"the model card template {CARD_TEMPLATE} is neither in the source tree ({source.parent}) nor installed "
            "as the `model_cards` package data of e2llm"
        ) from error


def eval_results(results: dict, dataset_name: str) -> list[EvalResult]:
    """`model-index` entries (percent, two decimals) from an `e2llm evaluate` results.json."""
    dataset_type = re.sub(r"[^a-z0-9]+", "-", dataset_name.lower()).strip("-")
    entries = []

    def add(task: str, metric_type: str, metric_name: str, value: float) -> None:
        entries.append(
            EvalResult(
                task_type="text-generation",
                task_name=TASK_NAMES[task],
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                # The task as the dataset's configuration keeps EPC, ESS and EIM (one split) apart
                # in the model-index, which groups results by task type, dataset, config and split.
                dataset_config=task,
                dataset_split=TASK_SPLITS[task],
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=round(float(value), 2),
            )
        )

    if "IED" in results:
        keys = {"balanced_accuracy": "balanced_accuracy", "cohen_kappa": "cohen_kappa", "f1": "weighted_f1"}
        for metric_type, metric_name in IED_METRICS:
            add("IED", metric_type, metric_name, results["IED"][keys[metric_type]])
    for task in CHOICE_TASKS:
        if task in results:
            add(task, "accuracy", "Accuracy", results[task]["accuracy"])
    for task in ("IED", *CHOICE_TASKS):
        faithfulness = results.get(task, {}).get("faithfulness", {})
        for metric_type, metric_name in FAITHFULNESS_METRICS:
            if faithfulness.get(metric_type) is not None:
                add(task, metric_type, metric_name, faithfulness[metric_type])
    return entries


def render_card(config, *, model_name: str, repo_id: str, base_model: str | None, results: dict | None,
                dataset_name: str, num_parameters: int | None = None, adapter_only: bool = False,
                adapter_base: str | None = None, dtype: str = "float32", shards: int = 1,
                merge_check: dict | None = None) -> ModelCard:  # fmt: skip
    """The model card: `E2LLMConfig` `config`, optional evaluation `results` (results.json of `e2llm evaluate`),
    the weights' `dtype` and number of `shards`, and the `merge_check` of a stage-3 merge."""
    from train.data.qa import EMOTIONS
    from train.stages.merge import describe_merge_check

    data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        license="apache-2.0",
        library_name="peft" if adapter_only else "transformers",
        pipeline_tag="text-generation",
        tags=["eeg", "emotion-recognition", "affective-computing", "e2llm", "qwen3", "eegpt", "custom_code"],
        eval_results=eval_results(results, dataset_name) if results else None,
    )
    eeg, text = config.eeg_config, config.text_config
    return ModelCard.from_template(
        data,
        template_path=str(card_template_path()),
        model_name=model_name,
        repo_id=repo_id,
        base_model=base_model,
        eeg={k: getattr(eeg, k) for k in ("embed_dim", "embed_num", "depth", "num_heads")},
        text={k: getattr(text, k) for k in ("hidden_size", "num_hidden_layers")},
        num_parameters=f"{num_parameters / 1e6:,.1f}M" if num_parameters else "see config.json",
        results=results,
        results_tables=format_tables(results, model_name, EMOTIONS) if results else "",
        results_dataset=dataset_name,
        split=(results or {}).get("split"),
        paper_best=PAPER_BEST,
        adapter_only=adapter_only,
        adapter_base=adapter_base,
        dtype=dtype,
        shards=shards,
        merge_check=describe_merge_check(merge_check) if merge_check else None,
    )


def _copy_remote_code(folder: Path, *, modeling: bool) -> None:
    import modeling_e2llm
    import processing_e2llm

    modules = [modeling_e2llm, processing_e2llm] if modeling else [processing_e2llm]
    for module in modules:
        shutil.copy2(module.__file__, folder / Path(module.__file__).name)


def _check_auto_maps(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    processor = json.loads((folder / "processor_config.json").read_text())
    if "AutoModel" not in config.get("auto_map", {}) or "AutoProcessor" not in processor.get("auto_map", {}):
        raise ValueError(
            f"{folder} lacks the auto_map entries (config.json AutoModel, processor_config.json AutoProcessor) "
            "that remote-code loading needs"
        )


def choose_source(model_dir: Path, adapter_only: bool) -> tuple[Path, bool, dict | None]:
    """(folder to publish, whether as an adapter, its merge check): a stage-3 folder gives its `merged/`
    when the merge passed its check, else its adapter; any other folder is published as given."""
    from train.stages.merge import describe_merge_check, read_merge_check

    is_stage3 = all((model_dir / name).exists() for name in ADAPTER_FILES)
    if adapter_only or not is_stage3:
        return model_dir, adapter_only, read_merge_check(model_dir)
    check = read_merge_check(model_dir / "merged")
    if check is None:
        raise ValueError(
            f"{model_dir} holds a stage-3 adapter but no checked merge ({model_dir}/merged/merge_check.json): stage 3 "
            "ran with `merge: false`. Run it with `--merge true`, or publish the adapter with --adapter-only"
        )
    if not check["passed"]:
        print(f"e2llm publish: the merge in {model_dir}/merged did not pass ({describe_merge_check(check)}); "
              "publishing the adapter instead", file=sys.stderr)  # fmt: skip
        return model_dir, True, check
    return model_dir / "merged", False, check


def export_merged(model_dir: Path, folder: Path, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE) -> tuple:
    """Save the model as stored and its processor into `folder` in shards of at most `max_shard_size`;
    returns (config, number of parameters)."""
    from train.evaluation.evaluate import load_for_evaluation
    from train.stages.parts import save_e2llm

    model, processor = load_for_evaluation(model_dir, "cpu", "auto")
    if processor is None:
        raise ValueError(f"{model_dir} holds a stage-1 classifier; publish an E2LLM model (stage 2 or 3)")
    save_e2llm(model, folder, processor, max_shard_size)
    _copy_remote_code(folder, modeling=True)
    _check_auto_maps(folder)
    return model.config, model.num_parameters()


def weights_summary(folder: Path) -> tuple[str, int]:
    """(the dtype config.json names, the number of safetensors files) of a saved model folder."""
    config = json.loads((folder / "config.json").read_text())
    return config.get("dtype", "float32"), len(list(folder.glob("*.safetensors")))


def export_adapter(model_dir: Path, folder: Path, adapter_base: str | None) -> tuple:
    """Copy the stage-3 adapter and the processor into `folder`; returns (config of the base model, base id)."""
    from modeling_e2llm import E2LLMConfig

    from train.evaluation.evaluate import load_processor

    missing = [name for name in ADAPTER_FILES if not (model_dir / name).exists()]
    if missing:
        raise ValueError(f"--adapter-only needs a stage-3 folder with {list(ADAPTER_FILES)}; {model_dir} lacks {missing}")
    adapter_config = json.loads((model_dir / "adapter_config.json").read_text())
    local_base = adapter_config.get("base_model_name_or_path")
    if not local_base or not (Path(local_base) / "config.json").exists():
        raise ValueError(
            f"the adapter's base model {local_base!r} is not a local folder; --adapter-only reads its config "
            "and checks that the adapter loads onto it"
        )
    shutil.copy2(model_dir / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    adapter_config["base_model_name_or_path"] = adapter_base or local_base
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    processor_source = model_dir if (model_dir / "processor_config.json").exists() else Path(local_base)
    load_processor(processor_source).save_pretrained(folder)
    _copy_remote_code(folder, modeling=False)
    return E2LLMConfig.from_pretrained(local_base), local_base


VERIFY_SCRIPT = r"""
import json, sys
import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

folder, base = sys.argv[1], sys.argv[2] or None
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
if base:
    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(base, trust_remote_code=True), folder)
else:
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
model.eval()
loaded = model.get_base_model() if base else model
channels = list(sys.modules[type(processor).__module__].EEGPT_58_CHANNELS)
eeg = np.random.default_rng(0).normal(0.0, 20.0, size=(len(channels), 8 * 256))  # 8 s in uV at 256 Hz
messages = [{"role": "user", "content": [{"type": "eeg"}, {"type": "eeg"},
             {"type": "text", "text": "Which emotion does this EEG show?"}]}]
text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
inputs = processor(text=text, eeg=eeg, sampling_rate=256, channel_names=channels, return_tensors="pt")
with torch.inference_mode():
    output = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
print(json.dumps({
    "model_class": type(loaded).__module__ + "." + type(loaded).__name__,
    "processor_class": type(processor).__module__ + "." + type(processor).__name__,
    "eeg_windows": int(inputs["eeg_values"].shape[0]),
    "new_tokens": int(output.shape[1] - inputs["input_ids"].shape[1]),
    "dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in loaded.parameters()}),
}))
"""


def verify_folder(folder: str | os.PathLike, base: str | None = None, timeout: float = 600) -> dict:
    """Load `folder` in a fresh offline process with remote code (onto `base` for an adapter) and generate.

    Returns what the process reports: `model_class`, `processor_class` (both from the folder's
    own code, under `transformers_modules`), `eeg_windows`, `new_tokens` (4) and the `dtypes` of
    the loaded parameters. Raises
    RuntimeError with the process's error output when loading or generating fails.
    """
    with tempfile.TemporaryDirectory(prefix="e2llm-verify-") as scratch:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_MODULES_CACHE": scratch}
        process = subprocess.run(
            [sys.executable, "-c", VERIFY_SCRIPT, str(Path(folder).resolve()), base or ""],
            cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    if process.returncode != 0:
        raise RuntimeError(f"the published folder {folder} does not load and generate offline:\n{process.stderr[-4000:]}")
    report = json.loads(process.stdout.strip().splitlines()[-1])
    if not report["model_class"].startswith("transformers_modules") or report["new_tokens"] != 4:
        raise RuntimeError(f"the published folder {folder} loaded, but not from its own code: {report}")
    return report


def upload(folder: str | os.PathLike, repo_id: str, *, private: bool = False, api: HfApi | None = None) -> str:
    """Create `repo_id` (if needed) and upload `folder` to it; returns the commit URL.

    Raises UploadError (the folder stays as it is) when there is no token or the Hub cannot be reached.
    """
    from huggingface_hub import get_token

    if get_token() is None:
        raise UploadError(
            f"no Hugging Face token: log in with `hf auth login` or set HF_TOKEN, then upload the complete "
            f"folder {folder} with `e2llm publish ... --repo-id {repo_id}` or `hf upload {repo_id} {folder}`"
        )
    api = api or HfApi()
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message="Upload E2LLM model and card"
        )
    # Whatever the Hub or the network answers (HTTP errors, DNS failures, offline mode), the
    # user's next step is the same: the folder is complete and can be uploaded later.
    except Exception as error:
        raise UploadError(
            f"could not upload to {repo_id}: {type(error).__name__}: {error}. The folder {folder} is complete; upload it later with "
            f"`hf upload {repo_id} {folder}`"
        ) from error
    return getattr(commit, "commit_url", str(commit))


def publish(model: str | os.PathLike, out: str | os.PathLike, *, results: str | os.PathLike | None = None,
            base_model: str | None = None, model_name: str | None = None, repo_id: str | None = None,
            dataset_name: str | None = None, adapter_only: bool = False, adapter_base: str | None = None,
            overwrite: bool = False, verify: bool = True,
            max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE) -> Path:  # fmt: skip
    """Write the complete Hub folder `out` (see the module docstring); returns its path."""
    model_dir = Path(model)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"--out {out} exists and is not empty; choose a new folder or pass --overwrite")
    evaluation = None
    if results:
        evaluation = json.loads(Path(results).read_text())
        if not any(task in evaluation for task in ("IED", *CHOICE_TASKS)):
            raise ValueError(f"{results} holds no task results; expected the results.json of `e2llm evaluate`")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        source, adapter_only, merge_check = choose_source(model_dir, adapter_only)
        if adapter_only:
            config, local_base = export_adapter(source, staging, adapter_base)
            num_parameters, dtype, shards = None, "float32", 1
        else:
            config, num_parameters = export_merged(source, staging, max_shard_size)
            local_base = None
            dtype, shards = weights_summary(staging)
        name = model_name or (repo_id.split("/")[-1] if repo_id else out.name)
        base = base_model or _hub_id(getattr(config.text_config, "_name_or_path", None))
        card = render_card(
            config, model_name=name, repo_id=repo_id or str(out), base_model=base, results=evaluation,
            dataset_name=dataset_name or (evaluation or {}).get("dataset") or DEFAULT_DATASET_NAME,
            num_parameters=num_parameters, adapter_only=adapter_only, adapter_base=adapter_base or local_base,
            dtype=dtype, shards=shards, merge_check=merge_check,
        )  # fmt: skip
        card.save(staging / "README.md")
        if verify:
            report = verify_folder(staging, base=local_base)
            print(f"Loaded offline with remote code and generated: {report}", file=sys.stderr)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub model id (ORG/NAME, not a local path)."""
    if name and name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/")):
        return name
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2llm publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="stage-3 folder (merged/ or adapter), merged or stage-2 folder")
    parser.add_argument("--out", required=True, help="the Hub folder to write")
    parser.add_argument("--results", help="results.json of `e2llm evaluate`, for the card and its model-index")
    parser.add_argument("--repo-id", help="ORG/NAME: create this Hub repository and upload the folder")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--adapter-only", action="store_true", help="publish the stage-3 LoRA adapter, not merged weights")
    parser.add_argument("--adapter-base", help="Hub id of the stage-2 model the adapter applies to (written into adapter_config.json)")
    parser.add_argument("--base-model", help="Hub id of the Qwen3 the model was built on, e.g. Qwen/Qwen3-8B (card metadata)")
    parser.add_argument("--model-name", help="the model's name in the card (default: the repository or folder name)")
    parser.add_argument("--dataset-name", help="what the results were measured on (default: results.json's, else SEED-VII)")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE,
                        help=f"largest safetensors file of the weights (default {DEFAULT_MAX_SHARD_SIZE}, e.g. 2GB, 500MB)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument("--no-verify", action="store_true", help="skip loading the folder in a fresh offline process")
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    folder = publish(
        args.model, args.out, results=args.results, base_model=args.base_model, model_name=args.model_name,
        repo_id=args.repo_id, dataset_name=args.dataset_name, adapter_only=args.adapter_only,
        adapter_base=args.adapter_base, overwrite=args.overwrite, verify=not args.no_verify,
        max_shard_size=args.max_shard_size,
    )  # fmt: skip
    print(f"Wrote {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
    if args.repo_id:
        try:
            url = upload(folder, args.repo_id, private=args.private)
        except UploadError as error:
            print(f"e2llm publish: {error}", file=sys.stderr)
            return 1
        print(f"Uploaded to https://huggingface.co/{args.repo_id} ({url})")
    return 0
