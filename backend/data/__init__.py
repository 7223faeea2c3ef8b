"""Event-grounded dataset layer: LeRobot v3.0 I/O, event-cut samples, cluster-balanced sampling.

- `lerobot`: `DatasetWriter`, `write_dataset`, `EventDataset` (reads ours and LeRobot's)
- `language`: events, plans, operator edits <-> LeRobot's language columns
- `video`: H.264 writing and timestamp-matched decoding (PyAV)
- `samples`: `EventSamples`, `FixedWindowSamples`, `collate`
- `sampler`: `ClusterBalancedSampler`
- `generate`, `show`, `cli`, `bench`: the `wallwm data` commands and `wallwm bench data`

See docs/data.md.
"""
