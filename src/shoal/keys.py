"""Every Redis key shoal uses, in one place. All live under ``shoal:{cluster}:``.

    key                      type     writer              what
    schema                   string   the first node      the version of this layout (store/schema.py): set by the
                                                          first node on an empty store, raised by a node that
                                                          upgrades an older one; a node refuses a greater one
    task:{id}                hash     Lua scripts only    the task (fields of models.Task, params as JSON; ``epoch``:
                                                          the master term that last placed it; ``result``: JSON
                                                          of models.TaskResult, at most result_max_bytes;
                                                          ``due``: when a retry waiting out its backoff is due)
    attempts:{id}            list     Lua scripts only    one JSON object per attempt (models.Attempt) but the
                                                          latest, which is the hash's ``run``; the first and the
                                                          latest kept (_lib.lua), the others counted
    result:{id}              string   older versions      their copy of the result, read where the hash has none
    dupes:{id}               list     finish.lua          late results of attempts that lost the race
    children:{id}            set      submit.lua          the tasks that name it in depends_on (workflows: the hash's
                                                          ``deps``, ``left``, ``opf``; _lib.lua settle_children)
    parents                  set      submit.lua          the tasks with children that have not ended (settle_children
                                                          looks here, once per script, for the tasks that ended)
    wf:{id}                  set      submit.lua          the tasks of the workflow of that id (their hash's ``wf``)
    seq                      string   submit.lua          counter; each task's sequence number (listing order)
    idem:{key}               string   submit.lua          the id of the task a submit with that idempotency_key
                                                          made; expires after the idempotency window
    index:{STATE}            zset     Lua scripts         task ids in that state, score = sequence number; every
                                                          task is in exactly one, and a listing of all tasks
                                                          merges the six (page.lua), so a task costs one entry
    index:all                zset     older versions      every task id; removed by the upgrade to schema 3
    names                    zset     Lua scripts         every task, "name in lower case NUL seq NUL id", all at
                                                          score 0: the tasks whose name starts with a text are one
                                                          lexical range (a search by name prefix, store/search.py)
    pending:{type}           stream   Lua scripts         ids of WAITING tasks of one type to place; group "scheduler".
                                                          One per type, so that tasks no live node runs wait in
                                                          their own stream and never hold up the others
    pending-types            set      Lua scripts         the types that have a pending stream
    pending                  stream   older versions      their single pending stream (every type); its entries
                                                          are moved to the per-type streams when a master starts
    delayed                  zset     finish.lua          WAITING tasks held back for retry, score = due time
    ended                    zset     older versions      finished tasks by end time; removed by the upgrade to
                                                          schema 3: the retention sweep (expire.lua) reads the
                                                          finished states' indexes from the oldest task on
    expiry                   zset     Lua scripts         finished tasks submitted with a result_ttl_s, score =
                                                          when they expire
    inbox:{node}             stream   place/kill          run orders (``ids``: every task one placement put on the
                                                          node) and kill orders (``id``); group "worker"
    assigned:{node}          set      Lua scripts         ids placed on the node and not yet terminal
    node:{name}              hash     the node; master    the node writes its addresses, slots, load, incarnation and
                                                          beat; the master (member.lua) its state and the reason;
                                                          kept a minute (marked draining) after the node leaves
    nodes                    zset     the node itself     node names, score = last beat (Redis time)
    membership               string   nodes; master       counter raised by every change of who is a member (a new
                                                          incarnation, draining, a verdict, a node leaving or
                                                          forgotten), not by beats: nodes read every record again
                                                          when it moves (and now and then), not every beat
    timeline                 stream   master (Lua)        membership events: joins, suspicions, deaths, rejections,
                                                          elections, each with the rule that fired (capped)
    handover                 string   release.lua         the node a leaving master named to take over (short TTL)
    session:{sha256 of id}   hash     web sign-in         a web task center session: csrf, token_id (the token's
                                                          fingerprint); expires with the session (session_ttl)
    rotation                 string   token rotation      "node random": the rotation under way (SET NX, short TTL)
    active:{limit}           set      place.lua           the tasks a concurrency limit (shoal.limits) counts: placed,
                                                          and not seen finished yet (place.lua drops those it finds
                                                          ended when the limit looks full)
    bucket:{limit}           hash     place.lua           a rate limit's token bucket: tokens, at (store's clock)
    hold:{host}              string   fetch (store/hosts) the Unix time (store's clock) until which no fetch to the
                                                          host (limits.host_of: "example.org", "[::1]:8080") is
                                                          placed: it answered 429/503 (Retry-After); expires
                                                          then (PX); a later hold only ever extends it
    lease                    string   election            name of the master; expires unless renewed
    epoch                    string   election            fencing counter, incremented by each new master
    roster                   string   master (roster.lua) the nodes a submit may place on at once (JSON: epoch,
                                                          nodes with slots and types, types it must not);
                                                          expires within a second unless the master renews it
    task-events              stream   Lua scripts (flush) task state changes, one entry per script call that made
                                                          any: field "e", a JSON array of {id, state, node, at,
                                                          type} (store/task_events.py has the format); capped
    task-events              pubsub   Lua scripts (flush) the same entries as they are added: "<entry id> <JSON>",
                                                          which every node's event hub hears (it reads the stream
                                                          only for what it missed while not subscribed)
    task-progress            pubsub   Lua scripts (flush) instead of task-events, the entries of the scripts that
                                                          store, place or start tasks and end none: heard only by
                                                          nodes with a watch open (waits, the master and the
                                                          throughput chart need the ends)
    public                   pubsub   every node          heartbeats, membership verdicts, election requests (the
                                                          seed's channel): heard only by nodes whose live nodes
                                                          view is open; may be lost
    elections                pubsub   release.lua         election requests only (a master leaving), which every
                                                          node's election hears; may be lost
    schedule:{name}          hash     schedule_*.lua      a named schedule (store/schedules.py): cron, timezone, task
                                                          (the template, JSON), catch_up, overlap, paused ("1"),
                                                          created_at, since (ticks after it fire: creation or the
                                                          last resume), last_tick (the newest tick handled, fired or
                                                          skipped: the master's compare-and-set), last_task
    schedule-runs:{name}     list     schedule_tick/fired the schedule's latest runs, oldest first, JSON: {tick,
                                                          task_id, fired_at} or {tick, skipped}
    schedules                zset     schedule_*.lua      every schedule's name, all at score 0 (listed by name)
    schedules-version        string   schedule_*.lua      counter raised by every add, delete, pause and resume: the
                                                          master's firer reads the schedules again when it moves
    signatures               hash     nodes at start      task type -> the signature of its @shoal.task function as
                                                          JSON (shoal.signatures): what a submit taken by any node
                                                          checks args/kwargs against; a type a node runs as a
                                                          handler is removed
    webhook:{id}             hash     webhook_*.lua       a webhook subscription (store/webhooks.py): url, events and
                                                          types (comma lists), include_result ("1"), secret,
                                                          created_at (events before it are not delivered), dropped
    webhooks                 zset     webhook_add/delete  every subscription's id, score = created_at
    webhook-seq              string   webhook_ingest.lua  counter; each delivery's id
    delivery:{id}            hash     webhook_*.lua       one event for one subscription: webhook, task, state, type,
                                                          at (the event's time), status (pending, delivered,
                                                          failed), attempts, first_at, next_at, the last attempt
                                                          (status_code, latency_ms, response, error), log (JSON:
                                                          the latest attempts), body (the JSON sent, fixed by the
                                                          first attempt), lease (who sends it now)
    deliveries:{webhook}     zset     webhook_ingest.lua  the subscription's delivery log: delivery ids, score = the
                                                          event's time
    webhook-due              zset     webhook_*.lua       deliveries to send, score = when (the store's clock)
    webhook-leases           zset     webhook_claim/done  deliveries a node is sending, score = when its lease lapses
                                                          (then webhook_claim.lua makes them due again)
    task-events group "webhooks"      webhook_ingest.lua  every node reads the task events into deliveries
    (channel names end in "@db{n}" on a database n other than 0: pub/sub ignores database numbers)

Task state changes go through the scripts in ``store/scripts``, which keep the hash, the indexes, the
assigned sets and the streams consistent in one atomic step.

What bounds each key that grows, so that a cluster that runs for months keeps a bounded store:

    task:{id}, result:{id}   removed with their task: by a delete, or by the master's retention sweep
                             (expire.lua) once the task ended longer ago than ``retention`` or its result_ttl_s
    attempts:{id}            the same; at most KEEP_FIRST + KEEP_LAST - 1 entries (store/scripts.py)
    dupes:{id}               the same; at most KEEP_LATE_RESULTS entries (store/tasks.py)
    children:{id}            the same; one entry per child
    parents                  one entry per unfinished task that has children; it leaves when the task ends
    wf:{id}                  one entry per task kept; each leaves with its task (empty: gone)
    index:{STATE}, names     one entry per task kept (finished ones leave with their task)
    expiry                   one entry per finished task kept that has a result_ttl_s
    idem:{key}               expires with the idempotency window (24 h by default); one per keyed submit
    pending:{type}           one entry per WAITING task of the type, deleted once placed (place.lua) or found
                             gone; pending-types: one member per task type a live node ran
    delayed                  one entry per retry waiting out its backoff
    inbox:{node}             orders deleted once the worker acknowledged them; dropped with the node's work
                             (requeue.lua) and with the node (prune.lua)
    assigned:{node}          the node's tasks that have not ended
    node:{name}, nodes       one per node: kept a minute after a node leaves, a day after it was declared
                             dead and fell silent (prune.lua, in the retention sweep)
    timeline                 capped at about 2,000 entries (XADD MAXLEN ~)
    task-events              capped at about ``event_retention`` entries (XADD MAXLEN ~; 100,000 by default)
    session:*, lease, handover, rotation, roster   expire on their own (TTL)
    active:{limit}           the limit's placed, unfinished tasks (ended ones dropped when it looks full); expires
                             a day after the limit's last placement
    bucket:{limit}           expires once it would be full again (burst / rate seconds)
    hold:{host}              expires when the hold ends (an hour at most, fetch.MAX_HOLD_S); one per host held
    schedule:*, schedules    one per schedule, at most schedules.MAX_SCHEDULES; removed by its delete
    schedule-runs:{name}     at most schedules.KEEP_RUNS entries; removed with its schedule
    schedules-version        a counter
    signatures               one field per function task type a node ran
    webhook:*, webhooks      one per subscription, at most webhooks.MAX_WEBHOOKS; removed by its delete
    deliveries:{webhook}     about webhooks.KEEP_DELIVERIES ended deliveries and those pending, at most
                             webhooks.MAX_DELIVERIES (the oldest dropped past it, counted in ``dropped``)
    delivery:{id}            one per entry of a delivery log; removed with it
    webhook-due, webhook-leases   one entry per pending delivery
    seq, epoch, membership   counters
    schema                   one integer
"""

from __future__ import annotations

SCHEDULER_GROUP = "scheduler"
WORKER_GROUP = "worker"
#: The consumer group of the task-events stream that turns events into webhook deliveries (store/webhooks.py).
WEBHOOKS_GROUP = "webhooks"


def channel_suffix(db: int) -> str:
    """What a channel name carries of the store's database number: pub/sub ignores the number, so two
    clusters of one name on two databases of one server would otherwise hear each other. Nothing for
    database 0, whose channel names are those of earlier versions."""
    return f"@db{db}" if db else ""


class Keys:
    """Key names for one cluster. Cheap to build; holds no connection."""

    def __init__(self, cluster: str, db: int = 0) -> None:
        self.prefix = f"shoal:{cluster}:"
        self.schema = self.prefix + "schema"
        self.seq = self.prefix + "seq"
        self.legacy_all = self.prefix + "index:all"
        self.names = self.prefix + "names"
        self.pending_types = self.prefix + "pending-types"
        self.pending_prefix = self.prefix + "pending:"
        self.legacy_pending = self.prefix + "pending"
        self.delayed = self.prefix + "delayed"
        self.legacy_ended = self.prefix + "ended"
        self.expiry = self.prefix + "expiry"
        self.nodes = self.prefix + "nodes"
        self.membership = self.prefix + "membership"
        self.lease = self.prefix + "lease"
        self.epoch = self.prefix + "epoch"
        self.task_events = self.prefix + "task-events"
        self.task_events_channel = self.task_events + channel_suffix(db)
        self.task_progress_channel = self.prefix + "task-progress" + channel_suffix(db)
        self.public = self.prefix + "public" + channel_suffix(db)
        self.elections = self.prefix + "elections" + channel_suffix(db)
        self.timeline = self.prefix + "timeline"
        self.handover = self.prefix + "handover"
        self.rotation = self.prefix + "rotation"
        self.schedules = self.prefix + "schedules"
        self.schedules_version = self.prefix + "schedules-version"
        self.signatures = self.prefix + "signatures"
        self.webhooks = self.prefix + "webhooks"
        self.webhook_due = self.prefix + "webhook-due"
        self.webhook_leases = self.prefix + "webhook-leases"

    def pending(self, task_type: str) -> str:
        return self.pending_prefix + task_type

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def attempts(self, task_id: str) -> str:
        return f"{self.prefix}attempts:{task_id}"

    def result(self, task_id: str) -> str:
        return f"{self.prefix}result:{task_id}"

    def dupes(self, task_id: str) -> str:
        return f"{self.prefix}dupes:{task_id}"

    def children(self, task_id: str) -> str:
        return f"{self.prefix}children:{task_id}"

    def workflow(self, workflow_id: str) -> str:
        return f"{self.prefix}wf:{workflow_id}"

    def state_index(self, state_name: str) -> str:
        return f"{self.prefix}index:{state_name}"

    def inbox(self, node: str) -> str:
        return f"{self.prefix}inbox:{node}"

    def assigned(self, node: str) -> str:
        return f"{self.prefix}assigned:{node}"

    def node(self, name: str) -> str:
        return f"{self.prefix}node:{name}"

    def schedule(self, name: str) -> str:
        return f"{self.prefix}schedule:{name}"

    def schedule_runs(self, name: str) -> str:
        return f"{self.prefix}schedule-runs:{name}"

    def webhook(self, webhook_id: str) -> str:
        return f"{self.prefix}webhook:{webhook_id}"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}delivery:{delivery_id}"

    def deliveries(self, webhook_id: str) -> str:
        return f"{self.prefix}deliveries:{webhook_id}"

    def session(self, digest: str) -> str:
        return f"{self.prefix}session:{digest}"

    def limit_active(self, name: str) -> str:
        return f"{self.prefix}active:{name}"

    def limit_bucket(self, name: str) -> str:
        return f"{self.prefix}bucket:{name}"

    def host_hold(self, host: str) -> str:
        """``hold:{host}``, with ``host`` as ``shoal.limits.host_of`` makes it from a URL."""
        return f"{self.prefix}hold:{host}"
