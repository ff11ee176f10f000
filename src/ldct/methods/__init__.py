"""Training methods. Importing this package registers each into :data:`ldct.methods.base.METHODS`.

Explicit imports, one line per method module (no auto-import by file name).
"""

from ldct.methods import cyclegan as cyclegan
from ldct.methods import distill as distill
from ldct.methods import pix2pix as pix2pix
from ldct.methods import self_supervised as self_supervised
from ldct.methods import srgan as srgan
from ldct.methods import supervised as supervised
from ldct.methods import wgan_gp as wgan_gp
from ldct.methods.base import METHODS as METHODS
from ldct.methods.base import Method as Method
