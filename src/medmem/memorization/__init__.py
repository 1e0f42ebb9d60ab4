"""The study's memorization measure: for every query image, the training image it correlates with most.

The search is `medmem.memorization.search.highest_correlation`; it is not imported here so that
reading result tables (the report) does not need torch.
"""
