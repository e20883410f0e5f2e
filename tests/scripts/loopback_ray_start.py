"""``ray start`` for a node that must stay on 127.0.0.1 in a multi-node test cluster.

On Linux ``ray start --node-ip-address 127.0.0.1`` replaces the loopback address with the
host's network address (``ray._private.services.resolve_ip_for_localhost``) whenever multi-node
mode is on, and a worker node refuses to start with multi-node mode off. A test cluster on one
machine needs both nodes on loopback and nothing listening on the network, so this wrapper keeps
an explicit 127.0.0.1 as given and runs Ray's own CLI. It fails loudly if the Ray function it
wraps is gone (guard: tests/test_external_cluster.py::
test_loopback_ray_start_wraps_a_real_function).

Run as: ``python tests/scripts/loopback_ray_start.py start --address ...
--node-ip-address 127.0.0.1``
"""

from __future__ import annotations

import sys

from ray._private import services

if not callable(getattr(services, "resolve_ip_for_localhost", None)):
    raise SystemExit("ray._private.services.resolve_ip_for_localhost is gone in this Ray "
                     "version: update tests/scripts/loopback_ray_start.py")
_resolve = services.resolve_ip_for_localhost


def keep_loopback(host: str) -> str:
    return host if host == "127.0.0.1" else _resolve(host)


services.resolve_ip_for_localhost = keep_loopback

if __name__ == "__main__":
    from ray.scripts.scripts import main

    sys.argv = ["ray", *sys.argv[1:]]
    main()
