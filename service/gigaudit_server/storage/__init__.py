"""Where things are kept (torch-free): the artifact store, the resource catalog, archive checks, exemplar bundles."""
