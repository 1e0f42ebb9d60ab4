"""openai/guided-diffusion's UNet, vendored unchanged for tests (MIT licence, see LICENSE).

Source: https://github.com/openai/guided-diffusion at commit 22e0df8183507e13a7813f8d38d51b072ca1e67c,
files guided_diffusion/unet.py, nn.py, gaussian_diffusion.py and losses.py (verbatim); fp16_util.py
holds only the two functions unet.py imports from that file. Used by tests/test_unet_reference.py to
check medmem's network and ancestral sampler against the code the study ran.
"""
