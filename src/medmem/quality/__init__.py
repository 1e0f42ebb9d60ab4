"""Image quality of synthetic images: FID, KID and IS on torch-fidelity's Inception features."""
