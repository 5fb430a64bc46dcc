"""E2LLM: an EEGPT encoder, a two-layer MLP projector and a Qwen3 language model that reads EEG.

The model of "E²-LLM: Bridging Neural Signals and Interpretable Affective Analysis" (Ma, Lin,
Xie et al., 2026), written as one file so that it runs as Hugging Face Hub remote code. It imports
only torch and transformers.

Data flow, in the order of this file:

1. `EEGPTModel` (Wang et al., "EEGPT: Pretrained Transformer for Universal and Reliable
   Representation of EEG Signals", NeurIPS 2024) reads EEG windows (W, C, T) in mV at 256 Hz.
   Every 64-sample patch of every channel becomes one token (a linear patch embedding plus a learned
   embedding of the electrode's name); attention runs across channels within one time patch, with
   `embed_num` learned summary tokens appended; the summary tokens of the last layer are the output,
   (W, N = T / 64, embed_num, embed_dim).
2. `E2LLMMultiModalProjector` concatenates the embed_num summary vectors of each time patch
   (4 x 512 = 2048) and maps them with Linear -> GELU -> Linear to the language model's width: one
   EEG token per time patch, 16 per 4-second window (paper eq. 4-5).
3. `E2LLMModel` embeds the text, checks that the `<eeg>` placeholders and the EEG features agree
   in number, writes the features into the placeholders' embeddings, and runs the bare Qwen3 model.
4. `E2LLMForConditionalGeneration` adds the language-model head, the loss and generation:
   `generate()` encodes the EEG once per prompt, before it repeats the rows for beams and returned
   sequences, gives the EEG tokens to the prefill step and never again while decoding with the cache.

A saved model folder holds this file beside config.json, whose `auto_map` sends `AutoConfig`,
`AutoModel`, `AutoModelForCausalLM` and `AutoModelForImageTextToText` here, so
`AutoModel.from_pretrained(folder_or_repo, trust_remote_code=True)` gives a model that generates.

Precision: `model.to(torch.bfloat16)` (or `from_pretrained(..., dtype=torch.bfloat16)`) runs every
part in bfloat16; the EEG may stay float32, it is cast to the encoder's dtype on entry. The encoder's
bfloat16 output is within about 1 % (relative L2) of float32. bfloat16 pays off on GPUs and on CPUs
with bfloat16 matrix units (AMX, AVX512-BF16); elsewhere float32 is faster.
"""

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPast,
    BaseModelOutputWithPooling,
    CausalLMOutputWithPast,
    SequenceClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import torch_compilable_check
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

# The name of the KV cache, as a forward argument and an output field: `cache` from transformers
# 5.24 on, `past_key_values` before. The model speaks the installed version's; its forwards also
# take the old name, renamed by transformers' own `deprecate_kwarg` as Qwen3's forward does.
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

# The 62 electrode names EEGPT's channel embedding is indexed by, in the official order.
EEGPT_CHANNEL_NAMES = (
    "FP1", "FPZ", "FP2", "AF7", "AF3", "AF4", "AF8", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6",
    "F8", "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "T7", "C5", "C3", "C1", "CZ",
    "C2", "C4", "C6", "T8", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6", "TP8", "P7", "P5",
    "P3", "P1", "PZ", "P2", "P4", "P6", "P8", "PO7", "PO5", "PO3", "POZ", "PO4", "PO6", "PO8", "O1",
    "OZ", "O2",
)  # fmt: skip

# The sizes of the official EEGPT release (embed_dim, embed_num, depth, num_heads); "large" is the
# released checkpoint `eegpt_mcae_58chs_4s_large4E.ckpt`. "tiny" and "base" name tiny2 and base2,
# the smallest and middle sizes with 4 summary tokens, as the projector expects.
EEGPT_PRESETS = {
    "tiny1": dict(embed_dim=64, embed_num=1, depth=2, num_heads=4),
    "tiny2": dict(embed_dim=64, embed_num=4, depth=2, num_heads=4),
    "tiny3": dict(embed_dim=64, embed_num=4, depth=8, num_heads=4),
    "little": dict(embed_dim=128, embed_num=4, depth=8, num_heads=4),
    "base1": dict(embed_dim=256, embed_num=1, depth=6, num_heads=4),
    "base2": dict(embed_dim=256, embed_num=4, depth=8, num_heads=4),
    "base3": dict(embed_dim=512, embed_num=1, depth=6, num_heads=8),
    "large": dict(embed_dim=512, embed_num=4, depth=8, num_heads=8),
}
EEGPT_PRESETS["tiny"] = EEGPT_PRESETS["tiny2"]
EEGPT_PRESETS["base"] = EEGPT_PRESETS["base2"]

_AUTO_MAP = {
    "AutoConfig": "modeling_e2llm.E2LLMConfig",
    "AutoModel": "modeling_e2llm.E2LLMForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_e2llm.E2LLMForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_e2llm.E2LLMForConditionalGeneration",
}


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------


def _check_field(config: PreTrainedConfig, name: str, kind: type, low, high) -> None:
    """Refuse a config field of the wrong type or outside [low, high] (an integer) or (low, high] (a number)."""
    value = getattr(config, name)
    where = f"{type(config).__name__}.{name}"
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r} ({type(value).__name__})")
        return
    number = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not number:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{where} must be {expected}, got {value!r} ({type(value).__name__})")
    inside = low <= value <= high if kind is int else low < value <= high
    if not inside:
        interval = f"from {low} to {high}" if kind is int else f"above {low} and at most {high}"
        raise ValueError(f"{where} must be {interval}, got {value!r}")


# Each field's type and range: far beyond any EEGPT release, a size would only hang the
# machine or exhaust its memory, and zero or negative sizes build no model at all.
_EEGPT_FIELD_LIMITS = (
    ("patch_size", int, 1, 1024),
    ("embed_dim", int, 1, 16384),
    ("embed_num", int, 1, 256),
    ("depth", int, 1, 256),
    ("num_heads", int, 1, 1024),
    ("mlp_ratio", float, 0, 64),
    ("qkv_bias", bool, None, None),
    ("layer_norm_eps", float, 0, 1),
    ("initializer_range", float, 0, 10),
    ("input_scale", float, 0, 1e6),
)


class EEGPTConfig(PreTrainedConfig):
    r"""Configuration of the EEGPT encoder. The defaults are EEGPT "large", the released checkpoint.

    Args:
        patch_size (`int`, defaults to 64): samples per patch (250 ms at 256 Hz).
        embed_dim (`int`, defaults to 512): width of every token.
        embed_num (`int`, defaults to 4): learned summary tokens per time patch; their final states
            are the encoder's output.
        depth (`int`, defaults to 8): transformer blocks.
        num_heads (`int`, defaults to 8): attention heads.
        mlp_ratio (`float`, defaults to 4.0): MLP hidden width over `embed_dim`.
        qkv_bias (`bool`, defaults to True): bias on the query/key/value projection.
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon.
        channel_names (`list[str]`): the electrode vocabulary the channel embedding is indexed by;
            `channel_ids` are positions in this list. Defaults to EEGPT's 62 names.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal initialisation.
        input_scale (`float`, defaults to 1.0): the EEG (in mV) is multiplied by this before the patch
            embedding. The released checkpoint reads mV as they are (1.0). An encoder trained from
            random weights needs the patch embedding comparable to the electrode embedding it is
            added to: far below it, the EEG barely moves a token (1.0: EEG of tens of uV is about
            0.01 mV); far above it, each token's LayerNorm keeps the patch's spectral shape but not
            its power. A tiny encoder (initializer_range 0.1) learned best at about 3.
            The model's inputs stay in mV either way.
        num_labels / id2label: used by `EEGPTForEmotionClassification`.
    """

    model_type = "eegpt"
    attribute_map = {"hidden_size": "embed_dim", "num_hidden_layers": "depth", "num_attention_heads": "num_heads"}

    patch_size: int = 64
    embed_dim: int = 512
    embed_num: int = 4
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    channel_names: list[str] | tuple[str, ...] | None = None
    initializer_range: float = 0.02
    input_scale: float = 1.0

    def __post_init__(self, **kwargs):
        if self.channel_names is None:
            self.channel_names = list(EEGPT_CHANNEL_NAMES)
        if isinstance(self.channel_names, str) or not all(isinstance(n, str) and n for n in self.channel_names):
            raise ValueError(f"EEGPTConfig.channel_names must be a list of electrode names, got {self.channel_names!r}")
        self.channel_names = list(self.channel_names)
        if not self.channel_names or len(set(self.channel_names)) != len(self.channel_names):
            raise ValueError(
                f"EEGPTConfig.channel_names must name at least one electrode, each once, got {self.channel_names}"
            )
        for name, kind, low, high in _EEGPT_FIELD_LIMITS:
            _check_field(self, name, kind, low, high)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim must be divisible by num_heads, got embed_dim={self.embed_dim}, num_heads={self.num_heads}"
            )
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str = "large", **kwargs) -> "EEGPTConfig":
        """The configuration of an official EEGPT size: "large" (the released checkpoint, about 25.3M
        parameters), "base" (= "base2"), "little", "tiny" (= "tiny2"), or any of "tiny1", "tiny3",
        "base1", "base3". Keyword arguments override single fields (e.g. `num_labels=7`)."""
        if name not in EEGPT_PRESETS:
            raise ValueError(f"Unknown EEGPT preset {name!r}; expected one of {sorted(EEGPT_PRESETS)}")
        return cls(**{**EEGPT_PRESETS[name], **kwargs})


class E2LLMConfig(PreTrainedConfig):
    r"""Configuration of E2LLM: an EEGPT encoder, a projector and a Qwen3 language model.

    Args:
        eeg_config (`EEGPTConfig` or `dict`): the encoder; defaults to EEGPT "large".
        text_config (`Qwen3Config` or `dict`): the language model; defaults to `Qwen3Config()`.
        projector_hidden_act (`str`, defaults to "gelu"): activation between the projector's layers.
        projector_bias (`bool`, defaults to True): biases in the projector's layers.
        eeg_token_id (`int`, defaults to 151669): `<eeg>`, one placeholder per EEG token.
        eeg_start_token_id (`int`, defaults to 151670): `<eeg_start>`, opens each window's tokens.
        eeg_end_token_id (`int`, defaults to 151671): `<eeg_end>`, closes them.
        tie_word_embeddings (`bool`): copied from `text_config` (Qwen3 small sizes tie the head to
            the input embeddings) unless given.
    """

    model_type = "e2llm"
    sub_configs_defaults = {
        "eeg_config": SubConfigSpec(config_class=EEGPTConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
    }

    eeg_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_hidden_act: str = "gelu"
    projector_bias: bool = True
    eeg_token_id: int = 151669
    eeg_start_token_id: int = 151670
    eeg_end_token_id: int = 151671
    tie_word_embeddings: bool | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Without this the head would be silently left untied from the embeddings it shares in Qwen3.
        if self.tie_word_embeddings is None:
            self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        # Saved entries may point at this file on the Hub ("repo--modeling_e2llm.X"); an entry
        # naming any other file would send a reader of the saved folder to code it never shipped.
        saved = getattr(self, "auto_map", None) or {}
        own = {k: v for k, v in saved.items() if isinstance(v, str) and v.split("--")[-1].startswith("modeling_e2llm.")}
        self.auto_map = {**_AUTO_MAP, **own}
        self._check_fields()

    def _check_fields(self) -> None:
        if self.projector_hidden_act not in ACT2FN:
            raise ValueError(
                f"E2LLMConfig.projector_hidden_act must be one of {sorted(ACT2FN)}, got {self.projector_hidden_act!r}"
            )
        for name in ("projector_bias", "tie_word_embeddings"):
            _check_field(self, name, bool, None, None)
        vocab_size = self.text_config.vocab_size
        names = ("eeg_token_id", "eeg_start_token_id", "eeg_end_token_id")
        for name in names:
            _check_field(self, name, int, 0, vocab_size - 1)
        if len({getattr(self, name) for name in names}) != len(names):
            raise ValueError(
                "E2LLMConfig.eeg_token_id, eeg_start_token_id and eeg_end_token_id must differ, got "
                + ", ".join(str(getattr(self, name)) for name in names)
            )


# ----------------------------------------------------------------------------------------------
# EEGPT encoder
# ----------------------------------------------------------------------------------------------


class EEGPTPatchProjection(nn.Conv2d):
    """The official `Conv2d(1, D, (1, P), stride (1, P))`, applied to patches (..., P) as the one linear
    map per patch it is (kernel equal to stride), which is faster than the convolution.

    Its own forward reads its weight, so that hooks on the module (accelerate's offloading, which
    loads the weight only while the module runs) see every use of it.
    """

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.linear(patches, self.weight.flatten(1), self.bias)  # (..., D)


class EEGPTPatchEmbedding(nn.Module):
    """Cuts each channel into patches of `patch_size` samples and embeds each patch linearly.

    Keeps the official convolution parameter (`proj`) so checkpoints load as they are.
    """

    def __init__(self, config: EEGPTConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = EEGPTPatchProjection(
            1, config.embed_dim, kernel_size=(1, config.patch_size), stride=(1, config.patch_size)
        )

    def forward(self, eeg_values: torch.Tensor) -> torch.Tensor:
        patches = eeg_values.unflatten(-1, (-1, self.patch_size))  # (B, C, N, P)
        return self.proj(patches).transpose(1, 2)  # (B, N, C, D)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention written out, for `attn_implementation="eager"`: (B, H, L, hd) in, the output
    (B, L, H, hd) and the attention weights (B, H, L, L) out. EEGPT attends unmasked: `attention_mask`
    is always None, taken only because every attention function is called with it."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class EEGPTAttention(nn.Module):
    """Multi-head self-attention over the channel and summary tokens of one time patch, unmasked,
    computed by the implementation `config._attn_implementation` names (eager, sdpa, flex, flash)."""

    def __init__(self, config: EEGPTConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_heads
        self.head_dim = config.embed_dim // config.num_heads
        self.scaling = self.head_dim**-0.5
        # Every token of a time patch sees every other: the attention functions read this flag.
        self.is_causal = False
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim, bias=config.qkv_bias)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden_states.shape  # (B*N, L, D)
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B*N, H, L, hd)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        attended, _ = attention(self, query, key, value, None, scaling=self.scaling, dropout=0.0)  # (B*N, L, H, hd)
        return self.proj(attended.reshape(batch, length, width))  # (B*N, L, D)


class EEGPTMLP(nn.Module):
    """fc1 -> GELU (exact, erf) -> fc2, widening by `mlp_ratio`."""

    def __init__(self, config: EEGPTConfig):
        super().__init__()
        hidden = int(config.embed_dim * config.mlp_ratio)
        self.fc1 = nn.Linear(config.embed_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, config.embed_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class EEGPTBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, config: EEGPTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.attn = EEGPTAttention(config)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.mlp = EEGPTMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states))
        return hidden_states + self.mlp(self.norm2(hidden_states))


class EEGPTPreTrainedModel(PreTrainedModel):
    config: EEGPTConfig
    base_model_prefix = "eegpt"
    main_input_name = "eeg_values"
    input_modalities = ("eeg",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["EEGPTBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, EEGPTModel):
            init.trunc_normal_(module.summary_token, std=std)


class EEGPTModel(EEGPTPreTrainedModel):
    r"""The EEGPT encoder (Wang et al., NeurIPS 2024), computed as the official implementation does.

    Each channel's signal is cut into patches of `patch_size` samples (64 = 250 ms at 256 Hz); every
    patch becomes a token, the patch embedding plus the embedding of its electrode name. There is no
    temporal position encoding: attention is spatial, over the C channel tokens of one time patch
    plus `embed_num` learned summary tokens appended after them, through `depth` pre-norm blocks.
    The final states of the summary tokens, after a last LayerNorm, are the output.

    The released checkpoint was pretrained on 58 electrodes, 4-second windows at 256 Hz, in mV,
    average-referenced; any subset of the 62-name vocabulary and any length that is a multiple of
    `patch_size` runs.
    """

    def __init__(self, config: EEGPTConfig):
        super().__init__(config)
        self.summary_token = nn.Parameter(torch.zeros(1, config.embed_num, config.embed_dim))
        self.patch_embed = EEGPTPatchEmbedding(config)
        self.chan_embed = nn.Embedding(len(config.channel_names), config.embed_dim)
        self.blocks = nn.ModuleList([EEGPTBlock(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.chan_embed

    def _check_inputs(self, eeg_values: torch.Tensor, channel_ids: torch.Tensor) -> None:
        if eeg_values.dim() != 3:
            raise ValueError(f"eeg_values must be (batch, channels, samples), got shape {tuple(eeg_values.shape)}")
        batch, channels, samples = eeg_values.shape
        patch = self.config.patch_size
        if samples == 0 or samples % patch:
            raise ValueError(
                f"eeg_values must hold a positive multiple of patch_size={patch} samples, got {samples}"
            )
        if channel_ids.dtype.is_floating_point or channel_ids.dtype == torch.bool:
            raise ValueError(f"channel_ids must be integer indices into channel_names, got dtype {channel_ids.dtype}")
        if channel_ids.shape not in ((channels,), (batch, channels)):
            raise ValueError(
                f"channel_ids must have shape ({channels},) or ({batch}, {channels}) to match eeg_values "
                f"{tuple(eeg_values.shape)}, got {tuple(channel_ids.shape)}"
            )
        vocabulary = len(self.config.channel_names)
        torch_compilable_check(
            ((channel_ids >= 0) & (channel_ids < vocabulary)).all(),
            lambda: f"channel_ids must lie in [0, {vocabulary}) (positions in config.channel_names), "
            f"got values from {int(channel_ids.min())} to {int(channel_ids.max())}",
        )

    @can_return_tuple
    def forward(
        self,
        eeg_values: torch.Tensor,
        channel_ids: torch.Tensor,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        r"""
        Args:
            eeg_values (`torch.FloatTensor` of shape `(batch, channels, samples)`): EEG in mV,
                average-referenced, at 256 Hz; `samples` a multiple of `patch_size`.
            channel_ids (`torch.LongTensor` of shape `(channels,)` or `(batch, channels)`): the
                position of each row's electrode in `config.channel_names`.
            output_hidden_states (`bool`, *optional*): also return every block's input and the last
                block's output, each (batch * N, channels + embed_num, embed_dim).

        Returns:
            `BaseModelOutput` whose `last_hidden_state` is (batch, N = samples / patch_size,
            embed_num, embed_dim).
        """
        self._check_inputs(eeg_values, channel_ids)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        batch = eeg_values.shape[0]
        if self.config.input_scale != 1.0:
            eeg_values = eeg_values * self.config.input_scale
        hidden_states = self.patch_embed(eeg_values.to(self.patch_embed.proj.weight.dtype))  # (B, N, C, D)
        num_patches = hidden_states.shape[1]
        channel_embeddings = self.chan_embed(channel_ids.to(hidden_states.device))  # (C, D) or (B, C, D)
        if channel_embeddings.dim() == 3:
            channel_embeddings = channel_embeddings.unsqueeze(1)  # (B, 1, C, D)
        hidden_states = (hidden_states + channel_embeddings).flatten(0, 1)  # (B*N, C, D)
        summary = self.summary_token.expand(hidden_states.shape[0], -1, -1)  # (B*N, S, D)
        hidden_states = torch.cat([hidden_states, summary], dim=1)  # (B*N, C + S, D)

        all_hidden_states = () if output_hidden_states else None
        for block in self.blocks:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states = block(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        summary = self.norm(hidden_states[:, -self.config.embed_num :])  # (B*N, S, D)
        summary = summary.reshape(batch, num_patches, self.config.embed_num, self.config.embed_dim)  # (B, N, S, D)
        return BaseModelOutput(last_hidden_state=summary, hidden_states=all_hidden_states)

    @classmethod
    def from_eegpt_checkpoint(
        cls, path_or_state_dict: str | os.PathLike | dict, config: EEGPTConfig | None = None
    ) -> "EEGPTModel":
        """An `EEGPTModel` holding the weights of an official EEGPT checkpoint (see
        `convert_eegpt_checkpoint`); `config` defaults to EEGPT "large"."""
        config = config if config is not None else EEGPTConfig()
        model = cls(config)
        model.load_state_dict(convert_eegpt_checkpoint(path_or_state_dict, config))
        return model


def convert_eegpt_checkpoint(
    path_or_state_dict: str | os.PathLike | dict, config: EEGPTConfig | None = None
) -> dict[str, torch.Tensor]:
    """Maps an official EEGPT checkpoint onto `EEGPTModel`'s parameter names.

    Args:
        path_or_state_dict: a path to the official Lightning checkpoint (e.g.
            `eegpt_mcae_58chs_4s_large4E.ckpt`, read with `torch.load(weights_only=True)`), or its
            loaded contents: a dict with `state_dict` whose encoder is the EMA copy under
            `target_encoder.` (the copy the EEGPT authors use downstream; `encoder.`, `predictor.`
            and `reconstructor.` are left out), or a bare encoder state dict.
        config: the encoder's configuration, defaults to EEGPT "large".

    Returns:
        A state dict for `EEGPTModel(config).load_state_dict`.

    Raises:
        ValueError: naming missing or unexpected keys and shape mismatches.
    """
    config = config if config is not None else EEGPTConfig()
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        checkpoint = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    else:
        checkpoint = path_or_state_dict
    if not isinstance(checkpoint, dict):
        raise ValueError(f"Expected an EEGPT checkpoint dict or a path to one, got {type(checkpoint).__name__}")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError(f"The checkpoint's state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    prefix = "target_encoder."
    if any(key.startswith(prefix) for key in state_dict):
        state_dict = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    elif "state_dict" in checkpoint:
        raise ValueError(
            f"The checkpoint's state_dict holds no encoder under {prefix!r}; its keys start with "
            f"{sorted({key.split('.')[0] + '.' for key in state_dict})}"
        )

    not_tensors = {key: type(value).__name__ for key, value in state_dict.items() if not isinstance(value, torch.Tensor)}
    if not_tensors:
        shown = dict(list(not_tensors.items())[:5])
        raise ValueError(f"The EEGPT checkpoint holds {len(not_tensors)} value(s) that are not tensors: {shown}")
    with torch.device("meta"):
        expected = EEGPTModel(config).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            "The EEGPT checkpoint does not match the encoder configuration "
            f"(embed_dim={config.embed_dim}, embed_num={config.embed_num}, depth={config.depth}, "
            f"patch_size={config.patch_size}, {len(config.channel_names)} channels): "
            f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {mismatched}"
        )
    return {key: state_dict[key] for key in expected}


class EEGPTForEmotionClassification(EEGPTPreTrainedModel):
    r"""EEGPT with a linear emotion head: the encoder's N x embed_num summary vectors are averaged
    and mapped to `config.num_labels` logits (stage 1 of E2LLM's training). The encoder is at
    `.eegpt`; `config.id2label` names the classes.
    """

    # The loss is the batch mean, so the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: EEGPTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.eegpt = EEGPTModel(config)
        self.classifier = nn.Linear(config.embed_dim, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        eeg_values: torch.Tensor,
        channel_ids: torch.Tensor,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        Args:
            eeg_values (`(batch, channels, samples)`), channel_ids (`(channels,)` or
                `(batch, channels)`): as `EEGPTModel.forward`.
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices in
                `[0, num_labels)`; when given, the cross-entropy loss is returned.

        Returns:
            `SequenceClassifierOutput` with `logits` (batch, num_labels) and `loss` when labels are given.
        """
        outputs = self.eegpt(eeg_values, channel_ids, **kwargs)
        pooled = outputs.last_hidden_state.mean(dim=(1, 2))  # (B, D)
        logits = self.classifier(pooled)  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device).view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


# ----------------------------------------------------------------------------------------------
# E2LLM
# ----------------------------------------------------------------------------------------------


@dataclass
class E2LLMModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    `BaseModelOutputWithPast` (last_hidden_state, the KV cache, hidden_states, attentions) plus:

    eeg_hidden_states (`(windows, N, hidden)`, *optional*): the projected EEG tokens written into
        the `<eeg>` placeholders, when EEG was given.
    """

    eeg_hidden_states: torch.Tensor | None = None


@dataclass
class E2LLMCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    `CausalLMOutputWithPast` (loss over the positions whose label is not -100, logits, the KV cache,
    hidden_states, attentions) plus `eeg_hidden_states` as in `E2LLMModelOutputWithPast`.
    """

    eeg_hidden_states: torch.Tensor | None = None


class E2LLMMultiModalProjector(nn.Module):
    """Maps the embed_num summary vectors of one time patch, concatenated, to one LLM token:
    Linear(embed_num * embed_dim, hidden) -> GELU -> Linear(hidden, hidden)."""

    def __init__(self, config: E2LLMConfig):
        super().__init__()
        eeg_width = config.eeg_config.embed_num * config.eeg_config.embed_dim
        text_width = config.text_config.hidden_size
        self.linear_1 = nn.Linear(eeg_width, text_width, bias=config.projector_bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_width, text_width, bias=config.projector_bias)

    def forward(self, eeg_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(eeg_features)))


class E2LLMPreTrainedModel(PreTrainedModel):
    config: E2LLMConfig
    base_model_prefix = "model"
    input_modalities = ("eeg", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["EEGPTBlock", "Qwen3DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def _init_weights(self, module):
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)


class E2LLMModel(E2LLMPreTrainedModel):
    r"""EEGPT encoder, projector and bare Qwen3 model. EEG windows are encoded, projected to one
    LLM token per time patch and written, in order, into the `<eeg>` placeholders of the text.
    """

    def __init__(self, config: E2LLMConfig):
        super().__init__(config)
        self.eeg_encoder = EEGPTModel(config.eeg_config)
        self.projector = E2LLMMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    @can_return_tuple
    def get_eeg_features(
        self, eeg_values: torch.Tensor, eeg_channel_ids: torch.Tensor, **kwargs
    ) -> BaseModelOutputWithPooling:
        """Encodes EEG windows (W, C, T) in mV at 256 Hz with channel ids (W, C) or (C,).

        Returns the encoder's output with the projected EEG tokens added: `last_hidden_state` holds
        the summary vectors (W, N = T / patch_size, embed_num, embed_dim), `pooler_output` the EEG
        tokens the `<eeg>` placeholders receive (W, N, hidden); `hidden_states` as the encoder gives
        them when `output_hidden_states=True` is passed.
        """
        if eeg_channel_ids is None:
            raise ValueError("eeg_values came without eeg_channel_ids; pass both (see the processor's output)")
        outputs = self.eeg_encoder(eeg_values, eeg_channel_ids, return_dict=True, **kwargs)
        summary = outputs.last_hidden_state  # (W, N, S, D)
        eeg_tokens = self.projector(summary.flatten(2).to(self.projector.linear_1.weight.dtype))  # (W, N, hidden)
        return BaseModelOutputWithPooling(
            last_hidden_state=summary, pooler_output=eeg_tokens, hidden_states=outputs.hidden_states
        )

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        eeg_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The (batch, sequence) boolean mask of the `<eeg>` placeholders, found in `input_ids` or, without
        them, as the `<eeg>` embedding in `inputs_embeds`. With `eeg_features` ((windows, N, hidden) or
        any shape ending in hidden), checks that the placeholders and the EEG tokens agree in number."""
        if input_ids is not None:
            mask = input_ids == self.config.eeg_token_id
        else:
            eeg_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.eeg_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == eeg_embedding).all(-1)
        if eeg_features is not None:

            def mismatch() -> str:
                found = eeg_features.numel() // eeg_features.shape[-1]
                windows = eeg_features.dim() == 3
                detail = f" ({eeg_features.shape[0]} windows x {eeg_features.shape[1]} tokens each)" if windows else ""
                return f"EEG features and <eeg> tokens do not match, tokens: {int(mask.sum())}, features: {found}{detail}"

            torch_compilable_check(mask.sum() * eeg_features.shape[-1] == eeg_features.numel(), mismatch)
        return mask

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache", raise_if_both_names=True)
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        eeg_values: torch.Tensor | None = None,
        eeg_channel_ids: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> E2LLMModelOutputWithPast:
        r"""
        Args:
            input_ids (`(batch, sequence)`): token ids; each EEG window appears as `<eeg_start>`,
                N x `<eeg>`, `<eeg_end>` (the processor expands them).
            attention_mask (`(batch, sequence)`, *optional*): 1 for tokens, 0 for padding.
            eeg_values (`(windows, channels, samples)` float, *optional*): every window of the
                batch, in the order their placeholders appear, sample by sample; mV, 256 Hz.
            eeg_channel_ids (`(windows, channels)` or `(channels,)`): positions in
                `config.eeg_config.channel_names`.
            cache (`Cache`, *optional*): the KV cache (`past_key_values`, its name before
                transformers 5.24, is renamed to it).
            mm_encoder_outputs (`dict`, *optional*): EEG encoded beforehand, `{"eeg": get_eeg_features(...)}`,
                in place of `eeg_values`; its `pooler_output` fills the placeholders in order.
                `generate()` encodes the EEG this way, once per prompt.

        Raises:
            ValueError: when the `<eeg>` placeholders and the EEG tokens differ in number, or the
                text holds `<eeg>` placeholders but no EEG came (outside cached decoding).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        encoded = (mm_encoder_outputs or {}).get("eeg")
        if eeg_values is not None:
            if encoded is not None:
                raise ValueError("Pass the EEG once: as eeg_values or as mm_encoder_outputs['eeg'], not both")
            encoded = self.get_eeg_features(eeg_values, eeg_channel_ids, return_dict=True)
        eeg_features = None if encoded is None else encoded.pooler_output
        if eeg_features is not None:
            eeg_mask = self.get_placeholder_mask(input_ids, inputs_embeds, eeg_features)
            inputs_embeds = inputs_embeds.masked_scatter(
                eeg_mask.unsqueeze(-1).to(inputs_embeds.device),
                eeg_features.to(inputs_embeds.device, inputs_embeds.dtype),
            )
        else:
            eeg_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
            # After the prefill step the cache holds the EEG, and the placeholders have left the input.
            missing = eeg_mask.any()
            if cache is not None:
                missing = missing & (torch.as_tensor(cache.get_seq_length(), device=missing.device) == 0)
            torch_compilable_check(
                ~missing,
                lambda: f"The input holds {int(eeg_mask.sum())} <eeg> tokens but no eeg_values were given; pass "
                "the EEG windows (eeg_values, eeg_channel_ids) the placeholders stand for",
            )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        return E2LLMModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            eeg_hidden_states=eeg_features,
        )


class E2LLMForConditionalGeneration(E2LLMPreTrainedModel, GenerationMixin):
    r"""E2LLM with the language-model head: answers questions about EEG in text.

    Modules: `model.eeg_encoder` (EEGPTModel), `model.projector`, `model.language_model` (the bare
    Qwen3 model) and `lm_head`.
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: E2LLMConfig):
        super().__init__(config)
        self.model = E2LLMModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_parts(
        cls, eeg_encoder: EEGPTModel, language_model: PreTrainedModel, **config_kwargs
    ) -> "E2LLMForConditionalGeneration":
        """Builds E2LLM around an (already trained) `EEGPTModel` and a Qwen3 causal LM, keeping
        their weights and modules; only the projector is new (randomly initialised, in the language
        model's dtype and device). `config_kwargs` go to `E2LLMConfig` (e.g. token ids)."""
        if not isinstance(eeg_encoder, EEGPTModel):
            raise ValueError(f"eeg_encoder must be an EEGPTModel, got {type(eeg_encoder).__name__}")
        if not hasattr(language_model, "lm_head") or not hasattr(language_model, "model"):
            raise ValueError(
                f"language_model must be a causal LM with .model and .lm_head (Qwen3ForCausalLM), "
                f"got {type(language_model).__name__}"
            )
        config = E2LLMConfig(eeg_config=eeg_encoder.config, text_config=language_model.config, **config_kwargs)
        with torch.device("meta"):
            model = cls(config)
        model.model.eeg_encoder = eeg_encoder
        model.model.language_model = language_model.model
        model.lm_head = language_model.lm_head
        projector = E2LLMMultiModalProjector(config)
        projector.apply(model._init_weights)
        model.model.projector = projector.to(language_model.device, language_model.dtype)
        model.tie_weights()
        return model

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_eeg_features(
        self, eeg_values: torch.Tensor, eeg_channel_ids: torch.Tensor, **kwargs
    ) -> BaseModelOutputWithPooling:
        return self.model.get_eeg_features(eeg_values, eeg_channel_ids, **kwargs)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache", raise_if_both_names=True)
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        eeg_values: torch.Tensor | None = None,
        eeg_channel_ids: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> E2LLMCausalLMOutputWithPast:
        r"""
        Args: as `E2LLMModel.forward`, plus
            labels (`(batch, sequence)`, *optional*): target ids, -100 where no loss is taken (the
                prompt, the EEG placeholders, padding); shifted inside the loss.
            logits_to_keep (`int` or tensor): the positions to compute logits for, as transformers'
                causal LMs take it: the last `logits_to_keep` (0 = all), a 1-D index tensor, or a
                boolean (batch, sequence) mask whose logits come back flattened. With kept positions
                and labels, pass the matching `shift_labels` (the loss's own keyword).

        Returns:
            `E2LLMCausalLMOutputWithPast` with `logits` and, when labels are given, `loss` (the
            model's `loss_function`: mean over the targets, or their sum over `num_items_in_batch`).
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            eeg_values=eeg_values,
            eeg_channel_ids=eeg_channel_ids,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return E2LLMCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            eeg_hidden_states=outputs.eeg_hidden_states,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        *args,
        inputs_embeds: torch.Tensor | None = None,
        eeg_values: torch.Tensor | None = None,
        eeg_channel_ids: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        # The cache and the rest pass through under the names the installed transformers uses.
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, *args, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        # The cache already holds the EEG after the prefill step: give it there only.
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["eeg_values"] = eeg_values
            model_inputs["eeg_channel_ids"] = eeg_channel_ids
            model_inputs["mm_encoder_outputs"] = mm_encoder_outputs
        return model_inputs

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **model_kwargs,
    ) -> tuple[torch.LongTensor, dict]:
        """Encodes the EEG once per prompt, then lets `generate()` repeat the rows for beams and returned
        sequences. It repeats every input along dim 0 row by row, but `eeg_values` is indexed by window,
        so the EEG tokens are repeated here, with the rows whose placeholders they fill."""
        eeg_values = model_kwargs.pop("eeg_values", None)
        eeg_channel_ids = model_kwargs.pop("eeg_channel_ids", None)
        encoded = dict(model_kwargs.pop("mm_encoder_outputs", None) or {})
        if eeg_values is not None:
            if encoded.get("eeg") is not None:
                raise ValueError("Pass the EEG once: as eeg_values or as mm_encoder_outputs['eeg'], not both")
            encoded["eeg"] = self.model.get_eeg_features(eeg_values, eeg_channel_ids, return_dict=True)
        if encoded.get("eeg") is not None and expand_size > 1:
            inputs_embeds = model_kwargs.get("inputs_embeds")
            ids = input_ids if inputs_embeds is None else None
            features = encoded["eeg"].pooler_output  # (W, N, hidden)
            counts = self.model.get_placeholder_mask(ids, inputs_embeds, features).sum(-1).tolist()
            rows = torch.arange(sum(counts), device=features.device).split(counts)
            order = torch.cat([row.repeat(expand_size) for row in rows])  # [A, B] -> [A, B, A, B] per prompt
            tokens = features.reshape(-1, features.shape[-1])[order]
            encoded["eeg"] = BaseModelOutputWithPooling(pooler_output=tokens.view(-1, *features.shape[1:]))
        if encoded:
            model_kwargs["mm_encoder_outputs"] = encoded
        return super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )


E2LLMConfig.register_for_auto_class("AutoConfig")
E2LLMForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = [
    "EEGPT_CHANNEL_NAMES",
    "EEGPT_PRESETS",
    "EEGPTConfig",
    "EEGPTModel",
    "EEGPTForEmotionClassification",
    "convert_eegpt_checkpoint",
    "E2LLMConfig",
    "E2LLMMultiModalProjector",
    "E2LLMPreTrainedModel",
    "E2LLMModel",
    "E2LLMForConditionalGeneration",
]
