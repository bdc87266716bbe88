"""The network: backbone, FPN, priors, the T-Head, the parallel baseline head, the detector."""
