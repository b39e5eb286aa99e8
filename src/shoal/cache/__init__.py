"""The cluster cache: a bounded shard on every node, keys spread over the live nodes by rendezvous hashing."""
