"""Shadow traffic: a share of a route's requests copied to another upstream, fire and forget
(Envoy's ``request_mirror_policies``, nginx's ``mirror``).

``gw.mirror.settings`` holds the ``mirror:`` model, ``gw.mirror.policy`` the compiled policy,
``gw.mirror.stage`` the worker's sender the pipeline calls.
"""
