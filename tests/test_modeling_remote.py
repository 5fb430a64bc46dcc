"""A saved E2LLM folder loads as Hub remote code in a fresh process, offline, through the auto classes."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers import Qwen3ForCausalLM

from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
from train.stages.tiny import tiny_qwen3_config
from train.tokenizer import EEG_END_TOKEN_ID, EEG_START_TOKEN_ID, EEG_TOKEN_ID

LOAD_AND_RUN = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    folder, inputs_path, out_path = sys.argv[1:]
    inputs = torch.load(inputs_path)
    report = {}
    logits = {}
    for auto_class in (AutoModel, AutoModelForCausalLM):
        model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            logits[auto_class.__name__] = model(**inputs).logits
            generated = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None)
        report[auto_class.__name__] = {
            "class": type(model).__name__,
            "module": type(model).__module__,
            "tied": model.lm_head.weight is model.model.language_model.embed_tokens.weight,
            "generated": generated[0, -4:].tolist(),
        }
    torch.save(logits, out_path + ".pt")
    report["local_module_imported"] = "modeling_e2llm" in sys.modules
    json.dump(report, open(out_path, "w"))
    """
)


def test_auto_classes_load_the_saved_code_offline_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = E2LLMForConditionalGeneration.from_parts(
        EEGPTModel(EEGPTConfig.from_preset("tiny")), Qwen3ForCausalLM(tiny_qwen3_config())
    ).eval()
    folder = tmp_path / "e2llm-tiny"
    model.save_pretrained(folder)
    ids = [9707] + [EEG_START_TOKEN_ID] + [EEG_TOKEN_ID] * 16 + [EEG_END_TOKEN_ID] + [13]
    inputs = {
        "input_ids": torch.tensor([ids]),
        "eeg_values": torch.randn(1, 58, 1024) * 0.05,
        "eeg_channel_ids": torch.arange(58),
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs).logits
        expected_tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None)[0, -4:]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    out = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, str(folder), str(tmp_path / "inputs.pt"), str(out)],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=120,
    )
    report = json.loads(out.read_text())
    logits = torch.load(str(out) + ".pt")

    assert report["local_module_imported"] is False
    for name in ("AutoModel", "AutoModelForCausalLM"):
        assert report[name]["class"] == "E2LLMForConditionalGeneration"
        assert report[name]["module"].startswith("transformers_modules.")
        assert report[name]["tied"] is True
        assert report[name]["generated"] == expected_tokens.tolist()
    assert torch.equal(logits["AutoModel"], logits["AutoModelForCausalLM"])
    torch.testing.assert_close(logits["AutoModel"], expected)
