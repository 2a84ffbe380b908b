"""``brainsynth demo``: every method on inputs that ship with the package, in minutes on a CPU.

Each method uses its trained model when the repository ships it (``MODELS/NAME``, names in
:data:`MODEL_NAMES`); a method whose model is absent trains a tiny model on an embedded phantom
cohort instead, and the console and the report say so: such a model shows the pipeline, not the
quality. One page, ``OUT/report.html``, shows what each method made.

    sources.py   which model each method uses (shipped and checked, or a fallback)
    train.py     the fallbacks: phantom cohort and cache, tiny runs of each method
    steps.py     what each method shows (samples, atrophy, label maps, a restoration, evaluation)
    figures.py   images beside their label maps
    report.py    OUT/report.html
    run.py       the steps in order (DemoOptions, run_demo)
"""

from brainsynth.demo.run import OWNED, DemoOptions, run_demo
from brainsynth.demo.sources import MODEL_NAMES, Source, check_model, find_sources

__all__ = [
    "MODEL_NAMES",
    "OWNED",
    "DemoOptions",
    "Source",
    "check_model",
    "find_sources",
    "run_demo",
]
