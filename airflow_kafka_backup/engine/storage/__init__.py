"""The bucket: objects, where they live, how they are written, the writer lock and the run manifests."""
