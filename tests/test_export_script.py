"""A run as a standalone script (core/export_script.py, `python -m core.cli --export-script RUN_ID`).

The scripts are run as a reader would run them: exported through the CLI, saved in an empty folder and started
there with `python -I` and no PYTHONPATH, so nothing of this repository can be imported, on the same data file
as the run. Their per-step losses, test accuracy and TensorBoard logs are then compared with the run folder's.
"""

from __future__ import annotations

import ast
import csv
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.config import OPTIMIZERS, TrainConfig, config_from_preset
from core.export_script import OPTIMIZERS as SCRIPT_OPTIMIZERS
from core.export_script import ExportError, render, run_script
from core.records import CONFIG_FILE, RunState
from core.store import load_run
from tests.factories import make_run, small_offline_dataset
from tests.tensorboard_events import RunEvents, name_scopes

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT_PACKAGES = {"function": {"argparse", "math", "numpy", "tensorflow", "keras"},
                   "session": {"argparse", "math", "numpy", "tensorflow", "tf_keras"}}
ARTICLE_SCOPES = {"input", "NN", "loss", "train"}
RESULT_LINE = re.compile(r"step (\d+): loss [0-9.]+, test accuracy [0-9.]+ \((\d+) of (\d+) right\)")
# The runs each engine's script must repeat: the article's MLP on each engine and the CNN preset (dropout, Adam,
# augmentation) on the function engine, 300 steps each; then two shorter ones for what those leave out (dropout
# in an MLP, momentum, RMSprop, another activation), one per engine.
RUNS = {
    "article-function": TrainConfig(steps=300),
    "article-session": TrainConfig(steps=300, engine="session"),
    "cnn-function": config_from_preset("cnn", steps=300),
    "dropout-momentum-function": TrainConfig(hidden_units=[64, 32], dropout_rate=0.2, activation="tanh",
                                             optimizer="momentum", learning_rate=0.05, steps=120, eval_every=50),
    "dropout-rmsprop-session": TrainConfig(hidden_units=[64, 32], dropout_rate=0.2, activation="elu",
                                           optimizer="rmsprop", learning_rate=0.001, steps=120, eval_every=50,
                                           engine="session"),
}


def cli(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *flags], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)


def outside_env(home: Path) -> dict:
    """The environment of a reader who has only TensorFlow: no PYTHONPATH (nor any PYTHON* variable)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    env.update(KERAS_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
    return env


def imported_packages(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module.split(".")[0])
    return names


# --- the scripts, run against real runs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    """A small MNIST in Keras' layout (uint8 pixels): 3,000 training digits (five epochs of 300 batches of
    50, so the batches cross epochs) and 500 test digits from the offline sample."""
    dataset = small_offline_dataset(train=3000, test=500)
    path = tmp_path_factory.mktemp("data") / "mnist.npz"
    pixels = lambda images: np.round(images * 255).astype(np.uint8)  # noqa: E731
    np.savez(path, x_train=pixels(dataset.x_train), y_train=dataset.y_train.astype(np.uint8),
             x_test=pixels(dataset.x_test), y_test=dataset.y_test.astype(np.uint8))
    return path


@pytest.fixture(scope="module", params=list(RUNS), ids=list(RUNS))
def exported(request, data_file, tmp_path_factory):
    """A run trained by core.training on the data file, its script exported through the CLI into an empty
    folder, and what that script did there."""
    from core.training import train

    runs_dir = tmp_path_factory.mktemp("runs")
    run = train(RUNS[request.param].replace(source="path", data_path=str(data_file)), runs_dir)
    assert run.state is RunState.COMPLETED, run.message
    folder = tmp_path_factory.mktemp("reader")  # empty: the reader's own folder
    script = tmp_path_factory.mktemp("download") / "run.py"
    exported = cli("--export-script", run.run_id, "--runs-dir", str(runs_dir), "--output", str(script))
    assert exported.returncode == 0, exported.stderr
    env = outside_env(tmp_path_factory.mktemp("keras-home"))
    result = subprocess.run([sys.executable, "-I", str(script), "--data", str(data_file), "--losses-csv", "losses.csv"],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, script, folder, result, env


def test_nothing_of_this_repository_can_be_imported_where_the_script_runs(exported):
    run, script, folder, _, env = exported

    probe = subprocess.run([sys.executable, "-I", "-c", "import core"], cwd=folder, env=env, capture_output=True,
                           text=True, timeout=60)

    assert probe.returncode != 0 and "No module named 'core'" in probe.stderr
    assert imported_packages(script.read_text()) <= SCRIPT_PACKAGES[run.config.engine]


def test_the_script_repeats_every_step_loss_of_the_run(exported):
    run, _, folder, _, _ = exported
    with open(folder / "losses.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    metrics = run.read_metrics()

    assert [int(row["step"]) for row in rows] == metrics["step"] == list(range(run.config.steps))
    theirs, ours = np.array(metrics["loss"]), np.array([float(row["loss"]) for row in rows])
    gaps = np.abs(ours - theirs) / np.abs(theirs)
    assert gaps.max() <= 1e-5, f"step {gaps.argmax()}: the run's loss {theirs[gaps.argmax()]}, the script's " \
                               f"{ours[gaps.argmax()]}"


def test_the_script_prints_the_runs_test_accuracy(exported):
    run, _, _, result, _ = exported
    printed = [RESULT_LINE.fullmatch(line) for line in result.stdout.splitlines()]
    evaluations = run.read_evaluations()

    assert all(printed), result.stdout
    assert [int(match[1]) for match in printed] == evaluations["step"]
    right, total = int(printed[-1][2]), int(printed[-1][3])
    assert total == run.summary.data_sizes["test"]
    assert right / total == pytest.approx(run.summary.test_accuracy, abs=1e-12)


def test_the_scripts_tensorboard_logs_have_the_loss_and_the_articles_scopes(exported):
    run, _, folder, _, _ = exported
    events = RunEvents(folder / "keras_tensorflow_log")

    losses = events.scalars("loss")
    assert [step for step, _ in losses] == list(range(run.config.steps))
    np.testing.assert_allclose([value for _, value in losses], run.read_metrics()["loss"], rtol=1e-5)
    assert [step for step, _ in events.scalars("test_accuracy")] == run.read_evaluations()["step"]
    scopes = set().union(*(name_scopes(graph) for graph in events.graphs()))
    assert ARTICLE_SCOPES <= scopes


# --- what the script says, for every kind of run (no TensorFlow) ---------------------------------------------


def every_config():
    """A config for every combination the scripts branch on: engine, architecture, optimizer, dropout,
    augmentation."""
    for engine, architecture, optimizer, dropout, augment in itertools.product(
            ("function", "session"), ("mlp", "cnn"), OPTIMIZERS, (0.0, 0.25), (False, True)):
        yield TrainConfig(engine=engine, architecture=architecture, optimizer=optimizer, dropout_rate=dropout,
                          augment=augment, hidden_units=[256, 64, 32])


def test_every_kind_of_run_gives_a_short_script_that_imports_only_what_its_engine_needs(tmp_path):
    for config in every_config():
        source = run_script(make_run(tmp_path, config))

        compile(source, "run.py", "exec")
        assert imported_packages(source) <= SCRIPT_PACKAGES[config.engine]
        assert "$" not in source and "#if" not in source and "#end" not in source
        assert ("DROPOUT_RATE = " in source) == (config.dropout_rate > 0)
        assert ("MAX_SHIFT_PIXELS = " in source) == config.augment
        assert f"LEARNING_RATE = {config.learning_rate!r}" in source
        assert max(len(line) for line in source.splitlines()) <= 120
        # The article's listing grown up, not a dump of our modules: about 150 lines, a little more with
        # dropout and convolutions, and some 25 more for augmentation's image transform.
        assert len(source.splitlines()) <= (195 if config.augment else 170)


def test_the_article_run_is_about_150_lines(tmp_path):
    for engine in ("function", "session"):
        assert len(run_script(make_run(tmp_path, TrainConfig(engine=engine))).splitlines()) <= 156


def test_the_article_run_reads_like_the_article(tmp_path):
    function = run_script(make_run(tmp_path, TrainConfig()))
    session = run_script(make_run(tmp_path, TrainConfig(engine="session")))

    for source in (function, session):
        assert 'Dense(128, activation=ACTIVATION, name="hidden_1")' in source
        assert 'Dense(10, activation="softmax", name="probabilities")' in source
        assert all(f'tf.name_scope("{scope}")' in source for scope in ARTICLE_SCOPES)
        assert "SEED = 42" in source and "BATCH_SIZE = 50" in source and "STEPS = 1000" in source
        assert "xla" not in source.lower().split('"""', 2)[2]  # no XLA plumbing in the code
    assert "tf.GradientTape()" in function and "keras.optimizers.SGD(LEARNING_RATE)" in function
    assert "K.set_session(sess)" in session and "v1.placeholder(tf.float32, shape=(None, 784)" in session
    assert "v1.train.GradientDescentOptimizer(LEARNING_RATE)" in session and "FileWriter" in session


def test_every_optimizer_has_its_line_in_both_engines_scripts():
    assert set(SCRIPT_OPTIMIZERS["function"]) == set(SCRIPT_OPTIMIZERS["session"]) == set(OPTIMIZERS)


def test_a_mirrored_run_exports_as_its_single_device_equivalent_and_says_so(tmp_path):
    mirrored = TrainConfig(distribute="mirrored", cpu_replicas=2)
    source = run_script(make_run(tmp_path, mirrored))
    single = run_script(make_run(tmp_path, mirrored.replace(distribute="none")))

    header, code = source.split('"""', 2)[1:]
    assert "single-device equivalent" in " ".join(header.split()) and "mirrored over 2 replicas" in header
    assert code == single.split('"""', 2)[2]
    assert "distribute" not in code.lower() and "replica" not in code.lower()


def test_the_header_says_how_the_run_ended_and_on_what_data(tmp_path):
    completed = " ".join(run_script(make_run(tmp_path, TrainConfig(), test_accuracy=0.9123)).split())
    running = " ".join(run_script(make_run(tmp_path, TrainConfig(), state=RunState.RUNNING)).split())
    failed = make_run(tmp_path, TrainConfig(), state=RunState.FAILED)
    (failed.path / "summary.json").unlink()  # a run that failed before training has none
    failed = " ".join(run_script(load_run(failed.run_id, tmp_path)).split())

    assert "The run completed with test accuracy 0.9123 after 1,000 steps" in completed
    assert "offline sample" in completed and "other batches" in completed
    assert "The run has no result yet (running)." in running
    assert "The run has no result (failed)." in failed


def test_the_script_never_names_the_servers_data_path(tmp_path):
    config = TrainConfig(source="path", data_path="/srv/private/lab-data/mnist.npz")
    source = run_script(make_run(tmp_path, config))

    assert "/srv/private" not in source and "lab-data" not in source
    assert "--data" in source  # the reader gives the file themselves


def test_a_damaged_run_is_not_exported(tmp_path):
    run = make_run(tmp_path)
    (run.path / CONFIG_FILE).write_text("{not json")

    with pytest.raises(ExportError, match=f"run {run.run_id} cannot be exported as a script: its folder is damaged"):
        run_script(load_run(run.run_id, tmp_path))


def test_templates_keep_only_the_branches_whose_flags_hold():
    template = "a\n#if x\nb $V\n#if y\nc\n#else\nd\n#end\n#else\ne\n#end\nf\n"

    assert render(template, {"x": True, "y": False}, {"V": "1"}) == "a\nb 1\nd\nf\n"
    assert render(template, {"x": False, "y": True}, {"V": "1"}) == "a\ne\nf\n"
    with pytest.raises(ValueError, match="open"):
        render("#if x\na\n", {"x": True}, {})
    with pytest.raises(KeyError):
        render("$MISSING\n", {}, {})


# --- the command line ----------------------------------------------------------------------------------------


def test_the_cli_prints_the_script_of_a_run(tmp_path):
    run = make_run(tmp_path, TrainConfig(optimizer="adam", learning_rate=0.001))

    result = cli("--export-script", run.run_id, "--runs-dir", str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stdout == run_script(run)


@pytest.mark.parametrize("case", ["unknown", "not-an-id", "damaged", "output-alone", "with-a-setting", "bad-output"])
def test_the_cli_refuses_in_one_line_with_exit_code_2(tmp_path, case):
    run = make_run(tmp_path)
    if case == "damaged":
        (run.path / CONFIG_FILE).write_text("{not json")
    flags = {
        "unknown": ["--export-script", "20260101-000000-abcd-nope"],
        "not-an-id": ["--export-script", "../../etc/passwd"],
        "damaged": ["--export-script", run.run_id],
        "output-alone": ["--output", str(tmp_path / "run.py")],
        "with-a-setting": ["--export-script", run.run_id, "--learning-rate", "0.1"],
        "bad-output": ["--export-script", run.run_id, "--output", str(tmp_path)],  # a folder
    }[case]
    expected = {
        "unknown": "there is no run '20260101-000000-abcd-nope'; python -m core.cli --list lists the runs",
        "not-an-id": "'../../etc/passwd' is not a run id",
        "damaged": f"run {run.run_id} cannot be exported as a script: its folder is damaged (config.json is not",
        "output-alone": "--output goes with --export-script RUN_ID",
        "with-a-setting": "--export-script writes the run's own settings; leave out --learning-rate",
        "bad-output": f"cannot write the script to {tmp_path}",
    }[case]

    result = cli(*flags, "--runs-dir", str(tmp_path))

    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr
