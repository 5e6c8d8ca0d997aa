"""Datasets in every format, read with one set of safety checks (torch-free).

- :mod:`.sources`: detect a dataset's format from its content; read, inspect and digest it (the entry point);
- :mod:`.archives`: tar and zip archives and the checks every format shares (paths, links, bombs, limits);
- :mod:`.webdataset_shards`, :mod:`.parquet_files`, :mod:`.hf_saved`, :mod:`.manifests`: one format each, with
  :mod:`.image_tables` for the Arrow tables of parquet and Hugging Face data;
- :mod:`.samples`: what every reader yields (a :class:`~.samples.Sample`), and the URI allow-list;
- :mod:`.parallel`: ordered decoding on a thread pool.
"""
