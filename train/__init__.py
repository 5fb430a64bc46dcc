"""E2LLM's training side: data preparation, stages 1-3, evaluation, publishing and the CLI.

Inference needs only `modeling_e2llm.py` and `processing_e2llm.py`; everything here builds
on them.
"""
