"""Evaluation and publishing: the paper's metrics, `e2llm evaluate`, and the Hub folder with its model card."""
