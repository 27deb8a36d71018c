"""Scores of fine-tuning tasks, computed as the reference scripts compute them.

  classification.py  accuracy, F1, Matthews correlation, Pearson, Spearman (GLUE)
  entities.py        entity-level precision / recall / F1 with conlleval's chunk rules (NER)
  squad.py           SQuAD v1.1 / v2.0 exact match and F1, as the official evaluate scripts

Pure Python and numpy: no framework, no TensorFlow, so a predictions file can be scored
anywhere (`python -m bertjax score`). The tests check each against an independent
implementation (scikit-learn, scipy, seqeval) or hand-worked cases.
"""
