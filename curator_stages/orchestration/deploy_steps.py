"""Pull steps of this project's deployments (``prefect.yaml``), run by a worker before a flow.

A process worker runs a deployment's flow from the checkout named by ``CURATOR_STAGES_HOME``.
Without the variable, Prefect's ``set_working_directory`` stays in a temporary directory and
the run fails later with a ``FileNotFoundError`` for ``flows/<name>.py`` that names nothing
the user can act on; this step fails first, in one line naming the variable.
"""

from __future__ import annotations

import os


class CheckoutNotSetError(RuntimeError):
    """The worker's environment does not say where the project's checkout is."""


def require_checkout(env_var: str = "CURATOR_STAGES_HOME") -> dict[str, str]:
    """Check that ``env_var`` names a checkout of this project (a directory with ``flows/``);
    returns ``{"directory": <it>}`` for later steps. Raises :class:`CheckoutNotSetError`."""
    home = os.environ.get(env_var, "")
    if not home:
        raise CheckoutNotSetError(
            f"{env_var} is not set in the worker's environment: start the worker from the "
            f"checkout with {env_var}=$PWD prefect worker start --pool curator-process")
    if not os.path.isdir(os.path.join(home, "flows")):
        raise CheckoutNotSetError(
            f"{env_var}={home} is not a checkout of curator_stages (no flows/ directory in it); "
            f"set {env_var} to the checkout the worker runs the flows from")
    return {"directory": os.path.abspath(home)}


__all__ = ["CheckoutNotSetError", "require_checkout"]
