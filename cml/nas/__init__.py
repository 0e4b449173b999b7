"""Differentiable search of the head cell (DARTS, METHOD.md section 6): the search space (`ops`,
`cell`, `genotype`) kept apart from the search (`relax`, `hypergrad`, `search`) and its CLI
pipeline (`run`)."""
