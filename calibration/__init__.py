"""INT8/FP16 calibration (range collection, Q/DQ placement): see the precision issue."""
