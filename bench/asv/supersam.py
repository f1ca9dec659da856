"""asv suite for SuperSAM: encoder time of extracted subnets by size, and evaluation throughput.

Weights are random (time does not depend on their values); subnets: the largest, a fixed random one
(seed 0) and the smallest of each model's search space. Run through tox: `tox -e bench`.
"""

import functools

import torch

SUBNETS = ("max", "random", "min")


@functools.cache
def _subnet(model: str, which: str):
    from supersam_min.build import build
    from supersam_min.supernet import SuperSAM

    torch.manual_seed(0)
    sup = SuperSAM(build(model), model)
    return sup.get_active_subnet(sup.space.named(which)).eval()


class SubnetEncoder:
    params = (["sam_tiny", "vit_b"], list(SUBNETS))
    param_names = ("model", "subnet")
    timeout = 600
    number, repeat = 1, (1, 5, 20.0)

    def setup(self, model, subnet):
        self.sam = _subnet(model, subnet)
        size = self.sam.image_encoder.img_size
        self.x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            self.sam.image_encoder(self.x)

    def time_encoder(self, model, subnet):
        with torch.no_grad():
            self.sam.image_encoder(self.x)

    def track_parameters(self, model, subnet):
        return sum(p.numel() for p in self.sam.parameters())

    track_parameters.unit = "parameters"


class Evaluation:
    """mIoU evaluation of the tiny model's largest subnet on the nuclei validation split."""

    params = (["box", "point"],)
    param_names = ("prompt",)
    timeout = 300

    def setup(self, prompt):
        from supersam_min.build import build
        from supersam_min.data import nuclei_split
        from supersam_min.supernet import SuperSAM

        torch.manual_seed(0)
        self.sup = SuperSAM(build("sam_tiny"), "sam_tiny")
        self.samples = nuclei_split("val")

    def time_evaluate(self, prompt):
        from supersam_min.evaluate import evaluate

        evaluate(self.sup, self.samples, prompt)

    def track_objects_per_second(self, prompt):
        import time

        from supersam_min.evaluate import evaluate

        start = time.perf_counter()
        objects = evaluate(self.sup, self.samples, prompt)["objects"]
        return objects / (time.perf_counter() - start)

    track_objects_per_second.unit = "objects/s"
