"""Offline accuracy evaluation of the face verifier: metrics, dataset protocols, threshold calibration.

Library code for `benchmarks/accuracy/verification_eval.py` and the CLI; it reads
test data in place and never ships with or copies it.
"""
