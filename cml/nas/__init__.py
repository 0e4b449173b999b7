"""Differentiable search of the head cell (DARTS; docs/method.md, "Head-cell search"): the search
space (`ops`, `cell`, `genotype`) kept apart from the search (`relax`, `hypergrad`, `search`).

A library: it imports nothing from the rest of cml but `cml.errors`. The program that runs a
search from the command line is `cml/head_search.py`."""
