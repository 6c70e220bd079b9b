"""CytoGAN's GANs: the networks, their losses, configs, training batches, training and figures."""
