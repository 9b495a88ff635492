"""Core types every stage shares: errors, genotypes, the search-space contract, options, files, tensors."""
