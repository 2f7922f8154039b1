"""What is kept: typed records (contracts, variants, the rollout record) and the Redis store
with compare-and-set writes and an audit stream. Imports no policy, job or platform."""
