"""Where things run: submitit executors, Dask clusters, Zarr store layout, run-state markers."""
