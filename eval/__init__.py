"""longmill eval: answer extraction, metrics, the LLM judge, generation backends and reports.

``eval`` depends on ``datagen`` (the sample schema and the answer format) and nothing else in longmill;
``curriculum`` and ``train`` build on it (its scorers become the training reward).
"""
