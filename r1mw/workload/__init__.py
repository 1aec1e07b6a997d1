"""The bundled trading workload and the simulated R1 upstream (issue 6).

::

    truth.py      Catalog: templates, slot values, equivalences; identify(text) -> question id
    generator.py  generate(WorkloadSpec(...)) -> Workload of Items with ground-truth ids
    simulator.py  SimulatedR1: an R1-shaped async upstream; served_question_id(reply)
    replay.py     replay(workload, RunConfig(...)): what callers see through a pipeline
    bench.py      ``r1mw bench``

``r1mw demo`` (r1mw/demo.py) puts them together.
"""

from .generator import Item, Workload, WorkloadSpec, generate
from .simulator import LatencyModel, SimulatedR1, SimulatedUpstreamError, served_question_id
from .truth import Catalog

__all__ = ["Catalog", "Item", "LatencyModel", "SimulatedR1", "SimulatedUpstreamError", "Workload", "WorkloadSpec",
           "generate", "served_question_id"]
