"""Networks: pure ``nn.Module``s with keyword-argument constructors, (B, C, H, W) in and out.

Importing this package registers every network into :data:`ldct.models.registry.NETWORKS`; build one by
name with ``NETWORKS.build("nafnet", width=16)``. Explicit imports, one line per module (no auto-import).
"""

from ldct.models import autoencoder as autoencoder
from ldct.models import discriminators as discriminators
from ldct.models import dncnn as dncnn
from ldct.models import dose as dose
from ldct.models import encdec as encdec
from ldct.models import nafnet as nafnet
from ldct.models import redcnn as redcnn
from ldct.models import resnet as resnet
from ldct.models import srresnet as srresnet
from ldct.models import unet as unet
from ldct.models import wgan_generator as wgan_generator
from ldct.models.registry import NETWORKS as NETWORKS
