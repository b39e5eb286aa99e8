"""Signed webhooks: a POST to a subscriber's URL for every task event it asked for, delivered at least once.

The parts, in the order an event goes through them:

- ``model``: what a subscription and a delivery are, and the checks of what a user may ask for;
- ``guard``: which URLs a webhook may reach (the fetch guard, and loopback only when the operator allows it);
- ``service``: what users may do (add, list, delete, read the delivery log, replay), for REST and the CLI;
- ``shoal.store.webhooks``: the subscriptions, deliveries and their queue in the store, each change one Lua
  script;
- ``delivery``: the loops every node runs: ``EventIngest`` turns task events (the store's ``task-events``
  stream, read through the consumer group ``webhooks``) into deliveries, ``Sender`` leases due deliveries,
  POSTs them and records the outcome, retrying failures with exponential backoff for up to a day;
- ``signing``: secrets and the Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``).

Nothing is lost when a node dies: an event it read but did not turn into deliveries stays pending in the group
and is claimed by another node, and a delivery it leased becomes due again when its lease lapses.
"""
