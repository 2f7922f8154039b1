"""Thin protocol adapters over the DataPlane: OIP v2 (with binary tensors), KServe v1, plain JSON.

Each module parses its wire format into arrays, calls the core and encodes the answer; none
holds state of its own.
"""
