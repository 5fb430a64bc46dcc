from train.tokenizer import (
    EEG_END_TOKEN_ID,
    EEG_START_TOKEN_ID,
    EEG_TOKEN_ID,
    QWEN3_ADDED_TOKENS,
    QWEN3_VOCAB_SIZE,
    build_qwen3_tokenizer,
)


def test_ordinary_text_gets_qwen3_ids(qwen3_tokenizer):
    assert qwen3_tokenizer("Hello world").input_ids == [9707, 1879]
    # Qwen3 splits digits one at a time.
    assert qwen3_tokenizer("Hi 123").input_ids == [13048, 220, 16, 17, 18]


def test_qwen3_special_tokens_keep_their_ids(qwen3_tokenizer):
    ids = qwen3_tokenizer.convert_tokens_to_ids([token for token, _ in QWEN3_ADDED_TOKENS])
    assert ids == list(range(151643, 151669))
    assert qwen3_tokenizer.convert_tokens_to_ids("<think>") == 151667
    assert qwen3_tokenizer.eos_token == "<|im_end|>" and qwen3_tokenizer.eos_token_id == 151645
    assert qwen3_tokenizer.pad_token == "<|endoftext|>" and qwen3_tokenizer.pad_token_id == 151643


def test_eeg_tokens_follow_qwen3_inside_its_embedding(qwen3_tokenizer):
    ids = qwen3_tokenizer.convert_tokens_to_ids(["<eeg>", "<eeg_start>", "<eeg_end>"])
    assert ids == [EEG_TOKEN_ID, EEG_START_TOKEN_ID, EEG_END_TOKEN_ID] == [151669, 151670, 151671]
    assert len(qwen3_tokenizer) == 151672 <= QWEN3_VOCAB_SIZE
    # One token each, even glued to text, and dropped by skip_special_tokens.
    encoded = qwen3_tokenizer("see<eeg><eeg_start><eeg_end>").input_ids
    assert encoded[-3:] == [151669, 151670, 151671]
    assert qwen3_tokenizer.decode(encoded, skip_special_tokens=True) == "see"


def test_chatml_markers_are_single_tokens(qwen3_tokenizer):
    assert qwen3_tokenizer("<|im_start|>user\nHi<|im_end|>").input_ids == [151644, 872, 198, 13048, 151645]


def test_build_writes_a_cache_it_reloads(tmp_path):
    first = build_qwen3_tokenizer(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    second = build_qwen3_tokenizer(tmp_path / "tok")
    text = "Frontal alpha asymmetry rose; the person seems sad."
    assert first(text).input_ids == second(text).input_ids
