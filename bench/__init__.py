"""`python -m bench` (`make bench`): budget calls per second against a trivial-RPC ceiling.

One run starts its own Redis (AOF on), PostgreSQL, pricing service and budget service
process(es) on free ports, drives them from several client processes, prints a table of figures
and, with `--json PATH`, writes them as JSON. Figures are reported next to their aims, never
asserted.

Modules:
    cli        argument parsing, the phases in order, the report
    stack      Redis, PostgreSQL and the service processes: start, readiness (the budget
               services' price tables loaded too), cleanup
    client     the load-generating client processes (grpc.aio, closed and open loop)
    probe      Redis time per reserve / commit script with one call in flight
    procfs     CPU time, run-queue waits and TCP socket ownership read from /proc
    profiling  the service under cProfile (only during the budget phase) and its summary
    breakdown  `python -m bench.breakdown`: a budget call's CPU in the service, step by step

May import: servicekit, genproto, budget_service, pricing_service, devstack
"""
