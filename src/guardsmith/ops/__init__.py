"""Operations: everything between the library and a Kubeflow cluster.

- :mod:`~guardsmith.ops.gates`: quality-gate expressions evaluated on a run's metrics.
- :mod:`~guardsmith.ops.images`: image kinds, digest records, pinned component and base images.
- :mod:`~guardsmith.ops.pipelines`: the pipeline/component registry (from
  :data:`guardsmith.stages.STAGES`), loading and compiling them.
- :mod:`~guardsmith.ops.presets`: presets, ``--set`` overrides, placeholders and the local-only check.
- :mod:`~guardsmith.ops.kfp`: the one KFP client (upload, submit, schedule, wait).
- :mod:`~guardsmith.ops.local`: local runs through ``kfp.local``.

The CLI (``guardsmith pipeline ...``, ``guardsmith deploy ...``) is a thin shell over these; they
never import the CLI.
"""
