"""Ask/tell access to OpenTuner over enumerated parameters, shared by the GPU kernel autotuner and
the SuperSAM subnet search.

OpenTuner (Ansel et al., PACT 2014) runs an ensemble of search techniques under a multi-armed
bandit. Driving it through its TuningRunManager lets the caller decide how a configuration is
measured, reject some without measuring, and seed it with configurations already known (a resumed
search). Its results database is SQLite at a path the caller keeps (or in memory). OpenTuner's
own logging setup (which would write ./opentuner.log and print every step) is skipped.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import random
import warnings
from collections.abc import Iterable
from pathlib import Path


def _population_in_creation_order() -> None:
    """Make OpenTuner's differential evolution draw the same parents in every process.

    It picks a configuration's three parents with random.shuffle(list(set(population) - {parent})):
    the shuffle is seeded, but the list it starts from is in set order, and a PopulationMember
    hashes by its id, its memory address, which differs from process to process. Two `supersam
    search` processes with one seed (and PYTHONHASHSEED=0) took the same subnets for 55 proposals,
    then different ones. Here each member hashes by a serial number counted from the start of
    each search, so the set's order is the members' creation order. (Identity stays its
    equality: serials are unique.)
    """
    from opentuner.search.differentialevolution import PopulationMember

    if not hasattr(PopulationMember, "serials"):
        make = PopulationMember.__init__

        def __init__(self, *args, **kwargs):
            make(self, *args, **kwargs)
            self.serial = next(PopulationMember.serials)

        PopulationMember.__init__ = __init__
        PopulationMember.__hash__ = lambda self: self.serial
    PopulationMember.serials = itertools.count()


class OpenTunerLoop:
    """One OpenTuner run over `space` ({name: [values]}), lower objective values being better.

    Each list is taken as ordered (small to large): OpenTuner sees an integer index into it, so its
    numeric techniques (differential evolution, Nelder-Mead, Gaussian mutation) can use the order;
    ask() hands back the values themselves. `technique`: one of OpenTuner's registered search
    techniques by name (default: its AUC-bandit ensemble AUCBanditMetaTechniqueA).

        with OpenTunerLoop(space, db, "project", "program") as tuner:
            for handle, config in tuner.ask():
                tuner.tell(handle, objective(config))

    ask() returns the next generation (up to `parallelism` configurations, possibly none while
    OpenTuner regenerates); `seeds` are proposed first, in order.
    """

    def __init__(
        self,
        space: dict[str, list],
        database: Path | None,
        project: str,
        program: str,
        version: str = "1",
        seed: int = 0,
        parallelism: int = 1,
        seeds: Iterable[dict] = (),
        technique: str | None = None,
    ):
        import numpy as np
        from opentuner import default_argparser, tuningrunmain
        from opentuner.api import TuningRunManager
        from opentuner.measurement.interface import DefaultMeasurementInterface
        from opentuner.search.manipulator import ConfigurationManipulator, IntegerParameter

        tuningrunmain.init_logging = lambda: None  # no ./opentuner.log, no INFO line per step
        logging.getLogger("opentuner").setLevel(logging.ERROR)  # technique chatter, not errors
        warnings.filterwarnings("ignore", module="opentuner")  # its SQLAlchemy 1.x idioms
        warnings.filterwarnings("ignore", message=".*declarative_base.*")
        random.seed(seed)  # OpenTuner's techniques draw from the global generators
        np.random.seed(seed)
        _population_in_creation_order()
        manipulator = ConfigurationManipulator()
        self._space = {name: list(values) for name, values in space.items()}
        for name, values in self._space.items():
            manipulator.add_parameter(IntegerParameter(name, 0, len(values) - 1))
        url = "sqlite://"  # None: in memory, gone with the run
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{database}"
        args = argparse.ArgumentParser(parents=[default_argparser()], add_help=False).parse_args(
            ["--database", url, "--no-dups"]
            + ["--parallelism", str(parallelism)]
            + (["--technique", technique] if technique else [])
        )
        seeds = [  # as indices; OpenTuner pops seeds from the end
            {k: self._space[k].index(v) for k, v in s.items()} for s in reversed(list(seeds))
        ]

        class Interface(DefaultMeasurementInterface):
            def seed_configurations(self):
                return seeds

        interface = Interface(
            args=args,
            manipulator=manipulator,
            project_name=project,
            program_name=program,
            program_version=version,
        )
        self._api = TuningRunManager(interface, args)

    def ask(self) -> list[tuple[object, dict]]:
        return [
            (dr, {k: self._space[k][i] for k, i in dr.configuration.data.items()})
            for dr in self._api.get_desired_results()
        ]

    def tell(self, handle, value: float) -> None:
        """Report `value` (lower is better; inf or nan: the configuration failed)."""
        from opentuner import Result

        if math.isfinite(value):
            self._api.report_result(handle, Result(time=value))
        else:
            self._api.report_result(handle, Result(state="ERROR", time=math.inf))

    def close(self) -> None:
        try:
            self._api.finish()
        except AttributeError:  # finish() needs a best result, which a run may not have yet
            self._api.session.close()

    def __enter__(self) -> OpenTunerLoop:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
