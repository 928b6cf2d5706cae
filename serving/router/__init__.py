"""soberana's global router: sends each request to the best compliant, healthy site.

The routing table (:mod:`.table`) says where each model runs; the policy (:mod:`.policy`, with
:mod:`.health` and :mod:`.breaker`) decides, purely, which sites may serve a request and in
which order; :mod:`.forward` tries them over :mod:`.upstream`'s kept-alive connections (aiohttp's
client) and relays the answer; :mod:`.app` is the HTTP service around it all, on the lean HTTP/1.1
server of :mod:`.httpserver`. The table comes from a static file (:mod:`.files`) or from the API
server (:mod:`.kube`). Callers are identified by :mod:`.auth`; :mod:`.metrics` and :mod:`.telemetry`
report what happened.
"""
