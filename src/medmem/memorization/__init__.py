"""The study's memorization measure: for every query image, the training image it correlates with most."""

from medmem.memorization.search import SearchResult, highest_correlation

__all__ = ["SearchResult", "highest_correlation"]
