"""Storage: the data layout, atomic writes, the image store and catalogs, model folders and their registry."""
