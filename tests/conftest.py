"""Shared session fixtures: real synthetic data, a real model trained and converted by our own code,
and a real Mosquitto broker.

Two lanes (``scripts/test.sh --fast`` / ``bash scripts/test.sh``): every test that needs the trained model
(fixtures in ``TRAINED``) is marked ``slow`` here automatically, as are tests marked slow by hand (the
daemon as a process); all others are marked ``fast``. Fast tests that need *a* real model package use
``tiny_model``: a small int8 model made by our own pipeline and committed under tests/fixtures/.

The trained model is cached under ``<repo>/.cache/test-models/<hash>/``, keyed on what makes it (data
generation, training code and the ``TINY_*`` settings of tests/tiny_build.py), so a second local run skips training; the
converted packages sit below it under ``convert-<hash>/`` keyed also on convert/ and the package format.
Editing tests or this file retrains nothing unless a ``TINY_*`` setting changes. CI starts from a clean clone, so it always trains. Each cached
artefact is made under a file lock (``tests.helpers.cache_lock``), so parallel workers make it once.

A fast test must not import TensorFlow (the fast lane's point, and the edge never does): in the fast lane one
that loads it errors at teardown, naming itself. The full lane loads TensorFlow first (:func:`_tensorflow_first`:
GStreamer, then TensorFlow, aborts a worker), so there the check has nothing to see.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAINED = {"tiny_run", "int8_model", "float_model", "crop_model", "synth_data"}  # fixtures that make a test slow
FIXTURE_MODEL = REPO / "tests" / "fixtures" / "tiny_int8.tflite"
PARCEL_DIR = REPO.parent / "shared" / "data" / "parcel-damage"

# Make tests/broker.py importable as ``tests.broker`` and as ``broker``.
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tiny model's recipe and build steps (shared with the determinism check); its thread counts and oneDNN
# setting must be in the environment before any test imports TensorFlow.
from tests import tiny_build  # noqa: E402

tiny_build.set_repeatable_env()
TINY_VIDEO = tiny_build.TINY_VIDEO


def _cache_lock(path: Path) -> Any:
    from tests.helpers import cache_lock  # here: tests/ is importable once this module has run

    return cache_lock(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") is None and TRAINED & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.fast)
    if any(item.get_closest_marker("slow") is not None for item in items):
        _tensorflow_first()


def _tensorflow_first() -> None:
    """The full lane loads TensorFlow before any test runs. Reproduced here (pytest, one worker): a test that
    initialises GStreamer in the worker (tests/test_cameras.py, e.g. a pipeline that does not parse), then the
    worker's first TensorFlow work (training or converting the session model) aborts the worker ("Fatal Python
    error: Aborted", in Keras' import of matplotlib or in TensorFlow's graph code). TensorFlow first, then
    GStreamer: the whole camera file and the conversion pass. So in the full lane the fast-test check below
    never fires (TensorFlow is always loaded before); the fast lane (``scripts/test.sh --fast``) imports no
    TensorFlow and keeps it. The edge install has none: nothing to load."""
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        pass


_TF_BEFORE = pytest.StashKey[bool]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_TF_BEFORE] = "tensorflow" in sys.modules


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if item.get_closest_marker("fast") is not None and not item.stash.get(_TF_BEFORE, True) and "tensorflow" in sys.modules:
        pytest.fail(f"{item.nodeid} is a fast test but imported TensorFlow: mark it slow (pytest.mark.slow) or avoid "
                    "the import", pytrace=False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """The offline ImageNet MobileNetV2 alpha 0.35 weights (never the network): training.model's lookup."""
    from training.model import offline_weights_path

    p = offline_weights_path(0.35)
    if p is None:
        pytest.fail("offline MobileNetV2 alpha 0.35 weights not found (../shared/weights/, ~/.keras/models/); "
                    "set BOXINSPECT_WEIGHTS")
    return p


@pytest.fixture(scope="session")
def parcel_dir() -> Path:
    if not PARCEL_DIR.exists():
        pytest.fail(f"real photos not found at {PARCEL_DIR}")
    return PARCEL_DIR


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Synthetic data, video and the trained run: keyed on the code that makes them (not on convert)."""
    d = tiny_build.model_cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def convert_cache(model_cache: Path) -> Path:
    """Converted packages of the cached run, keyed also on convert/ and the package format, so a change to
    either re-converts (a minute) without re-training (several minutes)."""
    key = tiny_build.convert_key()
    d = model_cache / f"convert-{key}"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def synth_data(model_cache: Path) -> Path:
    """Folder-per-class synthetic boxes (ok/, defective/), 128 px."""
    out = model_cache / "synth"
    with _cache_lock(out):
        if not (out / "manifest.json").exists():
            tiny_build.make_synth(out)
    return out


@pytest.fixture(scope="session")
def synth_video(model_cache: Path) -> tuple[Path, dict]:
    """A generated conveyor video and its ground truth (which box passed when, defective or not)."""
    from tests.helpers import cached_video

    return cached_video(model_cache / "video" / "conveyor.mp4", **TINY_VIDEO)


@pytest.fixture(scope="session")
def tiny_run(model_cache: Path, synth_data: Path, weights_path: Path) -> Path:
    """A real (small) MobileNetV2 run dir trained on synthetic boxes and evaluated (tests/tiny_build.py)."""
    run = model_cache / "run"
    with _cache_lock(run):
        if not (run / "metrics.json").exists():
            tiny_build.train_tiny(run, synth_data, weights_path)
    return run


@pytest.fixture(scope="session")
def int8_model(tiny_run: Path, convert_cache: Path) -> Path:
    """The tiny run as int8, the gate's verdict recorded, not enforced (tests/tiny_build.py); the gate itself is
    tested in test_convert.py."""
    out = convert_cache / "model_int8.tflite"
    with _cache_lock(out):
        if not out.exists() or not Path(str(out) + ".json").exists():
            tiny_build.convert_tiny_int8(tiny_run, out)
    return out


@pytest.fixture(scope="session")
def crop_model(tiny_run: Path, convert_cache: Path) -> Path:
    """The tiny run converted (float32, real convert) as if trained with the product's default crop (auto):
    its sidecar carries the crop, so predict and the daemon find the box before classifying."""
    import json

    from convert.tflite import convert_run

    run = convert_cache / "run-crop"
    out = run / "model_float32.tflite"
    with _cache_lock(run):
        if not out.exists() or not Path(str(out) + ".json").exists():
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.tflite", "*.tflite.json", "report"))
            cfg = json.loads((run / "train_config.json").read_text())
            cfg["crop"] = {"method": "auto"}
            (run / "train_config.json").write_text(json.dumps(cfg, indent=1))
            # the model was trained on whole ROI images, so the gate (Keras vs TFLite on crops) is not the point here
            convert_run(run, "float32", out=out, gate=False)
    return out


@pytest.fixture(scope="session")
def float_model(tiny_run: Path, convert_cache: Path) -> Path:
    from convert.tflite import convert_run

    out = convert_cache / "model_float32.tflite"
    with _cache_lock(out):
        if not out.exists() or not Path(str(out) + ".json").exists():
            convert_run(tiny_run, "float32", out=out)
    return out


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The committed tiny int8 package (tests/fixtures/build_tiny_model.py): real and valid, scores meaningless."""
    if not FIXTURE_MODEL.exists():
        pytest.fail(f"{FIXTURE_MODEL} missing: python -m tests.fixtures.build_tiny_model")
    return FIXTURE_MODEL


@pytest.fixture()
def model_copy(tmp_path: Path, tiny_model: Path) -> Path:
    """The tiny model package copied to tmp_path, so a test can corrupt or replace it."""
    dst = tmp_path / "model" / "model.tflite"
    dst.parent.mkdir()
    shutil.copy(tiny_model, dst)
    shutil.copy(str(tiny_model) + ".json", str(dst) + ".json")
    return dst


@pytest.fixture(scope="session")
def few_boxes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few synthetic box images per class (ok/, defective/), 96 px: for tests that need images, not many."""
    from boxinspect.synth import make_dataset

    out = tmp_path_factory.mktemp("few-boxes")
    make_dataset(out, n_per_class=4, size=96, seed=2, progress=False)
    return out


@pytest.fixture(scope="session")
def mosquitto():
    """A real Mosquitto of this test session's own, on a free port.

    Never one found on 127.0.0.1:1883: that broker belongs to someone else (a CI run, another suite), who may stop
    it mid-test, and another suite's daemons publish into it."""
    from tests.broker import Broker

    b = Broker()
    b.start()
    try:
        yield b
    finally:
        b.stop()
