import pytest

from train.tokenizer import (
    EEG_END_TOKEN_ID,
    EEG_START_TOKEN_ID,
    EEG_TOKEN_ID,
    QWEN3_ADDED_TOKENS,
    QWEN3_VOCAB_SIZE,
    build_demo_tokenizer,
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


# The demo's tokenizer


def test_demo_tokenizer_learns_the_words_of_its_texts(demo_tokenizer):
    assert 256 < len(demo_tokenizer) <= 400
    assert demo_tokenizer.tokenize(" frontal alpha asymmetry") == ["Ġfrontal", "Ġalpha", "Ġasymmetry"]
    # Text it never saw still encodes, byte by byte, and decodes back.
    text = "Ünseen wörds 42 ✓"
    assert demo_tokenizer.decode(demo_tokenizer(text).input_ids) == text
    # Qwen3's pre-tokenizer: digits one at a time.
    assert demo_tokenizer.tokenize("123") == ["1", "2", "3"]


def test_demo_tokenizer_has_qwen3s_special_tokens_then_the_eeg_tokens_last(demo_tokenizer):
    first = len(demo_tokenizer) - len(QWEN3_ADDED_TOKENS) - 3
    ids = demo_tokenizer.convert_tokens_to_ids([token for token, _ in QWEN3_ADDED_TOKENS] + ["<eeg>", "<eeg_start>", "<eeg_end>"])
    assert ids == list(range(first, len(demo_tokenizer)))
    assert demo_tokenizer.eos_token == "<|im_end|>" and demo_tokenizer.pad_token == "<|endoftext|>"
    encoded = demo_tokenizer("<|im_start|>user\nsee<eeg><eeg_start><eeg_end><|im_end|>").input_ids
    assert encoded[0] == ids[1] and encoded[-4:] == ids[-3:] + [ids[2]]
    assert demo_tokenizer.decode(encoded, skip_special_tokens=True) == "user\nsee"


def test_demo_tokenizer_learns_no_word_from_the_special_tokens(demo_tokenizer):
    vocabulary = demo_tokenizer.get_vocab()
    assert not any("im_start" in word or "eeg_" in word for word, i in vocabulary.items() if i < len(demo_tokenizer) - 29)


def test_demo_tokenizer_renders_the_processors_chat_template(demo_tokenizer, qwen3_tokenizer):
    from processing_e2llm import CHAT_TEMPLATE, E2LLMFeatureExtractor, E2LLMProcessor

    messages = [{"role": "user", "content": [{"type": "eeg"}, {"type": "text", "text": "Which emotion?"}]}]
    rendered = demo_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert demo_tokenizer.chat_template == CHAT_TEMPLATE
    assert rendered == "<|im_start|>user\n<eeg>Which emotion?<|im_end|>\n<|im_start|>assistant\n"
    processor = E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)
    assert processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == rendered


def test_demo_tokenizer_is_the_same_for_the_same_texts_and_saves(demo_tokenizer, demo_texts, tmp_path):
    from transformers import AutoTokenizer

    again = build_demo_tokenizer(demo_texts, vocab_size=400)
    assert again.get_vocab() == demo_tokenizer.get_vocab()
    demo_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(demo_texts[0]).input_ids == demo_tokenizer(demo_texts[0]).input_ids
    assert loaded.chat_template == demo_tokenizer.chat_template


def test_demo_tokenizer_refuses_a_size_without_room_for_bytes_and_special_tokens():
    with pytest.raises(ValueError, match="vocab_size 200 leaves no room for the 256 bytes and 29 added tokens"):
        build_demo_tokenizer(["some text"], vocab_size=200)
