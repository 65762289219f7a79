"""longmill curriculum: length bins, difficulty, DAPO-style filtering, retrospective sampling, stages.

Depends on ``datagen`` (the schema) and ``eval`` (metrics, extraction, generation backends).
"""
