"""medmem: does a medical image generator copy its training images?"""

__version__ = "0.1.0"
