"""Object storage: S3 or an S3-compatible store (MinIO, Ceph, NetApp StorageGRID, ...).

`location` parses `s3://bucket/prefix`; `access` builds clients with a location's own
credentials; `mirror` keeps a local working copy of a prefix in step with the store; `duckdb`
lets DuckDB read the store's Parquet through httpfs with the same credentials.
"""
