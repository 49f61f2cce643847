"""Datasets shipped inside the engine package (package data, no code to import).

``mnist5k.npz`` is read by :func:`engine.data.load_dataset` ("mnist5k");
``make_mnist5k.py`` is the script that built it; ``README.md`` keeps the
attribution and describes the format.
"""
