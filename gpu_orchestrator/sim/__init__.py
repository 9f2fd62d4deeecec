"""A seeded, deterministic discrete-event simulator over the real pure policy.

`scenarios` names the worlds (platform, workload, history), `engine.simulate`
plays one under a policy from `policies` (ours, or the `baseline` we replace),
`scorecard` scores the run and `plot` draws it. The world (`world`, `provider`,
`workers`, `queue`, `rows`) knows facts only; every decision comes from the
policy, applied with the executor's semantics (`shell`).
"""
