"""longmill train: hybrid rewards, warm-up SFT, phased GRPO/DAPO on TRL, and trainer backends (trl, verl).

Depends on ``datagen``, ``eval`` (extraction, metrics, judge, models) and ``curriculum`` (the manifest).
"""
