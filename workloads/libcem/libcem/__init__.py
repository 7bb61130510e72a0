"""enhancedlibcem: a graph-diffusion patch denoiser (EM-learned sigma, learned tau and radius,
multi-head attention), trained noise -> denoise on CIFAR-10 or a procedural dead-leaves set.

Run from workloads/libcem:  python3 -m libcem.train --help
"""
