"""Tests of the Slurm executor against a real single-node Slurm (see conftest)."""
