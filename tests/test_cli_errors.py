"""Every error a user can cause on the command line is one line, not a traceback: each ``boxinspect`` subcommand
run as its own process with bad arguments, a missing folder or file, an existing ``--out``, a bad config.

Each case runs ``boxinspect.cli.main`` in a fresh interpreter (what the console script does), so an uncaught
exception prints its traceback exactly as a user would see it. None of these errors may need TensorFlow to be
found (they are found before anything heavy loads), which also keeps this test in the fast lane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# One interpreter imports the CLI once, then forks a process per case: the child runs main() as the console script
# does (an exception it does not handle prints its traceback and exits 1), with its own stdout/stderr files, and
# records whether it imported TensorFlow. Forking after the import keeps 20+ cases at about a second.
RUNNER = r"""
import json, os, sys, traceback
import boxinspect.cli as cli
cli.build_parser()  # every subcommand's registration imported before the forks
out = []
for i, args in enumerate(json.loads(sys.argv[1])):
    o, e = f"case{i}.out", f"case{i}.err"
    pid = os.fork()
    if pid == 0:
        fo, fe = os.open(o, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), os.open(e, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fo, 1); os.dup2(fe, 2)
        try:
            rc = cli.main(args)
        except SystemExit as x:
            rc = x.code if isinstance(x.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 1
        sys.stdout.flush(); sys.stderr.flush()
        with open(f"case{i}.tf", "w") as f:
            f.write(str("tensorflow" in sys.modules))
        os._exit(rc)
    _, status = os.waitpid(pid, 0)
    out.append({"rc": os.waitstatus_to_exitcode(status), "stdout": open(o).read(), "stderr": open(e).read(),
                "tensorflow": open(f"case{i}.tf").read() == "True"})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A folder with what the cases point at: a small data set, a finished run dir, a file, a bad config."""
    d = tmp_path_factory.mktemp("cli")
    for cls in ("ok", "defective"):
        (d / "data" / cls).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(d / "data" / cls / f"{cls}_{i}.jpg"), np.full((32, 32, 3), 80 * i, np.uint8))
    (d / "run").mkdir()
    (d / "run" / "model.keras").write_bytes(b"a model from an earlier run")
    (d / "afile.txt").write_text("not a folder\n")
    (d / "bad.yaml").write_text("line: [unclosed\n")
    (d / "empty").mkdir()
    (d / "taken").mkdir()
    (d / "taken" / "notes.txt").write_text("someone's files\n")
    (d / "model.tflite").write_bytes(tiny_model.read_bytes())
    (d / "model.tflite.json").write_text(Path(str(tiny_model) + ".json").read_text())
    return d


# (arguments, exit status, a fragment the one error line holds); paths are relative to ``workdir``.
CASES = [
    (["no-such-command"], 2, "invalid choice: 'no-such-command'"),
    (["--log-level", "LOUD", "config", "check", "bad.yaml"], 2, "'LOUD' is not a log level"),
    (["synth", "--out", "afile.txt", "--n-per-class", "1"], 2, "Not a directory"),
    (["synth", "--out", "s", "--size", "ten"], 2, "invalid int value: 'ten'"),
    (["train", "missing", "--out", "r"], 2, "does not exist"),
    (["train", "empty", "--out", "r"], 2, "need at least two class folders"),
    (["train", "data", "--out", "run"], 2, "already holds a model.keras"),
    (["train", "data", "--out", "run", "--recipe", "finetune"], 2, "already holds a model.keras"),
    (["evaluate", "missing"], 2, "is not a complete run directory"),
    (["cv", "missing", "--out", "c"], 2, "does not exist"),
    (["convert", "missing"], 2, "train_config.json not found"),
    (["convert", "run", "--format", "int9"], 2, "invalid choice: 'int9'"),
    (["run", "--config", "missing.yaml"], 2, "cannot read config file"),
    (["run", "--config", "bad.yaml"], 2, "not valid YAML"),
    (["config", "check", "bad.yaml"], 2, "not valid YAML"),
    (["predict", "missing.tflite", "afile.txt"], 2, "model file not found"),
    (["predict", "model.tflite", "empty"], 1, "no images found in empty"),
    (["bench", "afile.txt"], 2, "missing metadata sidecar"),
    (["retrain", "model.tflite", "missing", "--out", "cand"], 2, "does not exist or is not a folder"),
    (["dataset", "export", "missing", "--out", "d"], 2, "not a folder"),
    (["demo", "--out", "afile.txt"], 2, "is a file"),
    (["demo", "--out", "taken"], 2, "already holds files the demo did not make"),
]


def run_cases(workdir: Path, cases: list[list[str]], runner: str = RUNNER) -> list[dict]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(workdir)}
    r = subprocess.run([sys.executable, "-c", runner, json.dumps(cases)], cwd=workdir, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_cli_errors_are_one_line(workdir: Path) -> None:
    problems = []
    for (args, status, fragment), r in zip(CASES, run_cases(workdir, [c[0] for c in CASES]), strict=True):
        said = r["stdout"] + r["stderr"]
        lines = [ln for ln in said.splitlines() if fragment in ln]
        what = f"boxinspect {' '.join(args)}"
        if "Traceback" in said:
            problems.append(f"{what}: a traceback\n{said[-1500:]}")
        elif r["rc"] != status:
            problems.append(f"{what}: exit {r['rc']}, expected {status}\n{said[-800:]}")
        elif len(lines) != 1:
            problems.append(f"{what}: {fragment!r} on {len(lines)} lines, expected one\n{said[-800:]}")
        elif r["tensorflow"]:
            problems.append(f"{what}: imported TensorFlow before finding the error")
    assert not problems, "\n\n".join(problems)


def test_the_walk_sees_a_traceback(workdir: Path) -> None:
    """The check above can fail: an exception main() does not handle shows as a traceback, exit 1."""
    broken = RUNNER.replace("rc = cli.main(args)", "rc = cli.main(args) + 1 / 0")
    (r,) = run_cases(workdir, [["config", "check", "bad.yaml"]], broken)
    assert r["rc"] == 1 and "Traceback" in r["stderr"] and "ZeroDivisionError" in r["stderr"]


def test_demo_refuses_a_foreign_folder_and_keeps_it(workdir: Path) -> None:
    """The demo never deletes what it did not write: the refused folder is untouched; its own folder (demo.json)
    is accepted on a second run."""
    assert (workdir / "taken" / "notes.txt").read_text() == "someone's files\n"
    assert sorted(p.name for p in (workdir / "taken").iterdir()) == ["notes.txt"]
    from boxinspect.demo import MARKER, claim_out, demo_recipe

    class Args:
        per_class, img_size, epochs, fine_tune_epochs, lr, weights, seed = 8, 64, 1, 0, 1e-3, None, 0

    own = workdir / "own"
    assert claim_out(own, demo_recipe(Args())) is None  # first run
    (own / "run").mkdir()
    (own / "run" / "model.keras").write_bytes(b"x")
    rec = json.loads((own / MARKER).read_text())
    (own / MARKER).write_text(json.dumps({**rec, "model": str(own / "run" / "m.tflite")}))
    assert claim_out(own, demo_recipe(Args()))["model"] == str(own / "run" / "m.tflite")  # same settings: reused
    assert (own / "run" / "model.keras").is_file()
    Args.epochs = 2
    assert claim_out(own, demo_recipe(Args())) is None and not (own / "run").exists()  # other settings: replaced
