"""One module per pipeline stage: compress, detect, train, archive, evaluate."""
