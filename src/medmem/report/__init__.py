"""The study's figures and tables from the workflow's results."""
