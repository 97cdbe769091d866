"""`python -m models.registry ...`: the registry CLI's former name, now `python -m pipelines.registry`.

Kept so that scripts and runbooks written before the move keep working; new ones should use
`python -m pipelines.registry`. Runs the CLI by name: the `models` package imports nothing of
the pipelines.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("pipelines.registry", run_name="__main__", alter_sys=True)
