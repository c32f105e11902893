"""Model lifecycle: the registry of transcription and note-writing models, their promotions (registry.py),
and the evaluation of transcription models on a golden set with the promotion gate (evaluation.py)."""
