"""`medmem audit`: any generator's samples against its training images, in the formats they are kept in."""
