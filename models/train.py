"""`python -m models.train ...`: the training CLI's documented name (`models.training.train`).

Kept as the entry point that the README, the training image and scripts use. It runs the
training module by name, so importing the TensorFlow-free `models` package never imports
training.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("models.training.train", run_name="__main__", alter_sys=True)
