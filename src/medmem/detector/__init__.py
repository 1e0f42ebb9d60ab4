"""A copy detector learned from the training set (issue 16): a small encoder trained per dataset with
a self-supervised contrastive loss (SimCLR's NT-Xent) on the augmentations a copy might carry, and an
exact top-k cosine-similarity search of its embeddings.

Reference: Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"
(SimCLR, arXiv:2002.05709): two augmented views per image, NT-Xent over 2B − 1 others, temperature τ.
Medical precedent: Dar et al. 2024 (copies found with a contrastive detector trained on the training data).
"""
