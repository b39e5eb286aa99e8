"""The web task center: pages served by every node at ``/``, over the same REST API as everyone else.

- ``session``: sign-in cookie (the API token, HttpOnly, SameSite=Strict) and the CSRF token derived from it;
- ``cors``: lets a page served by one node keep working through another node of the cluster;
- ``pages``: the HTML routes (Jinja2 templates in ``shoal/web/templates``, ES modules in ``shoal/web/static``).
"""
