"""The ``3dpe`` engine: track, align, encode, smooth tri-planes, render at the chosen pose, composite."""
