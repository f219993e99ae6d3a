"""Servers on loopback for the demo against a PACS, the tests, the benchmarks and `make stack`:
a real Orthanc (Debian's `orthanc` and `orthanc-dicomweb`), a real S3-compatible server (moto),
PostgreSQL and Redis from Debian, and the whole production-shaped stack on one host (`stack`).
Each runs in its own folder and is stopped by its process id. The throwaway ones (Orthanc, moto)
are never for production; the stack is the production shape on one host, for trying it and for
the tests, not a service manager.
"""
