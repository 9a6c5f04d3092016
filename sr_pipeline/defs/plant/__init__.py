"""What every domain of the code location shares: the plant's storage resource (data root and camera registry) and the partitions (upload batches, field cameras, each camera's batches)."""
