"""Scoring: rulebook -> points -> ratings -> scores -> credits, debits, ledger (METHOD.md §4, §6)."""

from pipeline.scoring.rulebook import Rulebook, from_dict, load_rulebook
from pipeline.scoring.score import ScoringResult, score_sites

__all__ = ["Rulebook", "ScoringResult", "from_dict", "load_rulebook", "score_sites"]
