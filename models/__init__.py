"""Features, forecasters, deep-Q agents, the allocator, architecture search and the model registry."""
