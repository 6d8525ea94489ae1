"""Read a run folder's TensorBoard event files back the way TensorBoard itself reads them, for tests.

TensorBoard's own reader (`plugin_event_accumulator`) passes every event through its compatibility layers:
legacy `simple_value` scalars, `histo` histograms and encoded images (what a TF1 `FileWriter` writes, as the
session engine does) come out as the same tensor summaries that `tf.summary` writes in TF2, and a
`graph_def` event becomes the run graph. So the tests can ask "what would TensorBoard show?" without caring
which engine wrote the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.compat.proto import config_pb2, graph_pb2
from tensorboard.plugins.graph import metadata as graph_metadata
from tensorboard.util import tensor_util

SCALARS, HISTOGRAMS, IMAGES = "scalars", "histograms", "images"
# The op graph of a TF2 run arrives as RunMetadata (tf.summary.trace_export); a TF1 FileWriter's graph_def
# arrives, after TensorBoard's compat layer, as a GraphDef under the "graphs" plugin.
RUN_METADATA_PLUGINS = (
    graph_metadata.PLUGIN_NAME_RUN_METADATA_WITH_GRAPH,
    graph_metadata.PLUGIN_NAME_RUN_METADATA,
)
KEEP_EVERY_POINT = {plugin: 0 for plugin in (SCALARS, HISTOGRAMS, IMAGES, "graphs", *RUN_METADATA_PLUGINS)}


class RunEvents:
    """Everything TensorBoard would load from one log directory, with size guidance 0 (keep all)."""

    def __init__(self, log_dir: Path):
        files = sorted(Path(log_dir).glob("events.out.tfevents.*"))
        if not files:
            present = sorted(path.name for path in Path(log_dir).iterdir())
            raise AssertionError(f"no TensorBoard event files in {log_dir}; it holds {present}")
        self.files = files
        self.accumulator = plugin_event_accumulator.EventAccumulator(
            str(log_dir),
            size_guidance=plugin_event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE,
            # TensorBoard samples each plugin's points (1,000 scalars, 10 images ...); keep every one.
            tensor_size_guidance=KEEP_EVERY_POINT,
        )
        self.accumulator.Reload()

    def tags(self, plugin: str) -> set[str]:
        """The tags TensorBoard lists under a plugin's dashboard ("scalars", "histograms", "images")."""
        if plugin not in self.accumulator.ActivePlugins():
            return set()
        return set(self.accumulator.PluginTagToContent(plugin))

    def scalars(self, tag: str) -> list[tuple[int, float]]:
        """(step, value) of every point of a scalar tag, in file order."""
        if tag not in self.tags(SCALARS):
            raise KeyError(f"no scalar tag {tag!r}; the scalar tags are {sorted(self.tags(SCALARS))}")
        return [(event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
                for event in self.accumulator.Tensors(tag)]

    def steps(self, tag: str) -> list[int]:
        """The steps at which a tag (of any plugin) has a point, in file order."""
        return [event.step for event in self.accumulator.Tensors(tag)]

    def values(self, tag: str) -> list[np.ndarray]:
        """The raw tensor of every point of a tag (histogram buckets, encoded images ...)."""
        return [tensor_util.make_ndarray(event.tensor_proto) for event in self.accumulator.Tensors(tag)]

    def graphs(self) -> list[graph_pb2.GraphDef]:
        """Every op graph in the run: traced tf.function graphs and a FileWriter's graph_def."""
        graphs = []
        for plugin in RUN_METADATA_PLUGINS:
            for tag in self.tags(plugin):
                for event in self.accumulator.Tensors(tag):
                    run_metadata = config_pb2.RunMetadata.FromString(event.tensor_proto.string_val[0])
                    graphs += [function.pre_optimization_graph for function in run_metadata.function_graphs]
        for tag in self.tags("graphs"):
            for event in self.accumulator.Tensors(tag):
                graphs.append(graph_pb2.GraphDef.FromString(event.tensor_proto.string_val[0]))
        return graphs


def node_names(graph: graph_pb2.GraphDef) -> list[str]:
    """Names of a graph's nodes, including those inside its function library (tf.function, while bodies)."""
    names = [node.name for node in graph.node]
    for function in graph.library.function:
        names += [node.name for node in function.node_def]
    return names


def name_scopes(graph: graph_pb2.GraphDef) -> set[str]:
    """Every name-scope component of the graph's node names ("while/NN/hidden_1/MatMul" gives while, NN, hidden_1)."""
    return {part for name in node_names(graph) for part in name.split("/")[:-1]}


def read_scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every point of one scalar tag in a log directory."""
    return RunEvents(log_dir).scalars(tag)


def read_graph_node_names(log_dir: Path) -> set[str]:
    """Every node name of every graph in a log directory, function libraries included."""
    return {name for graph in RunEvents(log_dir).graphs() for name in node_names(graph)}
