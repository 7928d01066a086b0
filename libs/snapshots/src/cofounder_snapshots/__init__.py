"""Snapshots of a sandbox's project files, content-addressed.

Layout (under an optional prefix, in a bucket or a folder)::

    projects/<project>/blobs/<sha256[:2]>/<sha256>      each file's bytes, stored once per project
    projects/<project>/index.json                        the hashes stored (read once per snapshot)
    projects/<project>/builds/<build>/<version>.json     one manifest per snapshot version

A snapshot uploads only the blobs the index does not list, then the index, then the manifest:
the manifest is written last, so a snapshot that fails half-way is never visible as a version.
"""
