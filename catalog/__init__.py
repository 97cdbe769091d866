"""Products in and out of the products table: the importer, the synthetic catalogue, and the
table read back as a training `Dataset`.

Named `catalog`, not `catalogue`: `catalogue` is a PyPI package that spaCy (the training
side's word vectors) imports, and a top-level package of ours by that name would shadow it.
"""
