"""Throwaway servers on loopback for the demo against a PACS, the tests and the benchmarks: a
real Orthanc (Debian's `orthanc` and `orthanc-dicomweb`) and a real S3-compatible server (moto).
Each runs in its own temporary folder and is stopped by its process id. Never for production.
"""
