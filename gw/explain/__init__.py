"""``gw explain``: what the gateway would do with one request, every decision in pipeline order.

The request is built by the gateway's own ingress (``gw.core.ingress``) from a made-up WSGI
environ, routed by the same table and the same route choice as the pipeline, and handed to
each stage's own pure parts: the CORS policy, the authenticator, the rate limits' bucket keys,
the cache key, the header rules and the upstream's targets. Nothing is sent anywhere, no
token is taken from a bucket, and nothing is stored; a token is verified (which may fetch the
issuer's keys, as a worker would).

The result is one ``Explanation``: a list of stages, each with the same data as text
(``render``) and as JSON (``as_json``). It stops where the gateway would answer itself.
"""

from gw.explain.chain import Explanation, Live, Probe, Stage, explain

__all__ = ["Explanation", "Live", "Probe", "Stage", "explain"]
