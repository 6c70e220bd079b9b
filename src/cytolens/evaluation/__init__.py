"""Statistics every capability reports with: binomial intervals, paired tests, calibration."""
