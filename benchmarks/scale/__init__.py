"""Scale-out benchmarks: the 1:N gallery at 10k / 100k / 1M templates, and Verify throughput
with two replicas on one shared PostgreSQL + Redis. Results: benchmarks/results/scale.json."""
