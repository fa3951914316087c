"""Bottom layer: configuration, storage, Ray and MLflow plumbing. Imports nothing above it."""
