"""Selection strategies: pure functions from a scanned window of estimates to kept prompts."""

from service.selection.strategies import STRATEGIES, Candidates, Strategy, get

__all__ = ["STRATEGIES", "Candidates", "Strategy", "get"]
