"""Quiet the model libraries' logs for the command-line tools and the node (opt in).

Its own module, below the estimator and the export tool that both use it: when it lived in
``estimator``, the export tool imported the estimator back (estimator -> backends -> export ->
estimator), an import circle.
"""

from __future__ import annotations

import warnings


def quiet_model_libraries() -> None:
    """Silence hub/diffusers/transformers logs, warnings and "Loading weights" bars.

    Failures still reach the user: the estimator turns them into one CheckpointError.
    Process-wide; for the command-line tools, not for a library caller's process.
    """
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils.logging as hub_logging
    import transformers.utils.logging as transformers_logging

    warnings.filterwarnings("ignore", module="huggingface_hub")
    hub_logging.set_verbosity_error()  # its "Retrying in 1s" lines on a machine offline
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
