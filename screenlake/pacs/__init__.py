"""PACS sources' pure logic: query building, parsing and routing of QIDO-RS and C-FIND results,
references to instances, retry with backoff and the worker pool that spreads retrievals over a
few connections. No network code and no Dagster here; `resources/dicomweb.py` and
`resources/dimse.py` do the talking."""
