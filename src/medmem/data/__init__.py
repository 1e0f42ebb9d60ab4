"""Dataset preparation: the study's preprocessing of BraTS and chest x-rays, and embedded phantoms."""
