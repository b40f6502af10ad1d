"""fcl-ray: federated contrastive learning (Wu et al., MICCAI 2021) for volumetric medical
image segmentation, on Ray."""
import logging

# A library's logging: no output unless the program asks for it (fcl_ray/log.py).
logging.getLogger(__name__).addHandler(logging.NullHandler())
