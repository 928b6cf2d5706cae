"""Adapters that deploy a site's Serve config and report what runs there.

Two backends share one small interface (:class:`~.base.SiteBackend`): ``ray`` drives an existing Ray
cluster through its dashboard REST API; ``kuberay`` writes a RayService into the site's own
Kubernetes cluster. The operator never talks to a site except through them.
"""
