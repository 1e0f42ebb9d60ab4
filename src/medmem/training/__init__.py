"""Training shared by the generators: the loop, exact resume, logging, DDP (see `loop.py`)."""
