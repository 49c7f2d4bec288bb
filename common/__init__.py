"""The bottom layer: what `augment`, `pipelines` and `lm` all need, written once.

`errors` (the one error base with its exit code, the usage error, `first_line`, `run_cli`),
`files` (the user's cache folder, atomic writes, JSON, sha256 of a file) and `snapshot_format`
(a snapshot's layout names, LATEST, the shard listing and its one verification rule, the
snapshot's copy of its spec) and `lock` (the one folder lock, a corpus's or a run's: exit 75 when
held). It imports nothing of ours (tests/test_layers.py checks it).
"""
