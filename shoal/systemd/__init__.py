"""shoal under systemd: the notify protocol spoken by the node itself, its watchdog, and the unit file.

The node needs no systemd library: ``notify`` sends plain AF_UNIX datagrams to ``$NOTIFY_SOCKET``,
``watchdog`` decides whether the node still makes progress, ``supervision`` ties both to one node run, and
``unit`` renders, installs and removes the service unit.
"""
