"""A Ray worker node on 127.0.0.1 in a process of its own: ``python extra_node.py GCS RESOURCES``.

What ``ray start --address GCS --block`` does, for a loopback cluster (``ray start`` refuses
to join one). It prints the node id and stops its Ray processes when terminated. The tests
start nodes this way so that the test's event loop keeps streaming while one joins.
"""

import json
import os
import signal
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from ray._private.node import Node  # noqa: E402
from ray._private.parameter import RayParams  # noqa: E402


def main() -> None:
    gcs, resources = sys.argv[1], json.loads(sys.argv[2])
    params = RayParams(gcs_address=gcs, node_ip_address="127.0.0.1", num_cpus=1, num_gpus=0, resources=resources,
                       object_store_memory=80 * 2**20, min_worker_port=0, max_worker_port=0,
                       include_log_monitor=False, node_manager_port=0)
    params.dashboard_agent_listen_port = None
    node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)

    def stop(*_):
        node.kill_all_processes(check_alive=False, allow_graceful=False)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(node.node_id, flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
