"""Selection strategies: pure functions from a scanned window of estimates to kept prompts."""

from service.selection.strategies import STRATEGIES, Candidates, Strategy, StrategyName, get

__all__ = ["STRATEGIES", "Candidates", "Strategy", "StrategyName", "get"]
