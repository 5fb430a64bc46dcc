"""Data: synthetic recordings, SEED-VII and other recordings, preparation into segments, and the QA sets."""
