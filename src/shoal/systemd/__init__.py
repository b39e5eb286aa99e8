"""shoal under systemd: the notify protocol spoken by the node itself, its watchdog, and the unit file.

The node needs no systemd library: ``notify`` sends plain AF_UNIX datagrams to ``$NOTIFY_SOCKET``,
``watchdog`` decides whether the node still makes progress, ``supervision`` ties both to one node run,
``unit`` renders the service unit and ``install`` puts it in place or takes it away.
"""
