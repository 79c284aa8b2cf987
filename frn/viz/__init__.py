"""Figures for the notebooks (the engine never imports this package): episodes and images
(`common`), training curves (from frn/log.py), FRN reconstructions (`reconstruction`), DeepEMD
weights and flows (`emd`), MTL's inner loop and Negative-Margin's sweeps (`sweeps`), SimTrans's
sample weights and similarity matrices (`weakshot`), predict.py's results (`predictions`).
`from frn import viz` gives all of them.
"""
from frn.log import load_history, plot_history
from frn.viz.common import (
                            class_name,
                            denormalise,
                            finish_single_axes,
                            frame,
                            show_episode,
                            stack_images,
                            tile,
                            to_numpy,
)
from frn.viz.emd import emd_pair, show_emd_flow, show_emd_weights
from frn.viz.predictions import read_predictions, show_predictions
from frn.viz.reconstruction import reconstruct_query, show_reconstruction
from frn.viz.sweeps import plot_accuracy_vs_margin, plot_inner_loop, plot_val_curves
from frn.viz.weakshot import show_sample_weights, show_similarity

__all__ = ["class_name", "denormalise", "emd_pair", "finish_single_axes", "frame", "load_history",
           "plot_accuracy_vs_margin", "plot_history", "plot_inner_loop", "plot_val_curves", "read_predictions",
           "reconstruct_query", "show_emd_flow", "show_emd_weights", "show_episode", "show_predictions",
           "show_reconstruction", "show_sample_weights", "show_similarity", "stack_images", "tile", "to_numpy"]
