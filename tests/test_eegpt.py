"""The EEGPT encoder: the official computation, the official checkpoint format, the stage-1 classifier.

`reference_eegpt` below recomputes the encoder from a state dict in the official key layout, the
plain way (a convolution for the patches, one head at a time, explicit softmax, LayerNorm and GELU
written out, float64), so the model is checked against the computation, not against itself.
"""

import math

import pytest
import torch

from modeling_e2llm import (
    EEGPT_CHANNEL_NAMES,
    EEGPTConfig,
    EEGPTForEmotionClassification,
    EEGPTModel,
    convert_eegpt_checkpoint,
)

TINY = EEGPTConfig.from_preset("tiny")


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def reference_eegpt(weights, config, eeg, channel_ids):
    """EEGPT's encoder, straight from the official recipe, in float64. eeg (B, C, T), ids (C,)."""
    w = {key: value.double() for key, value in weights.items()}
    eeg = eeg.double()
    eps, heads = config.layer_norm_eps, config.num_heads
    x = torch.nn.functional.conv2d(
        eeg.unsqueeze(1), w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=(1, config.patch_size)
    )  # (B, D, C, N)
    x = x.transpose(1, 3)  # (B, N, C, D)
    batch, patches, _, width = x.shape
    x = x + w["chan_embed.weight"][channel_ids]
    x = x.flatten(0, 1)
    x = torch.cat([x, w["summary_token"].repeat(x.shape[0], 1, 1)], dim=1)
    head_dim = width // heads
    for i in range(config.depth):
        p = f"blocks.{i}."
        h = layer_norm(x, w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        qkv = h @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]
        q, k, v = qkv[..., :width], qkv[..., width : 2 * width], qkv[..., 2 * width :]
        outputs = []
        for head in range(heads):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(head_dim)
            scores = torch.exp(scores - scores.max(-1, keepdim=True).values)
            outputs.append((scores / scores.sum(-1, keepdim=True)) @ v[..., cols])
        x = x + torch.cat(outputs, -1) @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        h = layer_norm(x, w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        h = h @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        x = x + h @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
    x = layer_norm(x[:, -config.embed_num :], w["norm.weight"], w["norm.bias"], eps)
    return x.reshape(batch, patches, config.embed_num, width)


def official_encoder_weights(config, seed):
    """Random weights under the official encoder's key names and shapes, scaled so every part matters."""
    generator = torch.Generator().manual_seed(seed)
    D, P, S = config.embed_dim, config.patch_size, config.embed_num
    hidden = int(D * config.mlp_ratio)

    def rand(*shape, scale=0.1):
        return torch.randn(*shape, generator=generator) * scale

    weights = {
        "summary_token": rand(1, S, D, scale=1.0),
        "patch_embed.proj.weight": rand(D, 1, 1, P, scale=0.3),
        "patch_embed.proj.bias": rand(D),
        "chan_embed.weight": rand(len(EEGPT_CHANNEL_NAMES), D, scale=1.0),
        "norm.weight": 1 + rand(D),
        "norm.bias": rand(D),
    }
    for i in range(config.depth):
        p = f"blocks.{i}."
        weights |= {
            p + "norm1.weight": 1 + rand(D),
            p + "norm1.bias": rand(D),
            p + "attn.qkv.weight": rand(3 * D, D, scale=0.3),
            p + "attn.qkv.bias": rand(3 * D),
            p + "attn.proj.weight": rand(D, D),
            p + "attn.proj.bias": rand(D),
            p + "norm2.weight": 1 + rand(D),
            p + "norm2.bias": rand(D),
            p + "mlp.fc1.weight": rand(hidden, D),
            p + "mlp.fc1.bias": rand(hidden),
            p + "mlp.fc2.weight": rand(D, hidden),
            p + "mlp.fc2.bias": rand(D),
        }
    return weights


def official_checkpoint(config, path):
    """An EEGPT Lightning checkpoint as released: online encoder, EMA target encoder, predictor,
    reconstructor, all under `state_dict`."""
    state_dict = {f"target_encoder.{k}": v for k, v in official_encoder_weights(config, seed=1).items()}
    state_dict |= {f"encoder.{k}": v for k, v in official_encoder_weights(config, seed=2).items()}
    state_dict |= {
        "predictor.mask_token": torch.randn(1, 1, config.embed_dim),
        "predictor.predictor_embed.weight": torch.randn(config.embed_dim, config.embed_dim),
        "reconstructor.reconstructor_proj.weight": torch.randn(config.patch_size, config.embed_dim),
    }
    torch.save({"epoch": 3, "global_step": 120, "state_dict": state_dict}, path)
    return state_dict


def eeg_batch(batch=2, channels=58, samples=1024, seed=0):
    # 50 uV-scale EEG, in mV.
    return torch.randn(batch, channels, samples, generator=torch.Generator().manual_seed(seed)) * 0.05


def test_preset_parameter_counts():
    counts = {}
    for name in ("tiny", "little", "base", "large"):
        with torch.device("meta"):
            counts[name] = EEGPTModel(EEGPTConfig.from_preset(name)).num_parameters()
    assert counts == {"tiny": 108_480, "little": 1_603_200, "base": 6_352_128, "large": 25_287_168}


def test_default_config_is_the_released_large_checkpoint():
    config = EEGPTConfig()
    sizes = (config.patch_size, config.embed_dim, config.embed_num, config.depth, config.num_heads)
    assert sizes == (64, 512, 4, 8, 8)
    assert (config.mlp_ratio, config.qkv_bias, config.layer_norm_eps) == (4.0, True, 1e-6)
    assert len(config.channel_names) == 62 and config.channel_names[:3] == ["FP1", "FPZ", "FP2"]


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="Unknown EEGPT preset 'huge'"):
        EEGPTConfig.from_preset("huge")


def test_output_shape_is_patches_by_summary_tokens():
    model = EEGPTModel(TINY).eval()
    out = model(eeg_batch(3), torch.arange(58)).last_hidden_state
    assert out.shape == (3, 16, 4, 64)


def test_encoder_matches_the_reference_computation():
    weights = official_encoder_weights(TINY, seed=0)
    model = EEGPTModel(TINY).eval()
    model.load_state_dict(weights)
    eeg, ids = eeg_batch(2), torch.arange(58)
    with torch.no_grad():
        out = model(eeg, ids).last_hidden_state
    torch.testing.assert_close(out.double(), reference_eegpt(weights, TINY, eeg, ids), atol=1e-4, rtol=1e-4)


def test_input_scale_multiplies_the_mv_input_before_the_patch_embedding():
    weights = official_encoder_weights(TINY, seed=0)
    scaled = EEGPTModel(EEGPTConfig.from_preset("tiny", input_scale=100.0)).eval()
    scaled.load_state_dict(weights)
    eeg, ids = eeg_batch(2), torch.arange(58)
    with torch.no_grad():
        out = scaled(eeg, ids).last_hidden_state
    torch.testing.assert_close(out.double(), reference_eegpt(weights, TINY, eeg * 100.0, ids), atol=1e-4, rtol=1e-4)
    assert EEGPTConfig().input_scale == 1.0  # the released checkpoint reads mV as they are


def test_any_channel_subset_and_length_with_per_window_channel_ids():
    weights = official_encoder_weights(TINY, seed=0)
    model = EEGPTModel(TINY).eval()
    model.load_state_dict(weights)
    eeg = eeg_batch(2, channels=19, samples=640)
    ids = torch.stack([torch.randperm(62)[:19] for _ in range(2)])
    with torch.no_grad():
        out = model(eeg, ids).last_hidden_state
    assert out.shape == (2, 10, 4, 64)
    for i in range(2):
        expected = reference_eegpt(weights, TINY, eeg[i : i + 1], ids[i])
        torch.testing.assert_close(out[i : i + 1].double(), expected, atol=1e-4, rtol=1e-4)


def test_channel_identity_changes_the_output():
    model = EEGPTModel(TINY).eval()
    model.load_state_dict(official_encoder_weights(TINY, seed=0))
    eeg = eeg_batch(1)
    with torch.no_grad():
        first = model(eeg, torch.arange(58)).last_hidden_state
        shifted = model(eeg, torch.arange(4, 62)).last_hidden_state
    assert (first - shifted).abs().max() > 1e-2


def test_time_patches_are_encoded_independently():
    model = EEGPTModel(TINY).eval()
    eeg = eeg_batch(1)
    changed = eeg.clone()
    changed[..., 64:128] += 1.0
    with torch.no_grad():
        before = model(eeg, torch.arange(58)).last_hidden_state
        after = model(changed, torch.arange(58)).last_hidden_state
    assert torch.equal(before[:, 0], after[:, 0]) and torch.equal(before[:, 2:], after[:, 2:])
    assert not torch.allclose(before[:, 1], after[:, 1])


def test_official_lightning_checkpoint_loads_the_ema_target_encoder(tmp_path):
    path = tmp_path / "eegpt_mcae_58chs_4s_tiny.ckpt"
    state_dict = official_checkpoint(TINY, path)
    model = EEGPTModel.from_eegpt_checkpoint(path, TINY).eval()
    target = {k.removeprefix("target_encoder."): v for k, v in state_dict.items() if k.startswith("target_encoder.")}
    eeg, ids = eeg_batch(2), torch.arange(58)
    with torch.no_grad():
        out = model(eeg, ids).last_hidden_state
    torch.testing.assert_close(out.double(), reference_eegpt(target, TINY, eeg, ids), atol=1e-4, rtol=1e-4)
    assert torch.equal(model.summary_token, state_dict["target_encoder.summary_token"])


def test_bare_encoder_state_dict_converts_unchanged():
    weights = official_encoder_weights(TINY, seed=5)
    converted = convert_eegpt_checkpoint(weights, TINY)
    assert converted.keys() == weights.keys()
    assert all(torch.equal(converted[k], weights[k]) for k in weights)


def test_checkpoint_with_missing_key_is_refused():
    weights = official_encoder_weights(TINY, seed=0)
    del weights["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.mlp.fc2.bias'\]"):
        convert_eegpt_checkpoint(weights, TINY)


def test_checkpoint_with_unexpected_key_is_refused():
    weights = official_encoder_weights(TINY, seed=0)
    weights["blocks.2.norm1.weight"] = torch.ones(64)
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks.2.norm1.weight'\]"):
        convert_eegpt_checkpoint(weights, TINY)


def test_checkpoint_of_another_size_is_refused_with_shapes():
    weights = official_encoder_weights(EEGPTConfig.from_preset("little"), seed=0)
    with pytest.raises(ValueError, match=r"summary_token: checkpoint \(1, 4, 128\), model \(1, 4, 64\)"):
        convert_eegpt_checkpoint({k: v for k, v in weights.items() if not k.startswith("blocks.")}, TINY)


def test_lightning_checkpoint_without_target_encoder_is_refused():
    weights = {f"encoder.{k}": v for k, v in official_encoder_weights(TINY, seed=0).items()}
    with pytest.raises(ValueError, match="no encoder under 'target_encoder.'"):
        convert_eegpt_checkpoint({"state_dict": weights}, TINY)


@pytest.mark.parametrize(
    ("eeg", "ids", "message"),
    [
        (torch.zeros(58, 1024), torch.arange(58), r"eeg_values must be \(batch, channels, samples\)"),
        (torch.zeros(1, 58, 1000), torch.arange(58), "positive multiple of patch_size=64 samples, got 1000"),
        (torch.zeros(1, 58, 1024), torch.arange(19), r"channel_ids must have shape \(58,\) or \(1, 58\)"),
        (torch.zeros(1, 3, 1024), torch.tensor([0, 1, 62]), r"channel_ids must lie in \[0, 62\)"),
        (torch.zeros(1, 3, 1024), torch.tensor([0.0, 1.0, 2.0]), "channel_ids must be integer indices"),
    ],
)
def test_bad_encoder_input_is_refused(eeg, ids, message):
    with pytest.raises(ValueError, match=message):
        EEGPTModel(TINY)(eeg, ids)


def test_bfloat16_encoder_stays_within_bfloat16_tolerance():
    model = EEGPTModel(TINY).eval()
    model.load_state_dict(official_encoder_weights(TINY, seed=0))
    eeg, ids = eeg_batch(2), torch.arange(58)
    with torch.no_grad():
        full = model(eeg, ids).last_hidden_state
        half = model.to(torch.bfloat16)(eeg, ids).last_hidden_state
    assert half.dtype == torch.bfloat16
    # bfloat16 keeps 8 mantissa bits (0.4 % per rounding); two blocks of rounding stay within 2 %.
    assert (half.float() - full).norm() / full.norm() < 2e-2


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = EEGPTModel(TINY).train()
    eeg, ids = eeg_batch(2), torch.arange(58)
    model(eeg, ids).last_hidden_state.square().sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in model.blocks)
    model(eeg, ids).last_hidden_state.square().sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], msg=name)


def test_classifier_averages_every_summary_vector_then_applies_the_head():
    model = EEGPTForEmotionClassification(EEGPTConfig.from_preset("tiny", num_labels=7)).eval()
    eeg, ids = eeg_batch(3), torch.arange(58)
    with torch.no_grad():
        logits = model(eeg, ids).logits
        summary = model.eegpt(eeg, ids).last_hidden_state
    expected = summary.mean(dim=(1, 2)) @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(logits, expected)
    assert logits.shape == (3, 7)


def test_classifier_loss_is_cross_entropy():
    model = EEGPTForEmotionClassification(EEGPTConfig.from_preset("tiny", num_labels=7))
    labels = torch.tensor([0, 3, 6])
    out = model(eeg_batch(3), torch.arange(58), labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_trainer_scales_the_classifier_loss_for_gradient_accumulation(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = EEGPTForEmotionClassification(EEGPTConfig.from_preset("tiny", num_labels=7))
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))
    assert trainer.model_accepts_loss_kwargs is False


def test_classifier_round_trips_and_its_encoder_loads_alone(tmp_path):
    labels = {0: "happy", 1: "surprise", 2: "neutral", 3: "disgust", 4: "fear", 5: "sad", 6: "anger"}
    model = EEGPTForEmotionClassification(EEGPTConfig.from_preset("tiny", id2label=labels)).eval()
    model.save_pretrained(tmp_path)
    loaded = EEGPTForEmotionClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.num_labels == 7 and loaded.config.id2label[6] == "anger"
    eeg, ids = eeg_batch(1), torch.arange(58)
    with torch.no_grad():
        torch.testing.assert_close(loaded(eeg, ids).logits, model(eeg, ids).logits)
        encoder = EEGPTModel.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(encoder(eeg, ids).last_hidden_state, model.eegpt(eeg, ids).last_hidden_state)


def test_the_model_and_the_processor_name_the_same_electrodes_and_patches():
    # The two remote-code files stay self-contained (the Hub copies them flat), so each keeps its
    # own copy of what they share; the copies must agree.
    import modeling_e2llm
    import processing_e2llm

    assert modeling_e2llm.EEGPT_CHANNEL_NAMES == processing_e2llm.EEGPT_CHANNELS
    assert modeling_e2llm.EEGPTConfig().patch_size == processing_e2llm.PATCH_SIZE
