"""Run by test_gan_ddp.py as a script: two CPU processes (DDP, gloo), each GAN method trained 3 steps on
different data per process; prints whether the processes end with identical weights (they must: the
gradients of every phase are averaged across processes)."""

import sys

import torch
from lightning.fabric import Fabric

from ldct.methods.base import METHODS

SPECS = {
    "wgan_gp": {
        "generator": {"name": "wgan_generator", "channels": 8, "depth": 3, "residual": True},
        "critic": {"name": "wgan_critic", "channels": 8, "hidden": 32},
        "n_critic": 2,
    },
    "srgan": {
        "generator": {"name": "srresnet", "channels": 8, "num_blocks": 1},
        "discriminator": {"name": "srgan_discriminator", "channels": 8, "hidden": 16},
        "scale": 2,
    },
    "pix2pix": {
        "generator": {"name": "unet", "width": 8, "depth": 2},
        "discriminator": {"name": "patchgan", "channels": 8},
    },
    "cyclegan": {
        "generator": {"name": "resnet", "width": 8, "num_blocks": 1},
        "discriminator": {"name": "patchgan", "channels": 8, "norm": "instance"},
        "pool_size": 2,
    },
}


def run(fabric):
    for name, args in SPECS.items():
        torch.manual_seed(0)
        m = METHODS.get(name)(**args)
        m.setup(fabric)
        g = torch.Generator().manual_seed(100 + fabric.global_rank)  # different data per rank
        for step in range(3):
            nd = torch.rand(2, 1, 32, 32, generator=g) * 2 - 1
            ld = nd + 0.1 * torch.randn(nd.shape, generator=g)
            if name == "srgan":
                ld = torch.nn.functional.avg_pool2d(ld, 2)
            m.training_step({"ld": ld, "nd": nd}, step)
        sums = torch.stack(
            [
                torch.cat([p.detach().flatten() for p in net.parameters()]).double().sum()
                for net in m.nets.values()
            ]
        )
        allv = fabric.all_gather(sums)
        if fabric.global_rank == 0:
            same = torch.allclose(allv[0], allv[1], rtol=0, atol=1e-9)
            print(name, "ranks agree" if same else f"RANKS DIFFER {allv.tolist()}", flush=True)
    sys.stdout.flush()
    # a clean gloo shutdown: left to interpreter exit, its threads once aborted the process (SIGABRT,
    # "terminate called without an active exception") after all the work was done
    fabric.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
    fabric.launch(run)
