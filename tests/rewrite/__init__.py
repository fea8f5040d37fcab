"""Tests of the rewrite package, one module per step (locate, probe, verify, replace, layout)
and the stage end to end (test_stage.py)."""
