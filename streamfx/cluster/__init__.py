"""Scale out on Ray: node servers on GPU nodes, front doors that place callers by free slots.

Ray does membership, failure detection, placement and autoscaling; StreamFX only names what
a caller costs. Each node advertises ``streamfx_slot: N`` (the callers it holds), a front door
reserves one slot per offer as a one-bundle placement group, Ray picks the node, and the
front door hands the offer to that node's server actor. Media goes straight between the
caller and the node; only signalling and control messages pass through Ray.

- :mod:`.config`: names and timings;
- :mod:`.capacity`: how many slots a node advertises;
- :mod:`.slots`: reserving, finding and releasing slots, unmet demand for the autoscaler;
- :mod:`.node_server`: the node's actor (engine, admission, aiortc peers);
- :mod:`.node`: joining a Ray node to a cluster and starting its server, draining;
- :mod:`.front_door`: the HTTP front door (page, ``/offer``, ``/ws`` relay, ``/metrics``);
- :mod:`.status`: what ``streamfx cluster status`` prints.

Needs the ``cluster`` extra (Ray). Nothing outside this package imports it.
"""
